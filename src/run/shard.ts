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
