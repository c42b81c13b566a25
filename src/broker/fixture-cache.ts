// The fixture cache (reference §3.3): built fixtures (a snapshot directory: `vm.snap` and its
// sidecars, or a lab's `lab.json` and snapshots), kept compressed and reused by later files and
// runs, and by CI through a cached directory. Layout under `<cache>/fixtures`:
//
//   <key>/manifest.json   files (path, sizes, sha256 of the extracted bytes, mode), meta, id
//   <key>/last-used       ms since the epoch; atime is useless under noatime/relatime
//   <key>/data/<path>.zst a compressed file (`.raw`: a small one stored as is)
//   <key>.lock            the build lock (src/vmm/file-lock.ts)
//   .tmp-<pid>-<rand>-<key>, .old-<pid>-<rand>-<key>   an install in progress, a replaced entry
//
// An entry appears only by renaming a complete temp dir into place, so `<key>/` without a valid
// manifest, or with a stored file of the wrong size, is corrupt: it is removed and reported, and
// the caller rebuilds it. A stored file that decompresses badly (zstd's frame checksum) or to
// other bytes (the manifest's sha256, hashed on the way through) is found by extract().
//
// Several processes share the directory. Each install has an `id`, and an entry is removed as
// corrupt only while that same install is still in place: a reader that saw an older one must not
// delete its replacement. extract() opens every stored file before reading any, so an entry
// evicted or replaced meanwhile still extracts whole (its inodes live until closed).

import { createHash, randomBytes, type Hash } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { acquireFileLock, isProcessAlive, removeStaleFileLock, type FileLockOptions } from '../vmm/file-lock.js';
import { isRamImage } from '../vmm/guest-ram.js';

const kManifestVersion = 1;
const kManifestName = 'manifest.json';
const kLastUsedName = 'last-used';
const kDataDir = 'data';
const kTempPrefix = '.tmp-';
const kTrashPrefix = '.old-';
const kLockSuffix = '.lock';
/** Below this a file is stored as is: a zstd process costs more than the bytes it would save. */
const kRawBelowBytes = 64 * 1024;
/**
 * `-1`, single-threaded. Measured on this 2-core host with a 64 MiB snapshot (20 MiB of random
 * pages, the rest zero): -1 takes 0.09 s, -3 0.21 s, for the same size (random pages do not
 * compress, zero pages cost nothing at any level); on a mix with 25% program pages -3 saves 3%
 * for 1.6x the time. `-T0` gave nothing (0.15 s either way) and would take the core the restore
 * and the other VMs need. Decompression speed is about the same for every level.
 */
const kZstdCompress = ['-1', '-T1', '--check', '-q'];
/** Files of an entry compressed or extracted at once: one zstd process each, on 2 cores. */
const kParallelFiles = 2;
const kPageBytes = 4096;
const kZeroPage = Buffer.alloc(kPageBytes);
/** Extraction writes in blocks this big (see writeSparse). */
const kWriteBlockBytes = 1024 * 1024;
/**
 * Shorter zero runs are written as data: each hole costs a write call (a thread-pool round trip).
 * Free guest RAM and free disk space are zero in long runs. Measured on a 64 MiB file with 20 MiB
 * of random pages scattered singly: 4 KiB holes extract in ~0.45 s, 64 KiB ones in ~0.35 s.
 */
const kMinHoleBytes = 64 * 1024;
/** A temp or trash dir this old is left over even if its pid was reused; installs take seconds. */
const kLeftoverMs = 60 * 60_000;

export interface FixtureFile {
  /** Relative to the fixture's directory, `/`-separated. */
  path: string;
  /** Extracted size. */
  bytes: number;
  /** Size of the stored (compressed) file. */
  storedBytes: number;
  /**
   * Of the extracted bytes; null for a RAM image (`*.ram`, hundreds of MiB of mostly holes), which
   * zstd writes sparse itself and checks by its frame checksum: hashing it here would cost more
   * than the restore it serves.
   */
  sha256: string | null;
  /** False: stored as is (small files). */
  compressed: boolean;
  /** Permission bits. */
  mode: number;
}

