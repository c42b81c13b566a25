// Agent ops started without waiting (syscall_async): the session keeps each one's outcome until
// the worker awaits it, so a blocking call stays in flight while the test does other work.

import { BrokerError } from './rpc-server.js';

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

interface Call<T> {
  outcome?: Outcome<T>;
  settled: Promise<void>;
}

export class AsyncCalls<T> {
  private readonly _calls = new Map<number, Call<T>>();
  private _nextId = 1;

  /** Keeps `op`'s outcome; never rejects (the outcome is given to the first await that sees it). */
  start(op: Promise<T>): number {
    const id = this._nextId++;
    const call: Call<T> = { settled: Promise.resolve() };
    call.settled = op.then(
      (value) => void (call.outcome = { ok: true, value }),
      (error: unknown) => void (call.outcome = { ok: false, error }),
    );
    this._calls.set(id, call);
    return id;
  }

  /** The op's result once it ended within `timeoutMs` (absent: no limit), else undefined. Throws its error. */
  async await(id: number, timeoutMs?: number): Promise<T | undefined> {
    const call = this._calls.get(id);
    if (!call) throw new BrokerError(`async call ${id} is unknown or was already awaited`);
    if (!call.outcome) {
      let timer: NodeJS.Timeout | undefined;
      const limit = timeoutMs === undefined ? undefined : new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
      await (limit ? Promise.race([call.settled, limit]) : call.settled);
      clearTimeout(timer);
    }
    const outcome = call.outcome;
    if (!outcome) return undefined;
    this._calls.delete(id);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /** Forgets every call (the session ends; the ops themselves end with their VMs). */
  clear(): void {
    this._calls.clear();
  }
}
