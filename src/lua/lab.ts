// Lab (reference §1.5, DESIGN §10). `provium` is the file's root lab; each test body sees a test
// scope lab whose lookups fall back to the root. Sub-labs from lab:lab() group VMs and have no
// parent chain. lab:boot() posts every boot at once (SyncCaller.callMany) so VMs boot together.

import { lua } from 'fengari';
import type { BootOptions, LabSnapshotManifest, RpcArgs, RpcReply } from '../protocol/rpc.js';
import { R, type Args, type BindingRuntime, type LuaClass, type Method } from './args.js';
import { readBootOptions } from './boot-options.js';
import { LuaError } from './errors.js';
import { showSeconds, translateRpcError } from './guest.js';
import { getText, pushIntegral, pushPlain, pushText, setField } from './values.js';
import { Bridge, type VmReader } from './bridge.js';
import { Vm, VmClass, type VmOwner } from './vm.js';
import { LabSnapshotClass, Snapshot } from './snapshot.js';
import { legacyFixtureRef } from './legacy/fixture.js';
import { legacyPack, legacyUnpack, legacyWords } from './legacy/pack.js';
import { legacyShutdown } from './legacy/vm.js';

const kBarrierDefaultMs = 60_000;
const kNamePattern = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const kSettable = ['reset_between_tests', 'timeout'];

export class Lab implements VmOwner {
  readonly vms = new Map<string, Vm>();
  readonly bridges = new Map<string, Bridge>();
  readonly subLabs = new Map<string, Lab>();
  /** The lab this one is a member of (sub-labs). */
  owner: Lab | null = null;
  private _autoNames = 0;

  constructor(
    readonly rt: BindingRuntime,
    readonly name: string,
    /** Broker-facing path: `provium`, `provium/__lab_0`, `provium/test:boots`. */
    readonly path: string,
    /** Where lookups continue (test scope → root); null for the root and sub-labs. */
    readonly parent: Lab | null,
  ) {}

  get label(): string {
    return `lab \`${this.name}\``;
  }

  findVm(name: string): Vm | undefined {
    return this.vms.get(name) ?? this.parent?.findVm(name);
  }

  findBridge(name: string): Bridge | undefined {
    const own = this.bridges.get(name);
    if (own && !own.closed) return own;
    return this.parent?.findBridge(name);
  }

  /** A VM argument: a VM userdata, or the name of a VM this lab can see. */
  readonly readVm: VmReader = (a, idx, what) => {
    const vm = a.rt.toObject(a.L, idx, VmClass);
    if (vm) return vm;
    if (lua.lua_type(a.L, idx) === lua.LUA_TSTRING) {
      const name = getText(a.L, idx);
      const found = this.findVm(name);
      if (found) return found;
      const known = [...new Set([...this.vms.keys(), ...(this.parent?.vms.keys() ?? [])])];
      throw a.error(`${what}: no vm named \`${name}\` in ${this.label}${known.length ? ` (known: ${known.join(', ')})` : ''}`);
    }
    throw a.error(`${what} must be a VM or a VM's name, got ${a.got(idx)}`);
  };

  findSubLab(name: string): Lab | undefined {
    return this.subLabs.get(name) ?? this.parent?.findSubLab(name);
  }

  nextAutoName(): string {
    let name: string;
    do name = `__lab_${this._autoNames++}`;
    while (this.subLabs.has(name) || this.vms.has(name));
    return name;
  }

  /** Errors for a name that cannot join this lab. */
  checkNewMember(fn: string, name: string, kind: 'vm' | 'sub-lab'): void {
    if (!kNamePattern.test(name)) {
      throw new LuaError(`${fn}: invalid ${kind} name ${JSON.stringify(name)}: use letters, digits, '_', '.', '-', starting with a letter or '_'`);
    }
    if (Object.prototype.hasOwnProperty.call(LabClass.methods, name) || kSettable.includes(name)) {
      throw new LuaError(`${fn}: \`${name}\` is reserved (a lab method or setting); choose another name`);
    }
    if (this.vms.has(name) || this.subLabs.has(name)) {
      throw new LuaError(`${fn}: ${this.label} already has a member named \`${name}\``);
    }
    if (this.parent?.findVm(name) || this.parent?.findSubLab(name)) {
      throw new LuaError(
        `${fn}: name \`${name}\` already declared at a parent scope (${this.parent.label}); use \`provium:vm("${name}")\` to reach it`,
      );
    }
  }