export interface FixtureEntry {
  key: string;
  /** The entry's directory in the cache. */
  dir: string;
  /** Bytes on disk (compressed). */
  storedBytes: number;
  /** Bytes once extracted. */
  bytes: number;
  /** What install() was given, e.g. {kind: 'vm'|'lab', path: 'db/fixtures/warm', built_ms, ...}. */
  meta: Record<string, unknown>;
  /** When it was last looked up or installed (ms since the epoch). */
  lastUsedMs: number;
  /** When it was installed (ms since the epoch). */
  createdMs: number;
  /** Unique per install: a replaced entry has a new id. */
  id: string;
  files: readonly FixtureFile[];
}

interface Manifest {
  manifestVersion: number;
  key: string;
  id: string;
  createdMs: number;
  meta: Record<string, unknown>;
  files: FixtureFile[];
}

export interface FixtureCacheOptions {
  /** `<cache>/fixtures`. */
  dir: string;
  /** `cache_max_size`: eviction trims the stored (compressed) total down to this. */
  maxBytes: number;
  /** Told about each entry eviction removes (for a log line). */
  onEvict?: (entry: FixtureEntry) => void;
}

/**
 * An entry that cannot be used: it has been removed, and building it again fixes it. (`removed`
 * false: another process replaced or evicted it first; looking it up again is the fix.)
 */
export class FixtureCorruptError extends Error {
  override name = 'FixtureCorruptError';
  constructor(
    readonly key: string,
    /** The file that is wrong (a stored file, or the manifest). */
    readonly path: string,
    readonly reason: string,
    meta?: Record<string, unknown>,
    /** False when another process replaced or removed the entry first: look it up again. */
    readonly removed = true,
  ) {
    super(removed
      ? `${describeEntry(key, meta)} is corrupt: ${reason} (${path}) — it was removed from the cache; building the fixture again replaces it`
      : `${describeEntry(key, meta)} cannot be used: ${reason} (${path}) — another process replaced or removed it meanwhile; look it up again`);
  }
}

/** The cache itself failed (I/O, zstd missing): nothing is wrong with the entry. */
export class FixtureCacheError extends Error {
  override name = 'FixtureCacheError';
}

export class FixtureCache {
  private readonly _dir: string;
  private readonly _maxBytes: number;
  private readonly _onEvict: ((entry: FixtureEntry) => void) | undefined;

  constructor(opts: FixtureCacheOptions) {
    if (typeof opts.dir !== 'string' || opts.dir === '') {
      throw new TypeError(`FixtureCache: dir must be a directory path, got ${String(opts.dir)}`);
    }
    if (typeof opts.maxBytes !== 'number' || !(opts.maxBytes > 0)) {
      throw new TypeError(`FixtureCache: maxBytes (cache_max_size) must be a number of bytes > 0, got ${String(opts.maxBytes)}`);
    }
    this._dir = opts.dir;
    this._maxBytes = opts.maxBytes;
    this._onEvict = opts.onEvict;
  }

  get dir(): string {
    return this._dir;
  }

  /**
   * The installed entry, or undefined. Cheap (manifest read + sizes), bumps lastUsed. An entry
   * whose manifest or files are missing or of the wrong size is removed and reported as corrupt.
   */
  async lookup(key: string): Promise<FixtureEntry | { corrupt: string } | undefined> {
    checkKey(key);
    const read = await this._read(key);
    if (read === undefined) return undefined;
    if ('corrupt' in read) {
      await this._removeIfSame(key, undefined);
      return { corrupt: read.corrupt };
    }
    const entry = read;
    const problems = await Promise.all(entry.files.map(async (f) => {
      const file = storedPath(entry.dir, f);
      const st = await stat(file).catch((e: NodeJS.ErrnoException) => e);
      if (st instanceof Error) return `${f.path}: cannot stat ${file}: ${st.code ?? st.message}`;
      if (st.size !== f.storedBytes) {
        return `${f.path}: ${file} has ${st.size} bytes, the manifest says ${f.storedBytes} (truncated or overwritten)`;
      }
      return undefined;
    }));
    const problem = problems.find((p) => p !== undefined);
    if (problem !== undefined) {
      await this._removeIfSame(key, entry.id);
      return { corrupt: `${describeEntry(key, entry.meta)}: ${problem}` };
    }
    entry.lastUsedMs = Date.now();
    await writeLastUsed(entry.dir, entry.lastUsedMs);
    return entry;
  }

