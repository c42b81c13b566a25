// A file's bridges: one userspace switch each (src/net), the NICs that join VMs to them, and the
// addresses the guests get without work. A NIC is hot-plugged into a running guest (at attach,
// or right after its boot or restore, so networked VMs still boot from their boot snapshot);
// the broker then configures the interface through the agent (link up, the address) and writes
// `/etc/hosts` with every VM's name on the guest's bridges (and on the bridges they route to).
//
// Each subnet reserves three addresses: .1, the uplink's gateway (slirp's host address), .3 its
// DNS forwarder, and the last host, the broker's router (routes between bridges). Uplinks and
// routes change in the background (they start QEMU and reconfigure guests): `bridge.fault`
// queues the change and `bridge.info` waits for it, so the RPC dispatch needs no new op.

import { rm } from 'node:fs/promises';
import path from 'node:path';
import { Router } from '../net/router.js';
import { Switch, type FaultEvent } from '../net/switch.js';
import { ownedTempDir } from '../vmm/qemu.js';
import type { EventBus } from '../events/bus.js';
import type { BridgeFault, BridgeView, LabSnapshotManifest, NetImpairment, NicCounters, NicView } from '../protocol/rpc.js';
import type { ManagedVm } from './managed-vm.js';
import type { ParkedNics } from './parked-nics.js';
import { runGuestScript, waitForSysfsEntry } from './guest-script.js';
import { BrokerError } from './rpc-server.js';
import { BridgeUplink } from './uplink.js';

/** How long a plugged NIC's netdev may take to dial the switch, and the guest to show the interface. */
const kNicConnectTimeoutMs = 10_000;
const kConfigureTimeoutMs = 15_000;
/** The router's port on each routed bridge: a name no VM can have. */
const kRouterPort = '@router';
const kGatewayHost = 1;
const kDnsHost = 3;

interface Nic {
  vm: ManagedVm;
  /** The netdev id in QEMU, unique per VM. */
  id: string;
  mac: string;
  /** Host number in the bridge's subnet. */
  host: number;
  socketPath: string;
  ifname: string | null;
  linkUp: boolean;
  /** The guest generation it was plugged into; another generation means it is gone. */
  pluggedGeneration: number | null;
}

/** An IPv4 /N subnet. */
export interface Subnet {
  base: number;
  prefixLength: number;
}

export function parseSubnet(text: string): Subnet {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const prefixLength = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || prefixLength < 8 || prefixLength > 29) {
    throw new BrokerError(`subnet \`${text}\` is not an IPv4 network like \`192.168.5.0/24\` (prefix length 8 to 29)`);
  }
  const mask = prefixLength === 0 ? 0 : (~0 << (32 - prefixLength)) >>> 0;
  const base = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  return { base: (base & mask) >>> 0, prefixLength };
}

export function formatIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

class Bridge {
  readonly nics = new Map<number, Nic>();
  /** Run when the bridge closes (its capture streams end first). */
  readonly onClose: (() => Promise<void>)[] = [];
  /** Set while the uplink runs. */
  uplink: BridgeUplink | null = null;
  /** Bridges this one routes to, by id (symmetric). */
  readonly routes = new Set<number>();
  private _nextHost = 2;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly subnet: Subnet,
    readonly manual: boolean,
    readonly sw: Switch,
    readonly dir: string,
  ) {}

  /** The router takes the last host of the subnet. */
  get routerHost(): number {
    return 2 ** (32 - this.subnet.prefixLength) - 2;
  }

  /** A restored NIC keeps its address: later NICs are numbered past it. */
  reserveHost(host: number): void {
    if (host >= this._nextHost) this._nextHost = host + 1;
  }

  nextHost(): number {
    let host = this._nextHost++;
    while (host === kGatewayHost || host === kDnsHost) host = this._nextHost++;
    if (host >= this.routerHost) {
      throw new BrokerError(`bridge \`${this.name}\`: subnet ${formatIp(this.subnet.base)}/${this.subnet.prefixLength} has no free address left`);
    }
    return host;
  }

  ipOf(nic: Nic): string {
    return this.address(nic.host);
  }

  address(host: number): string {
    return formatIp((this.subnet.base + host) >>> 0);
  }

  get cidr(): string {
    return `${formatIp(this.subnet.base)}/${this.subnet.prefixLength}`;
  }

  /** The subnet holds `ip` (a number). */
  contains(ip: number): boolean {
    const mask = (~0 << (32 - this.subnet.prefixLength)) >>> 0;
    return ((ip & mask) >>> 0) === this.subnet.base;
  }
}

