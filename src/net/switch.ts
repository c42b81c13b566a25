// The userspace switch of one bridge: ports that QEMU's stream netdevs connect to, MAC
// learning and flooding, and every network fault (partitions, isolation, link state,
// impairments) applied in switch code, so no root and no host networking tools are needed.
//
// A frame's path: port → counters/capture → learn source → pick destinations (learned port, or
// flood) → per destination: partition/isolation check → that direction's impairment pipeline
// (only when one applies or frames are still inside it) → destination link check → write.

import type { Socket } from 'node:net';
import { CaptureHub, type CaptureOptions, type CaptureRecord, type CaptureSubscription } from './capture.js';
import { dstMacOf, isGroupMac, kEthernetHeaderBytes, srcMacOf } from './ethernet.js';
import { Directions } from './directions.js';
import { ImpairmentRules, kNoImpairment, type Impairment, type ImpairmentScope } from './impairment.js';
import { kMacAgeingMs, MacTable, type MacEntry } from './mac-table.js';
import { checkPair, PartitionTable, type Direction } from './partitions.js';
import { kMaxQueuedBytes, kMaxQueuedFrames, type PipelineDropReason } from './pipeline.js';
import { Port, type PortCounters } from './port.js';
import { Prng, type Seed } from './prng.js';
import { kMaxFrameBytes } from './wire.js';
import type { BridgePolicy } from '../protocol/rpc.js';

export type FaultKind = 'partition' | 'heal' | 'impairment' | 'link';

/** One fault change, for the run's timeline. */
export interface FaultEvent {
  kind: FaultKind;
  bridge: string;
  from?: string;
  to?: string;
  values: Record<string, unknown>;
}

export type DropReason = 'runt' | 'link' | 'partition' | 'isolated' | 'backlog' | PipelineDropReason;

export interface SwitchOptions {
  /** The bridge name: in fault events, and the label the run seed is forked with. */
  name: string;
  /** The run's seed; the same seed and the same traffic give the same random decisions. */
  seed: Seed;
  onFault?: (event: FaultEvent) => void;
  /** A guest's connection ended; `reason` is set when a bad frame or an error ended it. */
  onPortDisconnect?: (port: string, reason: string | undefined) => void;
  macAgeingMs?: number;
  /** Per-direction pipeline bound (frames queued for bandwidth, latency or reordering). */
  maxQueuedFrames?: number;
  maxQueuedBytes?: number;
  maxFrameBytes?: number;
}

export interface PortInfo {
  name: string;
  socketPath: string;
  connected: boolean;
  linkUp: boolean;
  isolated: boolean;
  lastError: string | undefined;
  counters: PortCounters;
}

function nowMs(): number {
  return performance.now();
}

export class Switch {
  readonly name: string;
  private readonly _options: SwitchOptions;
  private readonly _ports = new Map<string, Port>();
  private readonly _macs: MacTable;
  private readonly _partitions = new PartitionTable();
  private readonly _rules = new ImpairmentRules();
  private readonly _directions: Directions;
  private readonly _captures = new CaptureHub();
  private readonly _drops: Record<DropReason, number> = {
    runt: 0, link: 0, partition: 0, isolated: 0, backlog: 0, impairment: 0, queue: 0,
  };
  private readonly _sweepTimer: NodeJS.Timeout;
  private _closing: Promise<void> | undefined;

  constructor(options: SwitchOptions) {
    if (typeof options.name !== 'string' || options.name === '') {
      throw new Error(`switch name must be a non-empty string; got ${JSON.stringify(options.name)}`);
    }
    this.name = options.name;
    this._options = options;
    this._directions = new Directions(new Prng(options.seed).fork(`bridge:${options.name}`), this._rules, {
      deliver: (to, frame) => this._deliver(to, frame),
      drop: (from, reason) => {
        const source = this._ports.get(from);
        if (source) source.counters.dropped++;
        this._drops[reason]++;
      },
      nowMs,
    }, {
      maxQueuedFrames: options.maxQueuedFrames ?? kMaxQueuedFrames,
      maxQueuedBytes: options.maxQueuedBytes ?? kMaxQueuedBytes,
    });
    const ageingMs = options.macAgeingMs ?? kMacAgeingMs;
    this._macs = new MacTable(ageingMs, nowMs);
    // Bounds the table between lookups; unref'd so an idle switch never holds the process open.
    this._sweepTimer = setInterval(() => this._macs.sweep(), ageingMs).unref();
  }

