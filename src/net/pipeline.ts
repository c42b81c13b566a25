// The impairment pipeline of one direction (frames from one port to another). Every stage
// applies at once, in this order:
//   1. drop (PRNG), 2. duplicate (PRNG), 3. bandwidth (token bucket, bounded queue),
//   4. latency ± jitter, 5. reorder (a chosen frame is held until the next one has passed).
// All random draws for a frame happen when it enters, in a fixed order, so the decisions depend
// only on the seed and the frame's index in its direction, not on timer timing.

import type { Impairment } from './impairment.js';
import type { Prng } from './prng.js';

/** netem's default queue limit. */
export const kMaxQueuedFrames = 1000;
/** Bounds memory for large frames at a low bandwidth. */
export const kMaxQueuedBytes = 16 * 1024 * 1024;
/** A frame held back for reordering waits at most this long for a frame to overtake it. */
export const kReorderHoldMs = 100;
/** The bucket holds this much time's worth of bytes at the configured rate ... */
export const kBurstMs = 5;
/** ... and at least one full-size Ethernet frame, so small rates still pass normal frames. */
export const kMinBurstBytes = 1514;

export type PipelineDropReason = 'impairment' | 'queue';

export interface PipelineHooks {
  /** A frame leaves the pipeline towards its destination port. */
  deliver(frame: Buffer): void;
  /** A frame was discarded (each duplicate copy counts once). */
  drop(reason: PipelineDropReason, frame: Buffer): void;
  /** Nothing is queued, delayed or held any more. */
  idle(): void;
  nowMs(): number;
}

export interface PipelineLimits {
  maxQueuedFrames: number;
  maxQueuedBytes: number;
}

interface Ticket {
  frame: Buffer;
  jitterMs: number;
  reorder: boolean;
}

interface Delayed {
  ticket: Ticket;
  atMs: number;
}

export class DirectionPipeline {
  private _imp: Impairment;
  private readonly _shaperQueue: Ticket[] = [];
  private readonly _delayed: Delayed[] = [];
  private _held: Buffer | undefined;
  private _tokensBytes = 0;
  private _tokensAtMs = 0;
  /** Delivery times never go backwards, so jitter cannot reorder frames. */
  private _lastDueMs = 0;
  private _queuedFrames = 0;
  private _queuedBytes = 0;
  private _shaperTimer: NodeJS.Timeout | undefined;
  private _delayTimer: NodeJS.Timeout | undefined;
  private _holdTimer: NodeJS.Timeout | undefined;
  private _closed = false;

  constructor(
    private readonly _prng: Prng,
    impairment: Impairment,
    private readonly _hooks: PipelineHooks,
    private readonly _limits: PipelineLimits = { maxQueuedFrames: kMaxQueuedFrames, maxQueuedBytes: kMaxQueuedBytes },
  ) {
    this._imp = { ...impairment };
    this._refillReset();
  }

  /** New values apply to frames entering from now on; queued frames drain at the new rate. */
  update(impairment: Impairment): void {
    const rateChanged = impairment.bandwidthBps !== this._imp.bandwidthBps;
    this._imp = { ...impairment };
    if (rateChanged) {
      // The pending wait was computed at the old rate.
      clearTimeout(this._shaperTimer);
      this._shaperTimer = undefined;
      this._refillReset();
      this._pumpShaper();
    }
  }

  /** Takes one frame from the source port. */
  push(frame: Buffer): void {
    if (this._closed) return;
    const imp = this._imp;
    // 1-2. Random decisions first, in a fixed order, for every frame.
    if (this._prng.chance(imp.dropRate)) {
      this._hooks.drop('impairment', frame);
      return;
    }
    const copies = this._prng.chance(imp.duplicateRate) ? 2 : 1;
    const tickets: Ticket[] = [];
    for (let i = 0; i < copies; i++) {
      const jitterMs = imp.jitterMs > 0 ? this._prng.uniform(-imp.jitterMs, imp.jitterMs) : 0;
      tickets.push({ frame, jitterMs, reorder: this._prng.chance(imp.reorderRate) });
    }
    for (const ticket of tickets) {
      if (
        this._queuedFrames + 1 > this._limits.maxQueuedFrames ||
        this._queuedBytes + frame.byteLength > this._limits.maxQueuedBytes
      ) {
        this._hooks.drop('queue', frame);
        continue;
      }
      this._queuedFrames++;
      this._queuedBytes += frame.byteLength;
      this._shaperQueue.push(ticket);
    }
    this._pumpShaper();
  }

