// Test-only worker for broker-seam.test.ts: the real worker end of a session's channel. It holds
// the session port and calls the broker with SyncCaller (Atomics.wait, so not on the main
// thread). The test posts scripts of calls; each is run in order and the outcomes posted back.

import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { SyncCaller } from '../../src/lua/sync-call.js';
import { RpcError, type RpcErrorData, type RpcOp } from '../../src/protocol/rpc.js';

export interface SeamCall {
  op: RpcOp;
  args: unknown;
  /** SyncCaller's bound on the wait (default 20 s): a test never hangs on a lost reply. */
  timeoutMs?: number;
}
export interface SeamScript {
  id: number;
  calls: SeamCall[];
}
export type SeamOutcome = { ok: true; reply: unknown; ms: number } | { ok: false; error: RpcErrorData; ms: number };
export interface SeamResults {
  id: number;
  outcomes: SeamOutcome[];
}
export interface SeamWorkerData {
  port: MessagePort;
  signalBuffer: SharedArrayBuffer;
}

const kDefaultTimeoutMs = 20_000;
const data = workerData as SeamWorkerData;
const caller = new SyncCaller(data.port, data.signalBuffer);

parentPort!.on('message', (script: SeamScript) => {
  const outcomes: SeamOutcome[] = [];
  for (const call of script.calls) {
    const started = performance.now();
    try {
      const reply = caller.call(call.op, call.args as never, call.timeoutMs ?? kDefaultTimeoutMs);
      outcomes.push({ ok: true, reply, ms: performance.now() - started });
    } catch (err) {
      const e = err as RpcError;
      const error: RpcErrorData = { message: e.message };
      if (e instanceof RpcError) {
        if (e.code !== undefined) error.code = e.code;
        if (e.errno !== undefined) error.errno = e.errno;
        if (e.vm !== undefined) error.vm = e.vm;
      }
      outcomes.push({ ok: false, error, ms: performance.now() - started });
    }
  }
  const results: SeamResults = { id: script.id, outcomes };
  parentPort!.postMessage(results);
});
