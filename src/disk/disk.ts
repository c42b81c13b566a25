// One disk as the guest and the test both see it: an image, the volatile write cache over it, and
// the fault policy for guest requests. Every operation that touches data runs through one queue,
// so guest requests from several connections, host sector access, flush and power cut never
// interleave half-way.
import { setTimeout as sleep } from 'node:timers/promises';
import { FaultPolicy, kSectorBytes, type FaultEvent, type GuestOp } from './faults.js';
import { openOverlayImage, openRawImage, type ImageStore } from './image.js';
import { kDefaultCacheSizeBytes, WriteCache } from './write-cache.js';

export type ImageSpec =
  | { kind: 'raw'; path: string; sizeBytes?: number }
  | { kind: 'overlay'; backingPath: string; overlayPath: string; sizeBytes?: number };

export interface DiskOptions {
  /** The export name clients ask for. */
  name: string;
  image: ImageSpec;
  /** Refuse guest writes (EPERM); the image is opened read-only. Host writes are refused too. */
  readOnly?: boolean;
  /** The disk's cache size: dirty bytes above this are written back at once. Default 64 MiB. */
  cacheSizeBytes?: number;
  /** Uniform in [0, 1), seeded by the caller: every random fault comes from it. */
  random: () => number;
  /** Every fault policy change and power cut, for the run's timeline. */
  onFault?: (event: FaultEvent) => void;
  /** Errors of the host file system, answered to the guest as EIO. */
  log?: (message: string) => void;
}

/** A guest request after the protocol layer validated it (flags, range, read-only). */
export interface GuestRequest {
  op: GuestOp;
  offsetBytes: number;
  lengthBytes: number;
  /** The payload of a write. */
  data?: Buffer;
  /** Persist before answering (NBD_CMD_FLAG_FUA). */
  fua: boolean;
  /** performance.now() when the request arrived: delay faults count from here. */
  receivedAtMs: number;
}

export type GuestResult = { ok: true; data?: Buffer } | { ok: false };

export class Disk {
  readonly faults: FaultPolicy;
  private readonly _cache: WriteCache;
  /** Tail of the operation queue; never rejects. */
  private _tail: Promise<unknown> = Promise.resolve();
  private _closed = false;
  /** Aborted by close(): requests sleeping on a delay fault give up at once. */
  private readonly _closing = new AbortController();

  private constructor(
    readonly name: string,
    private readonly _image: ImageStore,
    readonly readOnly: boolean,
    cacheSizeBytes: number,
    random: () => number,
    private readonly _onFault: (event: FaultEvent) => void,
    private readonly _log: (message: string) => void,
  ) {
    this._cache = new WriteCache(_image, cacheSizeBytes);
    this.faults = new FaultPolicy(random, (kind, values) => this._onFault({ kind, export: this.name, values }));
  }

  static async open(opts: DiskOptions): Promise<Disk> {
    const readOnly = opts.readOnly ?? false;
    const spec = opts.image;
    const image =
      spec.kind === 'raw'
        ? await openRawImage({ path: spec.path, sizeBytes: spec.sizeBytes, readOnly })
        : await openOverlayImage({ backingPath: spec.backingPath, overlayPath: spec.overlayPath, sizeBytes: spec.sizeBytes });
    const cacheSizeBytes = opts.cacheSizeBytes ?? kDefaultCacheSizeBytes;
    return new Disk(opts.name, image, readOnly, cacheSizeBytes, opts.random, opts.onFault ?? (() => {}), opts.log ?? (() => {}));
  }

  get sizeBytes(): number {
    return this._image.sizeBytes;
  }

  /** Unflushed bytes held in the disk's cache. */
  get dirtyBytes(): number {
    return this._cache.dirtyBytes;
  }