export interface NetworkDeps {
  bus: EventBus;
  displayPath: string;
  /** The run's seed for every random network decision. */
  seed: bigint;
  /** A run-wide counter, so each bridge gets a distinct default subnet 10.N.0.0/24. */
  nextSubnetIndex: () => number;
}

let nextMac = 1;

export class SessionNetwork {
  private readonly _bridges = new Map<number, Bridge>();
  private _nextBridgeId = 1;
  /** One router for every routed bridge of the file; made on the first route. */
  private _router: Router | undefined;
  /** Uplink and route changes, one at a time; `info()` waits for them. */
  private _work: Promise<void> = Promise.resolve();

  constructor(private readonly _deps: NetworkDeps) {}

  async create(name: string, subnetText: string | undefined, addressing: 'auto' | 'manual' = 'auto'): Promise<{ bridgeId: number; bridge: BridgeView }> {
    const subnet = subnetText !== undefined ? parseSubnet(subnetText) : parseSubnet(`10.${1 + (this._deps.nextSubnetIndex() % 250)}.0.0/24`);
    const dir = await ownedTempDir('provium-br-');   // swept after a killed run (temp-dirs.ts)
    const sw = new Switch({ name, seed: this._deps.seed, onFault: (event) => this._onFault(event) });
    const bridge = new Bridge(this._nextBridgeId++, name, subnet, addressing === 'manual', sw, dir);
    this._bridges.set(bridge.id, bridge);
    return { bridgeId: bridge.id, bridge: this._view(bridge) };
  }

  /** Puts `vm` on the bridge; a running guest gets its NIC now. */
  async attach(bridgeId: number, vm: ManagedVm): Promise<{ nic: NicView; bridge: BridgeView }> {
    const bridge = this._bridge(bridgeId);
    let nic = bridge.nics.get(vm.id);
    if (!nic) {
      const mac = formatMacAddress(nextMac++);
      nic = { vm, id: `net${bridge.id}`, mac, host: bridge.nextHost(), socketPath: path.join(bridge.dir, `p${vm.id}.sock`), ifname: null, linkUp: true, pluggedGeneration: null };
      bridge.nics.set(vm.id, nic);
      await bridge.sw.addPort(vm.name, nic.socketPath);
    }
    if (vm.state === 'booted') {
      await this._plug(bridge, nic);
      await this._writeHosts();
    }
    return { nic: this._nicView(bridge, nic), bridge: this._view(bridge) };
  }

  async detach(bridgeId: number, vm: ManagedVm): Promise<BridgeView> {
    const bridge = this._bridge(bridgeId);
    const nic = bridge.nics.get(vm.id);
    if (!nic) throw new BrokerError(`vm \`${vm.name}\` is not on bridge \`${bridge.name}\`; members: ${this._members(bridge).join(', ') || '(none)'}`);
    if (this._isPlugged(nic)) await vm.unplugNic(nic.id);
    bridge.nics.delete(vm.id);
    await bridge.sw.removePort(vm.name);
    await this._writeHosts();
    return this._view(bridge);
  }

