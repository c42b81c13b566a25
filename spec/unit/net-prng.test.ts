import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fnv1a64, mix64, Prng } from '../../src/net/prng.js';

describe('prng', () => {
  it('builds on the published splitmix64 and FNV-1a 64 values', () => {
    // splitmix64 seeded with 0: first output.
    assert.equal(mix64(0x9e3779b97f4a7c15n), 0xe220a8397b1dcdafn);
    assert.equal(fnv1a64(''), 0xcbf29ce484222325n);
    assert.equal(fnv1a64('a'), 0xaf63dc4c8601ec8cn);
  });

  it('pins the stream of a seed, so every platform makes the same decisions', () => {
    const p = new Prng(42);
    assert.deepEqual([0, 1, 2, 3, 4].map(() => p.nextUint32()), [1776835114, 4165204688, 17111135, 2317295270, 2792088233]);
    const fork = new Prng(42).fork('bridge:lan');
    assert.equal(fork.seed, 0xe35610b4bd63e68dn);
    assert.deepEqual([0, 1, 2].map(() => fork.nextUint32()), [2916930548, 4046895079, 2231029305]);
  });

  it('forks by label, independent of what the parent drew', () => {
    const parent = new Prng(7);
    const before = parent.fork('a->b');
    for (let i = 0; i < 10; i++) parent.nextUint32();
    const afterDraws = parent.fork('a->b');
    assert.deepEqual([1, 2, 3].map(() => before.nextUint32()), [1, 2, 3].map(() => afterDraws.nextUint32()));
    const other = new Prng(7).fork('b->a');
    assert.notEqual(other.nextUint32(), new Prng(7).fork('a->b').nextUint32());
  });

  it('yields floats in [0, 1) with a plausible mean, and chance() draws only for 0 < p < 1', () => {
    const p = new Prng(3);
    let sum = 0;
    for (let i = 0; i < 10_000; i++) {
      const x = p.float();
      assert.ok(x >= 0 && x < 1);
      sum += x;
    }
    assert.ok(Math.abs(sum / 10_000 - 0.5) < 0.02);
    const a = new Prng(9);
    const b = new Prng(9);
    assert.equal(a.chance(0), false);
    assert.equal(a.chance(1), true);
    assert.equal(a.nextUint32(), b.nextUint32());
  });

  it('accepts integer seeds up to 2^64-1 and names a bad one', () => {
    assert.equal(new Prng(2n ** 64n - 1n).seed, 2n ** 64n - 1n);
    assert.equal(new Prng(5).seed, new Prng(5n).seed);
    assert.throws(() => new Prng(-1), /seed -1 is invalid: expected an integer from 0/);
    assert.throws(() => new Prng(1.5), /seed 1.5 is invalid/);
    assert.throws(() => new Prng(2n ** 64n), /seed 18446744073709551616 is invalid/);
  });
});
