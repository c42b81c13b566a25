// Bridge (reference §1.13, DESIGN §5 and §10): one userspace switch in the broker. VMs join with
// attach (a booted VM gets its NIC at once, others at boot) and get an address on the bridge's
// subnet and each other's names in /etc/hosts. Partitions, isolation and impairments are switch
// code: no root. Unlike the reference, latency, loss and bandwidth combine, directional rules may
// name one destination, and jitter, duplication and reordering are there too. The uplink
// (slirp in a guest-less QEMU) and routes between bridges (a router in the broker) are real,
// where the reference needs nft or only records the graph.

import path from 'node:path';
import { lua, type lua_State } from 'fengari';
import type { BridgeFault, BridgeView, NetImpairment, NicView } from '../protocol/rpc.js';
import { R, type Args, type BindingRuntime, type LuaClass, type Method, type Reader } from './args.js';
import { LuaError } from './errors.js';
import { translateRpcError, type VmHandle } from './guest.js';
import { Nic, NicClass, type NicBridge } from './nic.js';
import { openCaptureStream, pushStream } from './stream.js';
import { pushIntegral, pushPlain, pushText, setField, typeName } from './values.js';

/** Reads a VM argument (a VM userdata, or a VM's name in the bridge's lab). */
export type VmReader = (a: Args, idx: number, what: string) => VmHandle;

export class Bridge implements NicBridge {
  closed = false;
  /** By VM name; set when a VM is attached. */
  readonly nics = new Map<string, Nic>();
  view: BridgeView;

  constructor(
    readonly rt: BindingRuntime,
    readonly bridgeId: number,
    readonly name: string,
    view: BridgeView,
    readonly readVm: VmReader,
  ) {
    this.view = view;
  }

  get label(): string {
    return `bridge \`${this.name}\``;
  }

  push(L: lua_State): void {
    this.rt.push(BridgeClass, this, L);
  }

  ensureOpen(fn: string): void {
    if (this.closed) throw new LuaError(`${fn}: ${this.label} is closed`);
  }

  forgetMember(vmName: string): void {
    this.nics.delete(vmName);
  }

  /** Gone with its scope (or closed): its NICs leave their VMs. */
  markClosed(): void {
    this.closed = true;
    for (const nic of this.nics.values()) nic.vm.nics.delete(this.name);
  }

  fault(a: Args, fault: BridgeFault): void {
    this.ensureOpen(a.label);
    try {
      this.view = this.rt.rpc.call('bridge.fault', { bridgeId: this.bridgeId, fault }).bridge;
    } catch (err) {
      throw a.error((err as Error).message);
    }
  }

  attach(a: Args, vm: VmHandle): void {
    this.ensureOpen(a.label);
    let reply;
    try {
      reply = this.rt.rpc.call('bridge.attach', { bridgeId: this.bridgeId, vmId: vm.vmId });
    } catch (err) {
      throw translateRpcError(vm, err, a.label);
    }
    this.view = reply.bridge;
    this.adopt(vm, reply.nic);
  }

  /** `vm`'s NIC on this bridge, as the broker now has it (attach, lab:restore). */
  adopt(vm: VmHandle, view: NicView): void {
    const nic = this.nics.get(vm.name) ?? new Nic(vm, this, view);
    nic.view = view;
    this.nics.set(vm.name, nic);
    vm.nics.set(this.name, nic);
  }

  /** A member's name: a VM (userdata or name) that is attached. */
  memberName(a: Args, idx: number, what: string): string {
    const name = lua.lua_type(a.L, idx) === lua.LUA_TSTRING ? R.string(a, idx, what) : this.readVm(a, idx, what).name;
    if (!this.nics.has(name)) {
      const members = [...this.nics.keys()];
      throw a.error(`${what}: \`${name}\` is not attached to ${this.label} (members: ${members.join(', ') || 'none'}); call bridge:attach first`);
    }
    return name;
  }
}

const member = (bridge: Bridge): Reader<string> => (a, idx, what) => bridge.memberName(a, idx, what);