  // ---- ports -------------------------------------------------------------------------------

  /** Adds a port and listens on `socketPath`; resolves once QEMU can connect. */
  async addPort(name: string, socketPath: string): Promise<void> {
    this._checkOpen();
    if (typeof name !== 'string' || name === '') throw new Error(`port name must be a non-empty string; got ${JSON.stringify(name)}`);
    if (this._ports.has(name)) throw new Error(`bridge "${this.name}" already has a port "${name}"`);
    for (const port of this._ports.values()) {
      if (port.socketPath === socketPath) throw new Error(`socket ${socketPath} is already port "${port.name}" of bridge "${this.name}"`);
    }
    const port = new Port(name, socketPath, {
      onFrame: (p, frame) => this._onFrame(p, frame),
      onConnect: (p) => this._macs.forgetPort(p.name),
      onDisconnect: (p, reason) => {
        this._macs.forgetPort(p.name);
        this._options.onPortDisconnect?.(p.name, reason);
      },
    }, this._options.maxFrameBytes ?? kMaxFrameBytes);
    this._ports.set(name, port);
    try {
      await port.listen();
    } catch (err) {
      this._ports.delete(name);
      await port.close();
      throw err;
    }
  }

  /** Closes a port and forgets its MACs and in-flight frames; fault rules naming it stay. */
  async removePort(name: string): Promise<void> {
    const port = this._port(name);
    this._ports.delete(name);
    this._macs.forgetPort(name);
    this._directions.forgetPort(name);
    await port.close();
  }

  hasPort(name: string): boolean {
    return this._ports.has(name);
  }

  portNames(): string[] {
    return [...this._ports.keys()];
  }

  portInfo(name: string): PortInfo {
    const port = this._port(name);
    return {
      name,
      socketPath: port.socketPath,
      connected: port.connected,
      linkUp: port.linkUp,
      isolated: this._partitions.isIsolated(name),
      lastError: port.lastError,
      counters: { ...port.counters },
    };
  }

  counters(name: string): PortCounters {
    return { ...this._port(name).counters };
  }

  /** A guest connection made elsewhere becomes port `name`'s (Port.adopt). */
  adoptConnection(name: string, socket: Socket): void {
    this._port(name).adopt(socket);
  }

  /** Resolves once a guest is connected to the port. */
  whenConnected(name: string, timeoutMs: number): Promise<void> {
    return this._port(name).whenConnected(timeoutMs);
  }

  /** Link state of one port: while down, frames to and from it are dropped and counted. */
  setLink(name: string, up: boolean): void {
    const port = this._port(name);
    port.linkUp = up;
    // As a Linux bridge flushes a port's FDB when its carrier drops.
    if (!up) this._macs.forgetPort(name);
    this._emit('link', { from: name }, { up });
  }

  macTable(): MacEntry[] {
    return this._macs.entries();
  }

  /** Frames the switch discarded, by reason (each destination copy of a flood counts). */
  drops(): Record<DropReason, number> {
    return { ...this._drops };
  }

  // ---- partitions and isolation -------------------------------------------------------------

  /** partition(a, b) cuts both directions; partition({from, to}) cuts one. */
  partition(a: string | Direction, b?: string): void {
    const dirs = this._dirsOf(a, b);
    for (const d of dirs) this._partitions.cut(d.from, d.to);
    this._emit('partition', dirs[0]!, { symmetric: dirs.length === 2 });
  }

  /** Undoes partition(); lenient when the direction was not cut. */
  unpartition(a: string | Direction, b?: string): void {
    const dirs = this._dirsOf(a, b);
    for (const d of dirs) this._partitions.heal(d.from, d.to);
    this._emit('heal', dirs[0]!, { symmetric: dirs.length === 2 });
  }

