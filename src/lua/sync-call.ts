// The worker side of the RPC: post a request, block in Atomics.wait until the broker bumps the
// signal slot, then take the reply with receiveMessageOnPort. Works from any Lua context because
// nothing here yields to the event loop.

import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import {
  RpcError,
  SIGNAL_SLOT,
  type BrokerMessage,
  type RpcArgs,
  type RpcOp,
  type RpcReply,
  type WorkerMessage,
} from '../protocol/rpc.js';
import type { FileReport } from '../protocol/task.js';

/** How one call of `callMany` ended. */
export type Settled<T> = { ok: true; reply: T } | { ok: false; error: RpcError };

export class SyncCaller {
  private readonly _signal: Int32Array;
  private _seq = 0;
  /** Checked after each wake-up: true abandons the call (Ctrl-C in a REPL; its late reply is dropped). */
  interrupted: (() => boolean) | undefined;

  constructor(
    private readonly _port: MessagePort,
    signalBuffer: SharedArrayBuffer,
  ) {
    this._signal = new Int32Array(signalBuffer);
  }

  /**
   * Blocks until the broker replies. `timeoutMs` (default: forever) bounds the wait; on expiry
   * this throws a `timeout` RpcError and a late reply is discarded by its sequence number.
   */
  call<K extends RpcOp>(op: K, args: RpcArgs<K>, timeoutMs = Infinity): RpcReply<K> {
    const seq = ++this._seq;
    // 1. Read the slot before posting so a reply that lands before we wait is not missed.
    let seen = Atomics.load(this._signal, SIGNAL_SLOT);
    const message: WorkerMessage = { type: 'call', seq, op, args };
    this._port.postMessage(message);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // 2. Drain whatever arrived; stale replies from abandoned calls are dropped.
      for (let m = receiveMessageOnPort(this._port); m; m = receiveMessageOnPort(this._port)) {
        const reply = m.message as BrokerMessage;
        if (reply.seq !== seq) continue;
        if (reply.ok) return reply.reply as RpcReply<K>;
        throw new RpcError(reply.error);
      }
      if (this.interrupted?.()) throw new RpcError({ message: 'interrupted (Ctrl-C)' });
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new RpcError({ message: `broker did not answer \`${op}\` within ${timeoutMs} ms`, code: 'timeout' });
      }
      // 3. Sleep until the broker bumps the slot (or a short poll, in case a notify raced the post).
      Atomics.wait(this._signal, SIGNAL_SLOT, seen, Math.min(remaining, 1000));
      seen = Atomics.load(this._signal, SIGNAL_SLOT);
    }
  }

  /**
   * Posts every call at once, then blocks until all of them replied (or `timeoutMs` passed), so
   * the broker works on them concurrently (`lab:boot()` boots its VMs this way). Never throws for
   * a failed call: each entry says how its call ended, in the order given.
   */
  callMany<K extends RpcOp>(op: K, argsList: readonly RpcArgs<K>[], timeoutMs = Infinity): Settled<RpcReply<K>>[] {
    const results: (Settled<RpcReply<K>> | undefined)[] = argsList.map(() => undefined);
    const bySeq = new Map<number, number>();
    // 1. Read the slot before posting, as in call().
    let seen = Atomics.load(this._signal, SIGNAL_SLOT);
    argsList.forEach((args, index) => {
      const seq = ++this._seq;
      bySeq.set(seq, index);
      const message: WorkerMessage = { type: 'call', seq, op, args };
      this._port.postMessage(message);
    });
    const deadline = Date.now() + timeoutMs;
    let pending = argsList.length;
    while (pending > 0) {
      // 2. Drain; replies to other (abandoned) calls are dropped.
      for (let m = receiveMessageOnPort(this._port); m; m = receiveMessageOnPort(this._port)) {
        const reply = m.message as BrokerMessage;
        const index = bySeq.get(reply.seq);
        if (index === undefined) continue;
        bySeq.delete(reply.seq);
        results[index] = reply.ok
          ? { ok: true, reply: reply.reply as RpcReply<K> }
          : { ok: false, error: new RpcError(reply.error) };
        pending--;
      }
      if (pending === 0) break;
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      // 3. Sleep until the broker bumps the slot.
      Atomics.wait(this._signal, SIGNAL_SLOT, seen, Math.min(remaining, 1000));
      seen = Atomics.load(this._signal, SIGNAL_SLOT);
    }
    // 4. Whatever did not answer in time is a timeout; its late reply is dropped by sequence.
    return results.map(
      (r) =>
        r ?? { ok: false, error: new RpcError({ message: `broker did not answer \`${op}\` within ${timeoutMs} ms`, code: 'timeout' }) },
    );
  }

  /** Fire-and-forget: a fact about the file's tests, for the main thread's file job. */
  report(report: FileReport): void {
    const message: WorkerMessage = { type: 'report', report };
    this._port.postMessage(message);
  }
}

/** Blocks the calling thread (never the main thread) for `ms`. */
export function sleepSync(ms: number): void {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
