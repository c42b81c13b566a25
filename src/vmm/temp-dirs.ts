// A run's temporary directories, and the sweep that removes what a killed run left behind.
//
// Everything a run puts in the temp dir carries its pid: a directory holds an `owner` file, a
// snapshot file has `-<pid>-` in its name. A run killed with SIGKILL cannot clean up (its QEMUs
// die with it through pdeathsig), so the first launch of a later run removes what belongs to a
// process that is gone. Boot-snapshot `.tmp` files in the cache go the same way (boot-cache.ts,
// through isStaleOwner).

import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isProcessAlive } from './file-lock.js';
import { ramDir } from './guest-ram.js';
import { scratchParent } from './paths.js';

/** Directories made by ownedTempDir, plus the QEMU scratch dirs (qemu.ts); `provium-parked-` is a warm spare's NICs or disks. */
const kOwnedPrefixes = ['provium-vm-', 'provium-files-', 'provium-disks-', 'provium-br-', 'provium-parked-'];
/**
 * Files and directories whose name says their owner: `provium-snap-<pid>-…`, `provium-labsnap-<pid>-…`,
 * and guest RAM files in the RAM dir, `provium-ram-<pid>-…` (guest-ram.ts).
 */
const kPidInName = /^provium-(?:snap|labsnap|ram)-(\d+)-/;
/**
 * A directory without an owner file may be being created (mkdtemp, then the owner file): a QEMU
 * scratch dir is left alone this long; the other prefixes had no owner file before, so one of
 * those is left alone for a day, in case an older version that writes none is still running.
 */
const kNoOwnerMinAgeMs = { scratch: 60_000, other: 24 * 3600_000 };

let sweeping: Promise<void> | undefined;

/** A private (0700) directory under the scratch parent, marked with this process's pid. */
export async function ownedTempDir(prefix: string): Promise<string> {
  void sweepStaleOnce();
  const dir = await mkdtemp(join(scratchParent(), prefix));
  // mkdtemp makes it 0700; chmod in case of an odd umask.
  await chmod(dir, 0o700);
  await writeFile(join(dir, 'owner'), `${process.pid}\n`);
  return dir;
}

/** True when `pid` is another process that no longer exists (what it left may go). */
export function isStaleOwner(pid: number): boolean {
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !isProcessAlive(pid);
}

/** Once per process, in the background: removes the temp entries of processes that are gone. */
export function sweepStaleOnce(): Promise<void> {
  sweeping ??= sweepStale().then(() => undefined, () => undefined);
  return sweeping;
}

/** Where runs put what they own: the scratch parent, the OS temp dir and the RAM dir. */
function tempParents(): Set<string> {
  return new Set([scratchParent(), tmpdir(), ramDir() ?? tmpdir()]);
}

/** Removes, from the temp parents, every entry of ours whose owner is gone. */
export async function sweepStale(): Promise<string[]> {
  const removed: string[] = [];
  for (const parent of tempParents()) {
    for (const name of await readdir(parent).catch(() => [] as string[])) {
      const entry = join(parent, name);
      if (await isStaleEntry(entry, name)) {
        await rm(entry, { recursive: true, force: true }).catch(() => undefined);
        removed.push(entry);
      }
    }
  }
  return removed;
}

async function isStaleEntry(entry: string, name: string): Promise<boolean> {
  const named = kPidInName.exec(name);
  if (named) return isStaleOwner(Number(named[1]));
  const prefix = kOwnedPrefixes.find((p) => name.startsWith(p));
  if (!prefix) return false;
  const owner = Number.parseInt(await readFile(join(entry, 'owner'), 'utf8').catch(() => ''), 10);
  if (Number.isFinite(owner)) return isStaleOwner(owner);
  const mtimeMs = (await stat(entry).catch(() => undefined))?.mtimeMs;
  if (mtimeMs === undefined) return false;
  return Date.now() - mtimeMs > (prefix === 'provium-vm-' ? kNoOwnerMinAgeMs.scratch : kNoOwnerMinAgeMs.other);
}

/**
 * Synchronously removes everything this process owns in the temp parents: at exit, and when a
 * second Ctrl-C kills at once, what a cut-short teardown left (a session's disks, a bridge, a
 * parked spare's sockets) goes with the run instead of waiting for the next run's sweep.
 */
export function removeOwnedSync(): void {
  for (const parent of tempParents()) {
    let names: string[];
    try {
      names = readdirSync(parent);
    } catch {
      continue;
    }
    for (const name of names) {
      const entry = join(parent, name);
      if (ownerOfSync(entry, name) === process.pid) {
        try { rmSync(entry, { recursive: true, force: true }); } catch { /* best effort at exit */ }
      }
    }
  }
}

function ownerOfSync(entry: string, name: string): number | undefined {
  const named = kPidInName.exec(name);
  if (named) return Number(named[1]);
  if (!kOwnedPrefixes.some((p) => name.startsWith(p))) return undefined;
  try {
    return Number.parseInt(readFileSync(join(entry, 'owner'), 'utf8'), 10);
  } catch {
    return undefined;
  }
}
