// Boot snapshots (DESIGN §4): the first cold boot of a boot key saves the guest at agent-ready;
// later boots of that key restore it. The key holds everything that shapes early boot, its files
// (kernel, initrd, root image, agent, QEMU) by content: a cache restored onto a fresh machine
// keeps its snapshots, and a rebuilt kernel with the old size and mtime does not.
//
// Beside each `<key>.snap`: its RAM image (`.ram`, guest-ram.ts), its console log (`.console`,
// replayed on restore) and its checksum (`.sum`: size, mtime and sha1 when saved; the RAM image's
// size and mtime, as hashing its 512 MiB of mostly holes would cost more than the boot it saves).
// lookup() compares the size and mtime (a stat); a file written since is hashed, and other bytes
// make it corrupt: it is removed with one line naming it, and the boot is cold and saves a new one.
// A snapshot that fails to restore is removed the same way (discard). sha1 is against corruption,
// not an attacker: 1.5 GB/s here, sha256 0.3 GB/s.

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PROTOCOL_VERSION } from '../protocol/agent.js';
import { kDefaultHotplugSlots } from '../vmm/cmdline.js';
import { agentOverlayPath, isStaleOwner, type LaunchSpec } from '../vmm/qemu.js';
import { consoleLogOf, isNoSpace } from '../vmm/snapshot.js';
import { kSnapshotFormat, ramImageOf } from '../vmm/guest-ram.js';
import { acquireFileLock } from '../vmm/file-lock.js';
import { qemuBinaryPath } from '../vmm/paths.js';
import { contentHash, hashFile } from '../vmm/file-hash.js';

/** Snapshots kept per host; the least recently used go first. Each is roughly the guest's used RAM. */
const MAX_BOOT_SNAPSHOTS = 12;
/** A save in progress, `<key>.<pid>.<ms>.tmp` (and its `.console`), named by store(). */
const kTempName = /^[0-9a-f]+\.(\d+)\.\d+\.tmp(?:\.console|\.sum|\.ram)?$/;

/** What `<snapshot>.sum` holds. */
interface SnapshotSum {
  bytes: number;
  mtimeMs: number;
  sha1: string;
  /** The RAM image's, when the snapshot has one. */
  ram?: { bytes: number; mtimeMs: number };
}

function sumOf(snapshotFile: string): string {
  return `${snapshotFile}.sum`;
}

/** A file of the boot, by its bytes (contentHash, remembered by stamp: a stat per boot). */
async function fileKey(file: string | undefined): Promise<string> {
  return file ? contentHash(file) : '-';
}

export class BootCache {
  private readonly _dir: string;
  private _swept: Promise<string[]> | undefined;

  /** `warn` gets one line per snapshot found corrupt, removed, or not saved. */
  constructor(cacheDir: string, private readonly _warn: (message: string) => void = (m) => process.emitWarning(m)) {
    this._dir = path.join(cacheDir, 'boot-snapshots');
  }

  /** `PROVIUM_BOOT_SNAPSHOTS=0` turns boot snapshots off: every boot is cold. */
  readonly enabled = process.env['PROVIUM_BOOT_SNAPSHOTS'] !== '0';

