// Exact-length reads over a stream socket, with backpressure: the socket is paused while more
// than `highWaterBytes` sit unread and nobody is waiting for them, so a client that pipelines
// faster than the disk answers cannot grow the server's memory without bound.
import type { Socket } from 'node:net';

/** Raised to a pending or later read once the peer has gone (end, error or destroy). */
export class ConnectionClosedError extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'ConnectionClosedError';
  }
}

interface Waiter {
  bytes: number;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

export class SocketReader {
  private _chunks: Buffer[] = [];
  private _buffered = 0;
  private _waiter: Waiter | null = null;
  /** Set once the peer can send nothing more; reads past what is buffered fail. */
  private _closed = false;
  private _paused = false;

  constructor(
    private readonly _socket: Socket,
    private readonly _highWaterBytes: number,
  ) {
    _socket.on('data', (chunk: Buffer) => this._onData(chunk));
    const close = (): void => this._onClose();
    _socket.on('end', close);
    _socket.on('close', close);
    _socket.on('error', close);
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this._buffered;
  }

  /**
   * The next `bytes` bytes. The caller checks `bytes` against its own maximum first: this
   * buffers until that many arrived. Only one read may be pending at a time.
   */
  read(bytes: number): Promise<Buffer> {
    if (this._waiter) return Promise.reject(new Error('SocketReader: concurrent read'));
    if (this._buffered >= bytes) return Promise.resolve(this._take(bytes));
    if (this._closed) return Promise.reject(new ConnectionClosedError());
    if (this._paused) {
      this._paused = false;
      this._socket.resume();
    }
    return new Promise((resolve, reject) => {
      this._waiter = { bytes, resolve, reject };
    });
  }

  private _onData(chunk: Buffer): void {
    this._chunks.push(chunk);
    this._buffered += chunk.length;
    const w = this._waiter;
    if (w && this._buffered >= w.bytes) {
      this._waiter = null;
      w.resolve(this._take(w.bytes));
    }
    if (!this._waiter && this._buffered > this._highWaterBytes && !this._paused) {
      this._paused = true;
      this._socket.pause();
    }
  }

  private _onClose(): void {
    if (this._closed) return;
    this._closed = true;
    const w = this._waiter;
    this._waiter = null;
    w?.reject(new ConnectionClosedError());
  }

  private _take(bytes: number): Buffer {
    if (bytes === 0) return Buffer.alloc(0);
    const first = this._chunks[0]!;
    let out: Buffer;
    if (first.length >= bytes) {
      out = first.subarray(0, bytes);
      if (first.length === bytes) this._chunks.shift();
      else this._chunks[0] = first.subarray(bytes);
    } else {
      out = Buffer.allocUnsafe(bytes);
      let filled = 0;
      while (filled < bytes) {
        const c = this._chunks[0]!;
        const n = Math.min(c.length, bytes - filled);
        c.copy(out, filled, 0, n);
        filled += n;
        if (n === c.length) this._chunks.shift();
        else this._chunks[0] = c.subarray(n);
      }
    }
    this._buffered -= bytes;
    return out;
  }
}
