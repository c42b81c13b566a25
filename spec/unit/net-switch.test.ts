import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { formatMac, isGroupMac, parseMac } from '../../src/net/ethernet.js';
import { MacTable } from '../../src/net/mac-table.js';
import type { FaultEvent } from '../../src/net/switch.js';
import { kMaxFrameBytes } from '../../src/net/wire.js';
import { barrier, benches, FakeNic, kBroadcast, macOf, seqFrame, sleep, until, type Bench } from './net-helpers.js';

const make = benches();

/** Waits until the switch has taken `count` frames from `name` (forwarding is then decided). */
function processed(b: Bench, name: string, count: number): Promise<void> {
  return until(() => b.sw.counters(name).tx_packets + b.sw.counters(name).errors >= count, `${count} frames from ${name}`);
}

describe('ethernet helpers', () => {
  it('round-trips MACs and finds group addresses', () => {
    assert.equal(formatMac(parseMac('52:54:00:AB:cd:01')), '52:54:00:ab:cd:01');
    assert.ok(isGroupMac(parseMac(kBroadcast)));
    assert.ok(isGroupMac(parseMac('01:00:5e:00:00:01')));
    assert.ok(!isGroupMac(parseMac('02:00:00:00:00:01')));
    assert.throws(() => parseMac('52:54:00'), /MAC address "52:54:00" is invalid/);
  });
});

describe('mac table', () => {
  it('learns, moves and ages entries on its clock', () => {
    let now = 0;
    const table = new MacTable(1000, () => now, 2);
    table.learn(parseMac(macOf(1)), 'a');
    assert.equal(table.lookup(parseMac(macOf(1))), 'a');
    table.learn(parseMac(macOf(1)), 'b');
    assert.equal(table.lookup(parseMac(macOf(1))), 'b');
    now = 1001;
    assert.equal(table.lookup(parseMac(macOf(1))), undefined);
    table.learn(parseMac(macOf(2)), 'a');
    table.learn(parseMac(macOf(3)), 'a');
    table.learn(parseMac(macOf(4)), 'a');
    assert.equal(table.size, 2, 'a full table stops learning');
    table.forgetPort('a');
    assert.equal(table.size, 0);
  });
});

describe('switch forwarding', () => {
  it('floods unknown unicast, then sends to a learned MAC on one port only', async () => {
    const b = await make(['a', 'b', 'c']);
    const { a, b: nb, c } = b.nics as Record<'a' | 'b' | 'c', FakeNic>;
    // Unknown destination: flooded to b and c, not back to a.
    a.send(seqFrame(macOf(2), macOf(1), 1));
    await until(() => nb.seqs().includes(1) && c.seqs().includes(1), 'flooded frame');
    assert.deepEqual(a.seqs(), []);
    // b answers: a was learned from its first frame, so only a gets it.
    nb.send(seqFrame(macOf(1), macOf(2), 2));
    await until(() => a.seqs().includes(2), 'reply at a');
    // Now b is learned too: a's next frame to b reaches b only.
    a.send(seqFrame(macOf(2), macOf(1), 3));
    await barrier(b, 'a');
    assert.deepEqual(nb.seqs().filter((s) => s !== 0xffffffff), [1, 3]);
    assert.deepEqual(c.seqs().filter((s) => s !== 0xffffffff), [1]);
    const table = new Map(b.sw.macTable().map((e) => [e.mac, e.port]));
    assert.equal(table.get(macOf(1)), 'a');
    assert.equal(table.get(macOf(2)), 'b');
  });

  it('delivers broadcast and multicast to every other port', async () => {
    const b = await make(['a', 'b', 'c']);
    b.nics.c!.send(seqFrame(kBroadcast, macOf(3), 10));
    b.nics.c!.send(seqFrame('01:00:5e:00:00:fb', macOf(3), 11));
    for (const name of ['a', 'b']) await until(() => b.nics[name]!.seqs().length === 2, `both at ${name}`);
    assert.deepEqual(b.nics.a!.seqs(), [10, 11]);
    assert.deepEqual(b.nics.b!.seqs(), [10, 11]);
    assert.deepEqual(b.nics.c!.seqs(), []);
  });

  it('counts bytes and packets from the guest point of view', async () => {
    const b = await make(['a', 'b']);
    const f = seqFrame(macOf(2), macOf(1), 1, 100);
    b.nics.a!.send(f);
    b.nics.a!.send(f);
    await b.nics.b!.waitFrames(2);
    assert.deepEqual(b.sw.counters('a'), { rx_bytes: 0, tx_bytes: 2 * f.byteLength, rx_packets: 0, tx_packets: 2, errors: 0, dropped: 0 });
    assert.deepEqual(b.sw.counters('b'), { rx_bytes: 2 * f.byteLength, tx_bytes: 0, rx_packets: 2, tx_packets: 0, errors: 0, dropped: 0 });
  });

  it('ages MACs out and floods again', async () => {
    const b = await make(['a', 'b', 'c'], { macAgeingMs: 100 });
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 1));
    await processed(b, 'b', 1);
    await sleep(150);
    assert.equal(b.sw.macTable().length, 0);
    b.nics.a!.send(seqFrame(macOf(2), macOf(1), 2));
    await until(() => b.nics.c!.seqs().includes(2), 'flooded frame at c after ageing');
  });

  it('counts a runt frame as an error and keeps the port', async () => {
    const b = await make(['a', 'b']);
    b.nics.a!.send(Buffer.alloc(6));
    b.nics.a!.send(seqFrame(macOf(2), macOf(1), 5));
    await until(() => b.nics.b!.seqs().includes(5), 'frame after the runt');
    assert.equal(b.sw.counters('a').errors, 1);
    assert.equal(b.sw.drops().runt, 1);
  });
});

