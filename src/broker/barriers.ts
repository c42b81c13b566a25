// Cross-file barriers (DESIGN §6, issue 4 item 4): `lab:barrier(name, count, timeout)` blocks a
// file until `count` files arrived at `name`. Named per run, so files on different workers meet.
//
// A party is a file (a session): its worker is blocked in the RPC while it waits, so it holds its
// worker slot. That makes some barriers impossible, and we fail those at once instead of letting
// them run into their timeout:
//   1. `count` > the number of files that can run at once (-j): never all present together;
//   2. arrived + files still running + files still queued < `count`: not enough files left
//      (checked first: when both hold, it is the better explanation);
//   3. every running file waits at some barrier and no queued file can start (no free slot, or
//      nothing queued): nothing can move any more (a deadlock across barriers).
// The dispatcher tells us what is running (sessionStarted/sessionEnded) and what it still plans
// to start (the `SchedulerView`), and calls `scheduleChanged()` when that plan shrinks
// (fail-fast, Ctrl-C).

import { formatMs } from '../config/units.js';
import { BrokerError } from './rpc-server.js';

/** A BrokerError, so the worker gets the message as written (code `usage`), not "internal broker error". */
export class BarrierError extends BrokerError {
  override name = 'BarrierError';
}

/** What the dispatcher knows about the run's schedule. */
export interface SchedulerView {
  /** Files that can run at the same time (-j). */
  readonly slots: number;
  /** Files not started yet that the dispatcher will still start. */
  queued(): number;
}

interface Arrival {
  sessionId: number;
  path: string;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

interface Barrier {
  name: string;
  count: number;
  /** Who set the count, for the mismatch message. */
  declaredBy: string;
  arrivals: Arrival[];
}

/** "5s" for whole seconds, else the units module's form ("1.50s", "250ms"). */
function showMs(ms: number): string {
  return ms >= 1000 && ms % 1000 === 0 ? `${ms / 1000}s` : formatMs(ms);
}

/** Without a scheduler (REPL, ad-hoc broker use) assume one file and nothing queued. */
const kNoScheduler: SchedulerView = { slots: 1, queued: () => 0 };

export class Barriers {
  private readonly _barriers = new Map<string, Barrier>();
  /** Sessions that are running: sessionId → display path. */
  private readonly _live = new Map<number, string>();
  /** Sessions that ended: arrivals from them are refused (a late RPC after teardown). */
  private readonly _ended = new Set<number>();
  private _view: SchedulerView;

  constructor(view?: SchedulerView) {
    this._view = view ?? kNoScheduler;
  }

  /** Installs the dispatcher's view (the broker may be built before the dispatcher). */
  setScheduler(view: SchedulerView): void {
    this._view = view;
    this._checkAll();
  }

  /** The dispatcher started a file. */
  sessionStarted(sessionId: number, path: string): void {
    if (this._ended.has(sessionId)) return;
    this._live.set(sessionId, path);
  }

  /** The file ended (the broker's closeSession; idempotent). Its waits are dropped. */
  sessionEnded(sessionId: number): void {
    this._ended.add(sessionId);
    this._live.delete(sessionId);
    for (const barrier of this._barriers.values()) {
      const i = barrier.arrivals.findIndex((a) => a.sessionId === sessionId);
      if (i >= 0) {
        const [arrival] = barrier.arrivals.splice(i, 1);
        this._settle(arrival!, new BarrierError(`barrier \`${barrier.name}\`: the file ended while waiting`));
      }
      if (barrier.arrivals.length === 0) this._barriers.delete(barrier.name);
    }
    this._checkAll();
  }

  /** The dispatcher's plan changed (it stopped dispatching): re-check every waiting barrier. */
  scheduleChanged(): void {
    this._checkAll();
  }

  /**
   * Resolves when `count` sessions arrived at `name`; rejects on timeout ("barrier `x`: 2 of 3
   * arrived within 5s") or at once when it can never fill, saying why. `timeoutMs` 0 or Infinity
   * waits without a time limit (the never-fill checks still apply).
   */
  arrive(sessionId: number, path: string, name: string, count: number, timeoutMs: number): Promise<void> {
    // 1. Validate.
    if (typeof name !== 'string' || name === '') {
      return Promise.reject(new BarrierError('lab:barrier: name must be a non-empty string'));
    }
    if (!Number.isInteger(count) || count < 1) {
      return Promise.reject(new BarrierError(`barrier \`${name}\`: count must be an integer >= 1, got ${count}`));
    }
    if (this._ended.has(sessionId)) {
      return Promise.reject(new BarrierError(`barrier \`${name}\`: the file already ended`));
    }
    // A session the dispatcher did not announce (REPL, tests) still counts as running.
    if (!this._live.has(sessionId)) this._live.set(sessionId, path);

    // 2. Find or create the current generation of the barrier.
    let barrier = this._barriers.get(name);
    if (barrier && barrier.count !== count) {
      return Promise.reject(
        new BarrierError(
          `barrier \`${name}\`: ${path} asks for ${count} parties but ${barrier.declaredBy} is waiting for ${barrier.count}; ` +
            'every file must pass the same count',
        ),
      );
    }
    if (barrier?.arrivals.some((a) => a.sessionId === sessionId)) {
      return Promise.reject(new BarrierError(`barrier \`${name}\`: this file is already waiting here`));
    }
    if (!barrier) {
      barrier = { name, count, declaredBy: path, arrivals: [] };
      this._barriers.set(name, barrier);
    }

    // 3. Arrive; the last party releases everyone, and the name starts a fresh generation.
    const promise = new Promise<void>((resolve, reject) => {
      const arrival: Arrival = { sessionId, path, resolve, reject, timer: undefined };
      barrier.arrivals.push(arrival);
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        arrival.timer = setTimeout(() => this._timeout(barrier, arrival, timeoutMs), timeoutMs);
      }
    });
    if (barrier.arrivals.length >= count) {
      this._barriers.delete(name);
      for (const arrival of barrier.arrivals) this._settle(arrival);
      return promise;
    }