  /** Cuts every pair of ports, including ports added later, until restoreAll(). */
  partitionAll(): void {
    this._partitions.cutAll();
    this._emit('partition', {}, { all: true });
  }

  /** Removes every partition and isolation (impairments stay: see reset()). */
  restoreAll(): void {
    this._partitions.healAll();
    this._emit('heal', {}, { all: true });
  }

  /** isPartitioned(a, b): either direction cut; isPartitioned({from, to}): that direction. */
  isPartitioned(a: string | Direction, b?: string): boolean {
    return this._dirsOf(a, b).some((d) => this._partitions.isCut(d.from, d.to));
  }

  /** Cuts one port from every other port of the bridge. */
  isolate(name: string): void {
    this._partitions.isolate(name);
    this._emit('partition', { from: name }, { isolated: true });
  }

  unisolate(name: string): void {
    this._partitions.unisolate(name);
    this._emit('heal', { from: name }, { isolated: false });
  }

  isIsolated(name: string): boolean {
    return this._partitions.isIsolated(name);
  }

  // ---- impairments --------------------------------------------------------------------------

  /** Merges values into the rule at `scope` (whole bridge when absent); 0 clears a field. */
  impair(values: Partial<Impairment>, scope?: ImpairmentScope): void {
    const after = this._rules.set(values, scope);
    this._directions.applyRules();
    this._emit('impairment', scope ?? {}, { ...after });
  }

  setLatency(latency: number | { ms: number; jitterMs?: number }, scope?: ImpairmentScope): void {
    const values = typeof latency === 'number' ? { latencyMs: latency } : { latencyMs: latency.ms, jitterMs: latency.jitterMs ?? 0 };
    this.impair(values, scope);
  }

  setDropRate(rate: number, scope?: ImpairmentScope): void {
    this.impair({ dropRate: rate }, scope);
  }

  setBandwidth(bps: number, scope?: ImpairmentScope): void {
    this.impair({ bandwidthBps: bps }, scope);
  }

  setDuplicateRate(rate: number, scope?: ImpairmentScope): void {
    this.impair({ duplicateRate: rate }, scope);
  }

  setReorderRate(rate: number, scope?: ImpairmentScope): void {
    this.impair({ reorderRate: rate }, scope);
  }

  /** Clears every impairment, partition and isolation (link states stay: they belong to NICs). */
  reset(): void {
    this._rules.clear();
    this._directions.applyRules();
    this._partitions.healAll();
    this._emit('heal', {}, { all: true, reset: true });
    this._emit('impairment', {}, { ...kNoImpairment, reset: true });
  }

  /** Every rule, cut and isolation: what a lab snapshot keeps. */
  policy(): BridgePolicy {
    return {
      impairments: this._rules.rules().map((r) => ({ ...(r.scope ?? {}), values: r.values })),
      cut: this._partitions.directions(),
      allCut: this._partitions.allCut,
      isolated: this._partitions.isolated(),
    };
  }

  /** Replaces every rule, cut and isolation with `p` (a restored lab's). */
  setPolicy(p: BridgePolicy): void {
    this.reset();
    for (const r of p.impairments) this.impair(r.values, r.from !== undefined ? { from: r.from, ...(r.to !== undefined ? { to: r.to } : {}) } : undefined);
    for (const d of p.cut) this.partition({ from: d.from, to: d.to });
    if (p.allCut) this.partitionAll();
    for (const name of p.isolated) this.isolate(name);
  }

  /** The rule at exactly `scope` (the whole-bridge rule when absent). */
  impairment(scope?: ImpairmentScope): Impairment {
    return this._rules.get(scope);
  }

  /** What applies to frames from `from` to `to`: the worst of every rule covering them. */
  effectiveImpairment(from: string, to: string): Impairment {
    return this._rules.effective(from, to);
  }

  latencyMs(): number { return this._rules.get().latencyMs; }
  jitterMs(): number { return this._rules.get().jitterMs; }
  dropRate(): number { return this._rules.get().dropRate; }
  bandwidthBps(): number { return this._rules.get().bandwidthBps; }
  duplicateRate(): number { return this._rules.get().duplicateRate; }
  reorderRate(): number { return this._rules.get().reorderRate; }

