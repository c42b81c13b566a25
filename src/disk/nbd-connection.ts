// One client connection: the handshake, then the transmission phase. Requests are read as they
// arrive (so a delay fault counts from arrival, and pipelined requests wait concurrently) and are
// served strictly in order, one at a time, with simple replies. A malformed header closes this
// connection only; a client that leaves mid-request just ends it.
import type { Socket } from 'node:net';
import type { Disk, GuestRequest } from './disk.js';
import type { GuestOp } from './faults.js';
import { negotiate, ProtocolError, type ExportTable } from './nbd-handshake.js';
import { Cmd, CmdFlag, kRequestHeaderBytes, kRequestMagic, NbdErr, parseRequestHeader, simpleReplyHeader, type RequestHeader } from './nbd-protocol.js';
import { ConnectionClosedError, SocketReader } from './socket-reader.js';

/** A client that has not finished the handshake by then is dropped. */
export const kHandshakeTimeoutMs = 10_000;

export enum ConnectionState {
  Handshake = 'handshake',
  Transmission = 'transmission',
  Closed = 'closed',
}

export interface ConnectionOptions {
  /** Largest READ or WRITE payload; a WRITE header above it closes the connection. */
  maxRequestBytes: number;
  /** Received-but-unanswered bytes above which reading pauses. */
  maxQueuedBytes: number;
  log: (message: string) => void;
}

/** Commands whose flags may carry only FUA (always accepted once SEND_FUA is advertised). */
const kAllowedFlags: Record<number, number> = {
  [Cmd.READ]: CmdFlag.FUA,
  [Cmd.WRITE]: CmdFlag.FUA,
  [Cmd.FLUSH]: CmdFlag.FUA,
  [Cmd.TRIM]: CmdFlag.FUA,
  [Cmd.WRITE_ZEROES]: CmdFlag.FUA | CmdFlag.NO_HOLE,
};

const kCmdOp: Record<number, GuestOp> = {
  [Cmd.READ]: 'read',
  [Cmd.WRITE]: 'write',
  [Cmd.FLUSH]: 'flush',
  [Cmd.TRIM]: 'trim',
  [Cmd.WRITE_ZEROES]: 'write_zeroes',
};

export class NbdConnection {
  state = ConnectionState.Handshake;
  private readonly _reader: SocketReader;
  /** Tail of the in-order request chain; never rejects. */
  private _tail: Promise<void> = Promise.resolve();
  private _queuedBytes = 0;
  /** Resolves when the connection has ended: after a DISC once its requests are answered, else at once. */
  readonly done: Promise<void>;

  constructor(
    private readonly _socket: Socket,
    private readonly _exports: ExportTable,
    private readonly _opts: ConnectionOptions,
  ) {
    this._reader = new SocketReader(_socket, _opts.maxQueuedBytes);
    // A reset peer must not crash the server: errors end this connection only.
    _socket.on('error', () => {});
    this.done = this._run();
  }

  /** Drops the connection now; queued requests still finish but their replies go nowhere. */
  close(): void {
    this.state = ConnectionState.Closed;
    this._socket.destroy();
  }

  private async _run(): Promise<void> {
    const timer = setTimeout(() => this.close(), kHandshakeTimeoutMs).unref();
    try {
      const disk = await negotiate(this._socket, this._reader, this._exports, this._opts.maxRequestBytes);
      clearTimeout(timer);
      if (!disk) {
        this._socket.end();
        return;
      }
      this.state = ConnectionState.Transmission;
      await this._transmit(disk);
      await this._tail;
      this._socket.end();
    } catch (e) {
      if (!(e instanceof ConnectionClosedError)) this._opts.log(`nbd: closing connection: ${(e as Error).message}`);
      // Requests already queued still run against the disk, but nobody waits for them: a long
      // delay fault must not hold up the server's stop().
      this._socket.destroy();
    } finally {
      clearTimeout(timer);
      this.state = ConnectionState.Closed;
    }
  }