  /** Serve one guest request: fault policy, delay, then the data operation. Never throws. */
  async serve(req: GuestRequest): Promise<GuestResult> {
    const decision = this.faults.check(req.op, req.offsetBytes, req.lengthBytes);
    // Timers count whole milliseconds from the loop's cached clock and may fire a little early:
    // sleep again until the delay has really passed.
    const answerAt = req.receivedAtMs + decision.delayMs;
    for (let waitMs = answerAt - performance.now(); waitMs > 0; waitMs = answerAt - performance.now()) {
      try {
        await sleep(Math.ceil(waitMs), undefined, { signal: this._closing.signal });
      } catch {
        return { ok: false };
      }
    }
    if (decision.fail) return { ok: false };
    try {
      return await this._serial(async () => {
        this._checkOpen();
        switch (req.op) {
          case 'read':
            return { ok: true, data: await this._cache.read(req.offsetBytes, req.lengthBytes) };
          case 'write': {
            const data = decision.tornBytes === undefined ? req.data! : req.data!.subarray(0, decision.tornBytes);
            await this._cache.write(req.offsetBytes, data, req.fua);
            return { ok: true };
          }
          case 'write_zeroes':
            await this._cache.writeZeroes(req.offsetBytes, req.lengthBytes, req.fua);
            return { ok: true };
          case 'trim':
            // TRIM leaves the contents unspecified; keeping them is the simplest correct choice.
            return { ok: true };
          case 'flush':
            await this._cache.flush();
            return { ok: true };
        }
      });
    } catch (e) {
      this._log(`disk ${this.name}: ${req.op} at ${req.offsetBytes}+${req.lengthBytes} failed: ${(e as Error).message}`);
      return { ok: false };
    }
  }

  /** Host-side read of `count` 512-byte sectors; sees the guest's unflushed writes, ignores faults. */
  async readSectors(sector: number, count: number): Promise<Buffer> {
    this._checkSectors(sector, count);
    return this._serial(async () => {
      this._checkOpen();
      return this._cache.read(sector * kSectorBytes, count * kSectorBytes);
    });
  }

  /** Host-side write of whole sectors; durable at once (it bypasses the cache like a write to the medium). */
  async writeSectors(sector: number, data: Buffer): Promise<void> {
    if (this.readOnly) throw new Error(`disk ${this.name} is read-only`);
    if (data.length % kSectorBytes !== 0) {
      throw new RangeError(`writeSectors: data length ${data.length} is not a multiple of ${kSectorBytes}`);
    }
    this._checkSectors(sector, data.length / kSectorBytes);
    return this._serial(async () => {
      this._checkOpen();
      await this._cache.write(sector * kSectorBytes, data, true);
    });
  }

  /** Writes the cache back, as a guest FLUSH would. */
  flush(): Promise<void> {
    return this._serial(async () => {
      this._checkOpen();
      await this._cache.flush();
    });
  }

  /** Power cut: every write the guest has not flushed is lost. */
  async powerCut(): Promise<{ lostBytes: number; lostExtents: number }> {
    const stats = await this._serial(async () => this._cache.discard());
    const lost = { lostBytes: stats.bytes, lostExtents: stats.extents };
    this._onFault({ kind: 'power_cut', export: this.name, values: { lost_bytes: lost.lostBytes, lost_extents: lost.lostExtents } });
    return lost;
  }

  /** Closes the image; `flush` (default true) writes the cache back first, false loses it. Idempotent. */
  async close(opts: { flush?: boolean } = {}): Promise<void> {
    if (this._closed) return;
    this._closing.abort();
    await this._serial(async () => {
      if (this._closed) return;
      this._closed = true;
      try {
        if (opts.flush ?? true) await this._cache.flush();
      } finally {
        this._cache.discard();
        await this._image.close();
      }
    });
  }

  private _checkOpen(): void {
    if (this._closed) throw new Error(`disk ${this.name} is closed`);
  }

  private _checkSectors(sector: number, count: number): void {
    const total = this.sizeBytes / kSectorBytes;
    if (!Number.isSafeInteger(sector) || !Number.isSafeInteger(count) || sector < 0 || count < 0 || sector + count > total) {
      throw new RangeError(`disk ${this.name}: sectors ${sector}+${count} outside 0..${Math.floor(total)}`);
    }
  }

  private _serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this._tail.then(fn);
    this._tail = run.catch(() => {});
    return run;
  }
}
