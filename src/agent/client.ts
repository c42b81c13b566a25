// The host end of one agent link: a unix socket to QEMU's chardev behind the guest's
// virtio-serial port. Requests carry ids, replies come back in any order, streams carry the id
// of the request that opened them and are paced by credit the host grants as it consumes.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import { ChunkQueue } from './chunk-queue.js';
import { decodeBody, encodeFrame, FrameError, FrameReader } from './framing.js';
import {
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  STREAM_WINDOW_BYTES,
  type AgentFrame,
  type AgentOp,
  type AgentOps,
  type AgentStreamOp,
  type AgentStreamOps,
  type ExitInfo,
} from '../protocol/agent.js';

export type AgentLinkState = 'connecting' | 'ready' | 'closed';

/** An agent op failed: `errno` is the guest's, `message` its strerror or a protocol sentence. */
export class AgentError extends Error {
  override name = 'AgentError';
  constructor(
    readonly op: string,
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/** The link is gone or the agent did not answer in time. */
export class AgentLinkError extends Error {
  override name = 'AgentLinkError';
  constructor(
    message: string,
    readonly reason: 'closed' | 'timeout',
  ) {
    super(message);
  }
}

interface Pending {
  op: string;
  resolve: (data: Record<string, unknown>) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
  stream?: AgentStream;
}

export interface RequestOptions {
  worker?: number;
  /** Default: no limit. */
  timeoutMs?: number;
}

/** Bytes from one agent stream, buffered up to the credit window. */
export class AgentStream {
  private readonly _queue = new ChunkQueue();

  constructor(
    private readonly _client: AgentClient,
    readonly id: number,
    readonly worker: number | undefined,
  ) {}

  get ended(): boolean {
    return this._queue.ended && this._queue.isEmpty;
  }

  /** The next chunk, or null when nothing came within `timeoutMs` or the stream ended. */
  async read(timeoutMs: number): Promise<Uint8Array | null> {
    await this._queue.waitForData(timeoutMs);
    const chunk = this._queue.shift();
    if (!chunk) return null;
    // Consumed bytes become credit again: the agent may send that much more.
    this._client.grantCredit(this, chunk.byteLength);
    return chunk;
  }

  /** @internal */
  _push(bytes: Uint8Array): void {
    this._queue.push(bytes);
  }

  /** @internal */
  _end(): void {
    this._queue.end();
  }
}

export class AgentClient extends EventEmitter {
  state: AgentLinkState = 'connecting';
  private readonly _reader = new FrameReader(MAX_FRAME_BYTES);
  private readonly _pending = new Map<number, Pending>();
  private readonly _streams = new Map<number, AgentStream>();
  // Start at a random id: after a snapshot restore the guest may replay replies from the saved
  // session, and those must not match a request of this one.
  private _nextId = 1 + Math.floor(Math.random() * 0x3fffffff);
  private _closeReason = 'agent link closed';

  private constructor(private readonly _socket: net.Socket) {
    super();
    _socket.on('data', (chunk: Buffer) => this._onData(chunk));
    _socket.on('error', (err) => this._fail(`agent socket error: ${err.message}`));
    _socket.on('close', () => this._fail(this._closeReason));
  }

  /**
   * Connects to the chardev socket and says hello until the agent answers. The agent may still
   * be booting, so the hello is repeated; the first reply wins.
   */
  static async connect(socketPath: string, opts: { timeoutMs: number; isAlive?: () => boolean }): Promise<AgentClient> {
    const deadline = Date.now() + opts.timeoutMs;
    const socket = await connectUnix(socketPath, deadline);
    const client = new AgentClient(socket);
    try {
      await client._handshake(deadline, opts.isAlive);
      client.state = 'ready';
      return client;
    } catch (err) {
      client.close('handshake failed');
      throw err;
    }
  }

  private _handshake(deadline: number, isAlive?: () => boolean): Promise<void> {
    // The guest reads the port only once the agent runs; hellos sent before then queue up in the
    // chardev. Repeat at a slow pace in case one is lost, and take the first answer.
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearInterval(repeat);
        clearTimeout(overall);
        for (const [id, pending] of this._pending) if (pending.op === 'hello') this._pending.delete(id);
        if (err) reject(err);
        else resolve();
      };
      const sayHello = (): void => {
        if (isAlive && !isAlive()) return finish(new AgentLinkError(this._closeReason, 'closed'));
        this.request('hello', { protocol_version: PROTOCOL_VERSION }).then(
          () => finish(),
          (err: Error) => {
            if (err instanceof AgentError || this.state === 'closed') finish(err);
          },
        );
      };
      const repeat = setInterval(sayHello, 500);
      const overall = setTimeout(
        () => finish(new AgentLinkError('agent did not answer hello in time', 'timeout')),
        Math.max(0, deadline - Date.now()),
      );
      sayHello();
    });
  }

  request<K extends AgentOp>(op: K, data: AgentOps[K]['req'], opts: RequestOptions = {}): Promise<AgentOps[K]['res']> {
    return this._send(op, data as Record<string, unknown>, opts) as Promise<AgentOps[K]['res']>;
  }

  /** Opens a stream; resolves once the agent acknowledged it. */
  async openStream<K extends AgentStreamOp>(op: K, data: Omit<AgentStreamOps[K], 'window'>, opts: RequestOptions = {}): Promise<AgentStream> {
    const id = this._nextId++;
    const stream = new AgentStream(this, id, opts.worker);
    this._streams.set(id, stream);
    try {
      await this._send(op, { ...data, window: STREAM_WINDOW_BYTES }, opts, id, stream);
    } catch (err) {
      this._streams.delete(id);
      throw err;
    }
    return stream;
  }

  async closeStream(stream: AgentStream): Promise<void> {
    if (!this._streams.has(stream.id)) return;
    try {
      if (this.state !== 'closed') {
        await this._send('stream_close', { stream: stream.id }, { worker: stream.worker, timeoutMs: 10_000 });
      }
    } finally {
      this._streams.delete(stream.id);
      stream._end();
    }
  }

  /** @internal Called by a stream when its consumer took bytes. */
  grantCredit(stream: AgentStream, bytes: number): void {
    if (this.state === 'closed' || !this._streams.has(stream.id)) return;
    const frame: Record<string, unknown> = { id: this._nextId++, kind: 'stream_ack', data: { stream: stream.id, bytes } };
    if (stream.worker !== undefined) frame.worker = stream.worker;
    this._socket.write(encodeFrame(frame));
  }

  /**
   * After a guest reset: fails what was in flight, then greets the new agent on the same socket.
   * The socket is kept because QEMU's chardev serves one client and drops a new one that arrives
   * before it has noticed the old one leave.
   */
  async rehandshake(reason: string, timeoutMs: number): Promise<void> {
    if (this.state === 'closed') throw new AgentLinkError(this._closeReason, 'closed');
    this._failInFlight(reason);
    this.state = 'connecting';
    await this._handshake(Date.now() + timeoutMs);
    this.state = 'ready';
  }

  /** Proves the channel is in step (after a restore): a fresh token must come back. */
  async resync(timeoutMs: number): Promise<void> {
    const token = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const reply = await this.request('ping', { token }, { timeoutMs });
    if (reply.token !== token) throw new AgentLinkError(`agent resync failed: sent token ${token}, got ${reply.token}`, 'closed');
  }

  /** Closes the link and fails everything in flight with `reason`. Idempotent. */
  close(reason = 'agent link closed'): void {
    if (this.state === 'closed') return;
    this._closeReason = reason;
    this._fail(reason);
    this._socket.destroy();
  }

  private _send(
    op: string,
    data: Record<string, unknown>,
    opts: RequestOptions,
    id = this._nextId++,
    stream?: AgentStream,
  ): Promise<Record<string, unknown>> {
    if (this.state === 'closed') return Promise.reject(new AgentLinkError(this._closeReason, 'closed'));
    return new Promise((resolve, reject) => {
      const pending: Pending = { op, resolve, reject, stream };
      if (opts.timeoutMs !== undefined && Number.isFinite(opts.timeoutMs)) {
        pending.timer = setTimeout(() => {
          this._pending.delete(id);
          reject(new AgentLinkError(`agent did not answer \`${op}\` within ${Math.round(opts.timeoutMs!)} ms`, 'timeout'));
        }, opts.timeoutMs);
      }
      this._pending.set(id, pending);
      const frame: Record<string, unknown> = { id, kind: op, data };
      if (opts.worker !== undefined) frame.worker = opts.worker;
      this._socket.write(encodeFrame(frame));
    });
  }

  private _onData(chunk: Buffer): void {
    let bodies: Buffer[];
    try {
      bodies = this._reader.push(chunk);
    } catch (err) {
      this.close(`agent sent a bad frame: ${(err as FrameError).message}`);
      return;
    }
    for (const body of bodies) {
      let frame: AgentFrame;
      try {
        frame = decodeBody(body) as AgentFrame;
      } catch (err) {
        this.close(`agent sent an undecodable frame: ${(err as Error).message}`);
        return;
      }
      this._dispatch(frame);
    }
  }

  private _dispatch(frame: AgentFrame): void {
    const id = Number(frame.id);
    switch (frame.kind) {
      case 'ok':
      case 'err': {
        const pending = this._pending.get(id);
        if (!pending) return; // a reply to an abandoned request
        this._pending.delete(id);
        clearTimeout(pending.timer);
        if (frame.kind === 'ok') pending.resolve(frame.data ?? {});
        else pending.reject(new AgentError(pending.op, Number(frame.data.errno), String(frame.data.message)));
        return;
      }
      case 'stream_data':
        this._streams.get(id)?._push(frame.data.bytes);
        return;
      case 'stream_end':
        this._streams.get(id)?._end();
        return;
      case 'worker_exit':
        this.emit('worker_exit', frame.data as ExitInfo & { worker: number });
        return;
      case 'agent_error':
        this.emit('agent_error', String(frame.data.message));
        return;
    }
  }

  private _fail(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this._closeReason = reason;
    this._failInFlight(reason);
    this.emit('closed', reason);
  }

  private _failInFlight(reason: string): void {
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new AgentLinkError(reason, 'closed'));
    }
    this._pending.clear();
    for (const stream of this._streams.values()) stream._end();
    this._streams.clear();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** QEMU creates the chardev socket shortly after start; retry until it accepts or the deadline passes. */
async function connectUnix(path: string, deadline: number): Promise<net.Socket> {
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const socket = net.createConnection(path);
        socket.once('connect', () => {
          socket.removeAllListeners('error');
          resolve(socket);
        });
        socket.once('error', reject);
      });
    } catch (err) {
      if (Date.now() >= deadline) {
        throw new AgentLinkError(`cannot connect to agent socket ${path}: ${(err as Error).message}`, 'timeout');
      }
      await sleep(20);
    }
  }
}
