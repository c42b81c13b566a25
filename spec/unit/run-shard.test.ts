import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../src/run/errors.js';
import { parseShard, planShards, selectShard } from '../../src/run/shard.js';
import type { TimingRecord } from '../../src/run/timings.js';

const files = (n: number): string[] => Array.from({ length: n }, (_v, i) => `spec/area${i % 5}/file${String(i).padStart(3, '0')}.test.lua`);

function record(durations: Record<string, number>): TimingRecord {
  const out: TimingRecord = { version: 1, files: {} };
  for (const [k, v] of Object.entries(durations)) out.files[k] = { duration_ms: v, runs: 1 };
  return out;
}

/** Deterministic skewed durations: a few huge files, many small ones. */
function skewed(keys: string[]): TimingRecord {
  const d: Record<string, number> = {};
  keys.forEach((k, i) => {
    d[k] = i % 10 === 0 ? 60_000 + i * 100 : 1_000 + ((i * 7919) % 5_000);
  });
  return record(d);
}

describe('parseShard', () => {
  it('accepts i/n with 1 <= i <= n', () => {
    assert.deepEqual(parseShard('2/8'), { index: 2, count: 8 });
    assert.deepEqual(parseShard('1/1'), { index: 1, count: 1 });
  });

  it('rejects 0/3, 4/3, x, 1/0 with a usage error that says what to pass', () => {
    for (const bad of ['0/3', '4/3', 'x', '1/0', '2', '-1/3', '1/3/4', '']) {
      assert.throws(
        () => parseShard(bad),
        (err: Error) => {
          assert.ok(err instanceof UsageError, `${bad}: ${err}`);
          assert.equal((err as UsageError).exitCode, 2);
          assert.match(err.message, /--shard/);
          assert.match(err.message, /1 <= i <= n/);
          return true;
        },
      );
    }
    assert.throws(() => parseShard('4/3'), /shard 4 does not exist in 3 shards/);
  });
});

describe('planShards', () => {
  for (const withTimings of [false, true]) {
    const mode = withTimings ? 'timings' : 'hash';
    it(`is a partition for every shard count (${mode})`, () => {
      for (const n of [1, 2, 3, 7, 40]) {
        const keys = files(n * 3 + 1);
        for (const count of [1, 2, 3, 5, 8]) {
          const plan = planShards(keys, count, withTimings ? skewed(keys) : null);
          assert.equal(plan.method, withTimings ? 'timings' : 'hash');
          assert.equal(plan.shards.length, count);
          const all = plan.shards.flat();
          assert.equal(all.length, keys.length, 'every file in some shard');
          assert.equal(new Set(all).size, keys.length, 'no file in two shards');
          assert.deepEqual([...all].sort(), [...keys].sort());
        }
      }
    });

    it(`is stable: same list and record give the same split, whatever the input order (${mode})`, () => {
      const keys = files(37);
      const timings = withTimings ? skewed(keys) : null;
      const a = planShards(keys, 4, timings);
      const b = planShards([...keys].reverse(), 4, timings);
      const c = planShards(keys, 4, timings && JSON.parse(JSON.stringify(timings)));
      const sets = (p: typeof a) => p.shards.map((s) => [...s].sort());
      assert.deepEqual(sets(a), sets(b));
      assert.deepEqual(sets(a), sets(c));
    });
  }

  it('without a record, shard sizes differ by at most one file', () => {
    for (const n of [5, 17, 40, 101]) {
      const plan = planShards(files(n), 6, null);
      const sizes = plan.shards.map((s) => s.length);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `sizes ${sizes}`);
    }
  });

  it('with a record, balances 40 skewed files so the largest shard is close to the mean', () => {
    const keys = files(40);
    const timings = skewed(keys);
    for (const count of [2, 4, 8]) {
      const plan = planShards(keys, count, timings);
      const loads = plan.shards.map((s) => s.reduce((sum, k) => sum + timings.files[k]!.duration_ms, 0));
      const mean = loads.reduce((a, b) => a + b, 0) / count;
      const ratio = Math.max(...loads) / mean;
      // The largest single file bounds what any split can do.
      const floor = Math.max(...keys.map((k) => timings.files[k]!.duration_ms)) / mean;
      assert.ok(ratio <= Math.max(1.1, floor * 1.01), `count ${count}: max/mean ${ratio.toFixed(3)}, loads ${loads}`);
      assert.deepEqual(plan.loadsMs, loads);
    }
  });

  it('estimates files missing from the record as the mean of the recorded ones', () => {
    const keys = ['a', 'b', 'c', 'd'];
    const plan = planShards(keys, 2, record({ a: 100, b: 100 }));
    // c and d are estimated at 100 each: two per shard.
    assert.deepEqual(plan.shards.map((s) => s.length), [2, 2]);
  });
});

describe('selectShard', () => {
  it('keeps input order within the shard and covers every item across shards', () => {
    const items = files(23).map((key) => ({ key }));
    const seen: string[] = [];
    for (let i = 1; i <= 4; i++) {
      const { items: mine } = selectShard(items, (x) => x.key, { index: i, count: 4 }, null);
      const positions = mine.map((m) => items.indexOf(m));
      assert.deepEqual(positions, [...positions].sort((a, b) => a - b));
      seen.push(...mine.map((m) => m.key));
    }
    assert.deepEqual(seen.sort(), items.map((x) => x.key).sort());
  });
});
