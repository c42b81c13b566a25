// The hash of a file's bytes, streamed: image manifests, boot-snapshot checksums, fixture keys.
// HashMemo keeps the hashes of large files across runs, so that a run does not read a 50 MiB
// kernel again to learn what the last run learned.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';

/** Hex digest of `path`'s bytes. sha1 where it guards against corruption only (4x faster here). */
export function hashFile(path: string, algorithm: 'sha1' | 'sha256' = 'sha256'): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash(algorithm);
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** What a remembered hash is valid for: the file's size, mtime, ctime, inode and device, as one string. */
export function fileStamp(st: { size: bigint; mtimeNs: bigint; ctimeNs: bigint; ino: bigint; dev: bigint }): string {
  // ctime too: no program can set it, so bytes rewritten under a restored mtime still show.
  return `${st.size}:${st.mtimeNs}:${st.ctimeNs}:${st.ino}:${st.dev}`;
}

/** A hash and the fileStamp it holds for. */
interface MemoEntry {
  stamp: string;
  hash: string;
}

interface MemoFile {
  version: number;
  files: Record<string, MemoEntry>;
}

const kMemoVersion = 1;
/** The newest entries kept: a run hashes a few large files (kernels, QEMU, disk images). */
const kMemoEntries = 256;

/**
 * Hashes by path and stamp (fileStamp), in a JSON file. Entries are independent facts, so two
 * runs writing at once lose at most an entry (hashed again later); an unreadable file is empty.
 */
export class HashMemo {
  private _files: Promise<Map<string, MemoEntry>> | undefined;

  constructor(readonly file: string) {}

  async get(path: string, stamp: string): Promise<string | undefined> {
    const e = (await this._load()).get(path);
    return e?.stamp === stamp ? e.hash : undefined;
  }

  /** Records a hash and writes the memo (merged with what other runs wrote meanwhile). */
  async put(path: string, stamp: string, hash: string): Promise<void> {
    const files = await this._load();
    files.delete(path);
    files.set(path, { stamp, hash });
    const merged = new Map([...(await readMemo(this.file)), ...files]);
    const kept = [...merged].slice(-kMemoEntries);
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify({ version: kMemoVersion, files: Object.fromEntries(kept) } satisfies MemoFile));
      await rename(tmp, this.file);
    } catch {
      // Only a speed-up: a cache directory we cannot write costs a hash next run.
      await rm(tmp, { force: true });
    }
  }

  private _load(): Promise<Map<string, MemoEntry>> {
    this._files ??= readMemo(this.file);
    return this._files;
  }
}

async function readMemo(file: string): Promise<Map<string, MemoEntry>> {
  try {
    const memo = JSON.parse(await readFile(file, 'utf8')) as MemoFile;
    if (memo.version !== kMemoVersion || typeof memo.files !== 'object' || memo.files === null) return new Map();
    return new Map(Object.entries(memo.files).filter(([, e]) => typeof e?.stamp === 'string' && typeof e?.hash === 'string'));
  } catch {
    return new Map();
  }
}

// ---------------------------------------------------------------------------------------------
// Content hashes of the files a cache key names (fixture keys, boot snapshots), remembered per
// process, and for large files across runs. Never by mtime alone: CI restores a cached directory
// onto a fresh clone, where every mtime is new, and a rebuilt file may keep its size and mtime.

/**
 * A file modified this recently may change again within the same timestamp tick (Linux stamps
 * files from a coarse clock), so its hash is not remembered: the next call reads it again.
 */
const kRacyWindowMs = 2_000;

interface Remembered {
  /** fileStamp when hashed: any change means the file must be read again. */
  stamp: string;
  hash: Promise<string>;
}
const kHashes = new Map<string, Remembered>();
/** Smaller files are read again each run: cheaper than growing the memo. */
const kMemoMinBytes = 1024 * 1024;
let gMemo: HashMemo | undefined;

/** Remembers the hashes of large files across runs in `file` (the cache's; undefined: per process only). */
export function keepHashesIn(file: string | undefined): void {
  gMemo = file === undefined ? undefined : gMemo?.file === file ? gMemo : new HashMemo(file);
}

/** `sha256:<hex>` of a file's bytes; `missing` when there is none; `not a file` for a directory. */
export async function contentHash(file: string): Promise<string> {
  let st;
  try {
    st = await stat(file, { bigint: true });
  } catch (err) {
    return absent(err);
  }
  if (!st.isFile()) return 'not a file';
  const stamp = fileStamp(st);
  const remembered = kHashes.get(file);
  if (remembered?.stamp === stamp) return remembered.hash;
  // Only a file that has been still for a while is safe to remember (see kRacyWindowMs).
  const still = BigInt(Date.now() - kRacyWindowMs) * 1_000_000n > st.mtimeNs;
  const memo = still && st.size >= kMemoMinBytes ? gMemo : undefined;
  const hash = (async () => {
    const known = await memo?.get(file, stamp);
    if (known !== undefined) return known;
    const computed = `sha256:${await hashFile(file)}`;
    await memo?.put(file, stamp, computed);
    return computed;
  })().catch(absent);
  if (still) kHashes.set(file, { stamp, hash });
  return hash;
}

/** What to fold in for a file that cannot be read: creating it later must change the key. */
function absent(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
  if (code === 'EISDIR') return 'not a file';
  return `unreadable (${code ?? (err as Error).message})`;
}
