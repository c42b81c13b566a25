// The durable layer under a disk: a sparse raw file, or a copy-on-write overlay over a read-only
// raw backing image. Only async fs I/O (FileHandle): the broker's event loop must never stall on a
// disk. Callers serialize operations per image (Disk does), so copy-up needs no locking here.
import { open, type FileHandle } from 'node:fs/promises';

/** Granularity of the overlay's block map: an extent is either all backing or all overlay. */
export const kOverlayExtentBytes = 64 * 1024;
/** Chunk used to write zeroes (and to check whether a range is already zero). */
const kZeroChunkBytes = 1024 * 1024;
const kZeroChunk = Buffer.alloc(kZeroChunkBytes);

export interface ImageStore {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Fill `target` with the bytes at [offset, offset + target.length); past the file's end reads zeroes. */
  readInto(offset: number, target: Buffer): Promise<void>;
  write(offset: number, data: Buffer): Promise<void>;
  writeZeroes(offset: number, length: number): Promise<void>;
  /** fdatasync: only for callers that want host durability (the disk model does not need it). */
  sync(): Promise<void>;
  close(): Promise<void>;
}

export interface RawImageOptions {
  path: string;
  /** Size of a file to create, or to grow an existing smaller file to. Default: the file's size. */
  sizeBytes?: number;
  readOnly?: boolean;
}

export interface OverlayImageOptions {
  /** Raw image that is only ever read. */
  backingPath: string;
  /** Scratch file for the written extents; truncated on open (the block map lives in memory). */
  overlayPath: string;
  /** Default: the backing file's size. Bytes past the backing's end read as zeroes. */
  sizeBytes?: number;
}