  /**
   * Decompresses every file of the entry into `intoDir` (same relative layout, sparse where
   * zeros). Throws FixtureCorruptError (after removing the entry) when a file fails to decompress
   * or its checksum does not match; the files written so far are removed then.
   */
  async extract(entry: FixtureEntry, intoDir: string): Promise<void> {
    // 1. Pin the stored files: from here on, an eviction or a reinstall cannot pull them away.
    const current = await this._read(entry.key);
    if (current === undefined || 'corrupt' in current || current.id !== entry.id) {
      throw new FixtureCorruptError(entry.key, join(entry.dir, kManifestName),
        'it changed after it was looked up', entry.meta, false);
    }
    const handles: (FileHandle | undefined)[] = [];
    const written: string[] = [];
    const abort = new AbortController();
    try {
      for (const f of entry.files) {
        const file = storedPath(entry.dir, f);
        handles.push(await open(file, 'r').catch(async (e: NodeJS.ErrnoException) => {
          throw await this._corrupt(entry, file, `cannot open it: ${e.code ?? e.message}`);
        }));
      }

      // 2. Extract, a few files at once; the first failure stops the others.
      await eachLimit(entry.files, kParallelFiles, async (f, i) => {
        const out = join(intoDir, ...f.path.split('/'));
        written.push(out);
        await this._extractOne(entry, f, handles[i]!, out, abort.signal);
      }, () => abort.abort());
    } catch (e) {
      await Promise.all(written.map((p) => rm(p, { force: true })));
      throw e;
    } finally {
      await Promise.all(handles.map((fh) => fh?.close().catch(() => undefined)));
    }
  }

  /** The cross-process build lock of `key` (src/vmm/file-lock.ts), `<dir>/<key>.lock`. */
  async lock(key: string, opts: FileLockOptions): Promise<() => Promise<void>> {
    checkKey(key);
    return acquireFileLock(join(this._dir, `${key}${kLockSuffix}`), opts);
  }

