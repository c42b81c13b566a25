// Guest RAM in a file, so a snapshot holds RAM as a sparse image beside its device state.
//
// Why: QEMU streams RAM through migration, and the loading side reads every page of guest RAM to
// check for zero. On hosts whose kernel maps no zero page (nested or PVM hosts, like our CI's),
// every read page is allocated and cleared: a 512 MiB guest restore populated all 512 MiB and
// spent most of its CPU clearing pages, even though a booted guest uses ~60 MiB.
//
// How: a VM's RAM is a file in a tmpfs (/dev/shm), mapped shared (`memory-backend-file,share=on`).
// A save migrates with `x-ignore-shared`, so the stream holds only device state, then copies the
// RAM file sparsely to `<snapshot>.ram`. A restore copies that image into a new tmpfs file (only
// its data: tens of MiB) and loads the device state. RAM the guest never touched is never
// allocated, on either side.
//
// Without room in the tmpfs (a container's 64 MiB /dev/shm, PROVIUM_RAM_DIR=none) a restore maps
// the image privately (copy-on-write from the page cache) and a cold boot uses anonymous RAM; those
// VMs' snapshots are whole migration streams, as before, and restore as such.

import { randomBytes } from 'node:crypto';
import { link, statfs } from 'node:fs/promises';
import { join } from 'node:path';

/** Where a VM's RAM lives: a shared file in a tmpfs, or a private map of a snapshot's image. */
export interface GuestRam {
  path: string;
  shared: boolean;
}

/**
 * The snapshot layout, in every cache key of a snapshot (boot snapshots, fixtures): 2 is a device
 * stream with a RAM image beside it (entries of 1 streamed RAM and would restore the slow way); 3
 * also records each disk's guest device, which a restore of an older entry must ask the guest for.
 */
export const kSnapshotFormat = 3;

/** The RAM image beside a snapshot file. */
export function ramImageOf(snapshotFile: string): string {
  return `${snapshotFile}${kRamImageSuffix}`;
}

/** Whether a file (of a snapshot directory, a fixture entry) is a RAM image: sparse, copied and stored as such. */
export function isRamImage(file: string): boolean {
  return file.endsWith(kRamImageSuffix);
}

const kRamImageSuffix = '.ram';
/**
 * `cp` keeping holes and making holes of zero blocks (a RAM file or a disk is mostly zero), and
 * sharing the blocks where the file system can; the paths follow.
 */
const kSparseCopy = ['cp', '--sparse=always', '--reflink=auto', '--'];

/** Shared RAM files are named with the run's pid, so a later run sweeps what a killed one left (temp-dirs.ts). */
export const kRamFilePrefix = 'provium-ram-';
const kDefaultRamDir = '/dev/shm';
/** Beyond the guest's own size: the tmpfs must not fill while the guest runs (QEMU would die of SIGBUS). */
const kRamDirSlackBytes = 256 * 1024 * 1024;

/** The tmpfs for shared RAM files: PROVIUM_RAM_DIR (`none` turns shared RAM off), else /dev/shm. */
export function ramDir(): string | undefined {
  const dir = process.env['PROVIUM_RAM_DIR'] ?? kDefaultRamDir;
  return dir === '' || dir === 'none' ? undefined : dir;
}

/**
 * A new shared RAM file's path for a guest of `memoryBytes`, or undefined when the tmpfs is missing
 * or has not room for the whole guest (a guest may touch all of its RAM).
 */
export async function sharedRamPath(memoryBytes: number): Promise<string | undefined> {
  const dir = ramDir();
  if (dir === undefined) return undefined;
  const fs = await statfs(dir).catch(() => undefined);
  if (!fs || fs.bavail * fs.bsize < memoryBytes + kRamDirSlackBytes) return undefined;
  return join(dir, `${kRamFilePrefix}${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** Copies `from` to `to` sparsely (kSparseCopy); an existing `to` is rewritten in place. */
export async function copySparse(from: string, to: string): Promise<void> {
  const [cp, ...flags] = kSparseCopy;
  const { execa } = await import('execa');
  const r = await execa(cp!, [...flags, from, to], { reject: false });
  if (r.exitCode !== 0) throw new Error(`${kSparseCopy.join(' ')} ${from} ${to}: ${(r.stderr || r.shortMessage || `exit code ${r.exitCode}`).trim()}`);
}

/**
 * `to` as a hard link of `from`, a file nobody writes again (a snapshot's saved disk contents), or
 * a sparse copy where a link cannot be made (another file system).
 */
export async function linkOrCopySparse(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw err;
    await copySparse(from, to);
  }
}

/**
 * The RAM a launch gets: a shared tmpfs file, a private map of `ramImage` when the tmpfs has no
 * room, or anonymous memory (undefined). A shared file restored from `ramImage` is filled by
 * `fillFirst`, a command prefix that copies it and then runs the rest: the copy rides on QEMU's
 * own spawn, as each spawn costs the harness's busy main thread 10–30 ms (fork of a large process).
 */
export async function prepareGuestRam(opts: { memoryBytes: number; sharedRam?: boolean; ramImage?: string }): Promise<{ ram?: GuestRam; fillFirst: string[] }> {
  if (!opts.sharedRam && opts.ramImage === undefined) return { fillFirst: [] };
  const shared = await sharedRamPath(opts.memoryBytes);
  if (shared === undefined) return { ...(opts.ramImage === undefined ? {} : { ram: { path: opts.ramImage, shared: false } }), fillFirst: [] };
  const fillFirst = opts.ramImage === undefined ? [] : ['/bin/sh', '-c', `${kSparseCopy.join(' ')} "$0" "$1" && shift && exec "$@"`, opts.ramImage, shared];
  return { ram: { path: shared, shared: true }, fillFirst };
}