  /** Direct VMs in declaration order. */
  directVms(): Vm[] {
    return [...this.vms.values()];
  }
}

type FanOutOp = 'vm.boot' | 'vm.shutdown' | 'vm.pause' | 'vm.resume';

/** Posts `op` for each VM at once and raises one error naming every VM that failed. */
function forEachVm<K extends FanOutOp>(
  a: Args,
  vms: Vm[],
  op: K,
  argsOf: (vm: Vm) => RpcArgs<K>,
  onOk: (vm: Vm, reply: RpcReply<K>) => void,
): void {
  const results = a.rt.rpc.callMany(op, vms.map(argsOf));
  const failures: string[] = [];
  results.forEach((r, i) => {
    const vm = vms[i]!;
    if (r.ok) onOk(vm, r.reply);
    else failures.push((translateRpcError(vm, r.error, a.label) as Error).message);
  });
  if (failures.length > 0) throw new LuaError(failures.join('\n'));
}

/**
 * lab:pack(fmt, ...) / provium.pack(fmt, ...) and unpack: a format of legacy words (`u32 u64`,
 * seed 002) goes to legacy/pack.ts, any other to string.pack / string.unpack.
 */
function passThrough(fnName: 'pack' | 'unpack'): Method<Lab> {
  return (_lab, a) => {
    const words = legacyWords(a);
    if (words) return fnName === 'pack' ? legacyPack(a, words) : legacyUnpack(a, words);
    const L = a.L;
    lua.lua_getglobal(L, 'string');
    lua.lua_getfield(L, -1, fnName);
    lua.lua_remove(L, -2);
    lua.lua_insert(L, a.base + 1);
    // Stack: [receiver,] function, fmt, values...; results replace everything above the receiver.
    lua.lua_call(L, lua.lua_gettop(L) - a.base - 1, lua.LUA_MULTRET);
    return lua.lua_gettop(L) - a.base;
  };
}

