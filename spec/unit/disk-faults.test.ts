import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FaultPolicy, tornLength, type FaultEvent } from '../../src/disk/faults.js';
import { qemuIo, RawClient, rig, seeded, type Rig } from './disk-helpers.js';

const EIO = 5;
const kIoError = /Input\/output error/;

describe('disk: fault policy (unit)', () => {
  it('failAfter counts requests of its target from when it was set', () => {
    const p = new FaultPolicy(seeded(1));
    p.failAfter(2, 'write');
    assert.equal(p.check('read', 0, 512).fail, false);
    assert.equal(p.check('write', 0, 512).fail, false);
    assert.equal(p.check('flush', 0, 0).fail, false);
    assert.equal(p.check('read', 0, 512).fail, false);
    assert.equal(p.check('write_zeroes', 0, 512).fail, true);
    assert.equal(p.check('write', 0, 512).fail, true);
    p.failAfter(1);
    assert.equal(p.check('read', 0, 512).fail, false);
    assert.equal(p.check('read', 0, 512).fail, true);
    assert.throws(() => p.failAfter(-1), /n must be/);
  });

  it('failRange matches requests touching the sectors, and flush never', () => {
    const p = new FaultPolicy(seeded(1));
    p.failRange(10, 2); // bytes 5120..6143
    assert.equal(p.check('read', 0, 5120).fail, false);
    assert.equal(p.check('read', 0, 5121).fail, true);
    assert.equal(p.check('write', 6143, 1).fail, true);
    assert.equal(p.check('write', 6144, 512).fail, false);
    assert.equal(p.check('trim', 0, 1 << 20).fail, true);
    assert.equal(p.check('flush', 0, 0).fail, false);
    assert.equal(p.check('read', 5120, 0).fail, false);
    assert.throws(() => p.failRange(0, 0), /count/);
  });

  it('random EIO draws from the injected random only while a rate is set, reproducibly', () => {
    const draws = (seed: number): boolean[] => {
      const p = new FaultPolicy(seeded(seed));
      p.check('read', 0, 512);
      p.randomEio(0.5);
      return Array.from({ length: 32 }, () => p.check('read', 0, 512).fail);
    };
    const a = draws(42);
    assert.deepEqual(draws(42), a);
    assert.ok(a.includes(true) && a.includes(false));
    let calls = 0;
    const p = new FaultPolicy(() => (calls++, 0));
    p.check('read', 0, 512);
    assert.equal(calls, 0);
    assert.throws(() => p.randomEio(2), /rate/);
  });

  it('a torn write is spent on the next write that succeeds, cut at a sector boundary', () => {
    assert.equal(tornLength(0, 4096), 2048);
    assert.equal(tornLength(0, 512), 0);
    assert.equal(tornLength(512, 1536), 512);
    assert.equal(tornLength(100, 2000), 924); // the cut is at absolute sector 2 (byte 1024)
    const p = new FaultPolicy(seeded(1));
    p.tornWrite();
    assert.equal(p.check('read', 0, 4096).tornBytes, undefined);
    assert.equal(p.check('write', 0, 4096).tornBytes, 2048);
    assert.equal(p.check('write', 0, 4096).tornBytes, undefined);
  });

  it('describe() shows the policy, clear() resets it, and every change is notified', () => {
    const seen: Array<[string, unknown]> = [];
    const p = new FaultPolicy(seeded(1), (kind, values) => seen.push([kind, values]));
    p.failReads();
    p.failAfter(3, 'read');
    p.failRange(8, 4);
    p.delay(25);
    assert.deepEqual(p.describe(), {
      fail_reads: true,
      fail_writes: false,
      fail_after: 3,
      fail_after_target: 'read',
      fail_range_sector: 8,
      fail_range_count: 4,
      delay_ms: 25,
      torn_write: false,
      random_eio_rate: 0,
    });
    p.clear();
    assert.deepEqual(p.describe(), new FaultPolicy(seeded(1)).describe());
    assert.deepEqual(
      seen.map((s) => s[0]),
      ['fail_reads', 'fail_after', 'fail_range', 'delay', 'clear'],
    );
    assert.deepEqual(seen[1]![1], { n: 3, target: 'read' });
  });
});

