// The host end of one agent link: a unix socket to QEMU's chardev behind the guest's
// virtio-serial port. Requests carry ids, replies come back in any order, streams carry the id
// of the request that opened them and are paced by credit the host grants as it consumes.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import { ChunkQueue } from './chunk-queue.js';
import { decodeBody, encodeFrame, findFrame, FrameError, FrameReader } from '../protocol/framing.js';
import { checkFrame, checkReply, describe, isMap } from './validate.js';
import {
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  STREAM_WINDOW_BYTES,
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

/**
 * The agent broke the protocol for this request: a malformed reply, or a lost frame boundary
 * that made the host resynchronise the link (the VM and the link are still usable). errno EPROTO.
 */
export class AgentProtocolError extends AgentError {
  override name = 'AgentProtocolError';
  constructor(op: string, message: string) {
    super(op, EPROTO, message);
  }
}

/**
 * The link is gone, the agent did not answer in time, or (`stalled`) the owner failed what was
 * in flight because the guest stopped answering (see watchLiveness).
 */
export class AgentLinkError extends Error {
  override name = 'AgentLinkError';
  constructor(
    message: string,
    readonly reason: 'closed' | 'timeout' | 'stalled',
  ) {
    super(message);
  }
}

const EPROTO = 71;
const EMSGSIZE = 90;
const ESRCH = 3;
const EINVAL = 22;

/** As the agent's FRAME_STALL: a frame from the agent half-received this long is suspect. */
export const kFrameStallMs = 5_000;
/** A resynchronisation (a fresh hello after a protocol error) that takes longer gives the link up. */
export const kResyncTimeoutMs = 10_000;
/** Hellos are repeated this often until one is answered (one may be lost, see _greet). */
const kHelloRepeatMs = 500;
/**
 * Writes larger than this go out as several requests of this size: well under MAX_FRAME_BYTES,
 * and small enough that one chunk is answered well within an op's timeout on a slow guest.
 */
export const kWriteChunkBytes = 8 * 1024 * 1024;
/** Hello and ping replies are about 100 bytes; when searching unframed bytes for one, longer candidates are skipped. */
const kSmallReplyMaxBytes = 1024;
/** Stall probes remembered at once: one per stall period, so a lost or mangled one is not the last. */
const kMaxStallProbes = 4;

interface Pending {
  op: string;
  resolve: (data: Record<string, unknown>) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
  stream?: AgentStream;
  worker?: number;
  /** A hello of a handshake in progress: a resync keeps it (it is how the resync ends). */
  greeting?: boolean;
  /** The link's own traffic (hellos, probes, liveness pings): not an op a caller waits for. */
  internal?: boolean;
}

/** How the owner learns that the agent went quiet while ops were pending (watchLiveness). */
export interface LivenessOptions {
  /** With an op pending and nothing received for this long, a ping goes out (again every period). */
  pingAfterMs: number;
  /** With an op pending and nothing received for this long, `onSilent` is called (once per silence). */
  silentAfterMs: number;
  onSilent: (silentMs: number) => void;
}

interface SendOptions extends RequestOptions {
  /** Goes out even while a resync holds other requests back (the resync's own hellos, probes). */
  internal?: boolean;
  greeting?: boolean;
}

export interface ConnectOptions {
  timeoutMs: number;
  isAlive?: () => boolean;
  /** Default kFrameStallMs (tests shorten it). */
  frameStallMs?: number;
  /** Default kResyncTimeoutMs (tests shorten it). */
  resyncTimeoutMs?: number;
}

export interface RequestOptions {
  worker?: number;
  /** Default: no limit. For writes sent in chunks (see kWriteChunkBytes), the limit of each chunk. */
  timeoutMs?: number;
}

/** A frame half-received: the timer of its next probe, and the probes sent while it stalled. */
interface Stall {
  timer?: NodeJS.Timeout;
  probes: { id: number; token: string }[];
  /** What arrived since the first probe went, as far back as a probe's reply could start. */
  window: Buffer;
}

/** Bytes from one agent stream, buffered up to the credit window. */
export class AgentStream {
  private readonly _queue = new ChunkQueue();
  private _failure: string | undefined;

  constructor(
    private readonly _client: AgentClient,
    readonly id: number,
    readonly worker: number | undefined,
  ) {}

  get ended(): boolean {
    return this._queue.ended && this._queue.isEmpty;
  }

  /** Why the stream ended early (a malformed frame, a resync, its worker exited), if it did. */
  get failure(): string | undefined {
    return this._failure;
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
  _end(failure?: string): void {
    if (failure !== undefined && !this._queue.ended) this._failure = failure;
    this._queue.end();
  }
}

/**
 * Events: `closed` (reason), `worker_exit` (ExitInfo & {worker}), `agent_error` (the agent's
 * message), `resync` (why the host resynchronised; what was in flight failed), and
 * `protocol_error` (a malformed frame failed one request or stream).
 */
export class AgentClient extends EventEmitter {
  state: AgentLinkState = 'connecting';
  private readonly _reader = new FrameReader(MAX_FRAME_BYTES);
  private readonly _pending = new Map<number, Pending>();
  private readonly _streams = new Map<number, AgentStream>();
  // Start at a random id: after a snapshot restore the guest may replay replies from the saved
  // session, and those must not match a request of this one.
  private _nextId = 1 + Math.floor(Math.random() * 0x3fffffff);
  private _closeReason = 'agent link closed';
  /** A handshake (connect, rehandshake or resync) is sending hellos. */
  private _greeting = false;
  /** Makes the handshake under way start over: only a hello answered from now on counts. */
  private _restartGreeting: (() => void) | undefined;
  /** A resync in progress: requests are held back until the agent answered a hello. */
  private _resyncing = false;
  private _held: { id: number; bytes: Buffer; reply: boolean }[] = [];
  /** Input lost its framing: bytes are searched for the reply to a resync hello. */
  private _scanning = false;
  private _scanBuf = Buffer.alloc(0);
  private _stall: Stall | undefined;
  private readonly _frameStallMs: number;
  private readonly _resyncTimeoutMs: number;
  /** When bytes last came from the agent (or an op started on an idle link). */
  private _lastInputAt = Date.now();
  private _liveness: { opts: LivenessOptions; timer: NodeJS.Timeout; lastPingAt: number; reported: boolean } | undefined;
  /** The guest is paused on purpose: silence is expected. */
  private _livenessPaused = false;

  private constructor(
    private readonly _socket: net.Socket,
    opts: ConnectOptions,
  ) {
    super();
    this._frameStallMs = opts.frameStallMs ?? kFrameStallMs;
    this._resyncTimeoutMs = opts.resyncTimeoutMs ?? kResyncTimeoutMs;
    // Nothing may escape a socket handler: an exception there would end the whole run.
    _socket.on('data', (chunk: Buffer) => this._guard(() => this._onData(chunk)));
    _socket.on('error', (err) => this._guard(() => this._fail(`agent socket error: ${err.message}`)));
    _socket.on('close', () => this._guard(() => this._fail(this._closeReason)));
  }

  /**
   * Connects to the chardev socket and says hello until the agent answers. The agent may still
   * be booting, so the hello is repeated; the first reply wins.
   */
  static async connect(socketPath: string, opts: ConnectOptions): Promise<AgentClient> {
    const deadline = Date.now() + opts.timeoutMs;
    const socket = await connectUnix(socketPath, deadline);
    const client = new AgentClient(socket, opts);
    try {
      await client._greet(deadline, opts.isAlive);
      client.state = 'ready';
      return client;
    } catch (err) {
      client.close('handshake failed');
      throw err;
    }
  }

  /**
   * Says hello until the agent answers. The guest reads the port only once the agent runs;
   * hellos sent before then queue up in the chardev, and an agent discarding input after a bad
   * frame finds a hello only when it arrives whole in one read: repeat at a slow pace, take the
   * first answer. With `settle`, also wait for the answers to the hellos sent after the one
   * answered: each starts a new agent session, and one arriving after a new request would drop
   * that request's reply.
   */
  private _greet(deadline: number, isAlive?: () => boolean, settle = false): Promise<void> {
    this._greeting = true;
    return new Promise<void>((resolve, reject) => {
      let done = false;
      let answered = false;
      // A restart (the link lost step again meanwhile) makes earlier answers count for nothing.
      let epoch = 0;
      let hellos: Promise<unknown>[] = [];
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        this._greeting = false;
        this._restartGreeting = undefined;
        clearInterval(repeat);
        clearTimeout(overall);
        for (const [id, pending] of this._pending) if (pending.greeting) this._pending.delete(id);
        if (err) reject(err);
        else resolve();
      };
      const sayHello = (): void => {
        if (done) return;
        if (isAlive && !isAlive()) return finish(new AgentLinkError(this._closeReason, 'closed'));
        const mine = epoch;
        const index = hellos.length;
        const hello = this._send('hello', { protocol_version: PROTOCOL_VERSION }, { internal: true, greeting: true });
        hellos.push(hello.catch(() => undefined));
        hello.then(
          () => {
            if (done || answered || mine !== epoch) return;
            answered = true;
            clearInterval(repeat);
            if (!settle) return finish();
            void Promise.all(hellos.slice(index + 1)).then(() => mine === epoch && finish());
          },
          (err: Error) => {
            if (err instanceof AgentError || this.state === 'closed') finish(err);
          },
        );
      };
      let repeat = setInterval(sayHello, kHelloRepeatMs);
      this._restartGreeting = () => {
        if (done) return;
        epoch++;
        answered = false;
        hellos = [];
        clearInterval(repeat);
        repeat = setInterval(sayHello, kHelloRepeatMs);
        sayHello();
      };
      // A handshake that got its first answer but not yet the later ones by now still counts.
      const overall = setTimeout(
        () => finish(answered ? undefined : new AgentLinkError('agent did not answer hello in time', 'timeout')),
        Math.max(0, deadline - Date.now()),
      );
      sayHello();
    });
  }

  request<K extends AgentOp>(op: K, data: AgentOps[K]['req'], opts: RequestOptions = {}): Promise<AgentOps[K]['res']> {
    if (op === 'write_file' || op === 'write' || op === 'stdin_write') {
      const bytes = (data as { data?: unknown }).data;
      if (bytes instanceof Uint8Array && bytes.byteLength > kWriteChunkBytes) {
        return this._writeChunked(op, data as Record<string, unknown> & { data: Uint8Array }, opts) as Promise<AgentOps[K]['res']>;
      }
    }
    return this._send(op, data as Record<string, unknown>, opts) as Promise<AgentOps[K]['res']>;
  }

  /**
   * A write too large for one frame, as consecutive requests of kWriteChunkBytes, each answered
   * before the next goes: `write_file` writes the first chunk as asked (perm, truncate or append)
   * and appends the rest; `write` and `stdin_write` add up `written`. A short `write`, or a
   * failure after some bytes went, answers with what was written (as one `write` would).
   */
  private async _writeChunked(
    op: 'write_file' | 'write' | 'stdin_write',
    data: Record<string, unknown> & { data: Uint8Array },
    opts: RequestOptions,
  ): Promise<Record<string, unknown>> {
    const bytes = data.data;
    let written = 0;
    for (let offset = 0; offset < bytes.byteLength; offset += kWriteChunkBytes) {
      const part = bytes.subarray(offset, offset + kWriteChunkBytes);
      const chunk = op === 'write_file' && offset > 0 ? { path: data.path, data: part, append: true } : { ...data, data: part };
      let reply: Record<string, unknown>;
      try {
        reply = await this._send(op, chunk, opts);
      } catch (err) {
        if (offset === 0) throw err;
        if (op === 'write' && err instanceof AgentError && !(err instanceof AgentProtocolError)) return { written };
        const after = ` (after ${offset} of ${bytes.byteLength} bytes)`;
        if (err instanceof AgentProtocolError) throw new AgentProtocolError(err.op, err.message + after);
        if (err instanceof AgentError) throw new AgentError(err.op, err.errno, err.message + after);
        if (err instanceof AgentLinkError) throw new AgentLinkError(err.message + after, err.reason);
        throw err;
      }
      if (op === 'write_file') continue;
      const n = reply.written as number;
      written += n;
      if (op === 'write' && n < part.byteLength) break;
    }
    return op === 'write_file' ? {} : { written };
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
    this._write(frame.id as number, encodeFrame(frame), false, false);
  }

  /**
   * After a guest reset: fails what was in flight, then greets the new agent on the same socket.
   * The socket is kept because QEMU's chardev serves one client and drops a new one that arrives
   * before it has noticed the old one leave.
   */
  async rehandshake(reason: string, timeoutMs: number): Promise<void> {
    if (this.state === 'closed') throw new AgentLinkError(this._closeReason, 'closed');
    this._failInFlight(() => new AgentLinkError(reason, 'closed'));
    this.state = 'connecting';
    await this._greet(Date.now() + timeoutMs);
    this.state = 'ready';
  }

  /** Proves the channel is in step (after a restore): a fresh token must come back. */
  async resync(timeoutMs: number): Promise<void> {
    const token = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const reply = await this.request('ping', { token }, { timeoutMs });
    if (reply.token !== token) throw new AgentLinkError(`agent resync failed: sent token ${token}, got ${String(reply.token)}`, 'closed');
  }

  /**
   * Watches that the agent still answers while a caller waits on it: a long exec or wait gets no
   * bytes for minutes, so a ping goes out after `pingAfterMs` of silence, and after
   * `silentAfterMs` with nothing at all received the owner is told (it finds out why and fails
   * what is pending with failPending). Replaces an earlier watch.
   */
  watchLiveness(opts: LivenessOptions): void {
    if (this.state === 'closed') return;
    if (this._liveness) clearInterval(this._liveness.timer);
    const tickMs = Math.max(50, Math.min(1000, Math.floor(opts.pingAfterMs / 2)));
    const timer = setInterval(() => this._guard(() => this._checkLiveness()), tickMs);
    timer.unref();
    this._liveness = { opts, timer, lastPingAt: 0, reported: false };
  }

  /** While paused (the guest is stopped on purpose), silence is not reported. */
  pauseLiveness(paused: boolean): void {
    this._livenessPaused = paused;
    this._lastInputAt = Date.now();
  }

  /** Fails every op and stream in flight with `reason`; the link stays up for what comes next. */
  failPending(reason: string): void {
    this._failInFlight(() => new AgentLinkError(reason, 'stalled'), reason, true);
  }

  private _hasCallerOps(): boolean {
    for (const pending of this._pending.values()) if (!pending.internal) return true;
    return false;
  }

  private _checkLiveness(): void {
    const live = this._liveness;
    if (!live || this._closed) return;
    const now = Date.now();
    // Idle, paused or greeting: nothing waits on the agent, or silence is expected.
    if (this._livenessPaused || this._greeting || !this._hasCallerOps()) {
      this._lastInputAt = now;
      return;
    }
    const silentMs = now - this._lastInputAt;
    if (silentMs >= live.opts.silentAfterMs) {
      if (live.reported) return;
      live.reported = true;
      return live.opts.onSilent(silentMs);
    }
    if (silentMs >= live.opts.pingAfterMs && now - live.lastPingAt >= live.opts.pingAfterMs) {
      live.lastPingAt = now;
      // Its reply is bytes received, which is all that counts.
      this._send('ping', { token: `live-${now}` }, { internal: true, timeoutMs: live.opts.silentAfterMs }).catch(() => undefined);
    }
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
    opts: SendOptions,
    id = this._nextId++,
    stream?: AgentStream,
  ): Promise<Record<string, unknown>> {
    if (this.state === 'closed') return Promise.reject(new AgentLinkError(this._closeReason, 'closed'));
    const frame: Record<string, unknown> = { id, kind: op, data };
    if (opts.worker !== undefined) frame.worker = opts.worker;
    let bytes: Buffer;
    try {
      bytes = encodeFrame(frame);
    } catch (err) {
      return Promise.reject(new AgentError(op, EINVAL, `cannot encode \`${op}\`: ${(err as Error).message}`));
    }
    // The agent would take an oversized frame for garbage and stop listening until a hello.
    if (bytes.byteLength - 4 > MAX_FRAME_BYTES) {
      return Promise.reject(
        new AgentError(op, EMSGSIZE, `\`${op}\` request of ${bytes.byteLength - 4} bytes exceeds the agent's frame limit of ${MAX_FRAME_BYTES} bytes`),
      );
    }
    return new Promise((resolve, reject) => {
      const pending: Pending = { op, resolve, reject, stream, worker: opts.worker, greeting: opts.greeting, internal: opts.internal };
      // An idle link's silence does not count against the first op sent on it.
      if (!opts.internal && !this._hasCallerOps()) this._lastInputAt = Date.now();
      if (opts.timeoutMs !== undefined && Number.isFinite(opts.timeoutMs)) {
        pending.timer = setTimeout(() => {
          if (this._pending.get(id) !== pending) return;
          this._pending.delete(id);
          reject(new AgentLinkError(`agent did not answer \`${op}\` within ${Math.round(opts.timeoutMs!)} ms`, 'timeout'));
        }, opts.timeoutMs);
      }
      this._pending.set(id, pending);
      this._write(id, bytes, true, opts.internal ?? false);
    });
  }

  /** Sends a frame, or holds it back while a resync is under way (sent once it is done). */
  private _write(id: number, bytes: Buffer, reply: boolean, internal: boolean): void {
    if (this._resyncing && !internal) this._held.push({ id, bytes, reply });
    else this._socket.write(bytes);
  }

  private _flushHeld(): void {
    const held = this._held;
    this._held = [];
    // A request that timed out while held is not sent at all.
    for (const { id, bytes, reply } of held) if (!reply || this._pending.has(id)) this._socket.write(bytes);
  }

  /** Not narrowed by an earlier check of `state`: handlers called in between may close the link. */
  private get _closed(): boolean {
    return this.state === 'closed';
  }

  private _guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.close(`internal error on the agent link: ${(err as Error)?.stack ?? String(err)}`);
    }
  }

  private _emitSafe(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch {
      // A listener's failure is its own: the link goes on.
    }
  }

  private _onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this._lastInputAt = Date.now();
    if (this._liveness) this._liveness.reported = false;
    if (this._scanning) {
      const rest = this._scan(chunk);
      if (!rest) return;
      chunk = rest;
    }
    this._reader.feed(chunk);
    let completed = 0;
    for (;;) {
      let body: Buffer | undefined;
      try {
        body = this._reader.next();
      } catch (err) {
        return this._resync(`agent sent a bad frame: ${(err as FrameError).message}`, true);
      }
      if (body === undefined) break;
      completed++;
      let value: unknown;
      try {
        value = decodeBody(body);
      } catch (err) {
        return this._resync(`agent sent an undecodable frame of ${body.byteLength} bytes: ${(err as Error).message}`, true);
      }
      // The agent only ever sends maps: anything else is a frame boundary in the wrong place.
      if (!isMap(value)) return this._resync(`agent sent a frame that is not a map (${describe(value)})`, true);
      this._dispatch(value);
      if (this._closed || this._scanning) return;
    }
    this._watchStall(completed, chunk);
  }

  /**
   * A frame half-received for kFrameStallMs is suspect: a guest process may have written a
   * length prefix into the agent's port, and the agent's replies are now filling a frame that
   * is not one. Or the guest is merely paused or slow. A ping tells them apart without harm:
   * its reply can only turn up *inside* the partial frame if that frame was not the agent's.
   * Then the partial bytes are dropped and the link resynchronised. A ping goes out every stall
   * period while the frame stays partial (one may be lost); a guest that sends nothing at all
   * loses nothing by waiting, and requests keep their own timeouts.
   */
  private _watchStall(completed: number, chunk: Buffer): void {
    if (this._reader.pendingBytes === 0) return this._clearStall();
    if (completed > 0 || !this._stall) {
      // A new partial frame: its clock starts now.
      this._clearStall();
      this._stall = { probes: [], window: Buffer.alloc(0) };
      this._armStall(this._stall);
      return;
    }
    const stall = this._stall;
    if (stall.probes.length === 0) return;
    const window = Buffer.concat([stall.window, chunk]);
    const found = findFrame(
      window,
      kSmallReplyMaxBytes,
      (v) => isMap(v) && v.kind === 'ok' && isMap(v.data) && stall.probes.some((p) => p.id === v.id && p.token === (v.data as { token?: unknown }).token),
    );
    if (found !== undefined) {
      const dropped = this._reader.pendingBytes;
      return this._resync(
        `a frame from the agent stayed incomplete for over ${this._frameStallMs} ms while later replies arrived inside it ` +
          `(bytes not from the agent in its port?); dropped ${dropped} bytes`,
        true,
      );
    }
    // Keep only what could be the start of a probe's reply.
    stall.window = Buffer.from(window.subarray(Math.max(0, window.byteLength - (4 + kSmallReplyMaxBytes))));
  }

  private _armStall(stall: Stall): void {
    stall.timer = setTimeout(() => this._guard(() => this._onStall(stall)), this._frameStallMs);
  }

  private _onStall(stall: Stall): void {
    if (this._stall !== stall || this._closed) return;
    const token = `stall-probe-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const id = this._nextId++;
    stall.probes.push({ id, token });
    if (stall.probes.length > kMaxStallProbes) stall.probes.shift();
    // Its reply is looked for in the input (above), not waited for: the pending entry only
    // needs to last as long as the probe is remembered.
    this._send('ping', { token }, { internal: true, timeoutMs: this._frameStallMs * (kMaxStallProbes + 1) }, id).catch(() => undefined);
    this._armStall(stall);
  }

  private _clearStall(): void {
    clearTimeout(this._stall?.timer);
    this._stall = undefined;
  }

  /** Scanning mode: returns the input from the start of a resync hello's reply, once it is found. */
  private _scan(chunk: Buffer): Buffer | undefined {
    const bytes = this._scanBuf.byteLength > 0 ? Buffer.concat([this._scanBuf, chunk]) : chunk;
    const at = findFrame(
      bytes,
      kSmallReplyMaxBytes,
      (v) => isMap(v) && (v.kind === 'ok' || v.kind === 'err') && typeof v.id === 'number' && this._pending.get(v.id)?.greeting === true,
    );
    if (at === undefined) {
      // Every candidate that starts earlier than this is complete and was refused.
      this._scanBuf = Buffer.from(bytes.subarray(Math.max(0, bytes.byteLength - (4 + kSmallReplyMaxBytes))));
      return undefined;
    }
    this._scanning = false;
    this._scanBuf = Buffer.alloc(0);
    return bytes.subarray(at);
  }

  private _dispatch(value: Record<string, unknown>): void {
    const check = checkFrame(value);
    if (!check.ok) return this._rejectFrame(check.id, check.problem, check.kindKnown ?? false);
    const frame = check.frame;
    switch (frame.kind) {
      case 'ok':
      case 'err': {
        const pending = this._pending.get(frame.id);
        if (!pending) return; // a reply to an abandoned request
        if (frame.kind === 'ok') {
          const problem = checkReply(pending.op, frame.data);
          if (problem) return this._rejectFrame(frame.id, `reply to \`${pending.op}\`: ${problem}`, true);
        }
        this._pending.delete(frame.id);
        clearTimeout(pending.timer);
        if (frame.kind === 'ok') pending.resolve(frame.data);
        else pending.reject(new AgentError(pending.op, frame.data.errno, frame.data.message));
        return;
      }
      case 'stream_data':
        this._streams.get(frame.id)?._push(frame.data.bytes);
        return;
      case 'stream_end':
        this._streams.get(frame.id)?._end();
        return;
      case 'worker_exit':
        return this._onWorkerExit(frame.data);
      case 'agent_error':
        this._emitSafe('agent_error', frame.data.message);
        return this._resync(`the agent reported a protocol error: ${frame.data.message}`, false);
    }
  }

  /**
   * A frame that does not have the shape it must. One that names a request or stream of ours
   * fails just that; a reply to an abandoned request is ignored like any other; anything else
   * (no usable id, an unknown kind, a malformed event) cannot be attributed and fails the link.
   */
  private _rejectFrame(id: number | undefined, problem: string, kindKnown: boolean): void {
    const what = `agent sent a malformed frame: ${problem}`;
    if (id === undefined || id === 0) return this.close(what);
    const pending = this._pending.get(id);
    if (pending) {
      this._pending.delete(id);
      clearTimeout(pending.timer);
      if (pending.stream) {
        this._streams.delete(id);
        pending.stream._end(what);
      }
      pending.reject(new AgentProtocolError(pending.op, `\`${pending.op}\`: ${what}`));
    } else {
      const stream = this._streams.get(id);
      if (!stream) return kindKnown ? undefined : this.close(what);
      this._streams.delete(id);
      stream._end(what);
      // Ask the agent to stop it; the answer does not matter.
      this._send('stream_close', { stream: id }, { worker: stream.worker, timeoutMs: 10_000 }).catch(() => undefined);
    }
    this._emitSafe('protocol_error', what);
  }

  /** A worker died: what it was serving gets no reply (PROTOCOL.md), so fail it now. */
  private _onWorkerExit(data: ExitInfo & { worker: number }): void {
    const how = describeWorkerExit(data);
    for (const [id, pending] of this._pending) {
      if (pending.worker !== data.worker) continue;
      this._pending.delete(id);
      clearTimeout(pending.timer);
      if (pending.stream) this._streams.delete(id);
      pending.reject(new AgentError(pending.op, ESRCH, `worker ${data.worker} ${how} while \`${pending.op}\` was in flight`));
    }
    for (const [id, stream] of this._streams) {
      if (stream.worker !== data.worker) continue;
      this._streams.delete(id);
      stream._end(`worker ${data.worker} ${how}`);
    }
    this._emitSafe('worker_exit', data);
  }

  /**
   * The agent's input or ours lost step. Fails what was in flight (its replies may be lost, or
   * dropped by the agent's new session), holds new requests back, and greets the agent again;
   * when `scan`, our input lost its framing too and is searched for the hello's reply. If no
   * hello is answered within kResyncTimeoutMs the link is closed with the cause.
   */
  private _resync(cause: string, scan: boolean): void {
    if (this.state === 'closed') return;
    this._clearStall();
    if (scan) {
      this._reader.clear();
      this._scanning = true;
      this._scanBuf = Buffer.alloc(0);
    }
    this._failInFlight((op) => new AgentProtocolError(op, `${cause}; \`${op}\` was in flight and its reply is lost (the link was resynchronised)`), cause, true);
    this._emitSafe('resync', cause);
    // A handshake under way (connect, reset, an earlier resync) starts over: an answer to a
    // hello sent before this may predate the agent's discarding, or be lost with our input.
    if (this._greeting) return this._restartGreeting?.();
    this._resyncing = true;
    const wasReady = this.state === 'ready';
    this.state = 'connecting';
    this._greet(Date.now() + this._resyncTimeoutMs, undefined, true).then(
      () => {
        this._resyncing = false;
        if (this._closed) return;
        if (wasReady) this.state = 'ready';
        this._flushHeld();
      },
      (err: Error) => {
        this._resyncing = false;
        this.close(`${cause}; resynchronising the link failed: ${err.message}`);
      },
    );
  }

  private _fail(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this._liveness) clearInterval(this._liveness.timer);
    this._liveness = undefined;
    this._closeReason = reason;
    this._clearStall();
    this._held = [];
    this._failInFlight(() => new AgentLinkError(reason, 'closed'), reason);
    this._emitSafe('closed', reason);
  }

  /** With `keepGreeting` (a resync), a handshake's hellos and the requests held back stay. */
  private _failInFlight(error: (op: string) => Error, why?: string, keepGreeting = false): void {
    const held = new Set(keepGreeting ? this._held.map((h) => h.id) : []);
    for (const [id, pending] of this._pending) {
      if (keepGreeting && (pending.greeting || held.has(id))) continue;
      this._pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(error(pending.op));
    }
    for (const [id, stream] of this._streams) {
      if (held.has(id)) continue;
      this._streams.delete(id);
      stream._end(why);
    }
  }
}

function describeWorkerExit(exit: ExitInfo): string {
  switch (exit.status) {
    case 'exited':
      return `exited with code ${exit.code}`;
    case 'signalled':
      return `was killed by signal ${exit.signal}`;
    case 'timed_out':
      return `was killed (signal ${exit.signal}) after its join timed out`;
    default:
      return `ended (${exit.status})`;
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
