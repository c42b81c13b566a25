// The rerun state (reference §2.4, §2.5): the files that failed in the last run, as a JSON array
// of absolute paths, installed atomically. `--rerun-failed` runs only those. One state per project
// (keyed by its config's directory): a run in one project must not replace another's failures.

import { readFile, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-write.js';
import { projectStatePath } from './timings.js';

/**
 * `$PROVIUM_RERUN_STATE`, else `<cache>/rerun/<project>-<hash>.json` for the project in
 * `projectDir` (the config's directory), with ~/.cache/provium (or /tmp) as the cache when none.
 */
export function rerunStatePath(env: NodeJS.ProcessEnv, cacheDir: string | undefined, projectDir: string): string {
  if (env['PROVIUM_RERUN_STATE']) return env['PROVIUM_RERUN_STATE'];
  const home = env['HOME'] ?? homedir();
  const cache = cacheDir ?? (home ? join(home, '.cache', 'provium') : '/tmp/provium');
  return projectStatePath(cache, 'rerun', projectDir);
}

/** The recorded failures, or null when there is no state (or it is unreadable: warned). */
export async function readRerunState(path: string, warn: (message: string) => void): Promise<string[] | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') warn(`rerun state ${path}: ${(err as Error).message}`);
    return null;
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new Error('not an array of paths');
    return value as string[];
  } catch (err) {
    warn(`rerun state ${path}: ${(err as Error).message}; ignored`);
    return null;
  }
}

/**
 * Installs the failures (the controller merges them with the previous state). With none, the
 * state is removed, so the next --rerun-failed says there is nothing to rerun.
 */
export async function writeRerunState(path: string, failed: string[]): Promise<void> {
  if (failed.length === 0) {
    await rm(path, { force: true });
    return;
  }
  await writeFileAtomic(path, `${JSON.stringify([...new Set(failed)].sort(), null, 1)}\n`);
}
