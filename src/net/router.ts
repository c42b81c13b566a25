// An IPv4 router between bridges, in the broker: one interface per routed bridge, each a client
// of a port on that bridge's switch (as a QEMU NIC is), with its own MAC and an address on the
// bridge's subnet. It answers ARP and pings for its addresses, learns neighbours from ARP and
// from the traffic it sees, resolves unknown next hops with ARP, and forwards between linked
// interfaces only (rewriting MACs, decrementing TTL). Frames cross each bridge's switch, so that
// bridge's partitions and impairments apply to routed traffic too.

import { connect, type Socket } from 'node:net';
import { encodeWireFrame, WireReader } from './wire.js';

export interface RouterInterfaceOptions {
  /** The bridge's name. */
  name: string;
  /** The switch port to dial; it must be listening. */
  socketPath: string;
  /** 48-bit unicast MAC. */
  mac: number;
  /** The router's address on the bridge's subnet. */
  address: number;
  prefixLength: number;
}

export type RouterDropReason = 'malformed' | 'no_route' | 'not_linked' | 'ttl' | 'arp_timeout' | 'queue' | 'backlog';

const kEthernetHeaderBytes = 14;
const kEthertypeIpv4 = 0x0800;
const kEthertypeArp = 0x0806;
const kBroadcastMac = 0xffffffffffff;
const kArpPacketBytes = 28;
const kIpv4MinHeaderBytes = 20;
const kProtoIcmp = 1;
const kDefaultTtl = 64;
/** ARP: a request per second, three tries, then the queued frames are dropped. */
const kArpRetryMs = 1000;
const kArpTries = 3;
/** Frames held per unresolved next hop, as Linux's unres_qlen does. */
const kMaxPendingFrames = 64;
const kNeighbourTtlMs = 5 * 60_000;
/** A switch that stops reading loses frames beyond this instead of growing memory. */
const kMaxBacklogBytes = 4 * 1024 * 1024;
/** How long addInterface waits for the switch to accept. */
const kConnectTimeoutMs = 5000;

interface Pending {
  frames: Buffer[];
  tries: number;
  timer: NodeJS.Timeout;
}

class Interface {
  readonly mask: number;
  readonly neighbours = new Map<number, { mac: number; atMs: number }>();
  readonly pending = new Map<number, Pending>();
  readonly reader = new WireReader();
  socket: Socket | undefined;

  constructor(readonly options: RouterInterfaceOptions) {
    this.mask = options.prefixLength === 0 ? 0 : (~0 << (32 - options.prefixLength)) >>> 0;
  }

  get name(): string { return this.options.name; }
  get mac(): number { return this.options.mac; }
  get address(): number { return this.options.address; }

  contains(ip: number): boolean {
    return ((ip & this.mask) >>> 0) === ((this.address & this.mask) >>> 0);
  }

  /** The subnet's network and broadcast addresses are nobody's. */
  isHost(ip: number): boolean {
    const host = (ip & ~this.mask) >>> 0;
    return this.contains(ip) && host !== 0 && host !== (~this.mask >>> 0);
  }

  send(frame: Buffer): boolean {
    const s = this.socket;
    if (!s || s.destroyed || s.writableLength > kMaxBacklogBytes) return false;
    s.write(encodeWireFrame(frame));
    return true;
  }

  clearPending(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }
}

export class Router {
  private readonly _ifaces = new Map<string, Interface>();
  /** Unordered pairs of interface names that may forward to each other. */
  private readonly _links = new Set<string>();
  private readonly _drops: Record<RouterDropReason, number> = {
    malformed: 0, no_route: 0, not_linked: 0, ttl: 0, arp_timeout: 0, queue: 0, backlog: 0,
  };
  private _forwarded = 0;
  private _closed = false;

  constructor(private readonly _nowMs: () => number = () => performance.now()) {}

