import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { orderLongestFirst } from '../../src/run/ordering.js';
import { estimateDurations, mergeTimings, readTimings, writeTimings } from '../../src/run/timings.js';
import { project } from './run-capture.js';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';

const key = (s: string) => s;

describe('orderLongestFirst', () => {
  it('keeps declaration order without a record', () => {
    assert.deepEqual(orderLongestFirst(['c', 'a', 'b'], key, null), ['c', 'a', 'b']);
  });

  it('puts the longest recorded files first, ties in declaration order', () => {
    const rec = { version: 1, files: { a: { duration_ms: 10, runs: 1 }, b: { duration_ms: 500, runs: 1 }, c: { duration_ms: 10, runs: 1 }, d: { duration_ms: 90, runs: 1 } } };
    assert.deepEqual(orderLongestFirst(['a', 'b', 'c', 'd'], key, rec), ['b', 'd', 'a', 'c']);
  });

  it('places unrecorded files at the mean of the recorded ones', () => {
    const rec = { version: 1, files: { a: { duration_ms: 100, runs: 1 }, b: { duration_ms: 300, runs: 1 } } };
    // new is estimated at 200: between b and a.
    assert.deepEqual(orderLongestFirst(['a', 'new', 'b'], key, rec), ['b', 'new', 'a']);
    assert.equal(estimateDurations(['new'], rec).estimates.get('new'), 0);
  });
});

describe('timing record', () => {
  it('merges new durations (smoothed), keeps others, and round-trips through an atomic write', async () => {
    const dir = await project({});
    const path = join(dir, 'cache', 'timings.json');
    const warnings: string[] = [];
    assert.equal(await readTimings(path, (m) => warnings.push(m)), null);
    const first = mergeTimings(null, new Map([['a', 1000], ['b', 200]]));
    await writeTimings(path, first);
    const again = mergeTimings(await readTimings(path, (m) => warnings.push(m)), new Map([['a', 3000]]));
    assert.deepEqual(again.files['a'], { duration_ms: 2000, runs: 2 });
    assert.deepEqual(again.files['b'], { duration_ms: 200, runs: 1 });
    await writeFile(path, '{not json');
    assert.equal(await readTimings(path, (m) => warnings.push(m)), null);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /timings.json/);
    await writeTimings(path, again);
    assert.match(await readFile(path, 'utf8'), /"version": 1/);
  });
});