  async fault(bridgeId: number, fault: BridgeFault): Promise<BridgeView> {
    const bridge = this._bridge(bridgeId);
    const sw = bridge.sw;
    try {
      switch (fault.kind) {
        case 'partition':
        case 'unpartition': {
          this._requireMembers(bridge, [fault.from, fault.to]);
          const apply = fault.kind === 'partition' ? sw.partition.bind(sw) : sw.unpartition.bind(sw);
          if (fault.symmetric) apply(fault.from, fault.to);
          else apply({ from: fault.from, to: fault.to });
          break;
        }
        case 'partition_all':
          sw.partitionAll();
          break;
        case 'restore_all':
          sw.restoreAll();
          break;
        case 'reset':
          sw.reset();
          break;
        case 'isolate':
        case 'unisolate':
          this._requireMembers(bridge, [fault.vm]);
          if (fault.kind === 'isolate') sw.isolate(fault.vm);
          else sw.unisolate(fault.vm);
          break;
        case 'impair': {
          const scope = fault.from !== undefined ? { from: fault.from, ...(fault.to !== undefined ? { to: fault.to } : {}) } : undefined;
          if (scope) this._requireMembers(bridge, [scope.from, ...(scope.to !== undefined ? [scope.to] : [])]);
          sw.impair(fault.values, scope);
          break;
        }
        case 'uplink': {
          const enabled = fault.enabled;
          await this._serialized(() => (enabled ? this._enableUplink(bridge) : this._disableUplink(bridge)));
          break;
        }
        case 'route':
        case 'unroute': {
          const peers = fault.peers.map((id) => this._peer(bridge, id));
          await this._serialized(() => (fault.kind === 'route' ? this._route(bridge, peers) : this._unroute(bridge, peers)));
          break;
        }
      }
    } catch (err) {
      if (err instanceof BrokerError) throw err;
      // The switch validates values (a drop rate of 1.5, a negative latency): its message names them.
      throw new BrokerError(`bridge \`${bridge.name}\`: ${(err as Error).message}`);
    }
    return this._view(bridge);
  }

  async info(bridgeId: number, from?: string, to?: string): Promise<{ bridge: BridgeView; effective?: NetImpairment }> {
    await this._work;
    const bridge = this._bridge(bridgeId);
    if (from === undefined || to === undefined) return { bridge: this._view(bridge) };
    this._requireMembers(bridge, [from, to]);
    return { bridge: this._view(bridge), effective: { ...bridge.sw.effectiveImpairment(from, to) } };
  }

  /** The switch of a bridge and the port of `vm` on it (captures). */
  captureSource(bridgeId: number, vm: ManagedVm | undefined): { sw: Switch; port: string | undefined } {
    const bridge = this._bridge(bridgeId);
    if (vm) this._nic(bridge, vm);
    return { sw: bridge.sw, port: vm?.name };
  }

  /** Streams that read a bridge end with it. */
  onClose(bridgeId: number, fn: () => Promise<void>): void {
    this._bridge(bridgeId).onClose.push(fn);
  }

  nicInfo(bridgeId: number, vm: ManagedVm): { nic: NicView; counters: NicCounters } {
    const bridge = this._bridge(bridgeId);
    const nic = this._nic(bridge, vm);
    return { nic: this._nicView(bridge, nic), counters: { ...bridge.sw.counters(vm.name) } };
  }

  async setLink(bridgeId: number, vm: ManagedVm, up: boolean): Promise<NicView> {
    const bridge = this._bridge(bridgeId);
    const nic = this._nic(bridge, vm);
    nic.linkUp = up;
    bridge.sw.setLink(vm.name, up);
    if (this._isPlugged(nic)) await vm.setNicLink(nic.id, up);
    return this._nicView(bridge, nic);
  }

  /** A guest started (boot, restore) or restarted (reset): plug and configure its NICs. */
  async vmStarted(vm: ManagedVm): Promise<void> {
    let any = false;
    for (const bridge of this._bridges.values()) {
      const nic = bridge.nics.get(vm.id);
      if (!nic) continue;
      any = true;
      try {
        await this._plug(bridge, nic);
      } catch (err) {
        throw new BrokerError(`vm \`${vm.name}\`: its NIC on bridge \`${bridge.name}\` could not be set up: ${(err as Error).message}`);
      }
    }
    if (any) await this._writeHosts();
  }

