// One switch port: a unix socket server that QEMU's `-netdev stream,server=off` connects to,
// the connection's framing, and the port's counters. QEMU as a client never retries, so the
// port listens before QEMU starts; it keeps listening after a disconnect so a restarted QEMU
// can connect again. A bad length closes only this connection, with a reason; nothing a guest
// sends can throw out of a socket handler.

import type { NicCounters } from '../protocol/rpc.js';
import { lstatSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { encodeWireFrame, kMaxFrameBytes, WireError, WireReader } from './wire.js';

/** sun_path is 108 bytes including the terminating NUL. */
export const kMaxSocketPathBytes = 107;
/** A guest that stops reading (paused, hung) loses frames beyond this instead of growing memory. */
export const kMaxPortBacklogBytes = 4 * 1024 * 1024;

/** Counted from the guest's point of view: its tx is what the switch received from it. */
/** A port's counters, from its guest's point of view: the protocol's NicCounters. */
export type PortCounters = NicCounters;

export type SendResult = 'sent' | 'unconnected' | 'backlog';

export interface PortHooks {
  /** One complete frame from the guest. */
  onFrame(port: Port, frame: Buffer): void;
  /** The guest connected. */
  onConnect(port: Port): void;
  /** The guest's connection ended; `reason` says why when the switch or an error ended it. */
  onDisconnect(port: Port, reason: string | undefined): void;
}

export function zeroCounters(): PortCounters {
  return { rx_bytes: 0, tx_bytes: 0, rx_packets: 0, tx_packets: 0, errors: 0, dropped: 0 };
}

export class Port {
  readonly counters: PortCounters = zeroCounters();
  /** setLink(): while false, frames to and from this port are dropped. */
  linkUp = true;
  /** Why the last connection was closed by the switch or failed, for diagnostics. */
  lastError: string | undefined;
  private _server: Server | undefined;
  private _conn: Socket | undefined;
  private _connWaiters: (() => void)[] = [];
  /** Only a socket file this port created is removed on close. */
  private _ownsSocketFile = false;
  private _closed = false;

  constructor(
    readonly name: string,
    readonly socketPath: string,
    private readonly _hooks: PortHooks,
    private readonly _maxFrameBytes: number = kMaxFrameBytes,
  ) {}

  /** Starts listening; resolves once connect() from QEMU will succeed. */
  async listen(): Promise<void> {
    const pathBytes = Buffer.byteLength(this.socketPath);
    if (pathBytes > kMaxSocketPathBytes) {
      throw new Error(`socket path for port "${this.name}" is ${pathBytes} bytes, over the ${kMaxSocketPathBytes}-byte unix limit: ${this.socketPath}`);
    }
    removeStaleSocket(this.socketPath);
    const server = createServer((socket) => this._accept(socket));
    this._server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        this._ownsSocketFile = true;
        resolve();
      });
    });
    // A listening server only fails on accept errors (EMFILE…): keep the port, note why.
    server.on('error', (err) => {
      this.lastError = `listen error: ${err.message}`;
    });
  }

  get connected(): boolean {
    return this._conn !== undefined;
  }

  /** Resolves when a guest is connected; rejects after `timeoutMs` or when the port closes. */
  whenConnected(timeoutMs: number): Promise<void> {
    if (this._conn) return Promise.resolve();
    if (this._closed) return Promise.reject(new Error(`port "${this.name}" is closed`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._connWaiters = this._connWaiters.filter((w) => w !== waiter);
        reject(new Error(`no connection on port "${this.name}" (${this.socketPath}) within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (): void => {
        clearTimeout(timer);
        if (this._conn) resolve();
        else reject(new Error(`port "${this.name}" closed before a guest connected`));
      };
      this._connWaiters.push(waiter);
    });
  }

  /** Writes one frame to the guest (counting is the switch's job). */
  send(frame: Buffer): SendResult {
    const conn = this._conn;
    if (!conn || conn.destroyed) return 'unconnected';
    if (conn.writableLength > kMaxPortBacklogBytes) return 'backlog';
    conn.write(encodeWireFrame(frame));
    return 'sent';
  }

  /** Ends the current connection (if any) with a reason; the port keeps listening. */
  disconnect(reason: string): void {
    if (!this._conn) return;
    this.lastError = reason;
    this._conn.destroy();
  }

  /** Stops listening, ends the connection and removes the socket file. Idempotent. */
  async close(): Promise<void> {
    if (this._closed) return;
    this._closed = true;
    this._conn?.destroy();
    const server = this._server;
    this._server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (this._ownsSocketFile) rmSync(this.socketPath, { force: true });
    this._wakeWaiters();
  }

  /**
   * A guest connection made elsewhere becomes this port's, as if accepted here (a warm spare's NIC,
   * parked until a file took the spare). Its unread bytes are its first frames.
   */
  adopt(socket: Socket): void {
    this._accept(socket);
    socket.resume();
  }

  private _accept(socket: Socket): void {
    if (this._closed) {
      socket.destroy();
      return;
    }
    if (this._conn) {
      // One NIC per port: a second client is refused, the first keeps the port.
      this.counters.errors++;
      this.lastError = 'refused a second connection while one is active';
      socket.destroy();
      return;
    }
    this._conn = socket;
    const reader = new WireReader(this._maxFrameBytes);
    let reason: string | undefined;
    socket.on('data', (chunk: Buffer) => {
      if (this._conn !== socket) return;
      let frames: Buffer[];
      let bad: string | undefined;
      try {
        frames = reader.push(chunk);
      } catch (err) {
        frames = err instanceof WireError ? err.frames : [];
        bad = err instanceof WireError ? err.message : `framing failed: ${String(err)}`;
      }
      for (const frame of frames) {
        try {
          this._hooks.onFrame(this, frame);
        } catch (err) {
          reason = `switch failed on a frame: ${err instanceof Error ? err.message : String(err)}`;
          this.counters.errors++;
          this.disconnect(reason);
          return;
        }
      }
      if (bad !== undefined) {
        this.counters.errors++;
        reason = bad;
        this.disconnect(reason);
      }
    });
    socket.on('error', (err) => {
      reason ??= `socket error: ${err.message}`;
      this.lastError = reason;
    });
    socket.on('close', () => {
      if (this._conn !== socket) return;
      this._conn = undefined;
      if (reader.pendingBytes > 0 && reason === undefined) {
        this.counters.errors++;
        reason = `connection ended inside a frame (${reader.pendingBytes} bytes pending)`;
        this.lastError = reason;
      }
      this._hooks.onDisconnect(this, reason);
    });
    this._hooks.onConnect(this);
    this._wakeWaiters();
  }

  private _wakeWaiters(): void {
    const waiters = this._connWaiters;
    this._connWaiters = [];
    for (const waiter of waiters) waiter();
  }
}

/** Removes a socket file left by an earlier run; anything else at the path is an error. */
function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return;
  }
  if (!isSocket) throw new Error(`cannot listen on ${path}: a file that is not a socket is in the way`);
  rmSync(path, { force: true });
}