  /** Dials the switch port and starts routing for the interface's subnet. */
  async addInterface(options: RouterInterfaceOptions): Promise<void> {
    if (this._closed) throw new Error('router is closed');
    if (this._ifaces.has(options.name)) throw new Error(`router already has an interface on \`${options.name}\``);
    const iface = new Interface(options);
    for (const other of this._ifaces.values()) {
      if (other.contains(iface.address) || iface.contains(other.address)) {
        throw new Error(`\`${options.name}\` and \`${other.name}\` have overlapping subnets: a router cannot tell them apart`);
      }
    }
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(options.socketPath);
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`router: no answer from ${options.socketPath} within ${kConnectTimeoutMs} ms`)); }, kConnectTimeoutMs);
      s.once('error', (err) => { clearTimeout(timer); reject(err); });
      s.once('connect', () => { clearTimeout(timer); resolve(s); });
    });
    socket.on('error', () => { /* 'close' follows */ });
    socket.on('close', () => {
      if (iface.socket === socket) iface.socket = undefined;
      iface.clearPending();
    });
    socket.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = iface.reader.push(chunk);
      } catch {
        // A bad length from our own switch: the stream is unusable.
        socket.destroy();
        return;
      }
      for (const frame of frames) this._onFrame(iface, frame);
    });
    iface.socket = socket;
    this._ifaces.set(options.name, iface);
  }

  removeInterface(name: string): void {
    const iface = this._ifaces.get(name);
    if (!iface) return;
    this._ifaces.delete(name);
    for (const key of [...this._links]) if (key.split('\0').includes(name)) this._links.delete(key);
    iface.clearPending();
    iface.socket?.destroy();
  }

  hasInterface(name: string): boolean {
    return this._ifaces.has(name);
  }

  interfaces(): string[] {
    return [...this._ifaces.keys()];
  }

  /** Lets `a` and `b` forward to each other (both ways). */
  link(a: string, b: string): void {
    this._iface(a);
    this._iface(b);
    if (a === b) throw new Error(`cannot route \`${a}\` to itself`);
    this._links.add(pairKey(a, b));
  }

  unlink(a: string, b: string): void {
    this._links.delete(pairKey(a, b));
  }

  isLinked(a: string, b: string): boolean {
    return this._links.has(pairKey(a, b));
  }

  /** Interfaces linked to `name`. */
  peers(name: string): string[] {
    return [...this._ifaces.keys()].filter((other) => other !== name && this.isLinked(name, other));
  }

  drops(): Record<RouterDropReason, number> {
    return { ...this._drops };
  }

  get forwarded(): number {
    return this._forwarded;
  }

  /** The MAC the router learnt for `ip` on interface `name`. */
  neighbour(name: string, ip: number): number | undefined {
    return this._ifaces.get(name)?.neighbours.get(ip)?.mac;
  }

  close(): void {
    this._closed = true;
    for (const name of [...this._ifaces.keys()]) this.removeInterface(name);
  }

  // ---- frames -------------------------------------------------------------------------------

  private _onFrame(iface: Interface, frame: Buffer): void {
    if (frame.byteLength < kEthernetHeaderBytes) return;
    const dst = frame.readUIntBE(0, 6);
    // The switch floods unknown unicast: frames for other MACs are not ours.
    if (dst !== iface.mac && dst !== kBroadcastMac) return;
    const ethertype = frame.readUInt16BE(12);
    if (ethertype === kEthertypeArp) this._onArp(iface, frame);
    else if (ethertype === kEthertypeIpv4 && dst === iface.mac) this._onIpv4(iface, frame);
  }

  private _onArp(iface: Interface, frame: Buffer): void {
    if (frame.byteLength < kEthernetHeaderBytes + kArpPacketBytes) return void this._drops.malformed++;
    const arp = frame.subarray(kEthernetHeaderBytes);
    if (arp.readUInt16BE(0) !== 1 || arp.readUInt16BE(2) !== kEthertypeIpv4 || arp[4] !== 6 || arp[5] !== 4) return;
    const op = arp.readUInt16BE(6);
    const senderMac = arp.readUIntBE(8, 6);
    const senderIp = arp.readUInt32BE(14);
    const targetIp = arp.readUInt32BE(24);
    if (iface.isHost(senderIp) && senderIp !== iface.address) this._learn(iface, senderIp, senderMac);
    if (op === 1 && targetIp === iface.address) {
      iface.send(arpFrame(2, iface.mac, iface.address, senderMac, senderIp));
    }
  }

  private _onIpv4(iface: Interface, frame: Buffer): void {
    const ip = frame.subarray(kEthernetHeaderBytes);
    if (ip.byteLength < kIpv4MinHeaderBytes || ip[0]! >> 4 !== 4) return void this._drops.malformed++;
    const headerBytes = (ip[0]! & 15) * 4;
    const totalBytes = ip.readUInt16BE(2);
    if (headerBytes < kIpv4MinHeaderBytes || totalBytes < headerBytes || totalBytes > ip.byteLength) return void this._drops.malformed++;
    const src = ip.readUInt32BE(12);
    const dst = ip.readUInt32BE(16);
    if (iface.isHost(src)) this._learn(iface, src, frame.readUIntBE(6, 6));

    const own = [...this._ifaces.values()].find((i) => i.address === dst);
    if (own) {
      // Our own address: answer pings, when the asker may reach that interface.
      if (own === iface || this.isLinked(iface.name, own.name)) this._answerPing(ip.subarray(0, totalBytes));
      return;
    }
    const out = this._routeFor(dst);
    if (!out || out === iface || !out.isHost(dst)) return void this._drops.no_route++;
    if (!this.isLinked(iface.name, out.name)) return void this._drops.not_linked++;
    if (ip[8]! <= 1) {
      this._drops.ttl++;
      this._sendIcmpError(iface, ip.subarray(0, totalBytes), 11, 0);
      return;
    }
    // A copy without the Ethernet padding: the packet is rewritten for the next hop.
    const outFrame = Buffer.from(frame.subarray(0, kEthernetHeaderBytes + totalBytes));
    const outIp = outFrame.subarray(kEthernetHeaderBytes);
    outIp[8] = outIp[8]! - 1;
    outIp.writeUInt16BE(0, 10);
    outIp.writeUInt16BE(checksum(outIp.subarray(0, headerBytes)), 10);
    this._forwarded++;
    this._sendVia(out, dst, outFrame);
  }

  /** Echo requests to a router address get their reply. */
  private _answerPing(ip: Buffer): void {
    const headerBytes = (ip[0]! & 15) * 4;
    if (ip[9] !== kProtoIcmp || ip.byteLength < headerBytes + 8 || ip[headerBytes] !== 8) return;
    const icmp = Buffer.from(ip.subarray(headerBytes));
    icmp[0] = 0;
    icmp.writeUInt16BE(0, 2);
    icmp.writeUInt16BE(checksum(icmp), 2);
    this._emit(ip.readUInt32BE(16), ip.readUInt32BE(12), icmp);
  }

  /** ICMP errors (time exceeded) quote the offending header and 8 bytes, as RFC 792 asks. */
  private _sendIcmpError(iface: Interface, ip: Buffer, type: number, code: number): void {
    const headerBytes = (ip[0]! & 15) * 4;
    if (ip[9] === kProtoIcmp && ip.byteLength > headerBytes && ip[headerBytes] !== 8 && ip[headerBytes] !== 0) return;
    const quote = ip.subarray(0, Math.min(ip.byteLength, headerBytes + 8));
    const icmp = Buffer.alloc(8 + quote.byteLength);
    icmp[0] = type;
    icmp[1] = code;
    quote.copy(icmp, 8);
    icmp.writeUInt16BE(checksum(icmp), 2);
    this._emit(iface.address, ip.readUInt32BE(12), icmp);
  }

  /** Sends an ICMP packet of the router's own towards `dst`. */
  private _emit(src: number, dst: number, icmp: Buffer): void {
    const out = this._routeFor(dst);
    if (!out || !out.isHost(dst)) return;
    const frame = Buffer.alloc(kEthernetHeaderBytes + kIpv4MinHeaderBytes + icmp.byteLength);
    frame.writeUInt16BE(kEthertypeIpv4, 12);
    const ip = frame.subarray(kEthernetHeaderBytes);
    ip[0] = 0x45;
    ip.writeUInt16BE(ip.byteLength, 2);
    ip[8] = kDefaultTtl;
    ip[9] = kProtoIcmp;
    ip.writeUInt32BE(src, 12);
    ip.writeUInt32BE(dst, 16);
    ip.writeUInt16BE(checksum(ip.subarray(0, kIpv4MinHeaderBytes)), 10);
    icmp.copy(ip, kIpv4MinHeaderBytes);
    this._sendVia(out, dst, frame);
  }

  private _routeFor(dst: number): Interface | undefined {
    for (const iface of this._ifaces.values()) if (iface.contains(dst)) return iface;
    return undefined;
  }

  /** Addresses the frame to `nextHop` on `out`, resolving its MAC first when unknown. */
  private _sendVia(out: Interface, nextHop: number, frame: Buffer): void {
    frame.writeUIntBE(out.mac, 6, 6);
    const known = out.neighbours.get(nextHop);
    if (known && this._nowMs() - known.atMs < kNeighbourTtlMs) {
      frame.writeUIntBE(known.mac, 0, 6);
      if (!out.send(frame)) this._drops.backlog++;
      return;
    }
    const pending = out.pending.get(nextHop);
    if (pending) {
      if (pending.frames.length >= kMaxPendingFrames) this._drops.queue++;
      else pending.frames.push(frame);
      return;
    }
    const entry: Pending = { frames: [frame], tries: 1, timer: setTimeout(() => this._arpRetry(out, nextHop), kArpRetryMs) };
    entry.timer.unref();
    out.pending.set(nextHop, entry);
    out.send(arpFrame(1, out.mac, out.address, 0, nextHop));
  }

  private _arpRetry(out: Interface, nextHop: number): void {
    const entry = out.pending.get(nextHop);
    if (!entry) return;
    if (entry.tries >= kArpTries) {
      out.pending.delete(nextHop);
      this._drops.arp_timeout += entry.frames.length;
      return;
    }
    entry.tries++;
    entry.timer = setTimeout(() => this._arpRetry(out, nextHop), kArpRetryMs);
    entry.timer.unref();
    out.send(arpFrame(1, out.mac, out.address, 0, nextHop));
  }

  private _learn(iface: Interface, ip: number, mac: number): void {
    if (mac === kBroadcastMac || Math.floor(mac / 2 ** 40) % 2 === 1) return;
    iface.neighbours.set(ip, { mac, atMs: this._nowMs() });
    const pending = iface.pending.get(ip);
    if (!pending) return;
    iface.pending.delete(ip);
    clearTimeout(pending.timer);
    for (const frame of pending.frames) {
      frame.writeUIntBE(mac, 0, 6);
      if (!iface.send(frame)) this._drops.backlog++;
    }
  }

  private _iface(name: string): Interface {
    const iface = this._ifaces.get(name);
    if (!iface) throw new Error(`router has no interface on \`${name}\` (has: ${[...this._ifaces.keys()].join(', ') || 'none'})`);
    return iface;
  }
}

