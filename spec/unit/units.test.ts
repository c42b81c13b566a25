import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatMs, formatSize, parseDuration, parseSize, UnitError } from '../../src/config/units.js';

describe('parseDuration', () => {
  it('reads numbers as seconds and strings with suffixes', () => {
    assert.equal(parseDuration(0.5, 'x'), 500);
    assert.equal(parseDuration('500ms', 'x'), 500);
    assert.equal(parseDuration('5s', 'x'), 5000);
    assert.equal(parseDuration('2m', 'x'), 120_000);
    assert.equal(parseDuration('1h', 'x'), 3_600_000);
    assert.equal(parseDuration('3', 'x'), 3000);
    assert.equal(parseDuration('1.5s', 'x'), 1500);
  });

  it('rejects bad values with the name, the value and the fix', () => {
    assert.throws(() => parseDuration('5 parsecs', 'proc:wait timeout'), (err: Error) => {
      assert.ok(err instanceof UnitError);
      assert.match(err.message, /^proc:wait timeout: invalid duration "5 parsecs"; use seconds as a number or a string like "500ms"/);
      return true;
    });
    assert.throws(() => parseDuration(-1, 'timeout'), /timeout: duration must be a finite number of seconds >= 0, got -1/);
    assert.throws(() => parseDuration(NaN, 'timeout'), /got NaN/);
    assert.throws(() => parseDuration(Infinity, 'timeout'), /got Infinity/);
    assert.throws(() => parseDuration(true, 'timeout'), /expected a duration .* got boolean/);
  });
});

describe('parseSize', () => {
  it('reads bytes and binary suffixes', () => {
    assert.equal(parseSize(4096, 'm'), 4096);
    assert.equal(parseSize('512M', 'm'), 512 * 1024 * 1024);
    assert.equal(parseSize('2G', 'm'), 2 * 1024 ** 3);
    assert.equal(parseSize('1T', 'm'), 1024 ** 4);
    assert.equal(parseSize('64k', 'm'), 65536);
    assert.equal(parseSize('1GiB', 'm'), 1024 ** 3);
  });

  it('keeps sizes past 2^32 exact', () => {
    assert.equal(parseSize('20G', 'cache_max_size'), 21474836480);
  });

  it('rejects bad values naming the key', () => {
    assert.throws(() => parseSize('lots', 'memory'), /memory: invalid size "lots"; use bytes as a number or a string like "512M"/);
    assert.throws(() => parseSize(-5, 'memory'), /memory: size must be a finite number of bytes >= 0, got -5/);
  });
});

describe('formatting', () => {
  it('prints durations and sizes for messages', () => {
    assert.equal(formatMs(250), '250ms');
    assert.equal(formatMs(1500), '1.50s');
    assert.equal(formatMs(90_000), '1m30s');
    assert.equal(formatSize(256 * 1024 * 1024), '256M');
    assert.equal(formatSize(4096), '4K');
    assert.equal(formatSize(1000), '1000');
  });
});