  // ---- capture and lifetime -----------------------------------------------------------------

  /** Subscribes to frames: one port's both directions, or every frame entering the bridge. */
  capture(options: CaptureOptions, onRecord: (record: CaptureRecord) => void): CaptureSubscription {
    this._checkOpen();
    return this._captures.subscribe(options, onRecord);
  }

  /** Open capture subscriptions. */
  get activeCaptures(): number {
    return this._captures.size;
  }

  /** Closes every port, timer, pipeline and capture and removes the socket files. Idempotent. */
  close(): Promise<void> {
    this._closing ??= (async () => {
      clearInterval(this._sweepTimer);
      this._directions.closeAll();
      this._captures.closeAll();
      const ports = [...this._ports.values()];
      this._ports.clear();
      await Promise.all(ports.map((p) => p.close()));
    })();
    return this._closing;
  }

  // ---- forwarding ---------------------------------------------------------------------------

  private _onFrame(port: Port, frame: Buffer): void {
    if (this._closing) return;
    if (frame.byteLength < kEthernetHeaderBytes) {
      port.counters.errors++;
      this._drops.runt++;
      return;
    }
    if (!port.linkUp) {
      port.counters.dropped++;
      this._drops.link++;
      return;
    }
    port.counters.tx_packets++;
    port.counters.tx_bytes += frame.byteLength;
    this._captures.emit(port.name, 'tx', frame);
    const src = srcMacOf(frame);
    if (!isGroupMac(src)) this._macs.learn(src, port.name);
    const dst = dstMacOf(frame);
    if (!isGroupMac(dst)) {
      const out = this._macs.lookup(dst);
      if (out !== undefined) {
        // A frame for a MAC behind its own port is filtered, as by any switch.
        if (out !== port.name) this._forward(port, out, frame);
        return;
      }
    }
    // Flood: broadcast, multicast, unknown unicast. Unconnected ports have nobody to flood to.
    for (const other of this._ports.values()) {
      if (other !== port && other.connected) this._forward(port, other.name, frame);
    }
  }

  private _forward(from: Port, to: string, frame: Buffer): void {
    const cut = this._partitions.blocked(from.name, to);
    if (cut !== undefined) {
      from.counters.dropped++;
      this._drops[cut]++;
      return;
    }
    this._directions.forward(from.name, to, frame);
  }

  private _deliver(to: string, frame: Buffer): void {
    const port = this._ports.get(to);
    if (!port) return;
    if (!port.linkUp) {
      port.counters.dropped++;
      this._drops.link++;
      return;
    }
    const result = port.send(frame);
    if (result === 'sent') {
      port.counters.rx_packets++;
      port.counters.rx_bytes += frame.byteLength;
      this._captures.emit(to, 'rx', frame);
    } else if (result === 'backlog') {
      port.counters.dropped++;
      this._drops.backlog++;
    }
  }

  // ---- helpers ------------------------------------------------------------------------------

  private _dirsOf(a: string | Direction, b?: string): Direction[] {
    if (typeof a === 'object' && a !== null) {
      if (b !== undefined) throw new Error('a directional partition takes one {from, to} argument');
      checkPair(a.from, a.to);
      return [{ from: a.from, to: a.to }];
    }
    checkPair(a, b as string);
    return [{ from: a, to: b as string }, { from: b as string, to: a }];
  }

  private _port(name: string): Port {
    const port = this._ports.get(name);
    if (!port) throw new Error(`bridge "${this.name}" has no port "${name}" (ports: ${[...this._ports.keys()].join(', ') || 'none'})`);
    return port;
  }

  private _checkOpen(): void {
    if (this._closing) throw new Error(`bridge "${this.name}" is closed`);
  }

  private _emit(kind: FaultKind, where: { from?: string; to?: string }, values: Record<string, unknown>): void {
    const event: FaultEvent = { kind, bridge: this.name, values };
    if (where.from !== undefined) event.from = where.from;
    if (where.to !== undefined) event.to = where.to;
    this._options.onFault?.(event);
  }
}
