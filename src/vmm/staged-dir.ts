// A cache directory rebuilt in place: the build writes a staging directory beside it, which
// replaces it whole, so a failed or killed build leaves the old one. The caller holds the
// directory's build lock (file-lock.ts), so any other staging or old copy is a killed build's.

import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** The staging path for `dir` (not created), after removing what killed builds left beside it. */
export async function stagingFor(dir: string): Promise<string> {
  const parent = dirname(dir);
  const base = basename(dir);
  await mkdir(parent, { recursive: true });
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    if (name.startsWith(`${base}.staging-`) || name.startsWith(`${base}.old-`)) await rm(join(parent, name), { recursive: true, force: true });
  }
  return `${dir}.staging-${process.pid}`;
}

/** Puts `staging` in place of `dir`: the old one aside, staging in, the old one removed (a VM booted from it keeps its open files). */
export async function installStaging(staging: string, dir: string): Promise<void> {
  const trash = `${dir}.old-${process.pid}`;
  await rm(trash, { recursive: true, force: true });
  await rename(dir, trash).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
  await rename(staging, dir);
  await rm(trash, { recursive: true, force: true });
}