  /** A warm spare became `vm`: its parked NIC connections become the ports of `vm`'s NICs. */
  adoptParked(vm: ManagedVm, parked: ParkedNics): void {
    for (const bridge of this._bridges.values()) {
      const nic = bridge.nics.get(vm.id);
      const socket = nic && parked.take(nic.id);
      if (socket) bridge.sw.adoptConnection(vm.name, socket);
    }
  }

  /** After a restore that plugged `vm`'s NICs itself (from the snapshot's argv): they are plugged. */
  markRestored(vm: ManagedVm, nicIds: string[]): void {
    for (const bridge of this._bridges.values()) {
      const nic = bridge.nics.get(vm.id);
      if (nic && nicIds.includes(nic.id)) nic.pluggedGeneration = vm.info().generation;
    }
  }

  /** A bridge as a lab snapshot keeps it. */
  exportBridge(bridgeId: number): LabSnapshotManifest['bridges'][number] {
    const bridge = this._bridge(bridgeId);
    return {
      name: bridge.name,
      subnet: bridge.cidr,
      addressing: bridge.manual ? 'manual' : 'auto',
      uplink: bridge.uplink !== null,
      routes: [...bridge.routes].map((id) => this._bridges.get(id)?.name).filter((n): n is string => n !== undefined),
      policy: bridge.sw.policy(),
      nics: [...bridge.nics.values()].map((nic) => ({ vm: nic.vm.name, id: nic.id, mac: nic.mac, host: nic.host, linkUp: nic.linkUp })),
    };
  }

  /**
   * Brings a bridge back to a lab snapshot's state before its VMs are restored: each saved NIC
   * with the MAC and address its guest holds, the switch's rules, the uplink. `vmOf` names the
   * VMs of the restoring lab. Routes come after every bridge is back (importRoutes).
   */
  async importBridge(bridgeId: number, saved: LabSnapshotManifest['bridges'][number], vmOf: (name: string) => ManagedVm): Promise<void> {
    const bridge = this._bridge(bridgeId);
    if (bridge.cidr !== saved.subnet) {
      throw new BrokerError(`bridge \`${bridge.name}\` is ${bridge.cidr} but the snapshot's is ${saved.subnet}: its guests hold addresses of that subnet`);
    }
    for (const s of saved.nics) {
      const vm = vmOf(s.vm);
      const current = bridge.nics.get(vm.id);
      if (current && current.id === s.id && current.mac === s.mac && current.host === s.host) continue;
      if (current) await this.detach(bridgeId, vm);
      const clash = [...bridge.nics.values()].find((n) => n.mac === s.mac || n.host === s.host);
      if (clash) {
        throw new BrokerError(`bridge \`${bridge.name}\`: vm \`${s.vm}\` comes back with ${s.mac} (${bridge.address(s.host)}), which vm \`${clash.vm.name}\` already has there`);
      }
      const nic: Nic = { vm, id: s.id, mac: s.mac, host: s.host, socketPath: path.join(bridge.dir, `p${vm.id}.sock`), ifname: null, linkUp: s.linkUp, pluggedGeneration: null };
      bridge.reserveHost(s.host);
      bridge.nics.set(vm.id, nic);
      await bridge.sw.addPort(vm.name, nic.socketPath);
      bridge.sw.setLink(vm.name, s.linkUp);
    }
    bridge.sw.setPolicy(saved.policy);
    await this._serialized(() => (saved.uplink ? this._enableUplink(bridge) : this._disableUplink(bridge)));
  }

