// The warm pool (DESIGN §4): guests restored from a boot snapshot ahead of time, so a file's
// vm:boot() takes one that is already running. Spares are ordinary ManagedVms owned by the pool
// (no session, no events); a boot of the same launch key takes a spare's QEMU and agent over. A
// spare goes to one file only and is never given back: the pool refills in the background.
//
// Spares never cost a file anything: they take only room nobody waits for (ResourcePool's
// tryAcquire), the pool gives that room back at once when a file waits (reclaim), and there are
// spares only while files are queued or running that may use them.

import type { Profile } from '../config/profiles.js';
import { EventBus } from '../events/bus.js';
import type { BootOptions } from '../protocol/rpc.js';
import type { BootCache } from './boot-cache.js';
import { ManagedVm } from './managed-vm.js';
import type { ResourcePool } from './resources.js';

/** Spares kept per launch key: enough for the files that start next, at -j2 or so. */
const kSparesPerKey = 2;
/** Keys kept warm at once: the most recently booted. */
const kWarmKeys = 2;
/** The pool's own id in the resource pool (sessions count up from 1). */
const kPoolSessionId = 0;

interface KeyState {
  profile: Profile;
  boot: BootOptions;
  spares: ManagedVm[];
  /** Spares being restored now. */
  filling: number;
  lastUsed: number;
}

export interface WarmPoolOptions {
  pool: ResourcePool;
  bootCache: BootCache;
  /** Off with --no-warm-pool. */
  enabled: boolean;
  /** Files not started yet, and files running now (they may boot again: a VM per test). */
  demand: () => { queued: number; running: number };
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

  /** A running spare of `key`, now the caller's (its QEMU, agent and resources), or undefined. */
  take(key: string): ManagedVm | undefined {
    const state = this._keys.get(key);
    const spare = state?.spares.shift();
    if (state) state.lastUsed = performance.now();
    return spare;
  }

  /** A file booted `key` (profile and options as given): keep spares of it ready for the next files. */
  keep(key: string, profile: Profile, boot: BootOptions): void {
    if (!this.enabled) return;
    let state = this._keys.get(key);
    if (!state) {
      state = { profile, boot, spares: [], filling: 0, lastUsed: 0 };
      this._keys.set(key, state);
    }
    state.lastUsed = performance.now();
    this._dropColdKeys();
    this._fill(key, state);
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
    const spares = [...this._keys.values()].flatMap((s) => s.spares.splice(0));
    this._keys.clear();
    await Promise.all(spares.map((s) => s.shutdown().catch(() => undefined)));
  }

  /** Restores spares until the key has as many as the queue may use, room permitting. */
  private _fill(key: string, state: KeyState): void {
    // Files still to start may each want one; running files may boot again. None once all ended.
    const { queued, running } = this._opts.demand();
    const wanted = queued > 0 ? kSparesPerKey : running > 0 ? 1 : 0;
    while (this.enabled && state.spares.length + state.filling < wanted) {
      const spare = new ManagedVm(-this._nextId++, `warm-${key.slice(0, 8)}`, state.profile, {
        bus: this._quiet,
        pool: { acquire: (_id, _path, amount) => this._tryAcquire(amount) },
        sessionId: kPoolSessionId,
        displayPath: '(warm pool)',
        bootCache: this._opts.bootCache,
      });
      state.filling++;
      void spare
        .bootSpare(state.boot, key)
        .then(
          () => {
            if (this._closed || this._keys.get(key) !== state) return spare.shutdown();
            state.spares.push(spare);
            return undefined;
          },
          () => spare.shutdown(),
        )
        .catch(() => undefined)
        .finally(() => {
          state.filling--;
        });
    }
  }

  private async _tryAcquire(amount: { memory_bytes: number; cpus: number }): Promise<() => void> {
    const release = this._opts.pool.tryAcquire(kPoolSessionId, '(warm pool)', amount);
    if (!release) throw new Error('no spare room for a warm VM');
    return release;
  }

  private _dropColdKeys(): void {
    const byUse = [...this._keys.entries()].sort(([, a], [, b]) => b.lastUsed - a.lastUsed);
    for (const [key, state] of byUse.slice(kWarmKeys)) {
      this._keys.delete(key);
      for (const spare of state.spares.splice(0)) void spare.shutdown().catch(() => undefined);
    }
  }
}
