// A disk that QEMU serves itself from a raw file (backend "qemu"): the guest's I/O never leaves
// QEMU, so it runs at the speed of a plain -drive. The test's sector access reads and writes the
// same file (QEMU keeps no cache of a raw file beyond the host's page cache, which both share).
// Faults are blkdebug rules (./blkdebug.ts) that the broker installs in QEMU; this class keeps the
// policy they come from. There is no write cache below the guest, so a power cut loses only what
// the guest itself had not written out.
import { blkdebugRules, type BlkdebugRules } from './blkdebug.js';
import { FaultPolicy, kSectorBytes, type FaultEvent } from './faults.js';
import { openRawImage, type ImageStore } from './image.js';

export interface FileDiskOptions {
  name: string;
  /** The raw file QEMU opens. Created sparse when missing. */
  path: string;
  /** Bytes; the file grows to it (a hole). Default: the file's size. */
  sizeBytes?: number;
  readOnly?: boolean;
  onFault?: (event: FaultEvent) => void;
}

export class FileDisk {
  readonly faults: FaultPolicy;

  private constructor(
    readonly name: string,
    readonly path: string,
    private readonly _image: ImageStore,
    readonly readOnly: boolean,
    private readonly _onFault: (event: FaultEvent) => void,
  ) {
    // No random faults on this backend (the broker refuses random_eio), so nothing draws from it.
    this.faults = new FaultPolicy(() => 0, (kind, values) => this._onFault({ kind, export: this.name, values }));
  }

  static async open(opts: FileDiskOptions): Promise<FileDisk> {
    const readOnly = opts.readOnly ?? false;
    const image = await openRawImage({ path: opts.path, sizeBytes: opts.sizeBytes, readOnly });
    return new FileDisk(opts.name, opts.path, image, readOnly, opts.onFault ?? (() => {}));
  }

  get sizeBytes(): number {
    return this._image.sizeBytes;
  }

  /** The blkdebug rules of the current policy. */
  rules(): BlkdebugRules {
    return blkdebugRules(this.faults.describe());
  }

  async readSectors(sector: number, count: number): Promise<Buffer> {
    const out = Buffer.alloc(count * kSectorBytes);
    await this._image.readInto(sector * kSectorBytes, out);
    return out;
  }

  async writeSectors(sector: number, data: Buffer): Promise<void> {
    if (this.readOnly) throw new Error(`disk ${this.name} is read-only`);
    await this._image.write(sector * kSectorBytes, data);
  }

  /** QEMU is gone; what it wrote is in the file already, so nothing more is lost here. */
  async powerCut(): Promise<{ lostBytes: number; lostExtents: number }> {
    this._onFault({ kind: 'power_cut', export: this.name, values: { lost_bytes: 0, lost_extents: 0 } });
    return { lostBytes: 0, lostExtents: 0 };
  }

  async close(): Promise<void> {
    await this._image.close();
  }
}