export const LabClass: LuaClass<Lab> = {
  typeName: 'Lab',
  selfName: 'lab',
  toString: (lab) => `lab(${lab.name}: ${lab.vms.size} vms, ${lab.subLabs.size} sub-labs)`,
  methods: {
    vm(lab, a) {
      const name = a.string(1, 'name');
      if (a.isNil(2)) {
        a.noMoreThan(1, 'lab:vm(name) to look up, lab:vm(name, profile, opts?) to create');
        const vm = lab.findVm(name);
        if (!vm) {
          const known = [...new Set([...lab.vms.keys(), ...(lab.parent?.vms.keys() ?? [])])];
          throw a.error(
            `no vm named \`${name}\` in ${lab.label}${known.length ? ` (known: ${known.join(', ')})` : ''}; create it with lab:vm("${name}", "<profile>")`,
          );
        }
        a.rt.push(VmClass, vm, a.L);
        return 1;
      }
      const profile = a.string(2, 'profile');
      const opts = readBootOptions(a, 3, 'opts');
      a.noMoreThan(3, 'lab:vm(name, profile, opts?)');
      a.rt.push(VmClass, createVm(lab, a, name, profile, opts), a.L);
      return 1;
    },
    lab(lab, a) {
      const name = a.isNil(1) ? lab.nextAutoName() : a.string(1, 'name');
      lab.checkNewMember(a.label, name, 'sub-lab');
      const sub = new Lab(a.rt, name, `${lab.path}/${name}`, null);
      sub.owner = lab;
      lab.subLabs.set(name, sub);
      a.rt.push(LabClass, sub, a.L);
      return 1;
    },
    include(lab, a) {
      const items: (Vm | Lab)[] = [];
      const one = (idx: number, what: string): Vm | Lab => {
        const item = a.rt.toObject(a.L, idx, VmClass) ?? a.rt.toObject(a.L, idx, LabClass);
        if (!item) throw a.error(`${what} must be a VM or a Lab, got ${a.got(idx)}`);
        return item;
      };
      if (a.type(1) === lua.LUA_TTABLE) {
        const idx = a.table(1, 'list');
        for (let i = 1; i <= lua.lua_rawlen(a.L, idx); i++) {
          lua.lua_rawgeti(a.L, idx, i);
          items.push(one(lua.lua_gettop(a.L), `list[${i}]`));
          lua.lua_pop(a.L, 1);
        }
      } else items.push(one(a.idx(1), 'argument #1'));
      // Validate everything first: include is all or nothing.
      const seen = new Set<string>();
      for (const item of items) {
        if (item instanceof Lab) {
          for (let l: Lab | null = lab; l; l = l.owner ?? l.parent) {
            if (l === item) throw a.error(`cannot include ${item.label} in itself or in one of its own sub-labs`);
          }
          if (!item.owner) throw a.error(`${item.label} is a scope lab and cannot be included`);
        }
        if ((item instanceof Vm ? item.lab : item.owner) === lab) {
          throw a.error(`${item.label} is already a member of ${lab.label}`);
        }
        if (seen.has(item.name)) throw a.error(`the list names \`${item.name}\` twice`);
        seen.add(item.name);
        lab.checkNewMember(a.label, item.name, item instanceof Vm ? 'vm' : 'sub-lab');
      }
      for (const item of items) {
        if (item instanceof Vm) {
          item.lab?.vms.delete(item.name);
          item.lab = lab;
          lab.vms.set(item.name, item);
        } else {
          item.owner?.subLabs.delete(item.name);
          item.owner = lab;
          lab.subLabs.set(item.name, item);
        }
      }
      return pushSelf(a);
    },
    remove(lab, a) {
      const asVm = a.rt.toObject(a.L, a.idx(1), VmClass);
      const asLab = asVm ? null : a.rt.toObject(a.L, a.idx(1), LabClass);
      const name = asVm?.name ?? asLab?.name ?? a.string(1, 'name_or_member');
      const vm = lab.vms.get(name);
      const sub = lab.subLabs.get(name);
      if (vm && (asVm === null || asVm === vm) && !asLab) {
        vm.lab = null;
        lab.vms.delete(name);
      } else if (sub && (asLab === null || asLab === sub) && !asVm) {
        sub.owner = null;
        lab.subLabs.delete(name);
      } else {
        throw a.error(`${lab.label} has no member \`${name}\``);
      }
      return 0;
    },
    members(lab, a) {
      const L = a.L;
      const list = [...lab.vms.keys()].map((n) => ['vm', n]).concat([...lab.subLabs.keys()].map((n) => ['sub_lab', n]));
      lua.lua_createtable(L, list.length, 0);
      list.forEach(([kind, name], i) => {
        lua.lua_createtable(L, 0, 2);
        setField(L, 'kind', () => pushText(L, kind!));
        setField(L, 'name', () => pushText(L, name!));
        lua.lua_rawseti(L, -2, i + 1);
      });
      return 1;
    },
    vm_names(lab, a) {
      pushPlain(a.L, [...lab.vms.keys()]);
      return 1;
    },
    bridge_names(lab, a) {
      pushPlain(a.L, [...lab.bridges.values()].filter((b) => !b.closed).map((b) => b.name));
      return 1;
    },
    /** lab:bridge(name) looks up, and creates when absent; lab:bridge(name, opts) creates. */
    bridge(lab, a) {
      const name = a.string(1, 'name');
      const existing = lab.findBridge(name);
      if (a.isNil(2) && existing) {
        existing.push(a.L);
        return 1;
      }
      const o = a.options(2, 'opts', { subnet: R.string, addressing: R.string });
      a.noMoreThan(2, 'lab:bridge(name, opts?)');
      if (!kNamePattern.test(name)) {
        throw a.error(`invalid bridge name ${JSON.stringify(name)}: use letters, digits, '_', '.', '-', starting with a letter or '_'`);
      }
      if (lab.bridges.get(name) && !lab.bridges.get(name)!.closed) throw a.error(`${lab.label} already has a bridge named \`${name}\`; use lab:bridge("${name}") to reach it`);
      if (o.addressing !== undefined && o.addressing !== 'auto' && o.addressing !== 'manual') {
        throw a.error(`opts.addressing must be "auto" or "manual", got ${JSON.stringify(o.addressing)}`);
      }
      createBridge(lab, a, name, o.subnet, o.addressing as 'auto' | 'manual' | undefined).push(a.L);
      return 1;
    },
    sub_lab_names(lab, a) {
      pushPlain(a.L, [...lab.subLabs.keys()]);
      return 1;
    },
    name(lab, a) {
      pushText(a.L, lab.name);
      return 1;
    },
    boot(lab, a) {
      const vms = lab.directVms().filter((vm) => vm.state === 'created' || vm.state === 'shutdown');
      forEachVm(a, vms, 'vm.boot', (vm) => vm.bootArgs(a.label, {}), (vm, reply) => vm.apply(reply.vm));
      return pushSelf(a);
    },
    shutdown(lab, a) {
      const vms = lab.directVms().filter((vm) => !vm.released && vm.state !== 'shutdown');
      forEachVm(a, vms, 'vm.shutdown', (vm) => ({ vmId: vm.vmId }), (vm, reply) => vm.apply(reply.vm));
      return pushSelf(a);
    },
    pause(lab, a) {
      const vms = lab.directVms().filter((vm) => !vm.released && vm.state === 'booted');
      forEachVm(a, vms, 'vm.pause', (vm) => ({ vmId: vm.vmId }), (vm, reply) => vm.apply(reply.vm));
      return pushSelf(a);
    },
    resume(lab, a) {
      const vms = lab.directVms().filter((vm) => !vm.released && vm.state === 'paused');
      forEachVm(a, vms, 'vm.resume', (vm) => ({ vmId: vm.vmId }), (vm, reply) => vm.apply(reply.vm));
      return pushSelf(a);
    },
    claim(_lab, a) {
      const o = a.options(1, 'amount', { memory: R.size, cpus: R.int(0, 4096) });
      const config = a.rt.fileConfig;
      if (config.claimTaken) throw a.error('claim already taken (one claim per file)');
      config.claimTaken = true;
      a.rt.rpc.call('lab.claim', { memoryBytes: o.memory ?? 0, cpus: o.cpus ?? 0 });
      return 0;
    },
    barrier(_lab, a) {
      const name = a.string(1, 'name');
      if (name === '') throw a.error('argument #1 (name) must not be empty');
      const count = a.read(2, 'count', R.int(1, 1 << 20));
      const timeoutMs = a.isNil(3) ? kBarrierDefaultMs : a.read(3, 'timeout', R.duration);
      try {
        a.rt.rpc.call('lab.barrier', { name, count, timeoutMs: Math.ceil(timeoutMs) }, timeoutMs);
      } catch (err) {
        if (err instanceof LuaError) throw err;
        throw a.error(`barrier \`${name}\` (${count} parties, ${showSeconds(timeoutMs)}): ${(err as Error).message}`);
      }
      lua.lua_pushboolean(a.L, true);
      return 1;
    },
    pack: passThrough('pack'),
    unpack: passThrough('unpack'),
    depends_on_file(_lab, a) {
      // Only a static scan of fixture sources reads this; at runtime it does nothing.
      a.string(1, 'host_path');
      return 0;
    },
    /** lab:snapshot() → a transient LabSnapshot; lab:snapshot(dir) → dir, kept. Every running VM and bridge of this lab. */
    snapshot(lab, a) {
      const dir = a.isNil(1) ? undefined : a.string(1, 'dir');
      a.noMoreThan(1, 'lab:snapshot(dir?)');
      const vms = lab.directVms().filter((vm) => !vm.released);
      const bridges = [...lab.bridges.values()].filter((b) => !b.closed);
      let reply;
      try {
        reply = a.rt.rpc.call('lab.snapshot', { lab: lab.name, ...(dir !== undefined ? { dir } : {}), vmIds: vms.map((vm) => vm.vmId), bridgeIds: bridges.map((b) => b.bridgeId) });
      } catch (err) {
        throw a.error((err as Error).message);
      }
      reply.vms.forEach((view, i) => vms[i]!.apply(view));
      if (dir !== undefined) pushText(a.L, dir);
      else a.rt.push(LabSnapshotClass, new Snapshot(reply.path, reply.bytes), a.L);
      return 1;
    },
    /** lab:restore(snap_or_dir): its VMs and bridges come back; ones this lab lacks are created first. */
    restore(lab, a) {
      const snap = a.rt.toObject(a.L, a.idx(1), LabSnapshotClass);
      const dir = snap ? snap.path : a.string(1, 'snapshot (a LabSnapshot or its directory)');
      a.noMoreThan(1, 'lab:restore(snap_or_dir)');
      let manifest;
      try {
        manifest = a.rt.rpc.call('lab.snapshot_info', { path: dir }).manifest;
      } catch (err) {
        throw a.error((err as Error).message);
      }
      restoreLab(lab, a, dir, manifest);
      return pushSelf(a);
    },
    /** provium:vm_fixture(path, name?) / provium.vm_fixture(path): a booted VM from the fixture, at file scope. */
    vm_fixture(_lab, a) {
      const ref = a.string(1, 'path');
      const name = a.isNil(2) ? undefined : a.string(2, 'name');
      a.noMoreThan(2, 'provium:vm_fixture(path, name?)');
      a.rt.push(VmClass, fixtureVm(a, ref, { name }), a.L);
      return 1;
    },
    /** provium.create(profile) (seed 002): a legacy VM of the file's root lab, not booted, owned by the running scope. */
    create(_lab, a) {
      const profile = a.string(1, 'profile');
      a.noMoreThan(1, 'provium.create(profile)');
      const root = a.rt.rootLab as Lab;
      // Named after the profile: minimal_1, minimal_2, ...
      const base = profile.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^([^A-Za-z_])/, '_$1');
      let n = 1;
      while (root.findVm(`${base}_${n}`) || root.findSubLab(`${base}_${n}`)) n++;
      const vm = createVm(root, a, `${base}_${n}`, profile, {});
      vm.legacy = true;
      a.rt.push(VmClass, vm, a.L);
      return 1;
    },
    /** provium.fixture(name) (seed 002): a legacy VM restored from fixtures/<name>.lua (built when needed), owned by the running scope. */
    fixture(_lab, a) {
      const name = a.string(1, 'name');
      a.noMoreThan(1, 'provium.fixture(name)');
      const vm = fixtureVm(a, legacyFixtureRef(a, name), { scoped: true });
      vm.legacy = true;
      a.rt.push(VmClass, vm, a.L);
      return 1;
    },
    /** provium.shutdown_all() (seed 002): the VMs the running test made (at file scope: the file's), gracefully. */
    shutdown_all(_lab, a) {
      a.noMoreThan(0, 'provium.shutdown_all()');
      for (const vm of a.rt.currentScope.vms) if (vm instanceof Vm) legacyShutdown(vm, a);
      return 0;
    },
    /** provium:lab_fixture(path) / provium.lab_fixture(path): a new sub-lab holding the fixture's VMs and bridges. */
    lab_fixture(lab, a) {
      const ref = a.string(1, 'path');
      a.noMoreThan(1, 'provium:lab_fixture(path)');
      const { path: dir, manifest } = prepareFixture(a, ref, 'lab');
      const name = lab.nextAutoName();
      const sub = new Lab(a.rt, name, `${lab.path}/${name}`, null);
      sub.owner = lab;
      lab.subLabs.set(name, sub);
      restoreLab(sub, a, dir, manifest);
      a.rt.push(LabClass, sub, a.L);
      return 1;
    },
  },
  dotCalls: { names: ['vm_fixture', 'lab_fixture', 'pack', 'unpack', 'create', 'fixture', 'shutdown_all'], receiver: (rt) => rt.rootLab as Lab },
  getField(lab, name, L) {
    const config = lab.rt.fileConfig;
    if (name === 'timeout') {
      if (config.timeoutRaw === undefined) return false;
      if (typeof config.timeoutRaw === 'number') pushIntegral(L, config.timeoutRaw);
      else pushText(L, config.timeoutRaw);
      return true;
    }
    if (name === 'reset_between_tests') {
      lua.lua_pushboolean(L, config.resetBetweenTests);
      return true;
    }
    const vm = lab.findVm(name);
    if (vm) {
      lab.rt.push(VmClass, vm, L);
      return true;
    }
    const sub = lab.findSubLab(name);
    if (sub) {
      lab.rt.push(LabClass, sub, L);
      return true;
    }
    return false;
  },
  setField(lab, name, a) {
    const config = lab.rt.fileConfig;
    if (name === 'timeout') {
      const valueIdx = a.idx(1);
      if (lua.lua_isnoneornil(a.L, valueIdx)) {
        config.timeoutMs = undefined;
        config.timeoutRaw = undefined;
        return;
      }
      const ms = R.duration(a, valueIdx, 'the value');
      config.timeoutMs = ms === 0 ? undefined : ms;
      config.timeoutRaw = lua.lua_type(a.L, valueIdx) === lua.LUA_TNUMBER ? (lua.lua_tonumberx(a.L, valueIdx) as number) : getText(a.L, valueIdx);
      return;
    }
    if (name === 'reset_between_tests') {
      config.resetBetweenTests = R.bool(a, a.idx(1), 'the value');
      return;
    }
    throw new LuaError(
      `provium.${name}: unknown setting \`${name}\`; settable keys: ${kSettable.join(', ')} (declare VMs with provium:vm(name, profile))`,
    );
  },
};