function isEnoent(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** pread until `target` is full; a short file leaves zeroes. */
async function preadFull(fh: FileHandle, offset: number, target: Buffer, fileSizeBytes: number): Promise<void> {
  let done = 0;
  const wanted = Math.max(0, Math.min(target.length, fileSizeBytes - offset));
  while (done < wanted) {
    const { bytesRead } = await fh.read(target, done, wanted - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  target.fill(0, done);
}

async function pwriteFull(fh: FileHandle, offset: number, data: Buffer): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
}

/** Writes zeroes over [offset, offset + length), skipping chunks that already read as zero so a hole stays a hole. */
async function zeroRange(fh: FileHandle, offset: number, length: number, fileSizeBytes: number): Promise<void> {
  const probe = Buffer.allocUnsafe(Math.min(kZeroChunkBytes, length));
  for (let at = offset; at < offset + length; at += kZeroChunkBytes) {
    const n = Math.min(kZeroChunkBytes, offset + length - at);
    const view = probe.subarray(0, n);
    await preadFull(fh, at, view, fileSizeBytes);
    if (view.equals(kZeroChunk.subarray(0, n))) continue;
    await pwriteFull(fh, at, kZeroChunk.subarray(0, n));
  }
}

class RawImage implements ImageStore {
  constructor(
    private readonly _fh: FileHandle,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {}

  readInto(offset: number, target: Buffer): Promise<void> {
    return preadFull(this._fh, offset, target, this.sizeBytes);
  }

  write(offset: number, data: Buffer): Promise<void> {
    return pwriteFull(this._fh, offset, data);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return zeroRange(this._fh, offset, length, this.sizeBytes);
  }

  sync(): Promise<void> {
    return this._fh.datasync();
  }

  close(): Promise<void> {
    return this._fh.close();
  }
}

/** Opens a raw image; a missing file is created sparse with `sizeBytes` (unless read-only). */
export async function openRawImage(opts: RawImageOptions): Promise<ImageStore> {
  const readOnly = opts.readOnly ?? false;
  let fh: FileHandle;
  try {
    fh = await open(opts.path, readOnly ? 'r' : 'r+');
  } catch (e) {
    if (!isEnoent(e) || readOnly || opts.sizeBytes === undefined) throw e;
    fh = await open(opts.path, 'wx+', 0o600);
  }
  try {
    const fileBytes = (await fh.stat()).size;
    const sizeBytes = opts.sizeBytes ?? fileBytes;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new RangeError(`bad image size ${sizeBytes}`);
    // Grow by truncate: the new range is a hole, costing no space.
    if (fileBytes < sizeBytes && !readOnly) await fh.truncate(sizeBytes);
    return new RawImage(fh, sizeBytes, readOnly);
  } catch (e) {
    await fh.close();
    throw e;
  }
}

class OverlayImage implements ImageStore {
  readonly readOnly = false;
  /** Extent indexes whose bytes live in the overlay file. */
  private readonly _mapped = new Set<number>();

  constructor(
    private readonly _backing: FileHandle,
    private readonly _backingBytes: number,
    private readonly _overlay: FileHandle,
    readonly sizeBytes: number,
  ) {}

  async readInto(offset: number, target: Buffer): Promise<void> {
    // One pread per run of extents that share a source.
    const end = offset + target.length;
    let pos = offset;
    while (pos < end) {
      const extent = Math.floor(pos / kOverlayExtentBytes);
      const fromOverlay = this._mapped.has(extent);
      let runEnd = (extent + 1) * kOverlayExtentBytes;
      while (runEnd < end && this._mapped.has(runEnd / kOverlayExtentBytes) === fromOverlay) runEnd += kOverlayExtentBytes;
      runEnd = Math.min(runEnd, end);
      const view = target.subarray(pos - offset, runEnd - offset);
      if (fromOverlay) await preadFull(this._overlay, pos, view, this.sizeBytes);
      else await preadFull(this._backing, pos, view, this._backingBytes);
      pos = runEnd;
    }
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (data.length === 0) return;
    const first = Math.floor(offset / kOverlayExtentBytes);
    const last = Math.floor((offset + data.length - 1) / kOverlayExtentBytes);
    // 1. Copy up the partly covered head and tail extents, so their other bytes stay the backing's.
    for (const e of new Set([first, last])) {
      const start = e * kOverlayExtentBytes;
      const end = Math.min(start + kOverlayExtentBytes, this.sizeBytes);
      const covered = offset <= start && offset + data.length >= end;
      if (!covered) await this._copyUp(e);
    }
    // 2. Then the data in one write, and map every extent it touched.
    await pwriteFull(this._overlay, offset, data);
    for (let e = first; e <= last; e++) this._mapped.add(e);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    if (length === 0) return;
    const first = Math.floor(offset / kOverlayExtentBytes);
    const last = Math.floor((offset + length - 1) / kOverlayExtentBytes);
    for (let e = first; e <= last; e++) {
      const start = e * kOverlayExtentBytes;
      const end = Math.min(start + kOverlayExtentBytes, this.sizeBytes);
      const from = Math.max(start, offset);
      const to = Math.min(end, offset + length);
      // An unmapped extent's overlay bytes were never written, so they are a hole: mapping it is enough.
      if (from === start && to === end && !this._mapped.has(e)) {
        this._mapped.add(e);
        continue;
      }
      await this._copyUp(e);
      await zeroRange(this._overlay, from, to - from, this.sizeBytes);
    }
  }

  sync(): Promise<void> {
    return this._overlay.datasync();
  }

  async close(): Promise<void> {
    await Promise.allSettled([this._backing.close(), this._overlay.close()]);
  }

  private async _copyUp(extent: number): Promise<void> {
    if (this._mapped.has(extent)) return;
    const start = extent * kOverlayExtentBytes;
    const buf = Buffer.allocUnsafe(Math.min(kOverlayExtentBytes, this.sizeBytes - start));
    await preadFull(this._backing, start, buf, this._backingBytes);
    await pwriteFull(this._overlay, start, buf);
    this._mapped.add(extent);
  }
}

/** Opens a copy-on-write overlay: the backing file is opened read-only and never written. */
export async function openOverlayImage(opts: OverlayImageOptions): Promise<ImageStore> {
  const backing = await open(opts.backingPath, 'r');
  let overlay: FileHandle | undefined;
  try {
    const backingBytes = (await backing.stat()).size;
    const sizeBytes = opts.sizeBytes ?? backingBytes;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new RangeError(`bad image size ${sizeBytes}`);
    overlay = await open(opts.overlayPath, 'w+', 0o600);
    await overlay.truncate(sizeBytes);
    return new OverlayImage(backing, backingBytes, overlay, sizeBytes);
  } catch (e) {
    await Promise.allSettled([backing.close(), overlay?.close()]);
    throw e;
  }
}
