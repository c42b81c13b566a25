// Discovery (DESIGN §6): `*.test.lua` files under the CLI paths, or under the configured roots
// when no path is given, or under the cwd when neither exists. Never `*.fixture.lua`. The result
// is sorted by display path (the "declaration order" every later step falls back to) and has no
// duplicates, however the paths overlap.

import { stat } from 'node:fs/promises';
import { relative, resolve, sep } from 'node:path';
import fg from 'fast-glob';
import { UsageError } from './errors.js';
import { kFixtureSuffix } from '../config/config.js';

export const kTestSuffix = '.test.lua';

/** A usage problem with the paths; the CLI exits 2 with the message. */
export class DiscoveryError extends UsageError {
  override name = 'DiscoveryError';
}

export interface DiscoveredFile {
  /** Absolute path. */
  file: string;
  /** Relative to the cwd with '/' separators (what reports, events, timings and shards use). */
  displayPath: string;
  /** The scan root it was found under (a directory). */
  root: string;
  /** Relative to `root` with '/' separators (what --filter matches, with displayPath). */
  rootPath: string;
}

export interface DiscoverOptions {
  /** CLI paths (files or directories), relative to cwd. */
  paths: string[];
  /** Configured roots (absolute); used when `paths` is empty. */
  roots: string[];
  cwd: string;
}

export function toPosix(p: string): string {
  return sep === '/' ? p : p.split(sep).join('/');
}

export function displayPathOf(file: string, cwd: string): string {
  const rel = relative(cwd, file);
  return toPosix(rel === '' || rel.startsWith('..') ? file : rel);
}

export async function discover(opts: DiscoverOptions): Promise<DiscoveredFile[]> {
  const fromConfig = opts.paths.length === 0 && opts.roots.length > 0;
  const targets = opts.paths.length > 0 ? opts.paths.map((p) => resolve(opts.cwd, p)) : fromConfig ? opts.roots : [opts.cwd];
  const found = new Map<string, DiscoveredFile>();

  for (const target of targets) {
    const st = await stat(target).catch(() => undefined);
    if (!st) {
      throw new DiscoveryError(
        fromConfig
          ? `test root ${displayPathOf(target, opts.cwd)} (from [provium] roots in provium.toml) does not exist; create it or fix roots`
          : `${displayPathOf(target, opts.cwd)}: no such file or directory`,
      );
    }
    if (st.isFile()) {
      if (target.endsWith(kFixtureSuffix)) {
        throw new DiscoveryError(`${displayPathOf(target, opts.cwd)} is a fixture, not a test file; fixtures are built when a test uses them`);
      }
      if (!target.endsWith(kTestSuffix)) {
        throw new DiscoveryError(`${displayPathOf(target, opts.cwd)} is not a test file; test files end in ${kTestSuffix}`);
      }
      add(found, target, resolve(target, '..'), opts.cwd);
      continue;
    }
    if (!st.isDirectory()) throw new DiscoveryError(`${displayPathOf(target, opts.cwd)}: not a file or directory`);
    const entries = await fg(`**/*${kTestSuffix}`, {
      cwd: target,
      absolute: true,
      onlyFiles: true,
      followSymbolicLinks: true,
      dot: false,
      ignore: ['**/node_modules/**', `**/*${kFixtureSuffix}`],
      suppressErrors: true,
    });
    for (const entry of entries) add(found, resolve(entry), target, opts.cwd);
  }

  return [...found.values()].sort((a, b) => compareStrings(a.displayPath, b.displayPath));
}

function add(found: Map<string, DiscoveredFile>, file: string, root: string, cwd: string): void {
  if (found.has(file)) return;
  found.set(file, { file, displayPath: displayPathOf(file, cwd), root, rootPath: toPosix(relative(root, file)) });
}

/** Code-unit order: the same on every machine and locale (shards depend on it). */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
