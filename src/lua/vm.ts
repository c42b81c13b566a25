// VM (seed 001, reference §1.6): one guest. The broker owns the VM's state; every lifecycle reply
// and every error about the VM carries the broker's view, which `apply` takes in one place. The
// copy kept here lets an op in the wrong state fail at once with the state named, instead of
// waiting on a guest that cannot answer.

import { lua } from 'fengari';
import type { BootOptions, RpcArgs, RpcReply, VmState, VmView } from '../protocol/rpc.js';
import path from 'node:path';
import type { Args, BindingRuntime, LuaClass, Method } from './args.js';
import { batchMethod } from './batch.js';
import { mergeBootOptions, readBootOptions, readDiskSpec } from './boot-options.js';
import { Clock, ClockClass } from './clock.js';
import { Console, ConsoleClass } from './console.js';
import { LuaError } from './errors.js';
import { runAsyncMethod, runMethod } from './exec.js';
import { kVmFileMethods } from './files.js';
import { translateRpcError, type OpenStream, type VmHandle } from './guest.js';
import { ioctlMethod, readMemMethod, syscallAsyncMethod, syscallMethod } from './layer0.js';
import { DiskClass, GuestDisk } from './disk.js';
import { NicClass, type Nic } from './nic.js';
import { Snapshot, SnapshotClass } from './snapshot.js';
import type { ScopedResource } from './scope.js';
import { pushText } from './values.js';
import { spawnWorkerMethod } from './worker.js';
import { withLegacyVm } from './legacy/vm.js';

/** What a VM needs of its lab: the member table. lab.ts's Lab implements it (lab.ts imports this module). */
export interface VmOwner {
  readonly vms: Map<string, Vm>;
}

export class Vm implements VmHandle {
  state: VmState = 'created';
  cid: number | null = null;
  deadReason: string | undefined;
  /** Why the guest ended by itself while shut down (`guest powered off`). */
  endReason: string | undefined;
  /** The broker's guest generation this side last saw (see VmView.generation). */
  generation = 0;
  /** Torn down by its scope's `scope.close`: nothing more can be done with it. */
  released = false;
  /** Made by provium.create / provium.fixture (seed 002): boot, shutdown, syscall, ioctl answer in the legacy shapes. */
  legacy = false;
  readonly label: string;
  readonly workerId = undefined;
  readonly openFiles = new Set<ScopedResource>();
  readonly openStreams = new Set<OpenStream>();
  /** Its NICs, by bridge name. */
  readonly nics = new Map<string, Nic>();
  /** Its disks, by id (those of the boot option `disks` join on first use of vm:disk). */
  readonly disks = new Map<string, GuestDisk>();
  private _console: Console | null = null;
  private _clock: Clock | null = null;

  constructor(
    readonly rt: BindingRuntime,
    readonly name: string,
    readonly profile: string,
    readonly vmId: number,
    /** The lab it is a member of (null after lab:remove). */
    public lab: VmOwner | null,
    /** Boot options given to lab:vm, merged under vm:boot's. */
    readonly createOptions: BootOptions,
  ) {
    this.label = `vm \`${name}\``;
  }

  get vm(): Vm {
    return this;
  }

  get console(): Console {
    return (this._console ??= new Console(this));
  }

  get clock(): Clock {
    return (this._clock ??= new Clock(this));
  }

  ensureUsable(fn: string): void {
    if (this.released) throw new LuaError(`${fn}: ${this.label} was torn down at the end of its scope`);
    switch (this.state) {
      case 'booted':
        return;
      case 'paused':
        throw new LuaError(`${fn}: ${this.label} is paused; use resume()`);
      case 'dead':
        throw new LuaError(`${fn}: ${this.label} is dead: ${this.deadReason ?? 'unknown reason'}`);
      case 'created':
        throw new LuaError(`${fn}: ${this.label} is not booted (state: created); call boot() first`);
      default:
        throw new LuaError(`${fn}: ${this.label} is not booted (state: ${this.state}${this.endReason ? `; ${this.endReason}` : ''})`);
    }
  }

  /** Throws unless the VM is in one of `states`. */
  expectState(fn: string, states: VmState[], hint = ''): void {
    if (this.released) throw new LuaError(`${fn}: ${this.label} was torn down at the end of its scope`);
    if (states.includes(this.state)) return;
    if (this.state === 'dead') throw new LuaError(`${fn}: ${this.label} is dead: ${this.deadReason ?? 'unknown reason'}`);
    if (this.state === 'paused' && states.includes('booted')) throw new LuaError(`${fn}: ${this.label} is paused; use resume()`);
    const already = this.state === 'booted' && states.includes('created');
    throw new LuaError(`${fn}: ${this.label} is ${already ? 'already booted' : `not ${states.join(' or ')}`} (state: ${this.state})${hint}`);
  }