describe('switch ports', () => {
  it('closes only the port that sends an oversized length, with a reason', async () => {
    const disconnects: [string, string | undefined][] = [];
    const b = await make(['a', 'b', 'c'], { onPortDisconnect: (port, reason) => disconnects.push([port, reason]) });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(kMaxFrameBytes + 1, 0);
    b.nics.a!.sendRaw(header);
    await until(() => b.nics.a!.closed, 'a closed by the switch');
    assert.equal(b.sw.portInfo('a').connected, false);
    assert.match(b.sw.portInfo('a').lastError ?? '', new RegExp(`frame length ${kMaxFrameBytes + 1} exceeds the ${kMaxFrameBytes}-byte limit`));
    assert.equal(b.sw.counters('a').errors, 1);
    assert.deepEqual(disconnects.map(([p]) => p), ['a']);
    // The others still talk, and the port listens again for a restarted guest.
    b.nics.b!.send(seqFrame(macOf(3), macOf(2), 7));
    await until(() => b.nics.c!.seqs().includes(7), 'b to c after a closed');
    const again = await FakeNic.connect(b.sw.portInfo('a').socketPath);
    b.nics.a = again;
    await b.sw.whenConnected('a', 2000);
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 8));
    await until(() => again.seqs().includes(8), 'broadcast at the reconnected a');
  });

  it('refuses a second client on a port and keeps the first', async () => {
    const b = await make(['a', 'b']);
    const second = await FakeNic.connect(b.sw.portInfo('a').socketPath);
    await until(() => second.closed, 'second client refused');
    assert.match(b.sw.portInfo('a').lastError ?? '', /second connection/);
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 3));
    await until(() => b.nics.a!.seqs().includes(3), 'first client still served');
  });

  it('removes ports and closes idempotently, deleting socket files', async () => {
    const b = await make(['a', 'b']);
    const pathA = b.sw.portInfo('a').socketPath;
    await b.sw.removePort('a');
    assert.ok(!existsSync(pathA));
    assert.deepEqual(b.sw.portNames(), ['b']);
    await assert.rejects(b.sw.addPort('b', join(b.dir, 'other.sock')), /already has a port "b"/);
    await Promise.all([b.sw.close(), b.sw.close()]);
    assert.ok(!existsSync(join(b.dir, 'b.sock')));
    await assert.rejects(b.sw.addPort('c', join(b.dir, 'c.sock')), /bridge "lan" is closed/);
    assert.throws(() => b.sw.counters('a'), /has no port "a"/);
  });

  it('never removes a file that is not its socket', async () => {
    const b = await make([]);
    const path = join(b.dir, 'not-a-socket');
    writeFileSync(path, 'keep me');
    await assert.rejects(b.sw.addPort('x', path), /a file that is not a socket is in the way/);
    assert.equal(readFileSync(path, 'utf8'), 'keep me');
  });

  it('rejects a socket path longer than the unix limit', async () => {
    const b = await make([]);
    await assert.rejects(b.sw.addPort('x', join(b.dir, 'x'.repeat(120))), /over the 107-byte unix limit/);
    assert.deepEqual(b.sw.portNames(), []);
  });
});