  /** Routes of restored bridges, by bridge id, once every bridge is back. */
  async importRoutes(routes: Map<number, number[]>): Promise<void> {
    for (const [bridgeId, peerIds] of routes) {
      const bridge = this._bridge(bridgeId);
      const peers = peerIds.filter((id) => !bridge.routes.has(id)).map((id) => this._peer(bridge, id));
      if (peers.length > 0) await this._serialized(() => this._route(bridge, peers));
    }
  }

  /** Whether `vm` is on any bridge. */
  hasNics(vm: ManagedVm): boolean {
    return [...this._bridges.values()].some((b) => b.nics.has(vm.id));
  }

  /** Every NIC of a bridge, by VM id. */
  nicViews(bridgeId: number): { vmId: number; nic: NicView }[] {
    const bridge = this._bridge(bridgeId);
    return [...bridge.nics.values()].map((nic) => ({ vmId: nic.vm.id, nic: this._nicView(bridge, nic) }));
  }

  /** Where a restored VM's NIC `nicId` connects now: the socket of its port on the bridge that has it. */
  nicSocketOf(vm: ManagedVm, nicId: string): string | undefined {
    for (const bridge of this._bridges.values()) {
      const nic = bridge.nics.get(vm.id);
      if (nic?.id === nicId) return nic.socketPath;
    }
    return undefined;
  }

  /** VMs gone with their scope leave every bridge (their names may be declared again). */
  async forget(vms: ManagedVm[]): Promise<void> {
    for (const bridge of this._bridges.values()) {
      for (const vm of vms) {
        if (!bridge.nics.delete(vm.id)) continue;
        await bridge.sw.removePort(vm.name);
      }
    }
  }

  async closeBridge(bridgeId: number): Promise<void> {
    const bridge = this._bridges.get(bridgeId);
    if (!bridge) return;
    this._bridges.delete(bridgeId);
    await Promise.all(bridge.onClose.map((fn) => fn().catch(() => undefined)));
    for (const nic of bridge.nics.values()) {
      if (this._isPlugged(nic)) await nic.vm.unplugNic(nic.id).catch(() => undefined);
    }
    await bridge.uplink?.stop().catch(() => undefined);
    bridge.uplink = null;
    this._router?.removeInterface(String(bridge.id));
    // Its peers forget it; their guests lose the route (best effort: the bridge is gone anyway).
    for (const peerId of bridge.routes) {
      const peer = this._bridges.get(peerId);
      if (!peer) continue;
      peer.routes.delete(bridge.id);
      await this._syncGuests(peer).catch(() => undefined);
      if (peer.routes.size === 0) await this._leaveRouter(peer).catch(() => undefined);
    }
    bridge.routes.clear();
    await bridge.sw.close();
    await rm(bridge.dir, { recursive: true, force: true });
  }

  async close(): Promise<void> {
    await this._work;
    await Promise.all([...this._bridges.keys()].map((id) => this.closeBridge(id)));
    this._router?.close();
  }

  // ---- uplinks and routes -------------------------------------------------------------------

  /** Uplink and route changes touch several bridges and guests: one at a time, in call order. */
  private _serialized(fn: () => Promise<void>): Promise<void> {
    const run = this._work.then(fn);
    this._work = run.catch(() => undefined);
    return run;
  }

  private async _enableUplink(bridge: Bridge): Promise<void> {
    if (!this._bridges.has(bridge.id) || bridge.uplink?.running) return;
    await bridge.uplink?.stop();
    bridge.uplink = await BridgeUplink.start(bridge.sw, bridge.dir, {
      subnet: bridge.cidr, gateway: bridge.address(kGatewayHost), dns: bridge.address(kDnsHost),
    });
    await this._syncGuests(bridge);
  }

  private async _disableUplink(bridge: Bridge): Promise<void> {
    const uplink = bridge.uplink;
    if (!uplink) return;
    bridge.uplink = null;
    await this._syncGuests(bridge);
    await uplink.stop();
  }