    // 4. Can it still fill? If not, fail it now rather than at the timeout.
    this._checkAll();
    return promise;
  }

  /** Names of barriers with waiters and how many arrived (for diagnostics). */
  waiting(): { name: string; arrived: number; count: number; paths: string[] }[] {
    return [...this._barriers.values()].map((b) => ({
      name: b.name,
      arrived: b.arrivals.length,
      count: b.count,
      paths: b.arrivals.map((a) => a.path),
    }));
  }

  private _timeout(barrier: Barrier, arrival: Arrival, timeoutMs: number): void {
    const i = barrier.arrivals.indexOf(arrival);
    if (i < 0) return;
    const arrived = barrier.arrivals.length;
    barrier.arrivals.splice(i, 1);
    if (barrier.arrivals.length === 0) this._barriers.delete(barrier.name);
    const others = barrier.arrivals.map((a) => a.path);
    this._settle(
      arrival,
      new BarrierError(
        `barrier \`${barrier.name}\`: ${arrived} of ${barrier.count} arrived within ${showMs(timeoutMs)}` +
          (others.length ? ` (waiting: ${[arrival.path, ...others].join(', ')})` : ''),
      ),
    );
  }

  private _settle(arrival: Arrival, err?: Error): void {
    if (arrival.timer) clearTimeout(arrival.timer);
    if (err) arrival.reject(err);
    else arrival.resolve();
  }

  private _failBarrier(barrier: Barrier, why: string): void {
    this._barriers.delete(barrier.name);
    const arrived = barrier.arrivals.length;
    for (const arrival of barrier.arrivals.splice(0)) {
      this._settle(arrival, new BarrierError(`barrier \`${barrier.name}\` can never fill: ${arrived} of ${barrier.count} arrived; ${why}`));
    }
  }

  /** Applies the three never-fill rules to every barrier with waiters. */
  private _checkAll(): void {
    const slots = this._view.slots;
    const queued = this._view.queued();
    // Rules 2 then 1, per barrier (too few files is the better explanation when both hold).
    for (const barrier of [...this._barriers.values()]) {
      const arrivedIds = new Set(barrier.arrivals.map((a) => a.sessionId));
      const othersRunning = [...this._live.keys()].filter((id) => !arrivedIds.has(id)).length;
      const potential = barrier.arrivals.length + othersRunning + queued;
      if (potential < barrier.count) {
        const left = othersRunning + queued;
        this._failBarrier(
          barrier,
          left === 0
            ? 'no other file is still running or queued in this run (did a filter, --shard or an earlier failure leave the other parties out?)'
            : `only ${left} other file${left === 1 ? ' is' : 's are'} still running or queued in this run`,
        );
        continue;
      }
      if (barrier.count > slots) {
        this._failBarrier(
          barrier,
          `it needs ${barrier.count} files waiting at the same time but at most ${slots} run at once ` +
            `(-j ${slots}); raise -j to at least ${barrier.count} or lower the count`,
        );
      }
    }
    // Rule 3: a deadlock across barriers.
    if (this._barriers.size === 0 || this._live.size === 0) return;
    const waitingIds = new Set<number>();
    for (const barrier of this._barriers.values()) for (const a of barrier.arrivals) waitingIds.add(a.sessionId);
    const everyoneWaits = [...this._live.keys()].every((id) => waitingIds.has(id));
    const canStartMore = queued > 0 && this._live.size < slots;
    if (!everyoneWaits || canStartMore) return;
    const summary = [...this._barriers.values()].map((b) => `\`${b.name}\` ${b.arrivals.length}/${b.count}`).join(', ');
    const why =
      queued > 0
        ? `all ${this._live.size} running files wait at barriers (${summary}) and the ${queued} queued file${queued === 1 ? '' : 's'} cannot start (-j ${slots}); raise -j`
        : `every running file waits at a barrier (${summary}) and nothing is queued`;
    for (const barrier of [...this._barriers.values()]) this._failBarrier(barrier, why);
  }
}