/** A new VM of `lab` (lab:vm, and the VMs lab:restore brings back). */
function createVm(lab: Lab, a: Args, name: string, profile: string, opts: BootOptions): Vm {
  lab.checkNewMember(a.label, name, 'vm');
  let vmId: number;
  try {
    vmId = a.rt.rpc.call('vm.create', { name, profile, labPath: lab.path }).vmId;
  } catch (err) {
    throw a.error((err as Error).message);
  }
  const vm = new Vm(a.rt, name, profile, vmId, lab, opts);
  lab.vms.set(name, vm);
  a.rt.currentScope.addVm(vm);
  return vm;
}

/** A new bridge of `lab` (lab:bridge, and the bridges lab:restore brings back). */
function createBridge(lab: Lab, a: Args, name: string, subnet: string | undefined, addressing: 'auto' | 'manual' | undefined): Bridge {
  let reply;
  try {
    reply = a.rt.rpc.call('bridge.create', { name, labPath: lab.path, ...(subnet !== undefined ? { subnet } : {}), ...(addressing !== undefined ? { addressing } : {}) });
  } catch (err) {
    throw a.error((err as Error).message);
  }
  const bridge = new Bridge(a.rt, reply.bridgeId, name, reply.bridge, lab.readVm);
  lab.bridges.set(name, bridge);
  a.rt.currentScope.bridges.push(bridge);
  return bridge;
}