  /** A peer for route/unroute: open, another bridge, a subnet apart. */
  private _peer(bridge: Bridge, peerId: number): Bridge {
    const peer = this._bridges.get(peerId);
    if (!peer) throw new BrokerError(`bridge \`${bridge.name}\`: cannot route to bridge ${peerId}: it is closed`);
    if (peer === bridge) throw new BrokerError(`bridge \`${bridge.name}\`: cannot route a bridge to itself`);
    const overlaps = (x: Bridge, y: Bridge): boolean => x.contains(y.subnet.base) || y.contains(x.subnet.base);
    if (overlaps(bridge, peer)) {
      throw new BrokerError(`bridge \`${bridge.name}\` (${bridge.cidr}) and bridge \`${peer.name}\` (${peer.cidr}) overlap: routed bridges need distinct subnets`);
    }
    // One router serves the file, so every routed subnet must be distinct.
    for (const x of [bridge, peer]) {
      const other = [...this._bridges.values()].find((y) => y !== bridge && y !== peer && y.routes.size > 0 && overlaps(x, y));
      if (other) throw new BrokerError(`bridge \`${x.name}\` (${x.cidr}) overlaps bridge \`${other.name}\` (${other.cidr}), which is routed: routed bridges need distinct subnets`);
    }
    return peer;
  }

  private async _route(bridge: Bridge, peers: Bridge[]): Promise<void> {
    for (const b of [bridge, ...peers]) await this._joinRouter(b);
    for (const peer of peers) {
      if (!this._bridges.has(peer.id)) continue;
      this._router!.link(String(bridge.id), String(peer.id));
      bridge.routes.add(peer.id);
      peer.routes.add(bridge.id);
    }
    for (const b of [bridge, ...peers]) await this._syncGuests(b);
    await this._writeHosts();
  }

  private async _unroute(bridge: Bridge, peers: Bridge[]): Promise<void> {
    for (const peer of peers) {
      this._router?.unlink(String(bridge.id), String(peer.id));
      bridge.routes.delete(peer.id);
      peer.routes.delete(bridge.id);
    }
    for (const b of [bridge, ...peers]) {
      await this._syncGuests(b);
      if (b.routes.size === 0) await this._leaveRouter(b);
    }
    await this._writeHosts();
  }

  /** A bridge routed to nothing leaves the router, freeing its subnet for another. */
  private async _leaveRouter(bridge: Bridge): Promise<void> {
    if (!this._router?.hasInterface(String(bridge.id))) return;
    this._router.removeInterface(String(bridge.id));
    if (bridge.sw.hasPort(kRouterPort)) await bridge.sw.removePort(kRouterPort);
  }

  /** Gives the router an interface on the bridge (once): a port of its switch and the last host. */
  private async _joinRouter(bridge: Bridge): Promise<void> {
    if (!this._bridges.has(bridge.id)) throw new BrokerError(`bridge \`${bridge.name}\` is closed`);
    this._router ??= new Router();
    const name = String(bridge.id);
    if (this._router.hasInterface(name)) return;
    const socketPath = path.join(bridge.dir, 'router.sock');
    await bridge.sw.addPort(kRouterPort, socketPath);
    try {
      await this._router.addInterface({
        name, socketPath, mac: kRouterMacBase + bridge.id,
        address: (bridge.subnet.base + bridge.routerHost) >>> 0, prefixLength: bridge.subnet.prefixLength,
      });
      await bridge.sw.whenConnected(kRouterPort, kNicConnectTimeoutMs);
    } catch (err) {
      this._router.removeInterface(name);
      await bridge.sw.removePort(kRouterPort).catch(() => undefined);
      throw err;
    }
  }

  /** Every configured guest on the bridge gets the bridge's default route and routes now. */
  private async _syncGuests(bridge: Bridge): Promise<void> {
    if (bridge.manual) return;
    const nics = [...bridge.nics.values()].filter((nic) => this._isPlugged(nic) && nic.ifname !== null);
    await Promise.all(nics.map((nic) => this._exec(nic, [`IF=${nic.ifname}`, ...this._routeLines(bridge)].join('\n'))));
  }

