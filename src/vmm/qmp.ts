// A small QMP client: JSON objects over a unix socket, one per line. Commands carry an `id`
// that QEMU echoes in its `return`/`error`, so replies are matched by id, not by order.
//
// QEMU connects to us (the broker listens on qmp.sock and QEMU is the chardev client), so
// `QmpClient.accept()` is handed an already connected socket; `QmpClient.connect()` dials a QEMU
// that listens instead. Both read the greeting and negotiate capabilities before resolving.

import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';

/** How long QEMU may take to send its greeting once connected. */
export const kQmpGreetingTimeoutMs = 10_000;
/** Default per-command timeout; migration commands return at once and are polled separately. */
export const kQmpCommandTimeoutMs = 30_000;
/** A line longer than this is a protocol error (query-qmp-schema is ~200 KiB). */
const kMaxLineBytes = 16 * 1024 * 1024;

export enum QmpState {
  /** Socket open, greeting or qmp_capabilities pending. */
  Negotiating = 'negotiating',
  /** Commands accepted. */
  Ready = 'ready',
  /** Socket closed (by us, by QEMU, or on a protocol error); every pending command rejected. */
  Closed = 'closed',
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** An `error` reply: `qmpClass` is QMP's class (e.g. GenericError, CommandNotFound). */
export class QmpError extends Error {
  override name = 'QmpError';
  constructor(readonly command: string, readonly qmpClass: string, readonly desc: string) {
    super(`QMP ${command} failed: ${qmpClass}: ${desc}`);
  }
}

/** The connection failed, closed, timed out or spoke something that is not QMP. */
export class QmpConnectionError extends Error {
  override name = 'QmpConnectionError';
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [Error | undefined];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  private _state = QmpState.Negotiating;
  private _buffer = '';
  private _nextId = 1;
  private readonly _pending = new Map<string, Pending>();
  private _closeReason: Error | undefined;
  /** The greeting's `QMP.version.qemu`, e.g. {major: 7, minor: 2, micro: 22}. */
  version: { major: number; minor: number; micro: number } | undefined;
  private _greeted: { resolve: () => void; reject: (e: Error) => void } | undefined;

  private constructor(private readonly _socket: Socket, private readonly _label: string) {
    super();
    _socket.setEncoding('utf8');
    _socket.on('data', (chunk: string) => this._onData(chunk));
    _socket.on('error', (err) => this._fail(new QmpConnectionError(`QMP ${this._label}: ${err.message}`)));
    _socket.on('close', () => this._fail(new QmpConnectionError(`QMP ${this._label}: connection closed by QEMU`)));
  }

  get state(): QmpState {
    return this._state;
  }

  /** Wraps a socket QEMU connected to; resolves after the greeting and qmp_capabilities. */
  static async accept(socket: Socket, label = 'qmp', timeoutMs = kQmpGreetingTimeoutMs): Promise<QmpClient> {
    const client = new QmpClient(socket, label);
    await client._negotiate(timeoutMs);
    return client;
  }

