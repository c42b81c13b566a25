// The warm pool (DESIGN §4): guests restored from a boot snapshot ahead of time, so a file's
// vm:boot() takes one that is already running. Spares are ordinary ManagedVms owned by the pool
// (no session, no events); a boot of the same launch key takes a spare's QEMU and agent over. A
// spare goes to one file only and is never given back: the pool refills in the background.
//
// Spares never cost a file anything: they take only room nobody waits for (ResourcePool's
// tryAcquire), the pool gives that room back at once when a file waits (reclaim), and there are
// spares only while files are queued that may use them.

import type { Profile } from '../config/profiles.js';
import { EventBus } from '../events/bus.js';
import type { BootCache } from './boot-cache.js';
import { ManagedVm } from './managed-vm.js';
import type { ResourcePool } from './resources.js';

/** Spares kept per key at most: one per file slot (-j), up to this. */
const kSparesPerKey = 2;
/** Keys kept warm at once: the most recently booted. */
export const kWarmKeys = 4;
/** The pool's own id in the resource pool (sessions count up from 1). */
const kPoolSessionId = 0;

/** Brings a new spare up: restored, reseeded, clock set, warmed. */
export type SpareStart = (spare: ManagedVm) => Promise<void>;

interface KeyState {
  profile: Profile;
  start: SpareStart;
  spares: ManagedVm[];
  /** Spares being restored now. */
  filling: number;
  /** How many to keep when the user of the key says (a reset snapshot: 1 while tests remain); else by the queue. */
  wanted?: number;
  /** Boots waiting for a spare being restored (rather than restoring a second guest themselves). */
  waiters: ((spare: ManagedVm | undefined) => void)[];
  lastUsed: number;
}

export interface WarmPoolOptions {
  pool: ResourcePool;
  bootCache: BootCache;
  /** Off with --no-warm-pool. */
  enabled: boolean;
  /** Files not started yet, and how many run at once (-j). */
  demand: () => { queued: number; slots: number };
}

export class WarmPool {
  private readonly _keys = new Map<string, KeyState>();
  /** Spares emit no events: a file's boot reports what it took. */
  private readonly _quiet = new EventBus();
  private _nextId = 1;
  private _closed = false;

  constructor(private readonly _opts: WarmPoolOptions) {}

  get enabled(): boolean {
    return this._opts.enabled && !this._closed;
  }

  /**
   * A running spare of `key`, now the caller's (its QEMU, agent and resources), or undefined. One
   * being restored is waited for: restoring a second guest beside it would only slow both.
   */
  async take(key: string): Promise<ManagedVm | undefined> {
    const state = this._keys.get(key);
    if (!state) return undefined;
    state.lastUsed = performance.now();
    const ready = state.spares.shift();
    if (ready) return ready;
    if (state.filling <= state.waiters.length) return undefined;
    return new Promise((resolve) => state.waiters.push(resolve));
  }

  /**
   * A file started a guest of `key` (a boot's launch key, or a fixture's VM): keep spares of it
   * ready for the next files, each brought up by `start`.
   */
  keep(key: string, profile: Profile, start: SpareStart, wanted?: number): void {
    if (!this.enabled) return;
    let state = this._keys.get(key);
    if (!state) {
      state = { profile, start, spares: [], filling: 0, waiters: [], lastUsed: 0 };
      this._keys.set(key, state);
    }
    state.lastUsed = performance.now();
    state.wanted = wanted;
    this._dropColdKeys();
    this._fill(key, state);
  }

  /** Spares of `key` are of no more use (their snapshot is gone). */
  drop(key: string): void {
    const state = this._keys.get(key);
    if (state) void this._discard(key, state);
  }

  /** Gives one spare's room back to the resource pool (a file waits for it). False when there is none. */
  reclaim(): boolean {
    for (const state of [...this._keys.values()].sort((a, b) => a.lastUsed - b.lastUsed)) {
      const spare = state.spares.pop();
      if (spare) {
        spare.dropResources();
        void spare.shutdown().catch(() => undefined);
        return true;
      }
    }
    return false;
  }

  async close(): Promise<void> {
    this._closed = true;
    await Promise.all([...this._keys].map(([key, state]) => this._discard(key, state)));
  }

  /** A key goes: its waiters restore their own guests, its spares shut down. */
  private async _discard(key: string, state: KeyState): Promise<void> {
    this._keys.delete(key);
    for (const w of state.waiters.splice(0)) w(undefined);
    await Promise.all(state.spares.splice(0).map((spare) => spare.shutdown().catch(() => undefined)));
  }

  /** Restores spares until the key has as many as the queue may use, room permitting. */
  private _fill(key: string, state: KeyState): void {
    // Files still to start may each want one, up to one per slot. None for the last files: a
    // spare nobody takes is a restore for nothing.
    const { queued, slots } = this._opts.demand();
    const wanted = state.wanted ?? (queued > 0 ? Math.min(kSparesPerKey, slots, queued) : 0);
    while (this.enabled && state.spares.length + state.filling < wanted) {
      const spare = new ManagedVm(-this._nextId++, `warm-${key.slice(0, 8)}`, state.profile, {
        bus: this._quiet,
        pool: { acquire: (_id, _path, amount) => this._tryAcquire(amount) },
        sessionId: kPoolSessionId,
        displayPath: '(warm pool)',
        bootCache: this._opts.bootCache,
      });
      state.filling++;
      void state
        .start(spare)
        .then(
          () => {
            state.filling--;
            if (this._closed || this._keys.get(key) !== state) {
              this._releaseWaiters(state);
              return spare.shutdown();
            }
            const waiter = state.waiters.shift();
            if (waiter) waiter(spare);
            else state.spares.push(spare);
            return undefined;
          },
          () => {
            state.filling--;
            this._releaseWaiters(state);
            return spare.shutdown();
          },
        )
        .catch(() => undefined);
    }
  }

  /** Waiters beyond the spares still coming restore their own guest. */
  private _releaseWaiters(state: KeyState): void {
    while (state.waiters.length > state.filling) state.waiters.pop()!(undefined);
  }

  private async _tryAcquire(amount: { memory_bytes: number; cpus: number }): Promise<() => void> {
    const release = this._opts.pool.tryAcquire(kPoolSessionId, '(warm pool)', amount);
    if (!release) throw new Error('no spare room for a warm VM');
    return release;
  }

  private _dropColdKeys(): void {
    const byUse = [...this._keys.entries()].sort(([, a], [, b]) => b.lastUsed - a.lastUsed);
    for (const [key, state] of byUse.slice(kWarmKeys)) {
      if (state.waiters.length === 0) void this._discard(key, state);
    }
  }
}
