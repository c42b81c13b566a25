// The timing record: how long each file took in earlier runs. Shards balance by it and the
// dispatcher orders longest-first by it (DESIGN §6). It lives in the cache, one file per project
// (defaultTimingsPath), or in the file given with --timings (so CI can carry it between jobs).
// Keys are file paths relative to the project (the provium.toml directory) with '/' separators,
// so every shard and machine agrees.
//
//   { "version": 1, "files": { "spec/boot.test.lua": { "duration_ms": 1830, "runs": 4 } } }

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { writeFileAtomic } from './atomic-write.js';

export const kTimingsVersion = 1;
/** Weight of the newest run in the recorded duration: smooths noise without lagging for long. */
const kNewRunWeight = 0.5;

export interface TimingEntry {
  duration_ms: number;
  runs: number;
}

export interface TimingRecord {
  version: number;
  files: Record<string, TimingEntry>;
}

/**
 * `<cache>/timings/<project>-<hash>.json`: one record per project directory. The cache is per
 * user and shared by every project, while keys are project-relative ("spec/boot.test.lua"), so a
 * single `<cache>/timings.json` would mix the durations of unrelated projects.
 */
export function defaultTimingsPath(cacheDir: string, projectDir: string): string {
  return projectStatePath(cacheDir, 'timings', projectDir);
}

/** `<cache>/<kind>/<project>-<hash>.json`: state of one project (its config's directory) in the shared cache. */
export function projectStatePath(cacheDir: string, kind: string, projectDir: string): string {
  const hash = createHash('sha256').update(projectDir).digest('hex').slice(0, 12);
  return join(cacheDir, kind, `${basename(projectDir) || 'root'}-${hash}.json`);
}

/**
 * Reads a record. A missing file is `null`; an unreadable or malformed one is `null` plus a
 * warning (through `warn`), because a bad record must never stop a run.
 */
export async function readTimings(path: string, warn: (message: string) => void): Promise<TimingRecord | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') warn(`timing record ${path}: ${(err as Error).message}; ignored`);
    return null;
  }
  try {
    const value = JSON.parse(text) as Partial<TimingRecord>;
    if (value.version !== kTimingsVersion || typeof value.files !== 'object' || value.files === null) {
      throw new Error(`not a version ${kTimingsVersion} timing record`);
    }
    const files: Record<string, TimingEntry> = {};
    for (const [key, entry] of Object.entries(value.files)) {
      const ms = (entry as Partial<TimingEntry>)?.duration_ms;
      if (typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) {
        files[key] = { duration_ms: ms, runs: Math.max(1, Number((entry as Partial<TimingEntry>).runs) || 1) };
      }
    }
    return { version: kTimingsVersion, files };
  } catch (err) {
    warn(`timing record ${path}: ${(err as Error).message}; ignored (it is rewritten after this run)`);
    return null;
  }
}

/** Folds this run's durations in (entries for files that did not run are kept). */
export function mergeTimings(record: TimingRecord | null, durations: Map<string, number>): TimingRecord {
  const files: Record<string, TimingEntry> = { ...(record?.files ?? {}) };
  for (const [key, ms] of durations) {
    const old = files[key];
    files[key] = old
      ? { duration_ms: Math.round(old.duration_ms * (1 - kNewRunWeight) + ms * kNewRunWeight), runs: old.runs + 1 }
      : { duration_ms: Math.round(ms), runs: 1 };
  }
  // Sorted keys: a stable, diffable file.
  const sorted: Record<string, TimingEntry> = {};
  for (const key of Object.keys(files).sort()) sorted[key] = files[key]!;
  return { version: kTimingsVersion, files: sorted };
}

/**
 * Combines records written by the shards of one run (`--save-timings`): each shard updated the
 * files it ran, so for each file the entry with the most runs is the newest.
 */
export function combineTimings(records: TimingRecord[]): TimingRecord {
  const files: Record<string, TimingEntry> = {};
  for (const record of records) {
    for (const [key, entry] of Object.entries(record.files)) {
      const seen = files[key];
      if (!seen || entry.runs > seen.runs) files[key] = entry;
    }
  }
  const sorted: Record<string, TimingEntry> = {};
  for (const key of Object.keys(files).sort()) sorted[key] = files[key]!;
  return { version: kTimingsVersion, files: sorted };
}

export async function writeTimings(path: string, record: TimingRecord): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(record, null, 1)}\n`);
}

/** Recorded duration of each key, or undefined; unknown keys are estimated as the mean of the known. */
export function estimateDurations(keys: string[], record: TimingRecord | null): { estimates: Map<string, number>; known: number } {
  const estimates = new Map<string, number>();
  const knownValues: number[] = [];
  for (const key of keys) {
    const entry = record?.files[key];
    if (entry) knownValues.push(entry.duration_ms);
  }
  const mean = knownValues.length ? knownValues.reduce((a, b) => a + b, 0) / knownValues.length : 0;
  for (const key of keys) estimates.set(key, record?.files[key]?.duration_ms ?? mean);
  return { estimates, known: knownValues.length };
}