  /**
   * Compresses every regular file of `builtDir` (recursively) into a temp dir beside the entries,
   * writes the manifest, and renames it into place, replacing an older entry of the key. Then
   * evicts least-recently-used entries down to maxBytes, never this one. `builtDir` is unchanged.
   */
  async install(key: string, builtDir: string, meta: Record<string, unknown>): Promise<FixtureEntry> {
    checkKey(key);
    const name = describeEntry(key, meta);
    const rels = await listRegularFiles(builtDir, name);
    if (rels.length === 0) {
      throw new FixtureCacheError(`${name}: ${builtDir} holds no files to install — the fixture build produced no snapshot`);
    }
    await mkdir(this._dir, { recursive: true }).catch((e) => { throw ioError(name, 'create', this._dir, e); });

    // 1. Store every file into a temp dir (same filesystem as the entries, so the rename is atomic).
    const tmp = join(this._dir, `${kTempPrefix}${process.pid}-${randomBytes(4).toString('hex')}-${key}`);
    const trash: string[] = [];
    try {
      const files = new Array<FixtureFile>(rels.length);
      await eachLimit(rels, kParallelFiles, async (rel, i) => {
        files[i] = await storeFile(join(builtDir, ...rel.split('/')), rel, join(tmp, kDataDir), name);
      });
      const now = Date.now();
      const manifest: Manifest = {
        manifestVersion: kManifestVersion,
        key,
        id: randomBytes(8).toString('hex'),
        createdMs: now,
        meta,
        files,
      };
      await writeFile(join(tmp, kManifestName), JSON.stringify(manifest, null, 2) + '\n')
        .catch((e) => { throw ioError(name, 'write', join(tmp, kManifestName), e); });
      await writeLastUsed(tmp, now);

      // 2. Into place. An older entry goes aside first (rename cannot replace a non-empty dir)
      //    and is deleted after, so the gap is two renames long; a lookup that falls into it
      //    misses, waits on the build lock and looks again.
      const final = join(this._dir, key);
      for (let attempt = 0; ; attempt++) {
        try {
          await rename(tmp, final);
          break;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || attempt >= 3) {
            throw ioError(name, 'rename into place', `${tmp} -> ${final}`, e);
          }
        }
        const old = await this._moveAside(key);
        if (old !== undefined) trash.push(old);
      }
      await this._evict(key);
      return toEntry(this._dir, manifest, now);
    } finally {
      await Promise.all([tmp, ...trash].map((dir) => rm(dir, { recursive: true, force: true })));
    }
  }

  async remove(key: string): Promise<void> {
    checkKey(key);
    await this._removeDir(key);
  }

  /** Every valid entry, most recently used first (corrupt ones are left to lookup and evict). */
  async list(): Promise<FixtureEntry[]> {
    const out: FixtureEntry[] = [];
    for (const name of await this._names()) {
      if (!isEntryName(name)) continue;
      const read = await this._read(name);
      if (read !== undefined && !('corrupt' in read)) out.push(read);
    }
    return out.sort((a, b) => b.lastUsedMs - a.lastUsedMs || a.key.localeCompare(b.key));
  }

  /** Removes every entry (and stale temp dirs and locks not held by a live process). */
  async clean(): Promise<void> {
    for (const name of await this._names()) {
      const path = join(this._dir, name);
      if (name.endsWith(kLockSuffix) || name.endsWith(`${kLockSuffix}.break`)) await removeStaleFileLock(path);
      else if (name.startsWith(kTempPrefix) || name.startsWith(kTrashPrefix)) await removeIfLeftover(path, name);
      else if (isEntryName(name)) await this._removeDir(name);
    }
  }

  /** Evicts LRU entries down to maxBytes (install does this; callable at start-up too). Returns them. */
  evict(): Promise<FixtureEntry[]> {
    return this._evict(undefined);
  }

  private async _evict(keep: string | undefined): Promise<FixtureEntry[]> {
    // 1. Sweep what killed processes left: temp and trash dirs, entries without a valid manifest.
    const entries: FixtureEntry[] = [];
    for (const name of await this._names()) {
      if (name.startsWith(kTempPrefix) || name.startsWith(kTrashPrefix)) {
        await removeIfLeftover(join(this._dir, name), name);
      } else if (isEntryName(name)) {
        const read = await this._read(name);
        if (read === undefined) continue;
        if ('corrupt' in read) await this._removeIfSame(name, undefined);
        else entries.push(read);
      }
    }

    // 2. Oldest first until the rest fits; the entry just installed stays even if it alone does not.
    let total = entries.reduce((sum, e) => sum + e.storedBytes, 0);
    const evicted: FixtureEntry[] = [];
    entries.sort((a, b) => a.lastUsedMs - b.lastUsedMs || a.key.localeCompare(b.key));
    for (const e of entries) {
      if (total <= this._maxBytes) break;
      if (e.key === keep) continue;
      await this._removeIfSame(e.key, e.id);
      total -= e.storedBytes;
      evicted.push(e);
      this._onEvict?.(e);
    }
    return evicted;
  }

  private async _extractOne(entry: FixtureEntry, f: FixtureFile, src: FileHandle, out: string, signal: AbortSignal): Promise<void> {
    const file = storedPath(entry.dir, f);
    const name = describeEntry(entry.key, entry.meta);
    await mkdir(dirname(out), { recursive: true }).catch((e) => { throw ioError(name, 'create', dirname(out), e); });
    if (f.sha256 === null) {
      const bytes = await this._extractSparse(entry, f, src, out, signal);
      if (bytes !== f.bytes) throw await this._corrupt(entry, file, `it decompresses to ${bytes} bytes, the manifest says ${f.bytes}`);
      await chmod(out, f.mode).catch(() => undefined);
      return;
    }
    const dst = await open(out, 'w', f.mode).catch((e) => { throw ioError(name, 'create', out, e); });
    const hash = createHash('sha256');
    let bytes: number;
    try {
      if (!f.compressed) {
        const data = await src.readFile();
        bytes = await writeSparse(dst, out, [data], hash, name);
      } else {
        const { execa } = await import('execa');
        // zstd reads the pinned descriptor; we hash its output and write it with holes. (execa's
        // types admit only descriptors 3–9 for stdin; its runtime hands any number to spawn.)
        const child = execa('zstd', ['-d', '-c', '-q'], {
          stdin: src.fd as 3, stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false }, reject: false, cancelSignal: signal,
        });
        try {
          bytes = await writeSparse(dst, out, child.stdout as AsyncIterable<Buffer>, hash, name);
        } catch (e) {
          child.kill();
          await child;
          throw e;
        }
        await this._checkUnzstd(entry, f, await child);
      }
      if (bytes !== f.bytes) throw await this._corrupt(entry, file, `it decompresses to ${bytes} bytes, the manifest says ${f.bytes}`);
      const sha = hash.digest('hex');
      if (sha !== f.sha256) {
        throw await this._corrupt(entry, file,
          `its content does not match the manifest (sha256 ${sha.slice(0, 16)}…, expected ${f.sha256.slice(0, 16)}…)`);
      }
      // The trailing zero pages were skipped: give the file its length.
      await dst.truncate(bytes).catch((e) => { throw ioError(name, 'write', out, e); });
      await dst.chmod(f.mode).catch(() => undefined);
    } finally {
      await dst.close().catch(() => undefined);
    }
  }

  /**
   * A RAM image: zstd decompresses the pinned descriptor straight into `out` (a new file),
   * skipping zero blocks, and fails on a frame checksum that does not match. Returns the length.
   */
  private async _extractSparse(entry: FixtureEntry, f: FixtureFile, src: FileHandle, out: string, signal: AbortSignal): Promise<number> {
    const { execa } = await import('execa');
    // `as 3`: execa's types admit only descriptors 3–9 for stdin; its runtime hands any number to spawn.
    await this._checkUnzstd(entry, f, await execa('zstd', ['-d', '-q', '-f', '--sparse', '-o', out], { stdin: src.fd as 3, stdout: 'ignore', stderr: 'pipe', reject: false, cancelSignal: signal }));
    return (await stat(out)).size;
  }

  /** Throws what a finished `zstd -d` of `f` says went wrong: stopped, not installed, or a corrupt file (removing the entry). */
  private async _checkUnzstd(entry: FixtureEntry, f: FixtureFile, r: { isCanceled: boolean; code?: string; failed: boolean; stderr: unknown; exitCode?: number; signal?: string }): Promise<void> {
    if (r.isCanceled) throw new FixtureCacheError(`extracting ${f.path} was stopped: another file of the entry failed`);
    if (r.code === 'ENOENT') throw zstdMissing(describeEntry(entry.key, entry.meta));
    if (r.failed) {
      const why = String(r.stderr).trim().split('\n').pop() || `zstd exited with ${r.exitCode ?? r.signal}`;
      throw await this._corrupt(entry, storedPath(entry.dir, f), `it does not decompress: ${why.replace(/^zstd: /, '')}`);
    }
  }

  /** Removes the entry (if it is still the install we judged) and builds the error that says so. */
  private async _corrupt(entry: FixtureEntry, path: string, reason: string): Promise<FixtureCorruptError> {
    const removed = await this._removeIfSame(entry.key, entry.id);
    return new FixtureCorruptError(entry.key, path, reason, entry.meta, removed);
  }

  /** The entry's manifest and last-used time; undefined when there is no entry. */
  private async _read(key: string): Promise<FixtureEntry | { corrupt: string } | undefined> {
    const dir = join(this._dir, key);
    const manifestPath = join(dir, kManifestName);
    let text: string;
    try {
      text = await readFile(manifestPath, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw ioError(describeEntry(key, undefined), 'read', manifestPath, e);
      // No manifest: no entry at all, or a directory that is not a complete one.
      const st = await stat(dir).catch(() => undefined);
      return st === undefined ? undefined : { corrupt: `${describeEntry(key, undefined)}: ${manifestPath} is missing` };
    }
    const manifest = parseManifest(text, key);
    if (typeof manifest === 'string') return { corrupt: `${describeEntry(key, undefined)}: ${manifestPath}: ${manifest}` };
    const lastUsed = Number.parseInt(await readFile(join(dir, kLastUsedName), 'utf8').catch(() => ''), 10);
    return toEntry(this._dir, manifest, Number.isFinite(lastUsed) ? lastUsed : manifest.createdMs);
  }

  /**
   * Removes `<key>/` if it is still install `id` (undefined: still without a valid manifest). A
   * reader that found an old install corrupt must not remove the new one that replaced it.
   */
  private async _removeIfSame(key: string, id: string | undefined): Promise<boolean> {
    const now = await this._read(key);
    if (now === undefined) return true;
    const nowId = 'corrupt' in now ? undefined : now.id;
    if (nowId !== id) return false;
    await this._removeDir(key);
    return true;
  }

  /** Renames `<key>/` aside, then deletes it: no reader ever sees a half-deleted entry. */
  private async _removeDir(key: string): Promise<void> {
    const trash = await this._moveAside(key);
    if (trash !== undefined) await rm(trash, { recursive: true, force: true });
  }

  /** Renames `<key>/` to a trash name and returns that; undefined when there was none. */
  private async _moveAside(key: string): Promise<string | undefined> {
    const trash = join(this._dir, `${kTrashPrefix}${process.pid}-${randomBytes(4).toString('hex')}-${key}`);
    try {
      await rename(join(this._dir, key), trash);
      return trash;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw ioError(describeEntry(key, undefined), 'remove', join(this._dir, key), e);
    }
  }

  private async _names(): Promise<string[]> {
    try {
      return await readdir(this._dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError('the fixture cache', 'list', this._dir, e);
    }
  }
}

/**
 * Compresses (or copies) one file into `dataDir` and hashes it. zstd reads the source itself
 * (through the descriptor we opened, so both see one file) while we hash it with positional reads
 * that leave zstd's offset alone: piping it through Node instead took 0.6–0.7 s for 64 MiB here,
 * this takes about 0.15 s.
 */
async function storeFile(src: string, rel: string, dataDir: string, name: string): Promise<FixtureFile> {
  const fh = await open(src, 'r').catch((e) => { throw ioError(name, 'open', src, e); });
  try {
    const st = await fh.stat();
    const compressed = st.size >= kRawBelowBytes;
    const dst = join(dataDir, ...`${rel}${compressed ? '.zst' : '.raw'}`.split('/'));
    await mkdir(dirname(dst), { recursive: true }).catch((e) => { throw ioError(name, 'create', dirname(dst), e); });
    let sha256: string | null;
    let bytes: number;
    // A RAM image (src/vmm/guest-ram.ts): stored without our hash, extracted sparse by zstd.
    if (isRamImage(rel)) {
      const { execa } = await import('execa');
      // zstd reads it with holes as zeros (C speed); its frame checksum stands for our sha256.
      const r = await execa('zstd', [...kZstdCompress, '-o', dst, src], { stdout: 'ignore', stderr: 'pipe', reject: false });
      if (r.code === 'ENOENT') throw zstdMissing(name);
      if (r.failed) throw new FixtureCacheError(`${name}: compressing ${src} into ${dst} failed: ${String(r.stderr).trim()} — check free space in ${dataDir}`);
      [sha256, bytes] = [null, st.size];
    } else if (!compressed) {
      const data = await fh.readFile();
      await writeFile(dst, data, { flag: 'wx' }).catch((e) => { throw ioError(name, 'write', dst, e); });
      [sha256, bytes] = [createHash('sha256').update(data).digest('hex'), data.length];
    } else {
      const { execa } = await import('execa');
      // `as 3`: execa's types admit only descriptors 3–9 for stdin; its runtime hands any number to spawn.
      const child = execa('zstd', [...kZstdCompress, '-o', dst], { stdin: fh.fd as 3, stdout: 'ignore', stderr: 'pipe', reject: false });
      const [r, hashed] = await Promise.all([child, hashFile(fh).catch((e: unknown) => ioError(name, 'read', src, e))]);
      if (r.code === 'ENOENT') throw zstdMissing(name);
      if (r.failed) {
        const why = String(r.stderr).trim() || `zstd exited with ${r.exitCode ?? r.signal}`;
        throw new FixtureCacheError(`${name}: compressing ${src} into ${dst} failed: ${why} — check free space in ${dataDir}`);
      }
      if (hashed instanceof Error) throw hashed;
      [sha256, bytes] = [hashed.sha256, hashed.bytes];
    }
    const stored = await stat(dst).catch((e) => { throw ioError(name, 'stat', dst, e); });
    return { path: rel, bytes, storedBytes: stored.size, sha256, compressed, mode: st.mode & 0o777 };
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** sha256 of a whole file by positional reads (the descriptor's offset stays where it is). */
async function hashFile(fh: FileHandle): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  // 1 MiB: few thread-pool round trips, and each update holds the main thread under a millisecond.
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let pos = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return { sha256: hash.digest('hex'), bytes: pos };
}

/**
 * Writes `chunks` to `fh` from offset 0, hashing them, and leaves runs of at least kMinHoleBytes
 * of zeros as holes (the file was opened truncated, so they read as zeros; the caller sets the
 * final length). Returns the length.
 *
 * Pipe reads come in 64 KiB pieces and each pwrite is a thread-pool round trip, so the pieces are
 * gathered into kWriteBlockBytes blocks, and a block is written while the next one fills.
 */
async function writeSparse(fh: FileHandle, path: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, hash: Hash, name: string): Promise<number> {
  let block = Buffer.allocUnsafe(kWriteBlockBytes);
  let spare = Buffer.allocUnsafe(kWriteBlockBytes);
  let fill = 0;
  let pos = 0; // file offset of block[0]
  let pending: Promise<void> = Promise.resolve();
  const flush = async (): Promise<void> => {
    await pending; // the spare block is free once its write is done
    const [full, len, at] = [block, fill, pos];
    pending = writeRuns(fh, path, full, len, at, name);
    pending.catch(() => undefined); // surfaced by the next await
    [block, spare] = [spare, full];
    pos += len;
    fill = 0;
  };
  for await (const chunk of chunks) {
    hash.update(chunk);
    for (let o = 0; o < chunk.length;) {
      const n = chunk.copy(block, fill, o);
      fill += n;
      o += n;
      if (fill === block.length) await flush();
    }
  }
  if (fill > 0) await flush();
  await pending;
  return pos;
}

/** Writes `buf[0, len)` at `at`, skipping zero runs of kMinHoleBytes or more. */
async function writeRuns(fh: FileHandle, path: string, buf: Buffer, len: number, at: number, name: string): Promise<void> {
  let dataStart = 0; // start of the bytes not yet written or skipped
  let zeroStart = -1; // start of the current run of zero pages
  for (let o = 0; o < len; o += kPageBytes) {
    const end = Math.min(o + kPageBytes, len);
    if (buf.compare(kZeroPage, 0, end - o, o, end) === 0) {
      if (zeroStart < 0) zeroStart = o;
      continue;
    }
    if (zeroStart >= 0 && o - zeroStart >= kMinHoleBytes) {
      if (zeroStart > dataStart) await writeAt(fh, path, buf, dataStart, zeroStart, at + dataStart, name);
      dataStart = o;
    }
    zeroStart = -1;
  }
  const dataEnd = zeroStart >= 0 && len - zeroStart >= kMinHoleBytes ? zeroStart : len;
  if (dataEnd > dataStart) await writeAt(fh, path, buf, dataStart, dataEnd, at + dataStart, name);
}

async function writeAt(fh: FileHandle, path: string, buf: Buffer, start: number, end: number, position: number, name: string): Promise<void> {
  try {
    while (start < end) {
      const { bytesWritten } = await fh.write(buf, start, end - start, position);
      start += bytesWritten;
      position += bytesWritten;
    }
  } catch (e) {
    throw ioError(name, 'write', path, e);
  }
}

/** Regular files under `root`, relative and `/`-separated, sorted; anything else is an error. */
async function listRegularFiles(root: string, name: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const dir = rel ? join(root, rel) : root;
    const dirents = await readdir(dir, { withFileTypes: true }).catch((e) => { throw ioError(name, 'list', dir, e); });
    for (const d of dirents) {
      const child = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) await walk(child);
      else if (d.isFile()) out.push(child);
      else {
        throw new FixtureCacheError(`${name}: ${join(root, child)} is not a regular file or directory — ` +
          'a fixture holds only files (copy the target instead of linking it)');
      }
    }
  };
  await walk('');
  return out.sort();
}

function parseManifest(text: string, key: string): Manifest | string {
  let m: Partial<Manifest>;
  try {
    m = JSON.parse(text) as Partial<Manifest>;
  } catch (e) {
    return `not valid JSON (${(e as Error).message})`;
  }
  if (m.manifestVersion !== kManifestVersion) return `format version ${String(m.manifestVersion)}, this provium reads ${kManifestVersion}`;
  if (m.key !== key) return `it belongs to key ${String(m.key)}`;
  if (typeof m.id !== 'string' || typeof m.createdMs !== 'number' || typeof m.meta !== 'object' || m.meta === null || !Array.isArray(m.files)) {
    return 'a field is missing (id, createdMs, meta or files)';
  }
  const seen = new Set<string>();
  for (const f of m.files as Partial<FixtureFile>[]) {
    const p = f?.path;
    // The path becomes a file name under the extraction dir: it must stay inside it.
    if (typeof p !== 'string' || p.includes('\0') || p.split('/').some((part) => part === '' || part === '.' || part === '..')) {
      return `bad file path ${JSON.stringify(p)}`;
    }
    if (seen.has(p)) return `file ${p} is listed twice`;
    seen.add(p);
    const sha256Ok = f.sha256 === null ? isRamImage(p) : typeof f.sha256 === 'string' && /^[0-9a-f]{64}$/.test(f.sha256);
    if (!isSize(f.bytes) || !isSize(f.storedBytes) || !sha256Ok ||
        typeof f.compressed !== 'boolean' || !Number.isInteger(f.mode)) {
      return `file ${p}: bad sizes, sha256, compressed flag or mode`;
    }
  }
  return m as Manifest;
}

function toEntry(root: string, m: Manifest, lastUsedMs: number): FixtureEntry {
  return {
    key: m.key,
    dir: join(root, m.key),
    storedBytes: m.files.reduce((sum, f) => sum + f.storedBytes, 0),
    bytes: m.files.reduce((sum, f) => sum + f.bytes, 0),
    meta: m.meta,
    lastUsedMs,
    createdMs: m.createdMs,
    id: m.id,
    files: m.files,
  };
}

function storedPath(entryDir: string, f: FixtureFile): string {
  return join(entryDir, kDataDir, ...`${f.path}${f.compressed ? '.zst' : '.raw'}`.split('/'));
}

async function writeLastUsed(entryDir: string, ms: number): Promise<void> {
  // Best effort: an entry removed meanwhile has nothing to bump.
  await writeFile(join(entryDir, kLastUsedName), `${ms}\n`).catch(() => undefined);
}

/** Removes a temp or trash dir whose process is gone (or that is far older than any install). */
async function removeIfLeftover(path: string, name: string): Promise<void> {
  const pid = Number(name.split('-')[1]); // .tmp-<pid>-<rand>-<key>
  const st = await stat(path).catch(() => undefined);
  if (st === undefined) return;
  if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid) && Date.now() - st.mtimeMs < kLeftoverMs) return;
  await rm(path, { recursive: true, force: true });
}

const kKeyPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;

function checkKey(key: string): void {
  if (typeof key !== 'string' || !kKeyPattern.test(key) || key.endsWith(kLockSuffix) || key.endsWith('.break')) {
    throw new TypeError(`fixture cache key ${JSON.stringify(key)} is not a plain name (letters, digits, '_', '.', '-'; ` +
      `not ending in .lock) — pass the hex cache key of the fixture`);
  }
}

function isEntryName(name: string): boolean {
  return kKeyPattern.test(name) && !name.endsWith(kLockSuffix) && !name.endsWith('.break');
}

function isSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** "fixture `db/fixtures/warm` (key 0123abcd…)", or "fixture cache entry <key>". */
function describeEntry(key: string, meta: Record<string, unknown> | undefined): string {
  const path = meta?.['path'];
  return typeof path === 'string' ? `fixture \`${path}\` (key ${key})` : `fixture cache entry ${key}`;
}

function ioError(name: string, what: string, path: string, e: unknown): FixtureCacheError {
  const err = e as NodeJS.ErrnoException;
  const fix = err.code === 'ENOSPC' ? 'free some space or lower cache_max_size'
    : err.code === 'EACCES' || err.code === 'EPERM' ? 'fix the permissions or point cache_dir elsewhere'
    : 'check the path and the filesystem';
  return new FixtureCacheError(`${name}: cannot ${what} ${path}: ${err.code ?? ''} ${err.message} — ${fix}`, { cause: e });
}

function zstdMissing(name: string): FixtureCacheError {
  return new FixtureCacheError(`${name}: the \`zstd\` command is not installed; the fixture cache compresses with it — ` +
    'run scripts/setup.sh or `apt-get install zstd`');
}



/** Runs `fn` over `items`, `limit` at a time; on the first rejection calls `onFail`, lets the rest settle, rethrows. */
async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>, onFail?: () => void): Promise<void> {
  let next = 0;
  let failed: { error: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (e) {
        if (failed === undefined) {
          failed = { error: e };
          onFail?.();
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failed !== undefined) throw failed.error;
}
