// The run's resource pool (reference §2.2 --mem/--cpus/--cpu-overcommit, DESIGN §6): every VM
// boot draws memory and cpus from it, and `lab:claim` reserves a file's share ahead of time.
//
// Accounting, per session:
//   claim       reserved once (lab:claim), counted as used from the moment it is granted;
//   fromClaim   the part of a boot drawn from the session's claim (no new pool usage);
//   fromPool    the rest of the boot, drawn from the free pool.
// A boot waits (FIFO, so a big boot is never starved by small ones) while its pool part does not
// fit, and fails at once when it never can: larger than the whole pool, or larger than what the
// pool could ever free while this file keeps holding what it already holds.

import { formatSize } from '../config/units.js';
import type { EventBus } from '../events/bus.js';
import type { ResourceAmount } from '../protocol/events.js';
import { BrokerError } from './rpc-server.js';

/** Thrown (rejected) when a request can never be satisfied or was cancelled. */
/** A BrokerError, so the worker gets the message as written (code `usage`), not "internal broker error". */
export class ResourceError extends BrokerError {
  override name = 'ResourceError';
}

interface Holding {
  path: string;
  /** The claim as granted (0/0 when none). */
  claim: ResourceAmount;
  /** What of the claim boots currently use. */
  claimInUse: ResourceAmount;
  /** lab:claim was called (granted or not): a second call is an error. */
  claimed: boolean;
  claimGranted: boolean;
  /** Pool usage of this session's boots beyond its claim. */
  fromPool: ResourceAmount;
  /** Each wait event (file_blocked before dispatch, resource_wait after) is emitted at most once per session. */
  waitEmitted: Set<'file_blocked' | 'resource_wait'>;
  /** The part of `claim` the runner reserved at dispatch from the file's literal lab:claim. */
  reserved: ResourceAmount;
  /** Dispatched: a wait is now the file's own (resource_wait), not the scheduler's (file_blocked). */
  dispatched: boolean;
}

interface Waiter {
  sessionId: number;
  path: string;
  /** The part that must come from the free pool. */
  need: ResourceAmount;
  grant: () => void;
  fail: (err: Error) => void;
}

const kZero: ResourceAmount = { memory_bytes: 0, cpus: 0 };

function add(a: ResourceAmount, b: ResourceAmount): ResourceAmount {
  return { memory_bytes: a.memory_bytes + b.memory_bytes, cpus: a.cpus + b.cpus };
}
function sub(a: ResourceAmount, b: ResourceAmount): ResourceAmount {
  return { memory_bytes: a.memory_bytes - b.memory_bytes, cpus: a.cpus - b.cpus };
}
function fits(need: ResourceAmount, free: ResourceAmount): boolean {
  return need.memory_bytes <= free.memory_bytes && need.cpus <= free.cpus;
}
function describe(a: ResourceAmount): string {
  return `${formatSize(a.memory_bytes)} memory, ${a.cpus} cpu${a.cpus === 1 ? '' : 's'}`;
}
function validAmount(a: ResourceAmount): boolean {
  return Number.isFinite(a.memory_bytes) && a.memory_bytes >= 0 && Number.isFinite(a.cpus) && a.cpus >= 0;
}

export class ResourcePool {
  private readonly _total: ResourceAmount;
  private _used: ResourceAmount = kZero;
  private readonly _sessions = new Map<number, Holding>();
  private readonly _queue: Waiter[] = [];
  private _reclaim: (() => boolean) | undefined;

  constructor(
    total: ResourceAmount,
    private readonly _bus: EventBus,
  ) {
    if (!validAmount(total)) throw new TypeError(`ResourcePool: invalid total ${JSON.stringify(total)}`);
    this._total = { ...total };
  }

  get total(): ResourceAmount {
    return { ...this._total };
  }

  state(): { used: ResourceAmount; available: ResourceAmount } {
    return { used: { ...this._used }, available: sub(this._total, this._used) };
  }

  /** Sessions waiting for room right now (for pool_state and the progress display). */
  get waiting(): number {
    return this._queue.length;
  }