  /**
   * The broker's view, the one place the VM's state changes: a new guest generation (boot,
   * restore, reset, shutdown, death) takes the old guest's files and streams with it, and a
   * stream the broker no longer holds is closed here too.
   */
  apply(view: VmView): void {
    const newGuest = view.generation !== this.generation;
    this.state = this.released ? 'shutdown' : view.state;
    this.cid = view.cid;
    this.deadReason = view.deadReason;
    this.endReason = view.endReason;
    this.generation = view.generation;
    if (newGuest || (view.state !== 'booted' && view.state !== 'paused')) {
      this.forgetGuestResources();
      return;
    }
    const held = new Set(view.streams);
    for (const s of [...this.openStreams]) if (!held.has(s.streamId)) s.forget();
  }

  markReleased(): void {
    this.released = true;
    this.state = 'shutdown';
    // Gone with its scope: whatever lab still lists it (a sub-lab, or the root reached through a
    // saved reference) forgets it, so the name can be declared again.
    if (this.lab?.vms.get(this.name) === this) this.lab.vms.delete(this.name);
    this.lab = null;
    for (const nic of this.nics.values()) nic.bridge.forgetMember(this.name);
    this.nics.clear();
    this.disks.clear();
    this.forgetGuestResources();
  }

  /** The guest's files and the broker's streams of this VM are gone (shutdown, reset, death). */
  forgetGuestResources(): void {
    for (const f of [...this.openFiles]) f.forget();
    for (const s of [...this.openStreams]) s.forget();
  }

  /** Validates the state and builds the `vm.boot` args (lab:boot posts several at once). */
  bootArgs(fn: string, bootOptions: BootOptions): RpcArgs<'vm.boot'> {
    this.expectState(fn, ['created', 'shutdown']);
    return { vmId: this.vmId, opts: mergeBootOptions(this.createOptions, bootOptions) };
  }

  /** Boots with `bootOptions` over the creation options. */
  boot(fn: string, bootOptions: BootOptions): void {
    const args = this.bootArgs(fn, bootOptions);
    let reply;
    try {
      reply = this.rt.rpc.call('vm.boot', args);
    } catch (err) {
      throw translateRpcError(this, err, fn);
    }
    this.apply(reply.vm);
  }

  /** One lifecycle RPC: its reply's view is applied, and so is its error's. */
  lifecycle<K extends 'vm.shutdown' | 'vm.pause' | 'vm.resume' | 'vm.reset' | 'vm.power_button' | 'vm.info' | 'vm.kill' | 'vm.wakeup'>(fn: string, op: K): RpcReply<K> {
    let reply: RpcReply<K>;
    try {
      reply = this.rt.rpc.call(op, { vmId: this.vmId });
    } catch (err) {
      throw translateRpcError(this, err, fn);
    }
    this.apply(reply.vm);
    return reply;
  }

  shutdown(fn: string): void {
    if (this.released || this.state === 'shutdown') return;
    this.lifecycle(fn, 'vm.shutdown');
  }

  refreshInfo(fn: string): void {
    if (this.released) return;
    this.lifecycle(fn, 'vm.info');
  }
}

function pushSelf(a: Args): number {
  lua.lua_pushvalue(a.L, 1);
  return 1;
}

const kLifecycle: Record<string, Method<Vm>> = {
  boot(vm, a) {
    vm.boot(a.label, readBootOptions(a, 1, 'opts'));
    return pushSelf(a);
  },
  shutdown(vm, a) {
    vm.shutdown(a.label);
    return 0;
  },
  pause(vm, a) {
    vm.expectState(a.label, ['booted']);
    vm.lifecycle(a.label, 'vm.pause');
    return 0;
  },
  resume(vm, a) {
    vm.expectState(a.label, ['paused']);
    vm.lifecycle(a.label, 'vm.resume');
    return 0;
  },
  reset(vm, a) {
    vm.expectState(a.label, ['booted']);
    vm.lifecycle(a.label, 'vm.reset');
    return 0;
  },
  /** QMP system_wakeup: a guest that suspended itself (echo mem > /sys/power/state) runs again. */
  wakeup(vm, a) {
    vm.expectState(a.label, ['booted']);
    vm.lifecycle(a.label, 'vm.wakeup');
    return 0;
  },
  power_button(vm, a) {
    vm.expectState(a.label, ['booted']);
    const { graceful } = vm.lifecycle(a.label, 'vm.power_button');
    // true when the guest powered itself off; false when it ignored the button and was stopped.
    lua.lua_pushboolean(a.L, graceful);
    return 1;
  },
  close(vm, a) {
    vm.shutdown(a.label);
    return 0;
  },
  snapshot(vm, a) {
    vm.expectState(a.label, ['booted', 'paused']);
    if (vm.openStreams.size > 0) {
      const list = [...vm.openStreams].map((s) => s.describe()).join('; ');
      throw a.error(`refusing to snapshot ${vm.label} while ${vm.openStreams.size} stream(s) are open: ${list}; close them first`);
    }
    const p = a.isNil(1) ? undefined : path.resolve(a.string(1, 'path'));
    let reply;
    try {
      reply = a.rt.rpc.call('vm.snapshot', p === undefined ? { vmId: vm.vmId } : { vmId: vm.vmId, path: p });
    } catch (err) {
      throw translateRpcError(vm, err, a.label);
    }
    vm.apply(reply.vm);
    a.rt.push(SnapshotClass, new Snapshot(reply.path, reply.bytes), a.L);
    return 1;
  },
  restore(vm, a) {
    const snap = a.rt.toObject(a.L, a.idx(1), SnapshotClass);
    const p = snap ? snap.path : a.type(1) === lua.LUA_TSTRING ? path.resolve(a.string(1, 'snapshot')) : undefined;
    if (p === undefined) throw a.error(`argument #1 (snapshot) must be a Snapshot or a path string, got ${a.got(a.idx(1))}`);
    vm.expectState(a.label, ['created', 'shutdown'], '; shut it down first');
    let reply;
    try {
      reply = a.rt.rpc.call('vm.restore', { vmId: vm.vmId, path: p });
    } catch (err) {
      throw translateRpcError(vm, err, a.label);
    }
    vm.apply(reply.vm);
    return 0;
  },
};

