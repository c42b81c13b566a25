// Streams as the broker serves them to a worker: agent streams (tails, fd streams, process
// output) and the serial console. Both buffer a bounded amount; the console pauses its socket
// when the reader falls behind, the agent stream relies on the agent's credit window.

import net from 'node:net';
import { ChunkQueue } from '../agent/chunk-queue.js';
import type { AgentStream } from '../agent/client.js';
import type { CaptureSubscription } from '../net/capture.js';
import { PcapFile, PcapWriter } from '../net/pcap.js';
import type { Switch } from '../net/switch.js';
import type { StreamChunk } from '../protocol/rpc.js';

export interface BrokerStream {
  readonly vmId: number;
  read(timeoutMs: number): Promise<StreamChunk>;
  close(): Promise<void>;
}

export class AgentBackedStream implements BrokerStream {
  constructor(
    readonly vmId: number,
    private readonly _stream: AgentStream,
    private readonly _close: (stream: AgentStream) => Promise<void>,
  ) {}

  async read(timeoutMs: number): Promise<StreamChunk> {
    const data = await this._stream.read(timeoutMs);
    return { data, eof: data === null && this._stream.ended };
  }

  close(): Promise<void> {
    return this._close(this._stream);
  }
}

const CONSOLE_HIGH_WATER_BYTES = 1024 * 1024;

/**
 * The one connection QEMU's console chardev accepts. Readers subscribe and see output from the
 * moment they subscribed; writes share the same socket.
 */
export class ConsoleLink {
  private _socket: net.Socket | undefined;
  private _connecting: Promise<net.Socket> | undefined;
  private readonly _readers = new Set<ConsoleReader>();

  constructor(private readonly _socketPath: string) {}

  private _connect(): Promise<net.Socket> {
    if (this._socket && !this._socket.destroyed) return Promise.resolve(this._socket);
    this._connecting ??= new Promise<net.Socket>((resolve, reject) => {
      const socket = net.createConnection(this._socketPath);
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        socket.on('error', () => undefined);
        socket.on('data', (chunk: Buffer) => {
          for (const reader of this._readers) reader._push(chunk);
          if ([...this._readers].some((r) => r.bufferedBytes > CONSOLE_HIGH_WATER_BYTES)) socket.pause();
        });
        socket.on('close', () => {
          for (const reader of this._readers) reader._end();
          this._socket = undefined;
        });
        this._socket = socket;
        resolve(socket);
      });
      socket.once('error', reject);
    }).finally(() => {
      this._connecting = undefined;
    });
    return this._connecting;
  }

  async openReader(vmId: number): Promise<ConsoleReader> {
    await this._connect();
    const reader = new ConsoleReader(vmId, this);
    this._readers.add(reader);
    return reader;
  }

  async write(data: Uint8Array, timeoutMs: number): Promise<void> {
    const socket = await this._connect();
    await new Promise<void>((resolve, reject) => {
      const timer = timeoutMs > 0 ? setTimeout(() => reject(new Error(`console write did not complete within ${timeoutMs} ms`)), timeoutMs) : undefined;
      socket.write(data, (err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  /** @internal */
  _drained(): void {
    if ([...this._readers].every((r) => r.bufferedBytes <= CONSOLE_HIGH_WATER_BYTES)) this._socket?.resume();
  }

  /** @internal */
  _detach(reader: ConsoleReader): void {
    this._readers.delete(reader);
    this._drained();
  }

  close(): void {
    for (const reader of this._readers) reader._end();
    this._readers.clear();
    this._socket?.destroy();
    this._socket = undefined;
  }
}

export class ConsoleReader implements BrokerStream {
  private readonly _queue = new ChunkQueue();

  constructor(
    readonly vmId: number,
    private readonly _link: ConsoleLink,
  ) {}

  get bufferedBytes(): number {
    return this._queue.bufferedBytes;
  }

  /** Everything that arrived since the last read, so a slow reader catches up in one call. */
  async read(timeoutMs: number): Promise<StreamChunk> {
    await this._queue.waitForData(timeoutMs);
    const data = this._queue.takeAll();
    if (!data) return { data: null, eof: this._queue.ended };
    this._link._drained();
    return { data, eof: false };
  }

  async close(): Promise<void> {
    this._end();
    this._link._detach(this);
  }

  /** @internal */
  _push(chunk: Buffer): void {
    this._queue.push(chunk);
  }

  /** @internal */
  _end(): void {
    this._queue.end();
  }
}

/** A capture falling this far behind its reader drops records (counted) rather than hold the switch. */
const CAPTURE_HIGH_WATER_BYTES = 16 * 1024 * 1024;

/**
 * A packet capture as a stream of pcap bytes (global header first, then one record per frame),
 * optionally also written to a pcap file. Written by the switch: no tcpdump, no root.
 */
export class CaptureStream implements BrokerStream {
  /** Not tied to a VM: a capture lives as long as its bridge or until closed. */
  readonly vmId = -1;
  private readonly _queue = new ChunkQueue();
  private readonly _writer: PcapWriter;
  private readonly _subscription: CaptureSubscription;
  private readonly _file: PcapFile | undefined;
  private _dropped = 0;

  constructor(sw: Switch, port: string | undefined, file: string | undefined) {
    this._file = file !== undefined ? new PcapFile(file) : undefined;
    this._writer = new PcapWriter((chunk) => {
      if (this._queue.bufferedBytes > CAPTURE_HIGH_WATER_BYTES) this._dropped++;
      else this._queue.push(chunk);
    });
    this._subscription = sw.capture(port !== undefined ? { port } : {}, (record) => {
      this._writer.write(record);
      this._file?.write(record);
    });
  }

  /** Records dropped because the reader fell behind. */
  get dropped(): number {
    return this._dropped;
  }

  async read(timeoutMs: number): Promise<StreamChunk> {
    await this._queue.waitForData(timeoutMs);
    const data = this._queue.takeAll();
    return data ? { data, eof: false } : { data: null, eof: this._queue.ended || this._subscription.closed };
  }

  async close(): Promise<void> {
    this._subscription.close();
    this._queue.end();
    await this._file?.close();
  }
}
