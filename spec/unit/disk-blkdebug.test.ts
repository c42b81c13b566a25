import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { blkdebugRules, kMaxQemuFailAfter, kMaxQemuRangeSectors, qemuBackendRefusal } from '../../src/disk/blkdebug.js';
import { FaultPolicy } from '../../src/disk/faults.js';

function rulesOf(set: (p: FaultPolicy) => void) {
  const p = new FaultPolicy(() => 0);
  set(p);
  return blkdebugRules(p.describe());
}

describe('blkdebug rules of a "qemu" disk', () => {
  it('has no rules for a clear policy', () => {
    assert.deepEqual(rulesOf(() => {}), { 'inject-error': [], 'set-state': [] });
  });

  it('fails every read or every write, each rule bound to its event and request type', () => {
    assert.deepEqual(rulesOf((p) => p.failReads())['inject-error'], [{ event: 'read_aio', iotype: 'read', errno: 5 }]);
    assert.deepEqual(rulesOf((p) => p.failWrites())['inject-error'], [{ event: 'write_aio', iotype: 'write', errno: 5 }]);
  });

  it('places a read and a write rule on every sector of a range', () => {
    const rules = rulesOf((p) => p.failRange(10, 2))['inject-error'];
    assert.deepEqual(rules, [
      { event: 'read_aio', iotype: 'read', errno: 5, sector: 10 },
      { event: 'write_aio', iotype: 'write', errno: 5, sector: 10 },
      { event: 'read_aio', iotype: 'read', errno: 5, sector: 11 },
      { event: 'write_aio', iotype: 'write', errno: 5, sector: 11 },
    ]);
  });

  it('counts fail_after with one state per request and fails from state n + 1', () => {
    const rules = rulesOf((p) => p.failAfter(3, 'write'));
    assert.deepEqual(rules['set-state'], [
      { event: 'write_aio', state: 1, new_state: 2 },
      { event: 'write_aio', state: 2, new_state: 3 },
      { event: 'write_aio', state: 3, new_state: 4 },
    ]);
    assert.deepEqual(rules['inject-error'], [{ event: 'write_aio', iotype: 'write', errno: 5, state: 4 }]);
  });

  it('counts reads and writes alike for target "any", and fail_after(0) fails the first', () => {
    const rules = rulesOf((p) => p.failAfter(0));
    assert.deepEqual(rules['set-state'], []);
    assert.deepEqual(rules['inject-error'], [
      { event: 'read_aio', iotype: 'read', errno: 5, state: 1 },
      { event: 'write_aio', iotype: 'write', errno: 5, state: 1 },
    ]);
  });

  it('refuses what blkdebug cannot do, naming the fault and the limit', () => {
    assert.match(qemuBackendRefusal({ kind: 'delay', ms: 5 })!, /cannot delay requests/);
    assert.equal(qemuBackendRefusal({ kind: 'delay', ms: 0 }), null);
    assert.match(qemuBackendRefusal({ kind: 'torn_write', on: true })!, /cannot tear a write/);
    assert.equal(qemuBackendRefusal({ kind: 'torn_write', on: false }), null);
    assert.match(qemuBackendRefusal({ kind: 'random_eio', rate: 0.1 })!, /at random/);
    assert.match(qemuBackendRefusal({ kind: 'fail_range', sector: 0, count: kMaxQemuRangeSectors + 1 })!, new RegExp(`at most ${kMaxQemuRangeSectors} sectors.*got ${kMaxQemuRangeSectors + 1}`));
    assert.equal(qemuBackendRefusal({ kind: 'fail_range', sector: 0, count: kMaxQemuRangeSectors }), null);
    assert.match(qemuBackendRefusal({ kind: 'fail_after', n: kMaxQemuFailAfter + 1, target: 'any' })!, /at most 10000 requests/);
    assert.equal(qemuBackendRefusal({ kind: 'fail_reads', on: true }), null);
    assert.equal(qemuBackendRefusal({ kind: 'clear' }), null);
  });
});