describe('switch faults', () => {
  it('partitions symmetrically and heals', async () => {
    const events: FaultEvent[] = [];
    const b = await make(['a', 'b', 'c'], { onFault: (e) => events.push(e) });
    b.sw.partition('a', 'b');
    assert.ok(b.sw.isPartitioned('a', 'b'));
    assert.ok(b.sw.isPartitioned('b', 'a'));
    assert.ok(!b.sw.isPartitioned('a', 'c'));
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 2));
    await until(() => b.nics.c!.seqs().length === 2, 'both broadcasts at c');
    await processed(b, 'a', 1);
    await processed(b, 'b', 1);
    assert.equal(b.sw.counters('a').rx_packets, 0);
    assert.equal(b.sw.counters('b').rx_packets, 0);
    assert.equal(b.sw.drops().partition, 2);
    assert.equal(b.sw.counters('a').dropped, 1);
    b.sw.unpartition('a', 'b');
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 3));
    await until(() => b.nics.b!.seqs().includes(3), 'healed a to b');
    assert.deepEqual(events.map((e) => [e.kind, e.from, e.to, e.values.symmetric]), [
      ['partition', 'a', 'b', true],
      ['heal', 'a', 'b', true],
    ]);
    assert.equal(events[0]!.bridge, 'lan');
  });

  it('partitions one direction only', async () => {
    const b = await make(['a', 'b']);
    b.sw.partition({ from: 'a', to: 'b' });
    assert.ok(b.sw.isPartitioned({ from: 'a', to: 'b' }));
    assert.ok(!b.sw.isPartitioned({ from: 'b', to: 'a' }));
    assert.ok(b.sw.isPartitioned('a', 'b'));
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 2));
    await until(() => b.nics.a!.seqs().includes(2), 'b to a passes');
    await processed(b, 'a', 1);
    assert.deepEqual(b.nics.b!.seqs(), []);
    assert.equal(b.sw.counters('b').rx_packets, 0);
    b.sw.unpartition({ from: 'b', to: 'a' }); // lenient: never cut
    b.sw.unpartition({ from: 'a', to: 'b' });
    assert.ok(!b.sw.isPartitioned('a', 'b'));
  });

  it('partitions everything, also ports added later, until restoreAll', async () => {
    const b = await make(['a', 'b']);
    b.sw.partitionAll();
    assert.ok(b.sw.isPartitioned('a', 'b'));
    assert.ok(b.sw.isPartitioned('a', 'later'));
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    await processed(b, 'a', 1);
    assert.equal(b.sw.counters('b').rx_packets, 0);
    b.sw.restoreAll();
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 2));
    await until(() => b.nics.b!.seqs().includes(2), 'restored');
    assert.deepEqual(b.nics.b!.seqs(), [2]);
  });

  it('validates partition arguments', async () => {
    const b = await make([]);
    assert.throws(() => b.sw.partition('a', 'a'), /cannot partition "a" from itself/);
    assert.throws(() => b.sw.partition('a'), /partition endpoint must be a port name/);
    assert.throws(() => b.sw.partition({ from: '', to: 'b' }), /partition endpoint must be a port name/);
  });

  it('isolates one port from all others', async () => {
    const b = await make(['a', 'b', 'c']);
    b.sw.isolate('a');
    assert.ok(b.sw.isIsolated('a'));
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 2));
    await until(() => b.nics.c!.seqs().includes(2), 'b to c');
    await processed(b, 'a', 1);
    assert.equal(b.sw.counters('a').rx_packets, 0);
    assert.equal(b.sw.counters('b').rx_packets, 0);
    assert.equal(b.sw.drops().isolated, 3);
    b.sw.unisolate('a');
    assert.ok(!b.sw.isIsolated('a'));
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 3));
    await until(() => b.nics.a!.seqs().includes(3), 'unisolated');
  });

  it('drops and counts frames to and from a port whose link is down', async () => {
    const events: FaultEvent[] = [];
    const b = await make(['a', 'b'], { onFault: (e) => events.push(e) });
    b.sw.setLink('b', false);
    assert.equal(b.sw.portInfo('b').linkUp, false);
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    b.nics.b!.send(seqFrame(kBroadcast, macOf(2), 2));
    await until(() => b.sw.drops().link === 2, 'two link drops');
    assert.equal(b.sw.counters('b').dropped, 2);
    assert.equal(b.sw.counters('b').tx_packets, 0);
    assert.equal(b.sw.counters('b').rx_packets, 0);
    b.sw.setLink('b', true);
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 3));
    await until(() => b.nics.b!.seqs().includes(3), 'link up again');
    assert.deepEqual(b.nics.b!.seqs(), [3]);
    assert.deepEqual(events.map((e) => [e.kind, e.from, e.values.up]), [
      ['link', 'b', false],
      ['link', 'b', true],
    ]);
    assert.throws(() => b.sw.setLink('nope', false), /bridge "lan" has no port "nope"/);
  });
});

describe('switch policy (what a lab snapshot keeps)', () => {
  it('policy() then setPolicy() on another switch gives the same rules, cuts and isolation', async () => {
    const { Switch } = await import('../../src/net/switch.js');
    const a = new Switch({ name: 'a', seed: 1 });
    const b = new Switch({ name: 'b', seed: 1 });
    try {
      a.impair({ latencyMs: 40, jitterMs: 5 });
      a.impair({ dropRate: 0.25 }, { from: 'x', to: 'y' });
      a.partition({ from: 'x', to: 'z' });
      a.isolate('w');
      b.impair({ bandwidthBps: 1000 });
      b.partition('y', 'z');
      b.setPolicy(a.policy());
      assert.deepEqual(b.policy(), a.policy());
      assert.equal(b.impairment().latencyMs, 40);
      assert.equal(b.impairment().bandwidthBps, 0, 'what b had before is gone');
      assert.equal(b.effectiveImpairment('x', 'y').dropRate, 0.25);
      assert.ok(b.isPartitioned({ from: 'x', to: 'z' }) && !b.isPartitioned({ from: 'z', to: 'x' }));
      assert.ok(!b.isPartitioned('y', 'z'));
      assert.ok(b.isIsolated('w'));
      a.partitionAll();
      b.setPolicy(a.policy());
      assert.ok(b.isPartitioned('p', 'q'), 'partitionAll carries over');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
