// Every broker call a binding makes goes through Rpc: it bounds the blocking wait by the running
// test's deadline (so a hung guest cannot outlive a test's timeout) and turns the expiry into a
// TestTimeoutError. The count hook in runtime.ts enforces the same deadline on pure Lua code.

import type { AgentOp, AgentOps } from '../protocol/agent.js';
import type { AgentCallArgs, RpcArgs, RpcOp, RpcReply } from '../protocol/rpc.js';
import { RpcError } from '../protocol/rpc.js';
import type { Settled } from './sync-call.js';
import { TestTimeoutError } from './errors.js';

/** What the Lua layer needs from the worker's end of the RPC (SyncCaller implements it). */
export interface Caller {
  call<K extends RpcOp>(op: K, args: RpcArgs<K>, timeoutMs?: number): RpcReply<K>;
  callMany<K extends RpcOp>(op: K, argsList: readonly RpcArgs<K>[], timeoutMs?: number): Settled<RpcReply<K>>[];
}

/** Extra wait granted to the broker beyond an op's own bound before the worker gives up. */
export const kReplyMarginMs = 5_000;
/** Timers on the two threads may fire a little early relative to each other. */
const kDeadlineSlackMs = 50;

/** The running test's deadline. `atMs` is Date.now() based; Infinity when no test runs. */
export class Deadline {
  atMs = Infinity;
  message = '';
  /** Set once the deadline passed during the current test; the runner reads it. */
  expired = false;

  set(timeoutMs: number, message: string): void {
    this.atMs = Date.now() + timeoutMs;
    this.message = message;
    this.expired = false;
  }

  clear(): void {
    this.atMs = Infinity;
    this.message = '';
  }

  /** Milliseconds left; throws TestTimeoutError when none are. */
  remainingMs(): number {
    if (this.atMs === Infinity) return Infinity;
    const left = this.atMs - Date.now();
    if (left <= 0) this.fire();
    return left;
  }

  fire(): never {
    this.expired = true;
    throw new TestTimeoutError(this.message);
  }
}

export class Rpc {
  constructor(
    readonly caller: Caller,
    readonly deadline: Deadline,
  ) {}

  /**
   * One blocking call. `boundMs` is how long the op itself may take (the broker replies by then);
   * the worker waits that plus a margin, and never past the test's deadline.
   */
  call<K extends RpcOp>(op: K, args: RpcArgs<K>, boundMs = Infinity): RpcReply<K> {
    const remaining = this.deadline.remainingMs();
    // The broker gets the op's bound plus a margin (brokerBound); the worker waits longer still.
    const wait = Math.min(boundMs + 2 * kReplyMarginMs, remaining);
    try {
      return this.caller.call(op, args, wait);
    } catch (err) {
      if (err instanceof RpcError && err.code === 'timeout' && this._pastDeadline()) this.deadline.fire();
      throw err;
    }
  }

  /** Posts all calls, waits for all replies (see SyncCaller.callMany). */
  callMany<K extends RpcOp>(op: K, argsList: readonly RpcArgs<K>[], boundMs = Infinity): Settled<RpcReply<K>>[] {
    if (argsList.length === 0) return [];
    const remaining = this.deadline.remainingMs();
    const results = this.caller.callMany(op, argsList, Math.min(boundMs + 2 * kReplyMarginMs, remaining));
    if (results.some((r) => !r.ok && r.error.code === 'timeout') && this._pastDeadline()) {
      this.deadline.fire();
    }
    return results;
  }

  /** One agent op relayed by the broker, its reply typed by the op. */
  agent<K extends AgentOp>(args: AgentCallArgs<K>, boundMs = Infinity): AgentOps[K]['res'] {
    // The channel carries every op's reply as one union; the broker answers `args.op` with its own.
    return this.call('agent.call', args as RpcArgs<'agent.call'>, boundMs).result as AgentOps[K]['res'];
  }


  /** A timeout that ends (within timer slack) at the test deadline is the deadline's. */
  private _pastDeadline(): boolean {
    return Date.now() >= this.deadline.atMs - kDeadlineSlackMs;
  }

  /**
   * The `timeoutMs` to give the broker for an op that may take `boundMs` itself (an exec's own
   * timeout): that plus a margin, so the op's own timeout reports first; never past the test's
   * deadline. Undefined when unbounded (the broker applies its defaults).
   */
  brokerBound(boundMs = Infinity): number | undefined {
    const remaining = this.deadline.remainingMs();
    const bound = Math.min(boundMs + kReplyMarginMs, remaining);
    return bound === Infinity ? undefined : Math.max(1, Math.ceil(bound));
  }
}