  /**
   * Shell lines (for a guest whose interface is `$IF`) that make its routes match the bridge:
   * the uplink's default route and nameserver, and one route per routed bridge via the router.
   */
  private _routeLines(bridge: Bridge): string[] {
    const gateway = bridge.address(kGatewayHost);
    const dns = bridge.address(kDnsHost);
    const router = bridge.address(bridge.routerHost);
    const wanted = [...bridge.routes].map((id) => this._bridges.get(id)).filter((b): b is Bridge => b !== undefined).map((b) => b.cidr);
    const lines = bridge.uplink
      ? [
        `ip route replace default via ${gateway} dev "$IF" || exit 1`,
        `grep -qx 'nameserver ${dns}' /etc/resolv.conf 2>/dev/null || echo 'nameserver ${dns}' >> /etc/resolv.conf || exit 1`,
      ]
      : [
        `ip route del default via ${gateway} dev "$IF" 2>/dev/null || true`,
        `if [ -f /etc/resolv.conf ]; then grep -vx 'nameserver ${dns}' /etc/resolv.conf > /tmp/.provium-resolv; cat /tmp/.provium-resolv > /etc/resolv.conf; rm -f /tmp/.provium-resolv; fi`,
      ];
    // Routes via the router that are no longer wanted go first.
    lines.push(`for n in $(ip route | grep " via ${router} " | cut -d' ' -f1); do case " ${wanted.join(' ')} " in *" $n "*) ;; *) ip route del "$n" via ${router} || true;; esac; done`);
    for (const cidr of wanted) lines.push(`ip route replace ${cidr} via ${router} dev "$IF" || exit 1`);
    return lines;
  }

  private _exec(nic: Nic, script: string): Promise<string> {
    return runGuestScript(nic.vm, script, kConfigureTimeoutMs, `vm \`${nic.vm.name}\`: configuring its interface failed`);
  }

  private async _plug(bridge: Bridge, nic: Nic): Promise<void> {
    const vm = nic.vm;
    if (this._isPlugged(nic)) {
      // A reset keeps the device but not the guest's configuration.
      if (nic.ifname === null) await this._configure(bridge, nic);
      return;
    }
    await vm.plugNic({ id: nic.id, socketPath: nic.socketPath, mac: nic.mac });
    nic.pluggedGeneration = vm.info().generation;
    nic.ifname = null;
    await bridge.sw.whenConnected(vm.name, kNicConnectTimeoutMs);
    if (!nic.linkUp) await vm.setNicLink(nic.id, false);
    await this._configure(bridge, nic);
  }

  /** Finds the interface by MAC, brings it up, and gives it its address (unless addressing is manual). */
  private async _configure(bridge: Bridge, nic: Nic): Promise<void> {
    const address = bridge.manual ? '' : `${bridge.ipOf(nic)}/${bridge.subnet.prefixLength}`;
    const script = [
      ...waitForSysfsEntry('/sys/class/net', 'address', nic.mac, 'IF', 200, `no interface with MAC ${nic.mac} appeared`),
      'ip link set "$IF" up',
      address ? `ip addr add ${address} dev "$IF" 2>/dev/null || ip addr replace ${address} dev "$IF"` : ':',
      ...(address ? this._routeLines(bridge) : []),
      'echo "$IF"',
    ].join('\n');
    nic.ifname = (await this._exec(nic, script)) || null;
  }