describe('disk: faults as the guest sees them (qemu-io)', () => {
  let r: Rig;
  before(async () => {
    r = await rig();
    await r.addDisk('f');
  });
  after(() => r.close());

  const io = (cmds: string[]) => qemuIo(r.sock, 'f', cmds);
  const policy = () => r.disks.get('f')!.faults;

  it('failReads and failWrites give I/O errors; clear() restores the disk', async () => {
    assert.ok((await io(['write -P 0x61 0 64k'])).ok);
    policy().failReads();
    const rd = await io(['read -P 0x61 0 4k']);
    assert.match(rd.out, /read failed: Input\/output error/);
    policy().clear();
    policy().failWrites();
    const wr = await io(['write -P 0x62 0 4k']);
    assert.match(wr.out, /write failed: Input\/output error/);
    policy().clear();
    const ok = await io(['read -P 0x61 0 64k']);
    assert.ok(ok.ok && !kIoError.test(ok.out), ok.out);
  });

  it('failAfter(n): the n+1-th request fails', async () => {
    policy().failAfter(2, 'read');
    const res = await io(['read 0 4k', 'read 4k 4k', 'read 8k 4k', 'read 12k 4k']);
    policy().clear();
    assert.equal(res.out.match(/read 4096\/4096 bytes/g)?.length, 2, res.out);
    assert.equal(res.out.match(/read failed: Input\/output error/g)?.length, 2, res.out);
  });

  it('failRange fails only requests touching the sectors', async () => {
    policy().failRange(16, 8); // bytes 8k..12k
    const res = await io(['read 0 8k', 'read 8k 512', 'write -P 1 11k 2k', 'write -P 1 12k 4k']);
    policy().clear();
    assert.match(res.out, /read 8192\/8192 bytes at offset 0/);
    assert.match(res.out, /read failed: Input\/output error/);
    assert.match(res.out, /write failed: Input\/output error/);
    assert.match(res.out, /wrote 4096\/4096 bytes at offset 12288/);
  });

  it('random EIO at rate 1 fails every request', async () => {
    policy().randomEio(1);
    const res = await io(['read 0 4k']);
    policy().clear();
    assert.match(res.out, kIoError);
  });

  it('a torn write lands only up to a sector boundary, then reports success', async () => {
    assert.ok((await io(['write -P 0x11 64k 4k'])).ok);
    policy().tornWrite();
    const res = await io(['write -P 0x22 64k 4k']);
    assert.ok(res.ok && /wrote 4096\/4096/.test(res.out), res.out);
    const check = await io(['read -P 0x22 64k 2k', 'read -P 0x11 66k 2k']);
    assert.ok(check.ok && !/mismatch/.test(check.out), check.out);
  });

  it('delay(ms) holds every answer at least that long, pipelined requests waiting together', async () => {
    policy().delay(150);
    const t0 = performance.now();
    const res = await io(['read 0 4k']);
    const elapsed = performance.now() - t0;
    assert.ok(res.ok, res.out);
    assert.ok(elapsed >= 150, `qemu-io took ${elapsed} ms`);
    const c = await RawClient.connect(r.sock);
    await c.open('f');
    const t1 = performance.now();
    for (let i = 0; i < 8; i++) c.request(0, i * 4096, 4096);
    for (let i = 0; i < 8; i++) {
      const rep = await c.reply(4096);
      assert.equal(rep.error, 0);
      assert.ok(performance.now() - t1 >= 150);
    }
    const total = performance.now() - t1;
    policy().clear();
    // Serial delays would take 8 × 150 ms; concurrent ones about 150 ms. Half-way leaves room for a loaded machine.
    assert.ok(total < 4 * 150, `8 pipelined reads took ${total} ms`);
    c.destroy();
  });

  it('errors reach a raw client as EIO replies, and host access bypasses the policy', async () => {
    const disk = r.disks.get('f')!;
    policy().failReads();
    policy().failWrites();
    const c = await RawClient.connect(r.sock);
    await c.open('f');
    assert.equal((await c.read(0, 512)).error, EIO);
    assert.equal((await c.write(0, Buffer.alloc(512, 0x33))).error, EIO);
    assert.equal((await c.flush()).error, EIO);
    await disk.writeSectors(0, Buffer.alloc(512, 0x44));
    assert.deepEqual(await disk.readSectors(0, 1), Buffer.alloc(512, 0x44));
    policy().clear();
    assert.deepEqual((await c.read(0, 512)).data, Buffer.alloc(512, 0x44));
    c.destroy();
  });

  it('every policy change reached onFault with the export name', () => {
    const kinds = new Set(r.events.map((e: FaultEvent) => e.kind));
    for (const k of ['fail_reads', 'fail_writes', 'fail_after', 'fail_range', 'random_eio', 'torn_write', 'delay', 'clear']) {
      assert.ok(kinds.has(k as FaultEvent['kind']), k);
    }
    assert.ok(r.events.every((e) => e.export === 'f'));
  });
});