  /** True when no frame is queued, delayed or held. */
  get idle(): boolean {
    return this._queuedFrames === 0;
  }

  get queuedFrames(): number {
    return this._queuedFrames;
  }

  /** Stops every timer; frames still inside are discarded without being counted. */
  close(): void {
    this._closed = true;
    for (const timer of [this._shaperTimer, this._delayTimer, this._holdTimer]) clearTimeout(timer);
    this._shaperTimer = this._delayTimer = this._holdTimer = undefined;
    this._shaperQueue.length = 0;
    this._delayed.length = 0;
    this._held = undefined;
    this._queuedFrames = this._queuedBytes = 0;
  }

  private _burstBytes(): number {
    return Math.max(kMinBurstBytes, (this._imp.bandwidthBps / 8) * (kBurstMs / 1000));
  }

  private _refillReset(): void {
    this._tokensBytes = this._burstBytes();
    this._tokensAtMs = this._hooks.nowMs();
  }

  // 3. Token bucket: a frame may leave while the bucket is not in debt, and its size is taken
  // from it (going negative), so frames larger than the bucket still pass at the right rate.
  private _pumpShaper(): void {
    if (this._closed) return;
    const rateBps = this._imp.bandwidthBps;
    if (rateBps > 0) {
      const now = this._hooks.nowMs();
      this._tokensBytes = Math.min(this._burstBytes(), this._tokensBytes + ((now - this._tokensAtMs) * rateBps) / 8000);
      this._tokensAtMs = now;
    }
    while (this._shaperQueue.length > 0 && (rateBps === 0 || this._tokensBytes >= 0)) {
      const ticket = this._shaperQueue.shift()!;
      if (rateBps > 0) this._tokensBytes -= ticket.frame.byteLength;
      this._enterDelay(ticket);
    }
    if (this._shaperQueue.length > 0 && this._shaperTimer === undefined) {
      const waitMs = Math.max(1, Math.ceil((-this._tokensBytes * 8000) / rateBps));
      this._shaperTimer = setTimeout(() => {
        this._shaperTimer = undefined;
        this._pumpShaper();
      }, waitMs);
    }
  }

  // 4. Latency and jitter: due times are clamped to be non-decreasing, so the delay queue is FIFO.
  private _enterDelay(ticket: Ticket): void {
    const now = this._hooks.nowMs();
    const delayMs = Math.max(0, this._imp.latencyMs + ticket.jitterMs);
    const atMs = Math.max(now + delayMs, this._lastDueMs);
    this._lastDueMs = atMs;
    if (atMs <= now && this._delayed.length === 0) {
      this._release(ticket);
      return;
    }
    this._delayed.push({ ticket, atMs });
    this._armDelayTimer();
  }

  private _armDelayTimer(): void {
    if (this._delayTimer !== undefined || this._delayed.length === 0) return;
    // Rounded up and re-checked on firing: a frame never leaves before its due time.
    const waitMs = Math.max(1, Math.ceil(this._delayed[0]!.atMs - this._hooks.nowMs()));
    this._delayTimer = setTimeout(() => {
      this._delayTimer = undefined;
      const now = this._hooks.nowMs();
      while (!this._closed && this._delayed.length > 0 && this._delayed[0]!.atMs <= now) {
        this._release(this._delayed.shift()!.ticket);
      }
      this._armDelayTimer();
    }, waitMs);
  }

  // 5. Reorder: a chosen frame waits until the next frame of this direction has been delivered.
  private _release(ticket: Ticket): void {
    if (this._closed) return;
    if (this._held === undefined && ticket.reorder) {
      this._held = ticket.frame;
      this._holdTimer = setTimeout(() => {
        this._holdTimer = undefined;
        this._flushHeld();
      }, kReorderHoldMs);
      return;
    }
    this._leave(ticket.frame);
    this._flushHeld();
  }

  private _flushHeld(): void {
    clearTimeout(this._holdTimer);
    this._holdTimer = undefined;
    const held = this._held;
    this._held = undefined;
    if (held !== undefined) this._leave(held);
  }

  private _leave(frame: Buffer): void {
    this._queuedFrames--;
    this._queuedBytes -= frame.byteLength;
    this._hooks.deliver(frame);
    if (this._queuedFrames === 0 && !this._closed) this._hooks.idle();
  }
}
