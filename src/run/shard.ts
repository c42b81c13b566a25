// --shard i/n (issue 4 item 2). A partition: every file lands in exactly one shard. Stable: the
// same file list and timing record give the same split on every machine (no locale, no clock, no
// randomness). Balanced: with a timing record, greedy longest-first onto the least-loaded shard
// (LPT, within 4/3 of optimal); without one, files sorted by a stable hash are dealt round-robin,
// so shard sizes differ by at most one file.
//
// Every shard of a run must see the same timing record (carry it with --timings FILE), or the
// shards would split differently and files could run twice or not at all.

import { createHash } from 'node:crypto';
import { compareStrings } from './discovery.js';
import { UsageError } from './errors.js';
import { estimateDurations, type TimingRecord } from './timings.js';

export interface ShardSpec {
  /** 1-based. */
  index: number;
  count: number;
}

export function parseShard(text: string): ShardSpec {
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  const usage = 'use --shard i/n with 1 <= i <= n, e.g. --shard 2/8';
  if (!match) throw new UsageError(`--shard ${JSON.stringify(text)}: expected i/n; ${usage}`);
  const index = Number(match[1]);
  const count = Number(match[2]);
  if (count < 1) throw new UsageError(`--shard ${text}: the shard count must be at least 1; ${usage}`);
  if (index < 1 || index > count) {
    throw new UsageError(`--shard ${text}: shard ${index} does not exist in ${count} shard${count === 1 ? '' : 's'}; ${usage}`);
  }
  if (count > 100_000) throw new UsageError(`--shard ${text}: ${count} shards is not plausible; ${usage}`);
  return { index, count };
}

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export interface ShardPlan {
  /** The keys of every shard, shard 1 first, each in input order. */
  shards: string[][];
  /** 'timings' when balanced by recorded durations, else 'hash'. */
  method: 'timings' | 'hash';
  /** Estimated summed duration per shard (ms; 0 under 'hash'). */
  loadsMs: number[];
}

/** Splits `keys` (unique) into `count` shards. */
export function planShards(keys: string[], count: number, record: TimingRecord | null): ShardPlan {
  const shards: string[][] = Array.from({ length: count }, () => []);
  const loadsMs = new Array<number>(count).fill(0);
  const { estimates, known } = estimateDurations(keys, record);
  const assignment = new Map<string, number>();
  if (known > 0) {
    // LPT: longest first (ties by key), each onto the least-loaded shard (ties: lowest index).
    const order = [...keys].sort((a, b) => estimates.get(b)! - estimates.get(a)! || compareStrings(a, b));
    for (const key of order) {
      let best = 0;
      for (let i = 1; i < count; i++) if (loadsMs[i]! < loadsMs[best]!) best = i;
      assignment.set(key, best);
      loadsMs[best]! += estimates.get(key)!;
    }
  } else {
    const order = [...keys].sort((a, b) => compareStrings(hashKey(a), hashKey(b)) || compareStrings(a, b));
    order.forEach((key, i) => assignment.set(key, i % count));
  }
  for (const key of keys) shards[assignment.get(key)!]!.push(key);
  return { shards, method: known > 0 ? 'timings' : 'hash', loadsMs: known > 0 ? loadsMs : loadsMs.fill(0) };
}

/** The items of shard `spec.index`, in input order. `keyOf` gives each item's stable key. */
export function selectShard<T>(items: T[], keyOf: (item: T) => string, spec: ShardSpec, record: TimingRecord | null): { items: T[]; plan: ShardPlan } {
  const keys = items.map(keyOf);
  const plan = planShards(keys, spec.count, record);
  const mine = new Set(plan.shards[spec.index - 1]);
  return { items: items.filter((item) => mine.has(keyOf(item))), plan };
}

/** CI systems' own job index and total: [index variable, total variable, whether the index is 0-based]. */
const kCiShardVariables: [string, string, boolean][] = [
  ['CI_NODE_INDEX', 'CI_NODE_TOTAL', false], // GitLab `parallel:`
  ['BUILDKITE_PARALLEL_JOB', 'BUILDKITE_PARALLEL_JOB_COUNT', true],
  ['CIRCLE_NODE_INDEX', 'CIRCLE_NODE_TOTAL', true],
];

/**
 * `--shard auto`: `PROVIUM_SHARD=i/n` (e.g. from a GitHub Actions matrix), else the CI system's
 * parallel job index and total (GitLab, Buildkite, CircleCI). Without any of them it is a usage
 * error naming the variables; a CI value that is not a whole number names the variable.
 */
export function shardFromEnv(env: NodeJS.ProcessEnv): ShardSpec {
  const explicit = env['PROVIUM_SHARD'];
  if (explicit !== undefined && explicit !== '') {
    try {
      return parseShard(explicit);
    } catch (err) {
      throw new UsageError(`PROVIUM_SHARD=${JSON.stringify(explicit)} (from --shard auto): ${(err as Error).message.replace(/^--shard [^:]*: /, '')}`);
    }
  }
  for (const [indexVar, totalVar, zeroBased] of kCiShardVariables) {
    const index = env[indexVar];
    const total = env[totalVar];
    if (index === undefined || total === undefined || index === '' || total === '') continue;
    if (!/^\d+$/.test(index) || !/^\d+$/.test(total)) {
      throw new UsageError(`--shard auto: ${indexVar}=${JSON.stringify(index)} and ${totalVar}=${JSON.stringify(total)} must be whole numbers`);
    }
    const spec = `${Number(index) + (zeroBased ? 1 : 0)}/${Number(total)}`;
    try {
      return parseShard(spec);
    } catch (err) {
      throw new UsageError(`--shard auto: ${indexVar}=${index}, ${totalVar}=${total} give shard ${spec}: ${(err as Error).message.replace(/^--shard [^:]*: /, '')}`);
    }
  }
  const names = ['PROVIUM_SHARD=i/n', ...kCiShardVariables.map(([i, t]) => `${i}/${t}`)].join(', ');
  throw new UsageError(`--shard auto: no CI shard variables are set (looked for ${names}); set PROVIUM_SHARD=i/n or use --shard i/n`);
}