/** Percent 0..100 as the reference takes it, to a probability. */
function percent(a: Args, idx: number, what: string): number {
  const pct = R.number(a, idx, what);
  if (pct < 0 || pct > 100) throw a.error(`${what} must be a percentage from 0 to 100, got ${pct}`);
  return pct / 100;
}

function milliseconds(a: Args, idx: number, what: string): number {
  const ms = R.number(a, idx, what);
  if (ms < 0 || ms > 600_000) throw a.error(`${what} must be from 0 to 600000 milliseconds, got ${ms}`);
  return ms;
}

function bitsPerSecond(a: Args, idx: number, what: string): number {
  const bps = R.number(a, idx, what);
  if (bps < 0 || (bps > 0 && bps < 8)) throw a.error(`${what} must be 0 (unlimited) or at least 8 bits per second, got ${bps}`);
  return bps;
}

/**
 * `name(value)` for the whole bridge, or `name({key = value, from = vm, to = vm})` for one
 * direction (`to` absent: every destination of `from`); `directionalOnly` requires the table.
 */
function impairment(key: string, field: keyof NetImpairment, read: Reader<number>, directionalOnly = false): Method<Bridge> {
  return (bridge, a) => {
    const L = a.L;
    if (lua.lua_type(L, a.idx(1)) === lua.LUA_TTABLE) {
      const spec = { from: member(bridge), to: member(bridge), [key]: read, ...(field === 'latencyMs' ? { jitter_ms: milliseconds } : {}) };
      const o = a.options(1, 'rule', spec) as Record<string, unknown>;
      if (o[key] === undefined) throw a.error(`rule needs \`${key}\`; accepted keys: ${Object.keys(spec).join(', ')}`);
      const values: Partial<NetImpairment> = { [field]: o[key] as number };
      if (o['jitter_ms'] !== undefined) values.jitterMs = o['jitter_ms'] as number;
      if (directionalOnly && o['from'] === undefined) throw a.error('a directional rule needs `from` (and optionally `to`)');
      if (o['to'] !== undefined && o['from'] === undefined) throw a.error('`to` needs `from`');
      const fault: BridgeFault = { kind: 'impair', values };
      if (o['from'] !== undefined) fault.from = o['from'] as string;
      if (o['to'] !== undefined) fault.to = o['to'] as string;
      bridge.fault(a, fault);
      return 0;
    }
    if (directionalOnly) throw a.error(`a directional rule is a table: {from = vm, to = vm, ${key} = ...}`);
    bridge.fault(a, { kind: 'impair', values: { [field]: read(a, a.idx(1), key) } });
    return 0;
  };
}

/** `(a, b)` symmetric, or `({from = a, to = b})` one direction. */
function pair(bridge: Bridge, a: Args): { from: string; to: string; symmetric: boolean } {
  if (lua.lua_type(a.L, a.idx(1)) === lua.LUA_TTABLE) {
    const o = a.options(1, 'direction', { from: member(bridge), to: member(bridge) });
    if (o.from === undefined || o.to === undefined) throw a.error('a direction needs both `from` and `to`');
    return { from: o.from, to: o.to, symmetric: false };
  }
  const from = bridge.memberName(a, a.idx(1), 'argument #1');
  const to = bridge.memberName(a, a.idx(2), 'argument #2');
  if (from === to) throw a.error(`cannot partition \`${from}\` from itself`);
  return { from, to, symmetric: true };
}

/** `route(b)` / `route({b, c})`: other open bridges, each once. */
function peers(bridge: Bridge, a: Args): Bridge[] {
  const L = a.L;
  const one = (idx: number, what: string): Bridge => {
    const peer = a.rt.toObject(L, idx, BridgeClass);
    if (!peer) throw a.error(`${what}: expected a bridge (from provium:bridge) or a list of bridges, got ${typeName(L, idx)}`);
    if (peer.closed) throw a.error(`${what}: bridge \`${peer.name}\` is closed`);
    if (peer === bridge) throw a.error(`${what}: cannot route ${bridge.label} to itself`);
    return peer;
  };
  const list: Bridge[] = [];
  const idx = a.idx(1);
  if (lua.lua_type(L, idx) === lua.LUA_TTABLE && !a.rt.toObject(L, idx, BridgeClass)) {
    for (let i = 1; i <= lua.lua_rawlen(L, idx); i++) {
      lua.lua_rawgeti(L, idx, i);
      list.push(one(lua.lua_gettop(L), `list[${i}]`));
      lua.lua_pop(L, 1);
    }
    if (list.length === 0) throw a.error('the list of bridges is empty');
  } else {
    list.push(one(idx, 'argument #1'));
  }
  if (new Set(list).size !== list.length) throw a.error('the list names a bridge twice');
  return list;
}

