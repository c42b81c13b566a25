// The disk's volatile write cache. Guest writes land here and reach the image only on FLUSH, on a
// FUA write, or when the cache is full; a power cut throws away whatever has not reached it, as a
// real drive's cache would. Reads see the cache (read-your-writes).
//
// The cache holds whole extents: the first write into an extent reads its current bytes from the
// image, so writes and reads of any byte range stay simple, and an extent fully zeroed costs no
// memory (it is held as a "zero" marker). Callers serialize operations (Disk does).
import type { ImageStore } from './image.js';

/** Cache granularity. */
export const kCacheExtentBytes = 64 * 1024;
/**
 * The disk's cache size: once more dirty data than this is held, the whole cache is written back
 * (as a drive flushes when its cache fills). A power cut then loses only what came after.
 */
export const kDefaultCacheSizeBytes = 64 * 1024 * 1024;

/** What a power cut threw away. */
export interface DiscardStats {
  extents: number;
  /** Dirty bytes held in memory (zero markers count as 0). */
  bytes: number;
}

export class WriteCache {
  /** extent index → the extent's newest bytes, or null when the whole extent is zero. */
  private readonly _dirty = new Map<number, Buffer | null>();
  private _dirtyBytes = 0;

  constructor(
    private readonly _image: ImageStore,
    private readonly _cacheSizeBytes: number = kDefaultCacheSizeBytes,
  ) {}

  /** Bytes of unflushed data held in memory. */
  get dirtyBytes(): number {
    return this._dirtyBytes;
  }

  get dirtyExtents(): number {
    return this._dirty.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    await this._image.readInto(offset, out);
    if (this._dirty.size === 0 || length === 0) return out;
    this._forExtents(offset, length, (e, start, from, to) => {
      if (!this._dirty.has(e)) return;
      const data = this._dirty.get(e)!;
      if (data === null) out.fill(0, from - offset, to - offset);
      else data.copy(out, from - offset, from - start, to - start);
    });
    return out;
  }

  /** A write: volatile, or with `durable` (FUA, host writes) straight to the image as well. */
  async write(offset: number, data: Buffer, durable: boolean): Promise<void> {
    if (data.length === 0) return;
    if (durable) {
      await this._image.write(offset, data);
      // Keep cached copies newest; their other bytes stay as volatile as they were.
      this._forExtents(offset, data.length, (e, start, from, to) => {
        if (this._dirty.has(e)) this._materialize(e, start).set(data.subarray(from - offset, to - offset), from - start);
      });
      return;
    }
    const extents: Array<[number, number, number, number]> = [];
    this._forExtents(offset, data.length, (e, start, from, to) => extents.push([e, start, from, to]));
    for (const [e, start, from, to] of extents) {
      const buf = await this._load(e, start, from, to);
      data.copy(buf, from - start, from - offset, to - offset);
    }
    if (this._dirtyBytes > this._cacheSizeBytes) await this.flush();
  }

  async writeZeroes(offset: number, length: number, durable: boolean): Promise<void> {
    if (length === 0) return;
    if (durable) await this._image.writeZeroes(offset, length);
    const extents: Array<[number, number, number, number]> = [];
    this._forExtents(offset, length, (e, start, from, to) => extents.push([e, start, from, to]));
    for (const [e, start, from, to] of extents) {
      const whole = from === start && to === this._extentEnd(start);
      if (durable && !this._dirty.has(e)) continue;
      if (whole && !durable) {
        this._set(e, null);
        continue;
      }
      const cached = this._dirty.get(e);
      if (cached === null) continue;
      const buf = cached ?? (await this._load(e, start, from, to));
      buf.fill(0, from - start, to - start);
    }
    if (this._dirtyBytes > this._cacheSizeBytes) await this.flush();
  }

  /** Writes every dirty extent to the image, in offset order, then forgets them. */
  async flush(): Promise<void> {
    const order = [...this._dirty.keys()].sort((a, b) => a - b);
    for (const e of order) {
      const data = this._dirty.get(e);
      if (data === undefined) continue;
      const start = e * kCacheExtentBytes;
      if (data === null) await this._image.writeZeroes(start, this._extentEnd(start) - start);
      else await this._image.write(start, data);
      // Forget each extent once it is on the image: a failure part-way keeps the rest dirty.
      this._set(e, undefined);
    }
  }

  /** A power cut: every unflushed write is gone. */
  discard(): DiscardStats {
    const stats = { extents: this._dirty.size, bytes: this._dirtyBytes };
    this._dirty.clear();
    this._dirtyBytes = 0;
    return stats;
  }

  private _extentEnd(start: number): number {
    return Math.min(start + kCacheExtentBytes, this._image.sizeBytes);
  }

  /** Calls `fn(extent, extentStart, from, to)` for each extent overlapping [offset, offset + length). */
  private _forExtents(offset: number, length: number, fn: (e: number, start: number, from: number, to: number) => void): void {
    const end = offset + length;
    for (let e = Math.floor(offset / kCacheExtentBytes); e * kCacheExtentBytes < end; e++) {
      const start = e * kCacheExtentBytes;
      fn(e, start, Math.max(start, offset), Math.min(start + kCacheExtentBytes, end));
    }
  }

  /** The cached buffer of extent `e`, reading its current bytes from the image unless [from, to) covers it. */
  private async _load(e: number, start: number, from: number, to: number): Promise<Buffer> {
    const cached = this._dirty.get(e);
    if (cached) return cached;
    if (cached === null) return this._materialize(e, start);
    const buf = Buffer.allocUnsafe(this._extentEnd(start) - start);
    if (from !== start || to !== start + buf.length) await this._image.readInto(start, buf);
    this._set(e, buf);
    return buf;
  }

  /** Turns a zero marker into a real buffer (a partial write into a zeroed extent). */
  private _materialize(e: number, start: number): Buffer {
    const cached = this._dirty.get(e);
    if (cached) return cached;
    const buf = Buffer.alloc(this._extentEnd(start) - start);
    this._set(e, buf);
    return buf;
  }

  private _set(e: number, value: Buffer | null | undefined): void {
    const old = this._dirty.get(e);
    if (old) this._dirtyBytes -= old.length;
    if (value === undefined) this._dirty.delete(e);
    else {
      this._dirty.set(e, value);
      if (value) this._dirtyBytes += value.length;
    }
  }
}