  /** Every running guest's /etc/hosts: itself, and every VM on a bridge it shares, by name. */
  private async _writeHosts(): Promise<void> {
    const guests = new Map<ManagedVm, Map<string, string>>();
    for (const bridge of this._bridges.values()) {
      if (bridge.manual) continue;
      for (const nic of bridge.nics.values()) {
        if (!this._isPlugged(nic)) continue;
        const names = guests.get(nic.vm) ?? new Map<string, string>();
        guests.set(nic.vm, names);
        for (const b of [bridge, ...[...bridge.routes].map((id) => this._bridges.get(id))]) {
          if (!b || b.manual) continue;
          for (const other of b.nics.values()) if (!names.has(other.vm.name)) names.set(other.vm.name, b.ipOf(other));
        }
      }
    }
    await Promise.all(
      [...guests].map(([vm, names]) => {
        const lines = ['127.0.0.1\tlocalhost', ...[...names].map(([name, ip]) => `${ip}\t${name}`)];
        return vm.callAgent('write_file', { path: '/etc/hosts', data: new TextEncoder().encode(`${lines.join('\n')}\n`) }).catch(() => undefined);
      }),
    );
  }

  private _isPlugged(nic: Nic): boolean {
    const vm = nic.vm;
    return nic.pluggedGeneration !== null && nic.pluggedGeneration === vm.info().generation && (vm.state === 'booted' || vm.state === 'paused');
  }

  private _onFault(event: FaultEvent): void {
    this._deps.bus.emit('net_fault', {
      file: this._deps.displayPath,
      bridge: event.bridge,
      kind: event.kind,
      from: event.from ?? null,
      to: event.to ?? null,
      values: event.values,
    });
  }

  private _bridge(bridgeId: number): Bridge {
    const bridge = this._bridges.get(bridgeId);
    if (!bridge) throw new BrokerError(`bridge ${bridgeId} is closed`);
    return bridge;
  }

  private _nic(bridge: Bridge, vm: ManagedVm): Nic {
    const nic = bridge.nics.get(vm.id);
    if (!nic) throw new BrokerError(`vm \`${vm.name}\` is not on bridge \`${bridge.name}\`; members: ${this._members(bridge).join(', ') || '(none)'}; call bridge:attach first`);
    return nic;
  }

  private _members(bridge: Bridge): string[] {
    return [...bridge.nics.values()].map((n) => n.vm.name);
  }

  private _requireMembers(bridge: Bridge, names: string[]): void {
    const members = this._members(bridge);
    for (const name of names) {
      if (!members.includes(name)) {
        throw new BrokerError(`bridge \`${bridge.name}\`: \`${name}\` is not attached; members: ${members.join(', ') || '(none)'}; call bridge:attach first`);
      }
    }
  }

  private _view(bridge: Bridge): BridgeView {
    const sw = bridge.sw;
    const members = this._members(bridge);
    const partitions: { from: string; to: string }[] = [];
    for (const from of members) for (const to of members) if (from !== to && sw.isPartitioned({ from, to })) partitions.push({ from, to });
    return {
      name: bridge.name,
      subnet: `${formatIp(bridge.subnet.base)}/${bridge.subnet.prefixLength}`,
      members,
      impairment: { ...sw.impairment() },
      partitions,
      isolated: members.filter((m) => sw.isIsolated(m)),
      uplink: bridge.uplink ? { gateway: bridge.address(kGatewayHost), dns: bridge.address(kDnsHost) } : null,
      routes: [...bridge.routes].map((id) => this._bridges.get(id)?.name).filter((n): n is string => n !== undefined),
      router: bridge.address(bridge.routerHost),
    };
  }

  private _nicView(bridge: Bridge, nic: Nic): NicView {
    return {
      bridge: bridge.name,
      vm: nic.vm.name,
      mac: nic.mac,
      ip: bridge.manual ? null : bridge.ipOf(nic),
      prefixLength: bridge.subnet.prefixLength,
      ifname: this._isPlugged(nic) ? nic.ifname : null,
      plugged: this._isPlugged(nic),
      linkUp: nic.linkUp,
    };
  }
}

/** Router MACs: 52:54:01 plus the bridge id, apart from the NICs' 52:54:00. */
const kRouterMacBase = 0x525401000000;

/** A locally administered unicast MAC (52:54:00 is QEMU's prefix) from a run-wide counter. */
function formatMacAddress(n: number): string {
  const bytes = [0x52, 0x54, 0x00, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}
