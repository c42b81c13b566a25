// Nic (reference §1.14): one VM's attachment to one bridge, from `vm:nic(x)` or
// `bridge:nic(vm)`. Its address, MAC and interface name come from the broker (the guest gets
// them without work); counters are the guest's point of view; disconnect/reconnect take the
// link down and up, seen by the guest's carrier and by the switch.

import path from 'node:path';
import { lua, type lua_State } from 'fengari';
import type { NicView } from '../protocol/rpc.js';
import { R, type Args, type LuaClass } from './args.js';
import { openCaptureStream, pushStream } from './stream.js';
import type { VmHandle } from './guest.js';
import { translateRpcError } from './guest.js';
import { LuaError } from './errors.js';
import { pushIntegral, pushText, setField } from './values.js';

/** What a Nic needs of its bridge (bridge.ts's Bridge), declared here so nic.ts stays below it. */
export interface NicBridge {
  readonly bridgeId: number;
  readonly name: string;
  readonly closed: boolean;
  /** Pushes the bridge's userdata. */
  push(L: lua_State): void;
  /** The VM left (its scope ended): its NIC is gone from the bridge. */
  forgetMember(vmName: string): void;
}

export class Nic {
  constructor(
    readonly vm: VmHandle,
    readonly bridge: NicBridge,
    /** The broker's last view of it. */
    public view: NicView,
  ) {}

  get label(): string {
    return `nic of ${this.vm.label} on bridge \`${this.bridge.name}\``;
  }

  ensureOpen(fn: string): void {
    if (this.bridge.closed) throw new LuaError(`${fn}: bridge \`${this.bridge.name}\` is closed`);
  }

  /** Refreshes the view (ifname and plugging change as the guest boots and stops). */
  info(a: Args): { view: NicView; counters: Record<string, number> } {
    this.ensureOpen(a.label);
    try {
      const reply = a.rt.rpc.call('nic.info', { bridgeId: this.bridge.bridgeId, vmId: this.vm.vmId });
      this.view = reply.nic;
      return { view: reply.nic, counters: { ...reply.counters } };
    } catch (err) {
      throw translateRpcError(this.vm, err, a.label);
    }
  }
}

function setLink(nic: Nic, a: Args, up: boolean): number {
  nic.ensureOpen(a.label);
  try {
    nic.view = a.rt.rpc.call('nic.link', { bridgeId: nic.bridge.bridgeId, vmId: nic.vm.vmId, up }).nic;
  } catch (err) {
    throw translateRpcError(nic.vm, err, a.label);
  }
  return 0;
}

function pushOptional(L: lua_State, text: string | null): void {
  if (text === null) lua.lua_pushnil(L);
  else pushText(L, text);
}

export const NicClass: LuaClass<Nic> = {
  typeName: 'Nic',
  selfName: 'nic',
  toString: (n) => `nic(${n.vm.name} on ${n.bridge.name} ${n.view.ip ?? 'manual'} ${n.view.mac})`,
  methods: {
    ip(nic, a) {
      pushOptional(a.L, nic.info(a).view.ip);
      return 1;
    },
    mac(nic, a) {
      pushText(a.L, nic.view.mac);
      return 1;
    },
    /** nil until the NIC is plugged into a running guest. */
    ifname(nic, a) {
      pushOptional(a.L, nic.info(a).view.ifname);
      return 1;
    },
    counters(nic, a) {
      const { counters } = nic.info(a);
      const L = a.L;
      lua.lua_createtable(L, 0, 6);
      for (const [k, v] of Object.entries(counters)) setField(L, k, () => pushIntegral(L, v));
      return 1;
    },
    is_link_up(nic, a) {
      lua.lua_pushboolean(a.L, nic.info(a).view.linkUp);
      return 1;
    },
    disconnect(nic, a) {
      return setLink(nic, a, false);
    },
    reconnect(nic, a) {
      return setLink(nic, a, true);
    },
    vm_name(nic, a) {
      pushText(a.L, nic.vm.name);
      return 1;
    },
    bridge(nic, a) {
      nic.bridge.push(a.L);
      return 1;
    },
    /** nic:capture({file = path}?): what this VM sent and received on the bridge, as pcap bytes. */
    capture(nic, a) {
      nic.ensureOpen(a.label);
      const o = a.options(1, 'opts', { file: R.string });
      const bridge = { bridgeId: nic.bridge.bridgeId, label: `bridge \`${nic.bridge.name}\`` };
      pushStream(a, openCaptureStream(a, bridge, nic.vm, o.file !== undefined ? path.resolve(o.file) : undefined));
      return 1;
    },
  },
};