function pairKey(a: string, b: string): string {
  return a < b ? `${a}\0${b}` : `${b}\0${a}`;
}

/** An ARP request (op 1, broadcast) or reply (op 2, to `targetMac`). */
export function arpFrame(op: 1 | 2, senderMac: number, senderIp: number, targetMac: number, targetIp: number): Buffer {
  const frame = Buffer.alloc(kEthernetHeaderBytes + kArpPacketBytes);
  frame.writeUIntBE(op === 1 ? kBroadcastMac : targetMac, 0, 6);
  frame.writeUIntBE(senderMac, 6, 6);
  frame.writeUInt16BE(kEthertypeArp, 12);
  const arp = frame.subarray(kEthernetHeaderBytes);
  arp.writeUInt16BE(1, 0);
  arp.writeUInt16BE(kEthertypeIpv4, 2);
  arp[4] = 6;
  arp[5] = 4;
  arp.writeUInt16BE(op, 6);
  arp.writeUIntBE(senderMac, 8, 6);
  arp.writeUInt32BE(senderIp, 14);
  arp.writeUIntBE(targetMac, 18, 6);
  arp.writeUInt32BE(targetIp, 24);
  return frame;
}

/** The Internet checksum (RFC 1071) of `bytes`. */
export function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2 === 1) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