/** Restores the lab snapshot at `dir` onto `lab`: its VMs and bridges by name, created when absent. */
export function restoreLab(lab: Lab, a: Args, dir: string, manifest: LabSnapshotManifest, preset: Map<string, Vm> = new Map()): { vms: Vm[]; bridges: Bridge[] } {
  const vms = manifest.vms.map((v) => preset.get(v.name) ?? lab.vms.get(v.name) ?? createVm(lab, a, v.name, v.profile, {}));
  const bridges = manifest.bridges.map((b) => {
    const own = lab.bridges.get(b.name);
    return own && !own.closed ? own : createBridge(lab, a, b.name, b.subnet, b.addressing);
  });
  let reply;
  try {
    reply = a.rt.rpc.call('lab.restore', {
      path: dir,
      // By the names the snapshot knows them by (a fixture's VM may be named otherwise here).
      vms: vms.map((vm, i) => ({ name: manifest.vms[i]!.name, vmId: vm.vmId })),
      bridges: bridges.map((b) => ({ name: b.name, bridgeId: b.bridgeId })),
    });
  } catch (err) {
    throw a.error((err as Error).message);
  }
  const byId = new Map(vms.map((vm) => [vm.vmId, vm]));
  for (const view of reply.vms) byId.get(view.vmId)?.apply(view);
  for (const r of reply.bridges) {
    const bridge = bridges.find((b) => b.bridgeId === r.bridgeId)!;
    bridge.view = r.bridge;
    for (const { vmId, nic } of r.nics) {
      const vm = byId.get(vmId);
      if (vm) bridge.adopt(vm, nic);
    }
  }
  return { vms, bridges };
}

