// The main-thread end of a file's session port. Each call is served asynchronously; the reply is
// posted on the port and then the signal slot is bumped so the blocked worker wakes up. Reports
// (the file's results) go to the one consumer the session was opened for.

import { MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import {
  RpcErrorCode,
  SIGNAL_BUFFER_BYTES,
  SIGNAL_SLOT,
  type BrokerMessage,
  type RpcArgs,
  type RpcErrorData,
  type RpcOp,
  type RpcOps,
  type RpcReply,
  type VmView,
  type WorkerMessage,
} from '../protocol/rpc.js';
import type { FileReport } from '../protocol/task.js';

/** An error the broker raises on purpose: its message is for the test author. */
export class BrokerError extends Error {
  override name = 'BrokerError';
  /** The broker's view of the VM the error is about, attached by the session. */
  vm: VmView | undefined;
  constructor(
    message: string,
    readonly code: RpcErrorData['code'] = RpcErrorCode.usage,
    readonly errno?: number,
  ) {
    super(message);
  }
}

export type RpcHandlers = { [K in RpcOp]: (args: RpcArgs<K>) => Promise<RpcReply<K>> };

export class RpcChannel {
  /** Goes to the worker in the task (transferList). */
  readonly workerPort: MessagePort;
  readonly signalBuffer = new SharedArrayBuffer(SIGNAL_BUFFER_BYTES);
  private readonly _port: MessagePort;
  private readonly _signal = new Int32Array(this.signalBuffer);
  private _closed = false;

  constructor(
    private readonly _handlers: RpcHandlers,
    private readonly _onReport: (report: FileReport) => void,
  ) {
    const { port1, port2 } = new MessageChannel();
    this._port = port1;
    this.workerPort = port2;
    port1.on('message', (message: WorkerMessage) => this._onMessage(message));
  }

  /**
   * Delivers what the worker posted and the event loop has not yet: the worker's messages are in
   * this port's queue as soon as it posted them, so after its task settled, every report it sent
   * is here.
   */
  drain(): void {
    if (this._closed) return;
    for (let m = receiveMessageOnPort(this._port); m; m = receiveMessageOnPort(this._port)) {
      this._onMessage(m.message as WorkerMessage);
    }
  }

  close(): void {
    if (this._closed) return;
    this.drain();
    this._closed = true;
    this._port.close();
  }

  private _onMessage(message: WorkerMessage): void {
    if (message.type === 'report') {
      this._onReport(message.report);
      return;
    }
    const handler = this._handlers[message.op] as ((args: unknown) => Promise<unknown>) | undefined;
    // A handler that throws before its first await must still answer: run it inside the chain.
    const reply = handler
      ? Promise.resolve().then(() => handler(message.args))
      : Promise.reject(new BrokerError(`unknown broker op \`${message.op}\``));
    reply.then(
      (value) => this._reply({ type: 'reply', seq: message.seq, ok: true, reply: value ?? {} }),
      (err: unknown) => this._reply({ type: 'reply', seq: message.seq, ok: false, error: toErrorData(err) }),
    );
  }

  private _reply(message: BrokerMessage): void {
    if (this._closed) return;
    this._port.postMessage(message);
    Atomics.add(this._signal, SIGNAL_SLOT, 1);
    Atomics.notify(this._signal, SIGNAL_SLOT);
  }
}

function toErrorData(err: unknown): RpcErrorData {
  if (err instanceof BrokerError) {
    const data: RpcErrorData = { message: err.message, code: err.code };
    if (err.errno !== undefined) data.errno = err.errno;
    if (err.vm !== undefined) data.vm = err.vm;
    return data;
  }
  const message = err instanceof Error ? err.message : String(err);
  return { message: `internal broker error: ${message}` };
}

export type { RpcOps };