  /** Reads requests until NBD_CMD_DISC; each is chained behind the previous one. */
  private async _transmit(disk: Disk): Promise<void> {
    for (;;) {
      const header = parseRequestHeader(await this._reader.read(kRequestHeaderBytes));
      const receivedAtMs = performance.now();
      if (header.magic !== kRequestMagic) throw new ProtocolError(`bad request magic 0x${header.magic.toString(16)}`);
      if (header.type === Cmd.DISC) return;
      let data: Buffer | undefined;
      if (header.type === Cmd.WRITE) {
        // The payload must be read to stay in sync, so an oversized one cannot be answered with an error.
        if (header.length > this._opts.maxRequestBytes) {
          throw new ProtocolError(`write length ${header.length} exceeds ${this._opts.maxRequestBytes}`);
        }
        data = await this._reader.read(header.length);
      }
      const cost = kRequestHeaderBytes + (data?.length ?? 0) + (header.type === Cmd.READ ? Math.min(header.length, this._opts.maxRequestBytes) : 0);
      this._queuedBytes += cost;
      this._tail = this._tail.then(async () => {
        try {
          await this._handle(disk, header, data, receivedAtMs);
        } catch (e) {
          this._opts.log(`nbd: request failed: ${(e as Error).message}`);
          this._socket.destroy();
        } finally {
          this._queuedBytes -= cost;
        }
      });
      // Backpressure: stop reading while too much is waiting for an answer.
      if (this._queuedBytes > this._opts.maxQueuedBytes) await this._tail;
    }
  }

  private async _handle(disk: Disk, h: RequestHeader, data: Buffer | undefined, receivedAtMs: number): Promise<void> {
    const error = this._validate(disk, h);
    if (error !== NbdErr.OK) return this._reply(error, h.handle);
    const req: GuestRequest = {
      op: kCmdOp[h.type]!,
      offsetBytes: Number(h.offset),
      lengthBytes: h.length,
      data,
      fua: (h.flags & CmdFlag.FUA) !== 0,
      receivedAtMs,
    };
    const result = await disk.serve(req);
    if (!result.ok) return this._reply(NbdErr.EIO, h.handle);
    return this._reply(NbdErr.OK, h.handle, result.data);
  }

  /** Protocol-level checks, before any allocation or I/O. */
  private _validate(disk: Disk, h: RequestHeader): number {
    const allowed = kAllowedFlags[h.type];
    if (allowed === undefined) return NbdErr.EINVAL; // unknown command (CACHE, BLOCK_STATUS, ...)
    if ((h.flags & ~allowed) !== 0) return NbdErr.EINVAL;
    const writes = h.type === Cmd.WRITE || h.type === Cmd.WRITE_ZEROES || h.type === Cmd.TRIM;
    if (writes && disk.readOnly) return NbdErr.EPERM;
    if (h.type === Cmd.FLUSH) return h.offset === 0n && h.length === 0 ? NbdErr.OK : NbdErr.EINVAL;
    if (h.type === Cmd.READ && h.length > this._opts.maxRequestBytes) return NbdErr.EINVAL;
    if (h.offset + BigInt(h.length) > BigInt(disk.sizeBytes)) {
      return h.type === Cmd.WRITE || h.type === Cmd.WRITE_ZEROES ? NbdErr.ENOSPC : NbdErr.EINVAL;
    }
    return NbdErr.OK;
  }

  /** Sends one simple reply, waiting for the socket to drain so a slow reader holds us back. */
  private async _reply(error: number, handle: Buffer, data?: Buffer): Promise<void> {
    if (this._socket.destroyed || !this._socket.writable) return;
    this._socket.write(simpleReplyHeader(error, handle));
    if (data && data.length > 0 && !this._socket.write(data)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this._socket.off('drain', done);
          this._socket.off('close', done);
          resolve();
        };
        this._socket.on('drain', done);
        this._socket.on('close', done);
      });
    }
  }
}