const kAccessors: Record<string, Method<Vm>> = {
  name(vm, a) {
    pushText(a.L, vm.name);
    return 1;
  },
  profile(vm, a) {
    pushText(a.L, vm.profile);
    return 1;
  },
  state(vm, a) {
    vm.refreshInfo(a.label);
    pushText(a.L, vm.state);
    return 1;
  },
  cid(vm, a) {
    if (vm.cid === null || vm.state === 'created') lua.lua_pushnil(a.L);
    else lua.lua_pushinteger(a.L, vm.cid);
    return 1;
  },
  is_quiescent(vm, a) {
    lua.lua_pushboolean(a.L, vm.openFiles.size === 0 && vm.openStreams.size === 0);
    return 1;
  },
  open_file_count(vm, a) {
    lua.lua_pushinteger(a.L, vm.openFiles.size);
    return 1;
  },
  open_stream_count(vm, a) {
    lua.lua_pushinteger(a.L, vm.openStreams.size);
    return 1;
  },
  /** vm:attach_disk({id =, size =, image =, readonly =}): hot-plugged into a booted guest, else at boot. */
  attach_disk(vm, a) {
    if (vm.released) throw a.error(`${vm.label} was torn down at the end of its scope`);
    const spec = a.read(1, 'disk', readDiskSpec);
    let reply;
    try {
      reply = a.rt.rpc.call('disk.attach', { vmId: vm.vmId, disk: spec });
    } catch (err) {
      throw translateRpcError(vm, err, a.label);
    }
    const disk = new GuestDisk(vm, spec.id, reply.disk);
    vm.disks.set(spec.id, disk);
    a.rt.push(DiskClass, disk, a.L);
    return 1;
  },
  disk(vm, a) {
    const id = a.string(1, 'id');
    let disk = vm.disks.get(id);
    if (!disk) {
      let reply;
      try {
        reply = a.rt.rpc.call('disk.info', { vmId: vm.vmId, id });
      } catch (err) {
        throw translateRpcError(vm, err, a.label);
      }
      disk = new GuestDisk(vm, id, reply.disk);
      vm.disks.set(id, disk);
    }
    a.rt.push(DiskClass, disk, a.L);
    return 1;
  },
  /** vm:nic(bridge_name) or vm:nic("eth0"): the NIC on that bridge, or with that interface name. */
  nic(vm, a) {
    const key = a.string(1, 'bridge_or_ifname');
    const nic = vm.nics.get(key) ?? [...vm.nics.values()].find((n) => n.info(a).view.ifname === key);
    if (!nic) {
      const known = [...vm.nics.values()].map((n) => `${n.bridge.name}${n.view.ifname ? ` (${n.view.ifname})` : ''}`);
      throw a.error(`${vm.label} has no NIC on a bridge or interface named \`${key}\` (NICs: ${known.join(', ') || 'none'}); attach it with bridge:attach(vm)`);
    }
    a.rt.push(NicClass, nic, a.L);
    return 1;
  },
  console(vm, a) {
    a.rt.push(ConsoleClass, vm.console, a.L);
    return 1;
  },
  clock(vm, a) {
    a.rt.push(ClockClass, vm.clock, a.L);
    return 1;
  },
};

export const VmClass: LuaClass<Vm> = {
  typeName: 'VM',
  selfName: 'vm',
  toString: (vm) => `vm(${vm.name} state=${vm.state} cid=${vm.cid ?? 'nil'})`,
  // The legacy methods (seed 002) join; where a name is in both APIs, vm.legacy picks the shape.
  methods: withLegacyVm<Vm>({
    ...kLifecycle,
    ...kAccessors,
    ...kVmFileMethods,
    run: runMethod,
    run_async: runAsyncMethod,
    syscall: syscallMethod,
    syscall_async: syscallAsyncMethod,
    ioctl: ioctlMethod,
    read_mem: readMemMethod,
    batch: batchMethod,
    spawn_worker: spawnWorkerMethod,
  }),
};

/** For R-style reads of a VM argument (lab:include). */
export function readVm(a: Args, idx: number): Vm | null {
  return a.rt.toObject(a.L, idx, VmClass);
}
