// Boot snapshots (DESIGN §4): the first cold boot of a boot key saves the guest at agent-ready;
// later boots of that key restore it. The key holds everything that shapes early boot.

import { createHash } from 'node:crypto';
import { link, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { PROTOCOL_VERSION } from '../protocol/agent.js';
import { kDefaultHotplugSlots } from '../vmm/cmdline.js';
import { agentOverlayPath, isStaleOwner, type LaunchSpec } from '../vmm/qemu.js';
import { consoleLogOf } from '../vmm/snapshot.js';

/** Snapshots kept per host; the least recently used go first. Each is roughly the guest's used RAM. */
const MAX_BOOT_SNAPSHOTS = 12;
/** A save in progress, `<key>.<pid>.<ms>.tmp` (and its `.console`), named by store(). */
const kTempName = /^[0-9a-f]+\.(\d+)\.\d+\.tmp(?:\.console)?$/;

/** A bare command name resolved through PATH, so the key follows the binary QEMU really runs. */
async function onPath(binary: string): Promise<string> {
  if (binary.includes('/')) return binary;
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    const candidate = path.join(dir || '.', binary);
    try {
      await stat(candidate);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return binary;
}

async function fileStamp(file: string | undefined): Promise<string> {
  if (!file) return '-';
  try {
    const st = await stat(file);
    return `${file}@${st.size}:${st.mtimeMs}`;
  } catch {
    return `${file}@missing`;
  }
}

export class BootCache {
  private readonly _dir: string;
  private _swept: Promise<string[]> | undefined;

  constructor(cacheDir: string) {
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
      `kernel=${await fileStamp(p.kernel)}`,
      `initrd=${await fileStamp(p.initrd)}`,
      `root=${p.rootImage === undefined ? 'none' : await fileStamp(p.rootImage)}`,
      `cmdline=${spec.cmdlineReplace ?? p.cmdline}|${spec.cmdlineAppend ?? ''}`,
      `machine=${p.machine}`,
      `accel=${p.accel}`,
      // The agent that answers in the snapshot: a rebuilt agent needs a new boot.
      `agent=${p.injectAgent ? await fileStamp(await agentOverlayPath(`profile ${p.name}`)) : 'none'}`,
      // The machine's device layout: a snapshot only loads into the same set of devices.
      `hotplug=${spec.hotplugSlots ?? kDefaultHotplugSlots}`,
      // Fixed devices changed (pvpanic, the agent port's id): older snapshots do not load.
      'devices=2',
      `memory=${spec.memoryBytes}`,
      `cpus=${spec.cpus}`,
      `qemu=${await fileStamp(await onPath(qemuBinary))}`,
    ];
    return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 32);
  }

  pathFor(key: string): string {
    return path.join(this._dir, `${key}.snap`);
  }

  /** The snapshot for `key`, if one was saved with its console log (older ones are made again). */
  async lookup(key: string): Promise<string | undefined> {
    const file = this.pathFor(key);
    try {
      await Promise.all([stat(file), stat(consoleLogOf(file))]);
      return file;
    } catch {
      return undefined;
    }
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
      // The first boot to save a key wins, so boots that raced it restore that same snapshot:
      // clones of one snapshot start alike (VMs with one rng_seed read the same bytes).
      if (await this.lookup(key)) return;
      try {
        await link(tmp, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // What is there has no console log (an older version's): replaced.
        await rename(tmp, final);
      }
      await rename(consoleLogOf(tmp), consoleLogOf(final)).catch(() => undefined);
    } finally {
      await Promise.all([rm(tmp, { force: true }), rm(consoleLogOf(tmp), { force: true })]);
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
    await this._discardFile(this.pathFor(key));
  }

  private async _discardFile(file: string): Promise<void> {
    await Promise.all([rm(file, { force: true }), rm(consoleLogOf(file), { force: true })]);
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
