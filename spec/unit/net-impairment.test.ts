import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ImpairmentRules, kNoImpairment, validateImpairment } from '../../src/net/impairment.js';
import { kBurstMs, kMinBurstBytes } from '../../src/net/pipeline.js';
import type { FaultEvent } from '../../src/net/switch.js';
import { benches, kBroadcast, macOf, seqFrame, until, type Bench } from './net-helpers.js';

const make = benches();

/** Every frame from a to b was either dropped or written and read by b: the direction is settled. */
function settled(b: Bench, sent: number): Promise<void> {
  return until(() => {
    const written = b.sw.counters('b').rx_packets;
    return written + b.sw.counters('a').dropped >= sent && b.nics.b!.frames.length >= written;
  }, `${sent} frames settled`, 20_000);
}

describe('impairment values', () => {
  it('rejects values out of range, naming the value and the range', () => {
    assert.throws(() => validateImpairment({ dropRate: 1.5 }), /^Error: dropRate 1.5 is out of range: expected a probability from 0 to 1$/);
    assert.throws(() => validateImpairment({ latencyMs: -5 }), /latencyMs -5 is out of range: expected a number of milliseconds from 0 to 600000/);
    assert.throws(() => validateImpairment({ jitterMs: NaN }), /jitterMs NaN is out of range/);
    assert.throws(() => validateImpairment({ bandwidthBps: 3 }), /bandwidthBps 3 is out of range: expected 0 \(unlimited\) or bits per second from 8/);
    assert.throws(() => validateImpairment({ duplicateRate: -0.1 }), /duplicateRate -0.1 is out of range/);
    assert.throws(() => validateImpairment({ latency: 5 } as never), /unknown impairment key "latency"; accepted keys: latencyMs, jitterMs/);
    assert.deepEqual(validateImpairment({ dropRate: 0.5, latencyMs: 0 }), { dropRate: 0.5, latencyMs: 0 });
  });

  it('gives a direction the worst of the bridge, source and direction rules', () => {
    const rules = new ImpairmentRules();
    rules.set({ latencyMs: 50, bandwidthBps: 1e6 });
    rules.set({ latencyMs: 100 }, { from: 'a' });
    rules.set({ dropRate: 0.2, bandwidthBps: 5e5 }, { from: 'a', to: 'b' });
    assert.deepEqual(rules.effective('a', 'b'), { ...kNoImpairment, latencyMs: 100, dropRate: 0.2, bandwidthBps: 5e5 });
    assert.deepEqual(rules.effective('a', 'c'), { ...kNoImpairment, latencyMs: 100, bandwidthBps: 1e6 });
    assert.deepEqual(rules.effective('b', 'a'), { ...kNoImpairment, latencyMs: 50, bandwidthBps: 1e6 });
    rules.set({ latencyMs: 0 }, { from: 'a' });
    assert.equal(rules.size, 2, 'a rule left with zeros is removed');
    assert.throws(() => rules.set({ latencyMs: 1 }, { from: 'a', to: 'a' }), /from and to are both "a"/);
  });
});

