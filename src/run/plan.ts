// The run's plan: discover, filter, shard, order (DESIGN §6; issue 4 items 1–3). Shared by the
// run and `provium list`, so `list` shows exactly what a run with the same flags would run.

import { readFile, realpath } from 'node:fs/promises';
import { relative } from 'node:path';
import { readRerunState } from './rerun.js';
import { defaultTimingsPath, readTimings, type TimingRecord } from './timings.js';
import { discover, toPosix } from './discovery.js';
import { filterFiles } from './filters.js';
import { scanLua } from '../config/lua-scan.js';
import type { ResourceAmount } from '../protocol/events.js';
import { orderLongestFirst } from './ordering.js';
import type { PlannedFile } from './outcome.js';
import { selectShard, type ShardSpec } from './shard.js';

export interface PlanOptions {
  cwd: string;
  paths: string[];
  /** Configured roots (absolute). */
  roots: string[];
  /** Project directory: file keys are relative to it. */
  baseDir: string;
  cacheDir: string;
  filters: string[];
  since?: string;
  rerunFailed: boolean;
  rerunStatePath: string;
  shard: ShardSpec | null;
  /** --timings FILE; default <cache>/timings.json. */
  timingsPath?: string;
}

/** The plan options of a run or a listing: its selection flags over the loaded config. */
export function planOptionsOf(
  options: Pick<PlanOptions, 'paths' | 'filters' | 'since' | 'rerunFailed' | 'rerunStatePath' | 'shard' | 'timingsPath'> & {
    config: { roots: string[]; baseDir: string; cacheDir: string };
  },
  cwd: string,
): PlanOptions {
  const { config } = options;
  const plan: PlanOptions = {
    cwd,
    paths: options.paths,
    roots: config.roots,
    baseDir: config.baseDir,
    cacheDir: config.cacheDir,
    filters: options.filters,
    rerunFailed: options.rerunFailed,
    rerunStatePath: options.rerunStatePath,
    shard: options.shard,
  };
  if (options.since !== undefined) plan.since = options.since;
  if (options.timingsPath !== undefined) plan.timingsPath = options.timingsPath;
  return plan;
}

export type Plan =
  | {
      kind: 'files';
      /** In dispatch order. */
      files: PlannedFile[];
      discovered: number;
      /** After the file filters, before sharding. */
      selected: number;
      shardMethod: 'timings' | 'hash' | null;
      timings: TimingRecord | null;
      timingsPath: string;
    }
  /** Nothing to do, with the reason (no files found, no rerun state…). */
  | { kind: 'nothing'; reason: 'no_files' | 'no_rerun_state' | 'filtered_out'; message: string };

export async function planRun(opts: PlanOptions, warn: (message: string) => void): Promise<Plan> {
  // 1. Discovery.
  const discovered = await discover({ paths: opts.paths, roots: opts.roots, cwd: opts.cwd });
  if (discovered.length === 0) {
    const where = opts.paths.length ? opts.paths.join(', ') : opts.roots.length ? 'the [provium] roots' : 'the current directory';
    return { kind: 'nothing', reason: 'no_files', message: `no *.test.lua files found under ${where}` };
  }

  // 2. File filters (--filter, --since, --rerun-failed).
  let only: Set<string> | undefined;
  if (opts.rerunFailed) {
    const state = await readRerunState(opts.rerunStatePath, warn);
    if (!state || state.length === 0) {
      return { kind: 'nothing', reason: 'no_rerun_state', message: `--rerun-failed: no failures recorded (${opts.rerunStatePath}); nothing to rerun` };
    }
    only = new Set(state);
  }
  let candidates = discovered;
  if (only) {
    // The state holds canonical paths: compare canonical to canonical.
    const canonical = await Promise.all(discovered.map((f) => realpath(f.file).catch(() => f.file)));
    const keep = new Set(discovered.filter((_f, i) => only!.has(canonical[i]!)).map((f) => f.file));
    candidates = discovered.filter((f) => keep.has(f.file));
  }
  if (only && candidates.length === 0) {
    return {
      kind: 'nothing',
      reason: 'filtered_out',
      message: `--rerun-failed: none of the ${only.size} file${only.size === 1 ? '' : 's'} that failed last time (${opts.rerunStatePath}) is under these paths`,
    };
  }
  const filtered = await filterFiles(candidates, { filters: opts.filters, since: opts.since, cwd: opts.cwd });
  if (filtered.length === 0) {
    return { kind: 'nothing', reason: 'filtered_out', message: `all ${discovered.length} test files were filtered out` };
  }
  const planned: PlannedFile[] = filtered.map((f) => ({ ...f, key: fileKey(f.file, opts.baseDir) }));

  // 3. Timings, then the shard, then the order.
  const timingsPath = opts.timingsPath ?? defaultTimingsPath(opts.cacheDir, opts.baseDir);
  const timings = await readTimings(timingsPath, warn);
  if (opts.timingsPath && !timings) warn(`--timings ${opts.timingsPath}: no usable record; shards split by hash and files run in path order`);
  let files = planned;
  let shardMethod: 'timings' | 'hash' | null = null;
  if (opts.shard) {
    const picked = selectShard(planned, (f) => f.key, opts.shard, timings);
    files = picked.items;
    shardMethod = picked.plan.method;
  }
  files = orderLongestFirst(files, (f) => f.key, timings);
  return { kind: 'files', files, discovered: discovered.length, selected: planned.length, shardMethod, timings, timingsPath };
}

/** `require` roots for a file: the configured roots, then the directory it was found under. */
export function taskRoots(configRoots: string[], file: PlannedFile): string[] {
  return [...new Set([...configRoots, file.root])];
}

/** The stable key of a file: relative to the project directory, '/' separators. */
export function fileKey(file: string, baseDir: string): string {
  const rel = relative(baseDir, file);
  return toPosix(rel === '' || rel.startsWith('..') ? file : rel);
}

/** What file_discovered reports from a static read of the file (the reference scans text too). */
export interface FileStatics {
  /** `vm_fixture("x")`/`lab_fixture("x")` literals. */
  fixtureRefs: string[];
  /** A literal `claim{memory = …, cpus = …}`, or null when there is none or it is not literal. */
  declaredClaim: ResourceAmount | null;
  /** Literal profile names of `:vm(name, "profile")` (the warm pool's guess at what the file boots). */
  profiles: string[];
  /** Literal barrier names: a file waiting at one of them pulls this file forward in the queue. */
  barriers: string[];
}

export async function scanStatics(file: string): Promise<FileStatics> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const statics = scanLua(text);
  return { fixtureRefs: statics.fixtures, declaredClaim: statics.claim, profiles: statics.profiles, barriers: statics.barriers };
}