function routing(kind: 'route' | 'unroute'): Method<Bridge> {
  return (bridge, a) => {
    bridge.ensureOpen(a.label);
    const list = peers(bridge, a);
    bridge.fault(a, { kind, peers: list.map((p) => p.bridgeId) });
    // The peers' views changed too (routes are both ways).
    for (const peer of list) {
      try {
        peer.view = a.rt.rpc.call('bridge.info', { bridgeId: peer.bridgeId }).bridge;
      } catch {
        // Closed since: its next call says so.
      }
    }
    return 0;
  };
}

export const BridgeClass: LuaClass<Bridge> = {
  typeName: 'Bridge',
  selfName: 'bridge',
  toString: (b) => `bridge(${b.name} ${b.view.subnet}: ${b.view.members.join(', ') || 'no members'})`,
  methods: {
    name(bridge, a) {
      pushText(a.L, bridge.name);
      return 1;
    },
    subnet(bridge, a) {
      pushText(a.L, bridge.view.subnet);
      return 1;
    },
    attach(bridge, a) {
      const L = a.L;
      const vms: VmHandle[] = [];
      // A VM is a userdata; a table is a list of VMs (or names).
      if (lua.lua_type(L, a.idx(1)) === lua.LUA_TTABLE) {
        const idx = a.idx(1);
        for (let i = 1; i <= lua.lua_rawlen(L, idx); i++) {
          lua.lua_rawgeti(L, idx, i);
          vms.push(bridge.readVm(a, lua.lua_gettop(L), `list[${i}]`));
          lua.lua_pop(L, 1);
        }
      } else {
        vms.push(bridge.readVm(a, a.idx(1), 'argument #1'));
      }
      // A list is validated before anything is attached.
      const names = new Set<string>();
      for (const vm of vms) {
        if (names.has(vm.name)) throw a.error(`the list names \`${vm.name}\` twice`);
        names.add(vm.name);
      }
      for (const vm of vms) bridge.attach(a, vm);
      lua.lua_pushvalue(L, 1);
      return 1;
    },
    detach(bridge, a) {
      bridge.ensureOpen(a.label);
      const vm = bridge.readVm(a, a.idx(1), 'argument #1');
      try {
        bridge.view = a.rt.rpc.call('bridge.detach', { bridgeId: bridge.bridgeId, vmId: vm.vmId }).bridge;
      } catch (err) {
        throw translateRpcError(vm, err, a.label);
      }
      bridge.nics.delete(vm.name);
      vm.nics.delete(bridge.name);
      return 0;
    },
    members(bridge, a) {
      pushPlain(a.L, [...bridge.nics.keys()]);
      return 1;
    },
    nic(bridge, a) {
      const name = bridge.memberName(a, a.idx(1), 'argument #1');
      a.rt.push(NicClass, bridge.nics.get(name)!, a.L);
      return 1;
    },
    partition(bridge, a) {
      bridge.fault(a, { kind: 'partition', ...pair(bridge, a) });
      return 0;
    },
    unpartition(bridge, a) {
      bridge.fault(a, { kind: 'unpartition', ...pair(bridge, a) });
      return 0;
    },
    partition_all(bridge, a) {
      bridge.fault(a, { kind: 'partition_all' });
      return 0;
    },
    restore_all(bridge, a) {
      bridge.fault(a, { kind: 'restore_all' });
      return 0;
    },
    is_partitioned(bridge, a) {
      const { from, to, symmetric } = pair(bridge, a);
      const cut = (f: string, t: string): boolean => bridge.view.partitions.some((p) => p.from === f && p.to === t);
      // Symmetric form: cut when either direction is.
      lua.lua_pushboolean(a.L, cut(from, to) || (symmetric && cut(to, from)));
      return 1;
    },
    isolate(bridge, a) {
      bridge.fault(a, { kind: 'isolate', vm: bridge.memberName(a, a.idx(1), 'argument #1') });
      return 0;
    },
    unisolate(bridge, a) {
      bridge.fault(a, { kind: 'unisolate', vm: bridge.memberName(a, a.idx(1), 'argument #1') });
      return 0;
    },
    is_isolated(bridge, a) {
      lua.lua_pushboolean(a.L, bridge.view.isolated.includes(bridge.memberName(a, a.idx(1), 'argument #1')));
      return 1;
    },
    add_latency: impairment('ms', 'latencyMs', milliseconds),
    add_directional_latency: impairment('ms', 'latencyMs', milliseconds, true),
    drop_rate: impairment('p', 'dropRate', percent),
    directional_drop_rate: impairment('p', 'dropRate', percent, true),
    bandwidth_limit: impairment('bps', 'bandwidthBps', bitsPerSecond),
    duplicate_rate: impairment('p', 'duplicateRate', percent),
    reorder_rate: impairment('p', 'reorderRate', percent),
    reset(bridge, a) {
      bridge.fault(a, { kind: 'reset' });
      return 0;
    },
    latency_ms(bridge, a) {
      lua.lua_pushnumber(a.L, bridge.view.impairment.latencyMs);
      return 1;
    },
    drop_rate_pct(bridge, a) {
      lua.lua_pushnumber(a.L, bridge.view.impairment.dropRate * 100);
      return 1;
    },
    bandwidth_bps(bridge, a) {
      pushIntegral(a.L, bridge.view.impairment.bandwidthBps);
      return 1;
    },
    close(bridge, a) {
      if (bridge.closed) return 0;
      try {
        a.rt.rpc.call('scope.close', { vmIds: [], bridgeIds: [bridge.bridgeId] });
      } catch (err) {
        throw a.error((err as Error).message);
      }
      bridge.markClosed();
      return 0;
    },
    /** bridge:capture({file = path}?): every frame entering the bridge, as pcap bytes (and to a pcap file). */
    capture(bridge, a) {
      bridge.ensureOpen(a.label);
      const o = a.options(1, 'opts', { file: R.string });
      pushStream(a, openCaptureStream(a, bridge, null, o.file !== undefined ? path.resolve(o.file) : undefined));
      return 1;
    },
    /** Outbound access through QEMU's user-mode networking; guests get a default route and a nameserver. */
    enable_uplink(bridge, a) {
      bridge.fault(a, { kind: 'uplink', enabled: true });
      return 0;
    },
    disable_uplink(bridge, a) {
      bridge.fault(a, { kind: 'uplink', enabled: false });
      return 0;
    },
    /** {gateway = ip, dns = ip} while the uplink is on, else nil. */
    uplink(bridge, a) {
      const L = a.L;
      const uplink = bridge.view.uplink;
      if (!uplink) {
        lua.lua_pushnil(L);
        return 1;
      }
      lua.lua_createtable(L, 0, 2);
      setField(L, 'gateway', () => pushText(L, uplink.gateway));
      setField(L, 'dns', () => pushText(L, uplink.dns));
      return 1;
    },
    /** route(b) or route({b, c}): IPv4 forwarding both ways through the broker's router. */
    route: routing('route'),
    unroute: routing('unroute'),
    /** Names of the bridges this one routes to. */
    routes(bridge, a) {
      if (!bridge.closed) {
        try {
          bridge.view = a.rt.rpc.call('bridge.info', { bridgeId: bridge.bridgeId }).bridge;
        } catch (err) {
          throw a.error((err as Error).message);
        }
      }
      pushPlain(a.L, bridge.closed ? [] : bridge.view.routes);
      return 1;
    },
    /** The router's address on this bridge's subnet (the next hop for routed bridges). */
    router_ip(bridge, a) {
      pushText(a.L, bridge.view.router);
      return 1;
    },
  },
};