/**
 * A booted VM restored from the vm fixture `ref`, in the file's root lab. It lives until the file
 * ends, whichever scope asked (vm_fixture), or with the running scope (`scoped`: provium.fixture,
 * whose VMs go with the test that resumed them, as provium.create's do).
 */
function fixtureVm(a: Args, ref: string, opts: { name?: string; scoped?: boolean } = {}): Vm {
  const root = a.rt.rootLab as Lab;
  const { path: dir, manifest } = prepareFixture(a, ref, 'vm');
  const saved = manifest.vms[0]!;
  const restore = () => {
    const created = createVm(root, a, opts.name ?? freeName(root, saved.name), saved.profile, {});
    restoreLab(root, a, dir, manifest, new Map([[saved.name, created]]));
    return created;
  };
  return opts.scoped ? restore() : a.rt.inFileScope(restore);
}

/** The fixture `ref` as a lab snapshot directory of this file's (built first when needed). */
function prepareFixture(a: Args, ref: string, kind: 'vm' | 'lab'): RpcReply<'fixture.prepare'> {
  try {
    return a.rt.rpc.call('fixture.prepare', { ref, kind });
  } catch (err) {
    throw a.error((err as Error).message);
  }
}

/** `base`, or `base_2`, `base_3`, … when the lab already has that name. */
function freeName(lab: Lab, base: string): string {
  const taken = (n: string) => lab.findVm(n) !== undefined || lab.findSubLab(n) !== undefined;
  if (!taken(base)) return base;
  let i = 2;
  while (taken(`${base}_${i}`)) i++;
  return `${base}_${i}`;
}

function pushSelf(a: Args): number {
  lua.lua_pushvalue(a.L, 1);
  return 1;
}
