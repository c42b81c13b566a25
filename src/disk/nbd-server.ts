// An NBD server on a unix socket, serving named exports (one Disk each) to QEMU's `nbd` block
// driver and to qemu-io / qemu-nbd in tests. See nbd-handshake.ts and nbd-connection.ts for the
// protocol; the disks own the data, the cache and the faults.
import { unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Disk } from './disk.js';
import { NbdConnection } from './nbd-connection.js';

/** Largest READ/WRITE payload (the spec's interoperable maximum block size). */
export const kDefaultMaxRequestBytes = 32 * 1024 * 1024;
/** Per connection, unanswered request bytes above which the server stops reading from it. */
export const kDefaultMaxQueuedBytes = 64 * 1024 * 1024;

export enum NbdServerState {
  Idle = 'idle',
  Listening = 'listening',
  Stopped = 'stopped',
}

export interface NbdServerOptions {
  socketPath: string;
  maxRequestBytes?: number;
  maxQueuedBytes?: number;
  /** Protocol violations and host I/O errors; nothing is printed by default. */
  log?: (message: string) => void;
}

export class NbdServer {
  state = NbdServerState.Idle;
  readonly socketPath: string;
  private readonly _exports = new Map<string, Disk>();
  private readonly _connections = new Set<NbdConnection>();
  private readonly _maxRequestBytes: number;
  private readonly _maxQueuedBytes: number;
  private readonly _log: (message: string) => void;
  private _server: Server | null = null;
  private _stopping: Promise<void> | null = null;

  constructor(opts: NbdServerOptions) {
    this.socketPath = opts.socketPath;
    this._maxRequestBytes = opts.maxRequestBytes ?? kDefaultMaxRequestBytes;
    this._maxQueuedBytes = opts.maxQueuedBytes ?? kDefaultMaxQueuedBytes;
    this._log = opts.log ?? (() => {});
    if (!Number.isSafeInteger(this._maxRequestBytes) || this._maxRequestBytes < 512 || this._maxRequestBytes > 0xffffffff) {
      throw new RangeError(`maxRequestBytes must be an integer in [512, 2^32), got ${this._maxRequestBytes}`);
    }
  }

  /** Serves `disk` under its name; later connections see it. */
  addExport(disk: Disk): void {
    if (this._exports.has(disk.name)) throw new Error(`nbd: export ${JSON.stringify(disk.name)} already exists`);
    this._exports.set(disk.name, disk);
  }

  /** New connections no longer see the export; connections already using it keep it. */
  removeExport(name: string): boolean {
    return this._exports.delete(name);
  }

  exportNames(): string[] {
    return [...this._exports.keys()];
  }

  /** Number of open client connections. */
  get connectionCount(): number {
    return this._connections.size;
  }

  async start(): Promise<void> {
    if (this.state !== NbdServerState.Idle) throw new Error(`nbd: start() in state ${this.state}`);
    // A stale socket from a crashed run would make listen fail with EADDRINUSE.
    await unlink(this.socketPath).catch(() => {});
    const server = createServer((socket) => this._accept(socket));
    this._server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this._log(`nbd: server error: ${e.message}`));
    this.state = NbdServerState.Listening;
  }

  /** Closes the listener and every connection and removes the socket. Idempotent; disks stay open. */
  stop(): Promise<void> {
    if (!this._stopping) this._stopping = this._stop();
    return this._stopping;
  }

  private async _stop(): Promise<void> {
    const wasListening = this.state === NbdServerState.Listening;
    this.state = NbdServerState.Stopped;
    const server = this._server;
    this._server = null;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const c of this._connections) c.close();
    await Promise.all([closed, ...[...this._connections].map((c) => c.done)]);
    if (wasListening) await unlink(this.socketPath).catch(() => {});
  }

  private _accept(socket: Socket): void {
    if (this.state !== NbdServerState.Listening) {
      socket.destroy();
      return;
    }
    const exports = { get: (name: string) => this._exports.get(name), names: () => this.exportNames() };
    const conn = new NbdConnection(socket, exports, {
      maxRequestBytes: this._maxRequestBytes,
      maxQueuedBytes: this._maxQueuedBytes,
      log: this._log,
    });
    this._connections.add(conn);
    void conn.done.finally(() => this._connections.delete(conn));
  }
}