describe('switch impairments', () => {
  it('delays frames by at least the latency, directionally', async () => {
    const b = await make(['a', 'b']);
    b.sw.setLatency({ ms: 150, jitterMs: 0 }, { from: 'a', to: 'b' });
    const sentMs = performance.now();
    b.nics.a!.send(seqFrame(macOf(2), macOf(1), 1));
    b.nics.b!.send(seqFrame(macOf(1), macOf(2), 2));
    await b.nics.b!.waitFrames(1);
    assert.ok(b.nics.b!.arrivalsMs[0]! - sentMs >= 150, `a to b took ${b.nics.b!.arrivalsMs[0]! - sentMs} ms`);
    await b.nics.a!.waitFrames(1);
    assert.equal(b.sw.latencyMs(), 0, 'the getter reports the whole-bridge value');
    assert.equal(b.sw.effectiveImpairment('a', 'b').latencyMs, 150);
  });

  it('applies a {from} rule to every destination and a {from, to} rule to one', async () => {
    const b = await make(['a', 'b', 'c']);
    b.sw.setDropRate(1, { from: 'a' });
    b.sw.setDropRate(1, { from: 'b', to: 'c' });
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 2));
    b.nics.c!.send(seqFrame(kBroadcast, macOf(3), 3));
    await until(() => b.nics.a!.seqs().length === 2 && b.nics.b!.seqs().length === 1, 'the open directions');
    await until(() => b.sw.drops().impairment === 3, 'a to b, a to c and b to c dropped');
    assert.deepEqual(b.nics.a!.seqs().sort(), [2, 3]);
    assert.deepEqual(b.nics.b!.seqs(), [3]);
    assert.deepEqual(b.nics.c!.seqs(), []);
    assert.equal(b.sw.counters('a').dropped, 2);
  });

  it('releases a bandwidth queue when the limit is lifted', async () => {
    const b = await make(['a', 'b']);
    b.sw.setBandwidth(800);
    for (let i = 0; i < 5; i++) b.nics.a!.send(seqFrame(macOf(2), macOf(1), i, 986));
    await until(() => b.sw.counters('a').tx_packets === 5, 'all five in the switch');
    // At 100 bytes/s the queue would take ~40 s; lifting the limit lets it out at once, in order.
    b.sw.setBandwidth(0);
    await b.nics.b!.waitFrames(5, 2000);
    assert.deepEqual(b.nics.b!.seqs(), [0, 1, 2, 3, 4]);
  });

  it('never reorders a direction by jitter', async () => {
    const b = await make(['a', 'b']);
    b.sw.setLatency({ ms: 20, jitterMs: 19 });
    const count = 60;
    for (let i = 0; i < count; i++) b.nics.a!.send(seqFrame(macOf(2), macOf(1), i));
    await b.nics.b!.waitFrames(count);
    assert.deepEqual(b.nics.b!.seqs(), [...Array(count).keys()]);
    assert.equal(b.sw.jitterMs(), 19);
  });

  it('keeps frames in flight ahead of later frames when the latency is removed', async () => {
    const b = await make(['a', 'b']);
    b.sw.setLatency(200);
    b.nics.a!.send(seqFrame(macOf(2), macOf(1), 1));
    await until(() => b.sw.counters('a').tx_packets === 1, 'frame 1 in the switch');
    b.sw.setLatency(0);
    b.nics.a!.send(seqFrame(macOf(2), macOf(1), 2));
    await b.nics.b!.waitFrames(2);
    assert.deepEqual(b.nics.b!.seqs(), [1, 2]);
  });

  it('drops the same frames for the same seed, and others for another seed', async () => {
    const count = 300;
    async function droppedIndices(seed: number): Promise<number[]> {
      const b = await make(['a', 'b'], { seed });
      b.sw.setDropRate(0.3);
      for (let i = 0; i < count; i++) b.nics.a!.send(seqFrame(macOf(2), macOf(1), i));
      await settled(b, count);
      const got = new Set(b.nics.b!.seqs());
      assert.equal(b.sw.drops().impairment, count - got.size);
      return [...Array(count).keys()].filter((i) => !got.has(i));
    }
    const first = await droppedIndices(42);
    const again = await droppedIndices(42);
    const other = await droppedIndices(43);
    assert.deepEqual(again, first);
    assert.notDeepEqual(other, first);
    assert.ok(first.length > count * 0.15 && first.length < count * 0.45, `dropped ${first.length} of ${count}`);
  });

  it('shapes a burst with the token bucket (lower bound only)', async () => {
    const b = await make(['a', 'b']);
    const bps = 800_000;
    b.sw.setBandwidth(bps);
    const frame = seqFrame(macOf(2), macOf(1), 0, 996);
    const count = 60;
    const started = performance.now();
    for (let i = 0; i < count; i++) b.nics.a!.send(frame);
    await b.nics.b!.waitFrames(count, 20_000);
    const tookMs = b.nics.b!.arrivalsMs[count - 1]! - started;
    // The bucket starts full and the last frame leaves on credit: those bytes are free.
    const burstBytes = Math.max(kMinBurstBytes, (bps / 8) * (kBurstMs / 1000));
    const minMs = ((count * frame.byteLength - burstBytes - frame.byteLength) * 8000) / bps;
    assert.ok(tookMs >= minMs, `took ${tookMs} ms, expected at least ${minMs} ms`);
    assert.equal(b.sw.bandwidthBps(), bps);
  });

  it('bounds the queue and counts the overflow as dropped', async () => {
    const b = await make(['a', 'b'], { maxQueuedFrames: 5 });
    b.sw.setBandwidth(80_000);
    const count = 30;
    for (let i = 0; i < count; i++) b.nics.a!.send(seqFrame(macOf(2), macOf(1), i, 200));
    await settled(b, count);
    assert.ok(b.sw.drops().queue > 0);
    assert.equal(b.sw.counters('a').dropped, b.sw.drops().queue);
    const got = b.nics.b!.seqs();
    assert.deepEqual(got, [...got].sort((x, y) => x - y), 'what passes stays in order');
  });

  it('duplicates and reorders when asked', async () => {
    const b = await make(['a', 'b']);
    b.sw.setDuplicateRate(1);
    for (let i = 0; i < 3; i++) b.nics.a!.send(seqFrame(macOf(2), macOf(1), i));
    await b.nics.b!.waitFrames(6);
    assert.deepEqual(b.nics.b!.seqs(), [0, 0, 1, 1, 2, 2]);
    b.sw.setDuplicateRate(0);
    b.sw.setReorderRate(1);
    // Every frame is chosen: the first of each pair is held until the second has passed.
    for (let i = 10; i < 14; i++) b.nics.a!.send(seqFrame(macOf(2), macOf(1), i));
    await b.nics.b!.waitFrames(10);
    assert.deepEqual(b.nics.b!.seqs().slice(6), [11, 10, 13, 12]);
  });

  it('applies latency, drop and bandwidth at once', async () => {
    const b = await make(['a', 'b'], { seed: 7 });
    b.sw.impair({ latencyMs: 100, dropRate: 0.25, bandwidthBps: 400_000 });
    const frame = (i: number): Buffer => seqFrame(macOf(2), macOf(1), i, 496);
    const count = 40;
    const started = performance.now();
    for (let i = 0; i < count; i++) b.nics.a!.send(frame(i));
    await settled(b, count);
    const delivered = b.sw.counters('b').rx_packets;
    assert.ok(b.sw.drops().impairment > 0 && delivered > 0);
    const tookMs = b.nics.b!.arrivalsMs[delivered - 1]! - started;
    const minShapingMs = ((delivered * 500 - kMinBurstBytes - 500) * 8000) / 400_000;
    assert.ok(tookMs >= 100 + minShapingMs, `took ${tookMs} ms, expected at least ${100 + minShapingMs}`);
    assert.ok(b.nics.b!.arrivalsMs[0]! - started >= 100);
  });

  it('emits events, reports whole-bridge values and resets everything', async () => {
    const events: FaultEvent[] = [];
    const b = await make(['a', 'b'], { onFault: (e) => events.push(e) });
    b.sw.setDropRate(0.1);
    b.sw.setLatency({ ms: 30, jitterMs: 5 }, { from: 'a' });
    b.sw.partition('a', 'b');
    assert.throws(() => b.sw.setDropRate(1.5), /dropRate 1.5 is out of range: expected a probability from 0 to 1/);
    assert.equal(b.sw.dropRate(), 0.1);
    assert.equal(b.sw.latencyMs(), 0);
    assert.equal(b.sw.impairment({ from: 'a' }).latencyMs, 30);
    b.sw.reset();
    assert.deepEqual(b.sw.impairment(), kNoImpairment);
    assert.deepEqual(b.sw.effectiveImpairment('a', 'b'), kNoImpairment);
    assert.ok(!b.sw.isPartitioned('a', 'b'));
    assert.deepEqual(events.map((e) => [e.kind, e.from]), [
      ['impairment', undefined],
      ['impairment', 'a'],
      ['partition', 'a'],
      ['heal', undefined],
      ['impairment', undefined],
    ]);
    assert.equal(events[0]!.values.dropRate, 0.1);
    assert.equal(events[1]!.values.jitterMs, 5);
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    await until(() => b.nics.b!.seqs().includes(1), 'traffic after reset');
  });
});