  /**
   * Gate a VM boot. Waits while the pool is full (file_blocked once per session), rejects at once
   * when the boot can never fit. The returned function releases; calling it twice is harmless.
   */
  async acquire(sessionId: number, path: string, amount: ResourceAmount, signal?: AbortSignal): Promise<() => void> {
    if (!validAmount(amount)) throw new ResourceError(`${path}: invalid VM size ${JSON.stringify(amount)}`);
    const holding = this._holding(sessionId, path);
    // Only a running file boots.
    holding.dispatched = true;
    // 1. Draw from the session's claim first.
    const claimFree = sub(holding.claim, holding.claimInUse);
    const fromClaim: ResourceAmount = {
      memory_bytes: Math.min(amount.memory_bytes, claimFree.memory_bytes),
      cpus: Math.min(amount.cpus, claimFree.cpus),
    };
    const need = sub(amount, fromClaim);
    // 2. Could it ever fit? Everything other files hold will be released eventually; what this
    //    file holds will not while it waits here.
    this._checkCanEverFit(sessionId, path, `a VM of ${describe(amount)}`, need);
    // 3. Take it now, or queue.
    holding.claimInUse = add(holding.claimInUse, fromClaim);
    try {
      await this._take(sessionId, path, need, signal);
    } catch (err) {
      holding.claimInUse = sub(holding.claimInUse, fromClaim);
      throw err;
    }
    if (this._sessions.get(sessionId) !== holding) {
      // The file ended between the grant and this continuation: give the room straight back.
      this._used = sub(this._used, need);
      this._pump();
      throw new ResourceError(`${path}: the file ended while waiting for resources`);
    }
    holding.fromPool = add(holding.fromPool, need);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const current = this._sessions.get(sessionId);
      // The session was already released wholesale (releaseSession): nothing left to return.
      if (current !== holding) return;
      holding.claimInUse = sub(holding.claimInUse, fromClaim);
      holding.fromPool = sub(holding.fromPool, need);
      this._used = sub(this._used, need);
      this._pump();
    };
  }

  /**
   * Takes `amount` only if it fits now and nobody waits (the warm pool's spares: they must never
   * make a file wait). The holder's id is its own; release like acquire's.
   */
  tryAcquire(sessionId: number, path: string, amount: ResourceAmount): (() => void) | undefined {
    if (!validAmount(amount) || this._queue.length > 0 || !fits(amount, sub(this._total, this._used))) return undefined;
    const holding = this._holding(sessionId, path);
    this._used = add(this._used, amount);
    holding.fromPool = add(holding.fromPool, amount);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (this._sessions.get(sessionId) !== holding) return;
      holding.fromPool = sub(holding.fromPool, amount);
      this._used = sub(this._used, amount);
      this._pump();
    };
  }

  /** Called when a file must wait: frees room held for later (warm spares); true when it freed some. */
  setReclaimer(reclaim: () => boolean): void {
    this._reclaim = reclaim;
  }

  /**
   * lab:claim: one-shot per session. Reserves `amount` ahead (waiting for room like a boot); later
   * boots of the session draw from it first. Emits claim_acquired; claim_released comes from
   * releaseSession.
   */
  async claim(sessionId: number, path: string, asked: ResourceAmount, signal?: AbortSignal): Promise<void> {
    if (!validAmount(asked)) throw new ResourceError(`lab:claim: invalid amount ${JSON.stringify(asked)}`);
    const holding = this._holding(sessionId, path);
    if (holding.claimed) throw new ResourceError('lab:claim: claim already taken (a file may claim once)');
    // A failed claim still counts as the one claim: a retry in a pcall would hide the bug.
    holding.claimed = true;
    holding.dispatched = true;
    // What the runner reserved at dispatch counts; only the rest is taken now.
    const reserved = holding.reserved;
    const amount = { memory_bytes: Math.max(0, asked.memory_bytes - reserved.memory_bytes), cpus: Math.max(0, asked.cpus - reserved.cpus) };
    if (holding.claimGranted && amount.memory_bytes === 0 && amount.cpus === 0) return;
    this._checkCanEverFit(sessionId, path, `lab:claim{${describe(asked)}}`, amount);
    await this._take(sessionId, path, amount, signal);
    if (this._sessions.get(sessionId) !== holding) {
      // The session ended while the claim waited; give the room straight back.
      this._used = sub(this._used, amount);
      this._pump();
      throw new ResourceError('lab:claim: the file ended while the claim was waiting');
    }
    holding.claim = add(holding.claim, amount);
    if (!holding.claimGranted) this._bus.emit('claim_acquired', { path, amount: { ...holding.claim } });
    holding.claimGranted = true;
  }

  /**
   * Before dispatch: reserves a file's literal lab:claim (reference: `file_dispatched.reservation`),
   * emitting file_blocked while it waits. The file's own lab:claim then finds it granted. Throws
   * (and reserves nothing) when it can never fit: the file's lab:claim reports that itself.
   */
  async reserve(sessionId: number, path: string, amount: ResourceAmount, signal?: AbortSignal): Promise<void> {
    if (!validAmount(amount)) throw new ResourceError(`${path}: invalid reservation ${JSON.stringify(amount)}`);
    const holding = this._holding(sessionId, path);
    this._checkCanEverFit(sessionId, path, `the reservation of ${describe(amount)}`, amount);
    await this._take(sessionId, path, amount, signal);
    if (this._sessions.get(sessionId) !== holding) {
      this._used = sub(this._used, amount);
      this._pump();
      throw new ResourceError(`${path}: the file ended while its reservation was waiting`);
    }
    holding.claim = { ...amount };
    holding.reserved = { ...amount };
    holding.claimGranted = true;
    this._bus.emit('claim_acquired', { path, amount: { ...amount } });
  }

  /** The file was handed to a worker: from now on its waits are resource_wait, not file_blocked. */
  dispatched(sessionId: number, path: string): void {
    const holding = this._holding(sessionId, path);
    holding.dispatched = true;
  }

  /** The file ended: release its claim and boots, fail its waiting requests. Idempotent. */
  releaseSession(sessionId: number): void {
    const holding = this._sessions.get(sessionId);
    if (!holding) return;
    this._sessions.delete(sessionId);
    for (let i = this._queue.length - 1; i >= 0; i--) {
      const waiter = this._queue[i]!;
      if (waiter.sessionId !== sessionId) continue;
      this._queue.splice(i, 1);
      waiter.fail(new ResourceError(`${holding.path}: the file ended while waiting for resources`));
    }
    this._used = sub(sub(this._used, holding.fromPool), holding.claim);
    // Claim events come in pairs: released only for a claim that was acquired.
    if (holding.claimGranted) {
      this._bus.emit('claim_released', { path: holding.path, amount: { ...holding.claim } });
    }
    this._pump();
  }

  private _holding(sessionId: number, path: string): Holding {
    let holding = this._sessions.get(sessionId);
    if (!holding) {
      holding = {
        path,
        claim: kZero,
        claimInUse: kZero,
        claimed: false,
        claimGranted: false,
        fromPool: kZero,
        waitEmitted: new Set(),
        reserved: kZero,
        dispatched: false,
      };
      this._sessions.set(sessionId, holding);
    }
    return holding;
  }

  private _checkCanEverFit(sessionId: number, path: string, what: string, need: ResourceAmount): void {
    if (!fits(need, this._total)) {
      throw new ResourceError(
        `${path}: ${what} can never fit: the pool has ${describe(this._total)} in total; ` +
          `lower the VM's memory/cpus or raise --mem/--cpus/--cpu-overcommit`,
      );
    }
    const holding = this._sessions.get(sessionId);
    const held = holding ? add(holding.fromPool, holding.claim) : kZero;
    const ceiling = sub(this._total, held);
    if (!fits(need, ceiling)) {
      throw new ResourceError(
        `${path}: ${what} can never fit: this file already holds ${describe(held)} of the pool's ` +
          `${describe(this._total)}; shut a VM down first, claim less, or raise --mem/--cpus`,
      );
    }
  }

  private _take(sessionId: number, path: string, need: ResourceAmount, signal?: AbortSignal): Promise<void> {
    if (this._queue.length === 0) this._reclaimFor(need);
    // FIFO: nobody overtakes a waiter, so a big request is never starved.
    if (this._queue.length === 0 && fits(need, sub(this._total, this._used))) {
      this._used = add(this._used, need);
      return Promise.resolve();
    }
    if (signal?.aborted) return Promise.reject(new ResourceError(`${path}: cancelled while waiting for resources`));
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this._queue.indexOf(waiter);
        if (i >= 0) this._queue.splice(i, 1);
        reject(new ResourceError(`${path}: cancelled while waiting for resources`));
        this._pump();
      };
      const waiter: Waiter = {
        sessionId,
        path,
        need,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        fail: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this._queue.push(waiter);
      const holding = this._sessions.get(sessionId);
      const kind = holding?.dispatched ? 'resource_wait' : 'file_blocked';
      if (holding && !holding.waitEmitted.has(kind)) {
        holding.waitEmitted.add(kind);
        this._bus.emit(kind, { path, waiting_for: { ...need }, reason: 'pool_full' });
      }
      this._breakDeadlock();
    });
  }

  /** Room held for later (warm spares) goes before anyone waits; a reclaim returns it synchronously. */
  private _reclaimFor(need: ResourceAmount): void {
    while (!fits(need, sub(this._total, this._used)) && this._reclaim?.()) {
      // One spare's room came back; look again.
    }
  }

  /**
   * Hold-and-wait: a waiting file's worker is blocked in its RPC, so it releases nothing until
   * its wait ends. If the head of the queue cannot fit even after every file that is *not*
   * waiting released everything it holds, nobody will ever move. Fail the newest waiter that
   * holds something: its test fails, its scope closes, and what it held goes back to the pool.
   */
  private _breakDeadlock(): void {
    const head = this._queue[0];
    if (!head) return;
    const waitingSessions = new Set(this._queue.map((w) => w.sessionId));
    let releasable = kZero;
    for (const [id, holding] of this._sessions) {
      if (!waitingSessions.has(id)) releasable = add(releasable, add(holding.fromPool, holding.claim));
    }
    if (fits(head.need, add(sub(this._total, this._used), releasable))) return;
    for (let i = this._queue.length - 1; i >= 0; i--) {
      const waiter = this._queue[i]!;
      const holding = this._sessions.get(waiter.sessionId);
      if (!holding) continue;
      const held = add(holding.fromPool, holding.claim);
      if (held.memory_bytes === 0 && held.cpus === 0) continue;
      this._queue.splice(i, 1);
      const others = [...new Set(this._queue.map((w) => w.path))].filter((p) => p !== waiter.path);
      waiter.fail(
        new ResourceError(
          `${waiter.path}: resource deadlock: this file holds ${describe(held)} and waits for ` +
            `${describe(waiter.need)} more, while ${others.join(', ') || 'other files'} wait too and the pool ` +
            `(${describe(this._total)}) cannot serve them all; claim everything up front with lab:claim, ` +
            `shut VMs down before booting more, or raise --mem/--cpus`,
        ),
      );
      this._pump();
      return;
    }
  }

  /** Grant waiters in order while the head fits. */
  private _pump(): void {
    while (this._queue.length > 0) {
      const head = this._queue[0]!;
      if (!fits(head.need, sub(this._total, this._used))) return;
      this._queue.shift();
      this._used = add(this._used, head.need);
      head.grant();
    }
  }
}

/** Pool size and default -j from the flags (reference §2.2) and the host. */
export interface PoolSizing {
  total: ResourceAmount;
  /** Files that can run at once by default: min(cpus, memory / 512 MiB), at least 1. */
  defaultJobs: number;
}

export const kDefaultFileMemoryBytes = 512 * 1024 * 1024;

export function sizePool(opts: { memoryBytes: number; cpus: number; cpuOvercommit: number }): PoolSizing {
  const overcommit = Math.min(8, Math.max(0.5, opts.cpuOvercommit));
  const cpus = Math.max(1, Math.round(opts.cpus * overcommit));
  const total = { memory_bytes: opts.memoryBytes, cpus };
  const byMemory = Math.floor(opts.memoryBytes / kDefaultFileMemoryBytes);
  // Files at once: one per host cpu (a booting guest keeps a core busy), even when the pool
  // admits more vCPUs than that for files that run several mostly idle guests.
  const byHostCpus = Math.max(1, Math.round(opts.cpus * Math.min(1, overcommit)));
  return { total, defaultJobs: Math.max(1, Math.min(byHostCpus, byMemory)) };
}