  /** The key of a launch, or undefined when this launch is not cached (per-boot files, or off). */
  async key(spec: LaunchSpec, qemuBinary: string): Promise<string | undefined> {
    void this.sweepTemp();
    if (!this.enabled || spec.extraInitrd) return undefined;
    const p = spec.profile;
    const parts = [
      `protocol=${PROTOCOL_VERSION}`,
      `profile=${p.name}`,
      `kernel=${await fileKey(p.kernel)}`,
      `initrd=${await fileKey(p.initrd)}`,
      `root=${p.rootImage === undefined ? 'none' : await fileKey(p.rootImage)}`,
      `cmdline=${spec.cmdlineReplace ?? p.cmdline}|${spec.cmdlineAppend ?? ''}`,
      `machine=${p.machine}`,
      `accel=${p.accel}`,
      // The agent that answers in the snapshot: a rebuilt agent needs a new boot.
      `agent=${p.injectAgent ? await fileKey(await agentOverlayPath(`profile ${p.name}`)) : 'none'}`,
      // The machine's device layout: a snapshot only loads into the same set of devices.
      `hotplug=${spec.hotplugSlots ?? kDefaultHotplugSlots}`,
      // Fixed devices changed (pvpanic, the agent port's id): older snapshots do not load.
      'devices=2',
      `snapshot-format=${kSnapshotFormat}`,
      `memory=${spec.memoryBytes}`,
      `cpus=${spec.cpus}`,
      `qemu=${await fileKey(await qemuBinaryPath(qemuBinary))}`,
    ];
    return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 32);
  }

  pathFor(key: string): string {
    return path.join(this._dir, `${key}.snap`);
  }

  /**
   * The snapshot for `key`, if one was saved with its console log and checksum (older ones are
   * made again) and is intact. A corrupt one is removed, with one line saying so.
   */
  async lookup(key: string): Promise<string | undefined> {
    const file = this.pathFor(key);
    let st;
    let sum: SnapshotSum;
    try {
      [st, sum] = await Promise.all([
        stat(file),
        readFile(sumOf(file), 'utf8').then((t) => JSON.parse(t) as SnapshotSum),
        stat(consoleLogOf(file)),
      ]);
    } catch {
      return undefined;
    }
    let problem: string | undefined;
    const ram = sum.ram ? await stat(ramImageOf(file)).catch(() => undefined) : undefined;
    if (st.size !== sum.bytes) problem = `it has ${st.size} bytes, ${sumOf(file)} says ${sum.bytes}`;
    else if (sum.ram && (ram?.size !== sum.ram.bytes || ram.mtimeMs !== sum.ram.mtimeMs)) problem = `its RAM image ${ramImageOf(file)} is missing or was written since it was saved`;
    else if (st.mtimeMs !== sum.mtimeMs) {
      // Written since it was saved: the same bytes (a copied cache) are fine, and restamped.
      const sha1 = await hashFile(file, 'sha1').catch(() => 'unreadable');
      if (sha1 !== sum.sha1) problem = `its bytes changed since it was saved (sha1 ${sha1.slice(0, 12)}, saved as ${sum.sha1.slice(0, 12)})`;
      else await writeFile(sumOf(file), JSON.stringify({ ...sum, mtimeMs: st.mtimeMs })).catch(() => undefined);
    }
    if (problem === undefined) return file;
    this._warn(`boot snapshot ${file} is corrupt (${problem}); removed it, this boot is cold and saves a new one`);
    await this._discardFile(file);
    return undefined;
  }

  /**
   * Saves through `write` into a temporary file (and its console log beside it, consoleLogOf),
   * then puts both in place; lookup takes a snapshot only once its log is there too.
   */
  async store(key: string, write: (tmpFile: string) => Promise<void>): Promise<void> {
    await mkdir(this._dir, { recursive: true });
    const tmp = path.join(this._dir, `${key}.${process.pid}.${Date.now()}.tmp`);
    const final = this.pathFor(key);
    try {
      await write(tmp);
      const [st, ram] = await Promise.all([stat(tmp), stat(ramImageOf(tmp)).catch(() => undefined)]);
      const sum: SnapshotSum = { bytes: st.size, mtimeMs: st.mtimeMs, sha1: await hashFile(tmp, 'sha1') };
      if (ram) sum.ram = { bytes: ram.size, mtimeMs: ram.mtimeMs };
      await writeFile(sumOf(tmp), JSON.stringify(sum));
      // The first boot to save a key wins, so boots that raced it restore that same snapshot:
      // clones of one snapshot start alike (VMs with one rng_seed read the same bytes). Savers of
      // one key take turns (processes too), so no entry mixes one save's stream with another's RAM.
      const release = await acquireFileLock(path.join(this._dir, `${key}.lock`), { holder: 'a boot snapshot save', timeoutMs: 60_000, pollMs: 20 });
      try {
        if (await this.lookup(key)) return;
        // What is there has no checksum (an older version's, or a save that died): replaced.
        await rename(tmp, final);
        // A RAM image goes with its stream; one left beside a replaced whole-stream snapshot must not.
        if (ram) await rename(ramImageOf(tmp), ramImageOf(final));
        else await rm(ramImageOf(final), { force: true });
        await rename(consoleLogOf(tmp), consoleLogOf(final)).catch(() => undefined);
        // Last: lookup takes the snapshot only once its checksum is there.
        await rename(sumOf(tmp), sumOf(final));
      } finally {
        await release();
      }
    } catch (err) {
      // Nothing half-written stays (finally): the boot goes on without a snapshot, and says why.
      this._warn(isNoSpace(err)
        ? `boot snapshot ${final} not saved: no space left on the device of ${this._dir} — free space there, move the cache ` +
          '(PROVIUM_CACHE_DIR or [provium] cache_dir in provium.toml), or turn boot snapshots off with PROVIUM_BOOT_SNAPSHOTS=0'
        : `boot snapshot ${final} not saved: ${(err as Error).message}`);
      throw err;
    } finally {
      await Promise.all([tmp, consoleLogOf(tmp), sumOf(tmp), ramImageOf(tmp)].map((f) => rm(f, { force: true })));
    }
    await this._evict();
  }

  /**
   * Once per cache object: removes the temporary files of saves whose process is gone (a run killed
   * mid-save leaves one of about the guest's RAM, 60 MB and more). Returns what it removed.
   */
  sweepTemp(): Promise<string[]> {
    this._swept ??= (async () => {
      const removed: string[] = [];
      for (const name of await readdir(this._dir).catch(() => [] as string[])) {
        const m = kTempName.exec(name);
        if (!m || !isStaleOwner(Number(m[1]))) continue;
        await rm(path.join(this._dir, name), { force: true }).catch(() => undefined);
        removed.push(name);
      }
      return removed;
    })();
    return this._swept;
  }

  /** Drops a snapshot that failed to restore, so the next boot is cold and saves a good one. */
  async discard(key: string): Promise<void> {
    const file = this.pathFor(key);
    this._warn(`boot snapshot ${file} did not restore (corrupt, or saved by another QEMU); removed it, this boot is cold and saves a new one`);
    await this._discardFile(file);
  }

  private async _discardFile(file: string): Promise<void> {
    await Promise.all([file, consoleLogOf(file), sumOf(file), ramImageOf(file)].map((f) => rm(f, { force: true })));
  }

  private async _evict(): Promise<void> {
    const names = (await readdir(this._dir)).filter((n) => n.endsWith('.snap'));
    if (names.length <= MAX_BOOT_SNAPSHOTS) return;
    const aged = await Promise.all(
      names.map(async (n) => ({ file: path.join(this._dir, n), used: (await stat(path.join(this._dir, n))).atimeMs })),
    );
    aged.sort((a, b) => a.used - b.used);
    for (const old of aged.slice(0, aged.length - MAX_BOOT_SNAPSHOTS)) await this._discardFile(old.file);
  }
}
