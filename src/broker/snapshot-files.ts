// The files of snapshots (reference §1.16): a VM snapshot is a file with sidecars beside it (its
// launch record `.json`, its RAM image `.ram` (sparse), its console log, its disks' contents); a lab snapshot is a directory
// holding `lab.json` and one VM snapshot per running VM. Only the broker touches them.

import { constants } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { LabSnapshotManifest } from '../protocol/rpc.js';
import { copySparse, isRamImage, ramImageOf } from '../vmm/guest-ram.js';
import { consoleLogOf, snapshotFileBytes } from '../vmm/qemu.js';
import { diskFileOf, isDiskFile } from './disks.js';
import { ManagedVm } from './managed-vm.js';
import { BrokerError } from './rpc-server.js';

export const kLabManifest = 'lab.json';

/** Where vm:snapshot() with no path writes: the temp dir, removed when the file's session ends. */
export function transientVmSnapshotPath(): string {
  return path.join(os.tmpdir(), `provium-snap-${process.pid}-${process.hrtime.bigint()}.bin`);
}

/** Where lab:snapshot() with no dir writes. */
export function transientLabSnapshotDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `provium-labsnap-${process.pid}-`));
}

/** A lab snapshot's directory, made if needed; one that holds something else is refused. */
export async function prepareLabDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const names = await readdir(dir);
  if (names.length > 0 && !names.includes(kLabManifest)) {
    throw new BrokerError(`lab:snapshot: ${dir} is not empty and holds no ${kLabManifest}; give an empty or new directory`);
  }
}

export async function writeLabManifest(dir: string, manifest: LabSnapshotManifest): Promise<void> {
  await writeFile(path.join(dir, kLabManifest), JSON.stringify(manifest, null, 2));
}

export async function readLabManifest(dir: string): Promise<LabSnapshotManifest> {
  const file = path.join(dir, kLabManifest);
  let manifest: LabSnapshotManifest;
  try {
    manifest = JSON.parse(await readFile(file, 'utf8')) as LabSnapshotManifest;
  } catch (err) {
    throw new BrokerError(`cannot restore the lab from ${dir}: ${(err as Error).message} (was it written by lab:snapshot?)`);
  }
  if (manifest.version !== 1 || !Array.isArray(manifest.vms) || !Array.isArray(manifest.bridges)) {
    throw new BrokerError(`${file} is not a lab snapshot this version reads (version ${String(manifest.version)}); take it again with lab:snapshot`);
  }
  return manifest;
}

async function isLabDir(p: string): Promise<boolean> {
  return stat(path.join(p, kLabManifest)).then(() => true, () => false);
}

/**
 * Bytes of a VM snapshot (its stream and its RAM image's data), or the sum of one level of a lab
 * snapshot's directory (RAM images by their data); 0 when gone.
 */
export async function snapshotBytes(p: string): Promise<number> {
  const st = await stat(p).catch(() => undefined);
  if (!st) return 0;
  if (!st.isDirectory()) return snapshotFileBytes(p).catch(() => 0);
  const names = await readdir(p).catch(() => [] as string[]);
  const sizes = await Promise.all(names.map((n) => stat(path.join(p, n)).then((s) => (!s.isFile() ? 0 : isRamImage(n) ? s.blocks * 512 : s.size), () => 0)));
  return sizes.reduce((a, b) => a + b, 0);
}

/** A copy: a RAM image or a disk's contents keeps its holes (cp), anything else is cloned where the file system can. */
function copySnapshotFile(from: string, to: string): Promise<void> {
  return isRamImage(from) || isDiskFile(from) ? copySparse(from, to) : copyFile(from, to, constants.COPYFILE_FICLONE);
}

/** Deletes a VM snapshot with its sidecars, or a lab snapshot's directory; refuses what a snapshot did not write. */
export async function deleteSnapshot(p: string): Promise<void> {
  const st = await stat(p).catch(() => undefined);
  if (st?.isDirectory()) {
    if (!(await isLabDir(p))) throw new BrokerError(`${p} is not a lab snapshot (no ${kLabManifest} in it); not deleting it`);
    await rm(p, { recursive: true, force: true });
    return;
  }
  const sidecar = `${p}.json`;
  const meta = await stat(sidecar).catch(() => undefined);
  if (st && !meta) throw new BrokerError(`${p} is not a snapshot written by vm:snapshot (no ${sidecar} beside it); not deleting it`);
  const disks = (await ManagedVm.snapshotDevices(p)).flatMap((d) => (d.kind === 'disk' ? [diskFileOf(p, d.serial)] : []));
  await Promise.all([p, sidecar, ramImageOf(p), consoleLogOf(p), ...disks].map((f) => rm(f, { force: true })));
}

/** Copies a VM snapshot with its sidecars (launch record, console log, the disks `diskIds`) to `to`. */
export async function copyVmSnapshot(from: string, to: string, diskIds: string[]): Promise<void> {
  const pairs: [string, string][] = [[from, to], [`${from}.json`, `${to}.json`], [consoleLogOf(from), consoleLogOf(to)]];
  for (const id of diskIds) pairs.push([diskFileOf(from, id), diskFileOf(to, id)]);
  // A whole-stream snapshot has no RAM image, and one left at `to` must not go with it.
  const hasRam = await stat(ramImageOf(from)).then(() => true, () => false);
  if (hasRam) pairs.push([ramImageOf(from), ramImageOf(to)]);
  else await rm(ramImageOf(to), { force: true });
  // A clone where the file system can (the snapshot is tens of MB); a copy otherwise.
  await Promise.all(pairs.map(([a, b]) => copySnapshotFile(a, b).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' && a !== from) return; // an optional sidecar
    throw err;
  })));
}

/** Copies a lab snapshot directory's files into `to` (lab.json last, so a reader never sees a partial one). */
export async function copyLabSnapshot(from: string, to: string): Promise<void> {
  await readLabManifest(from);
  const names = (await readdir(from)).filter((n) => n !== kLabManifest);
  await mkdir(to, { recursive: true });
  await Promise.all(names.map((n) => copySnapshotFile(path.join(from, n), path.join(to, n))));
  await copyFile(path.join(from, kLabManifest), path.join(to, kLabManifest));
}