  /** Dials a QEMU listening on `path`; resolves after the greeting and qmp_capabilities. */
  static connect(path: string, timeoutMs = kQmpGreetingTimeoutMs): Promise<QmpClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      socket.once('error', (e) => reject(new QmpConnectionError(`QMP connect ${path}: ${e.message}`)));
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        QmpClient.accept(socket, path, timeoutMs).then(resolve, reject);
      });
    });
  }

  /**
   * Runs one command. Resolves with its `return` value; rejects with QmpError on an `error`
   * reply, or QmpConnectionError when the connection closes or the timeout passes.
   */
  execute<T = any>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this._state === QmpState.Closed) {
      return Promise.reject(new QmpConnectionError(`QMP ${command}: ${this._closeReason?.message ?? 'client closed'}`));
    }
    return this._send(command, args, opts.timeoutMs ?? kQmpCommandTimeoutMs) as Promise<T>;
  }

  /** Resolves with the next event named `name` for which `match` holds. */
  waitEvent(name: string, match: (ev: QmpEvent) => boolean = () => true, timeoutMs = kQmpCommandTimeoutMs): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const done = (err: Error | undefined, ev?: QmpEvent) => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
        if (err) reject(err); else resolve(ev!);
      };
      const onEvent = (ev: QmpEvent) => { if (ev.event === name && match(ev)) done(undefined, ev); };
      const onClose = (why: Error | undefined) => done(why ?? new QmpConnectionError(`QMP closed while waiting for ${name}`));
      const timer = setTimeout(() => done(new QmpConnectionError(`QMP: no ${name} event within ${timeoutMs} ms`)), timeoutMs);
      if (this._state === QmpState.Closed) return done(this._closeReason ?? new QmpConnectionError(`QMP ${this._label}: client closed`));
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** Idempotent: closes the socket and rejects whatever is pending. */
  close(): void {
    this._fail(undefined);
  }

  private async _negotiate(timeoutMs: number): Promise<void> {
    const greeting = new Promise<void>((resolve, reject) => { this._greeted = { resolve, reject }; });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new QmpConnectionError(`QMP ${this._label}: no greeting within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([greeting, timeout]);
      await this._send('qmp_capabilities', undefined, timeoutMs);
      this._state = QmpState.Ready;
    } catch (err) {
      this._fail(err as Error);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private _send(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    const id = `p${this._nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg['arguments'] = args;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs > 0
        ? setTimeout(() => {
            this._pending.delete(id);
            reject(new QmpConnectionError(`QMP ${command}: no reply within ${timeoutMs} ms`));
          }, timeoutMs)
        : undefined;
      this._pending.set(id, { command, resolve, reject, timer });
      this._socket.write(JSON.stringify(msg) + '\n');
    });
  }

  private _onData(chunk: string): void {
    this._buffer += chunk;
    if (this._buffer.length > kMaxLineBytes) {
      this._fail(new QmpConnectionError(`QMP ${this._label}: line longer than ${kMaxLineBytes} bytes`));
      return;
    }
    let nl: number;
    while ((nl = this._buffer.indexOf('\n')) >= 0) {
      const line = this._buffer.slice(0, nl).trim();
      this._buffer = this._buffer.slice(nl + 1);
      if (!line) continue;
      let msg: any;
      try {
        msg = JSON.parse(line);
      } catch {
        this._fail(new QmpConnectionError(`QMP ${this._label}: not JSON: ${line.slice(0, 200)}`));
        return;
      }
      this._dispatch(msg);
      if (this._state === QmpState.Closed) return;
    }
  }

  private _dispatch(msg: any): void {
    if (msg && typeof msg === 'object' && 'QMP' in msg) {
      this.version = msg.QMP?.version?.qemu;
      this._greeted?.resolve();
      this._greeted = undefined;
      return;
    }
    if (msg && typeof msg.event === 'string') {
      this.emit('event', msg as QmpEvent);
      return;
    }
    const id = typeof msg?.id === 'string' ? msg.id : undefined;
    const pending = id !== undefined ? this._pending.get(id) : undefined;
    if (!pending) return; // A reply to a timed-out command: nobody waits for it any more.
    this._pending.delete(id!);
    clearTimeout(pending.timer);
    if ('return' in msg) pending.resolve(msg.return);
    else if (msg.error) pending.reject(new QmpError(pending.command, String(msg.error.class), String(msg.error.desc)));
    else pending.reject(new QmpConnectionError(`QMP ${pending.command}: malformed reply ${JSON.stringify(msg).slice(0, 200)}`));
  }

  private _fail(reason: Error | undefined): void {
    if (this._state === QmpState.Closed) return;
    this._state = QmpState.Closed;
    this._closeReason = reason;
    const err = reason ?? new QmpConnectionError(`QMP ${this._label}: client closed`);
    this._greeted?.reject(err);
    this._greeted = undefined;
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(err instanceof QmpConnectionError ? new QmpConnectionError(`QMP ${p.command}: ${err.message}`) : err);
    }
    this._pending.clear();
    this._socket.destroy();
    this.emit('close', reason);
  }
}
