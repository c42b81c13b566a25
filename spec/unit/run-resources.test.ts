import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ResourceError, ResourcePool, sizePool } from '../../src/broker/resources.js';
import { EventBus } from '../../src/events/bus.js';
import type { AnyEvent } from '../../src/protocol/events.js';

const M = 1024 * 1024;
const G = 1024 * M;
const amount = (memMiB: number, cpus: number) => ({ memory_bytes: memMiB * M, cpus });

function setup(totalMiB: number, cpus: number) {
  const bus = new EventBus();
  const events: AnyEvent[] = [];
  bus.subscribe((e) => events.push(e));
  return { pool: new ResourcePool(amount(totalMiB, cpus), bus), events, kinds: () => events.map((e) => e.kind) };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('ResourcePool', () => {
  it('grants what fits and tracks used/available', async () => {
    const { pool } = setup(1024, 4);
    const release = await pool.acquire(1, 'a', amount(256, 1));
    assert.deepEqual(pool.state(), { used: amount(256, 1), available: amount(768, 3) });
    release();
    release(); // idempotent
    assert.deepEqual(pool.state().used, amount(0, 0));
  });

  it('makes a boot wait while the pool is full (resource_wait once: the file is running), then grants in FIFO order', async () => {
    const { pool, events } = setup(512, 2);
    const r1 = await pool.acquire(1, 'a', amount(512, 1));
    const order: string[] = [];
    const p2 = pool.acquire(2, 'b', amount(256, 1)).then((rel) => (order.push('b'), rel));
    const p3 = pool.acquire(3, 'c', amount(256, 1)).then((rel) => (order.push('c'), rel));
    const p2again = pool.acquire(2, 'b', amount(256, 1)).then((rel) => (order.push('b2'), rel));
    await tick();
    assert.deepEqual(order, []);
    assert.equal(pool.waiting, 3);
    // file_blocked belongs before dispatch; a boot waits inside a running file.
    assert.equal(events.filter((e) => e.kind === 'file_blocked').length, 0);
    const blocked = events.filter((e) => e.kind === 'resource_wait');
    assert.deepEqual(blocked.map((e) => (e.payload as { path: string }).path), ['b', 'c']);
    assert.deepEqual((blocked[0]!.payload as { waiting_for: unknown }).waiting_for, amount(256, 1));
    r1();
    const [rel2, rel3] = await Promise.all([p2, p3]);
    assert.deepEqual(order, ['b', 'c']);
    rel2();
    const rel4 = await p2again;
    assert.deepEqual(order, ['b', 'c', 'b2']);
    rel3();
    rel4();
  });

  it('reserves a declared claim before dispatch (file_blocked while it waits), and lab:claim then finds it granted', async () => {
    const { pool, kinds } = setup(1024, 4);
    const first = await pool.acquire(1, 'a', amount(768, 1));
    let reserved = false;
    const reservation = pool.reserve(2, 'b', amount(512, 1)).then(() => (reserved = true));
    await tick();
    assert.equal(reserved, false);
    assert.deepEqual(kinds(), ['file_blocked']);
    first();
    await reservation;
    pool.dispatched(2, 'b');
    assert.deepEqual(kinds(), ['file_blocked', 'claim_acquired']);
    // The file's own lab:claim of the same amount takes nothing more and emits nothing.
    await pool.claim(2, 'b', amount(512, 1));
    assert.deepEqual(pool.state().used, amount(512, 1));
    assert.deepEqual(kinds(), ['file_blocked', 'claim_acquired']);
    pool.releaseSession(2);
    assert.deepEqual(kinds(), ['file_blocked', 'claim_acquired', 'claim_released']);
    assert.deepEqual(pool.state().used, amount(0, 0));
  });

  it('rejects at once what can never fit, naming the pool and the fix', async () => {
    const { pool } = setup(1024, 2);
    await assert.rejects(pool.acquire(1, 'big.test.lua', amount(2048, 1)), (e: Error) => {
      assert.ok(e instanceof ResourceError);
      assert.match(e.message, /big.test.lua: a VM of 2G memory, 1 cpu can never fit: the pool has 1G memory, 2 cpus in total; .*raise --mem/);
      return true;
    });
    await assert.rejects(pool.acquire(1, 'x', amount(64, 3)), /can never fit/);
    // Holding part of the pool itself: what is left can never be enough.
    const held = await pool.acquire(2, 'holder.test.lua', amount(768, 1));
    await assert.rejects(pool.acquire(2, 'holder.test.lua', amount(512, 1)), /this file already holds 768M memory, 1 cpu of the pool's 1G memory, 2 cpus/);
    held();
  });

  it('claims once, draws boots from the claim first, and pairs the claim events', async () => {
    const { pool, events } = setup(1024, 4);
    await pool.claim(1, 'c.test.lua', amount(512, 2));
    assert.deepEqual(pool.state().used, amount(512, 2));
    // Inside the claim: no new usage.
    const r1 = await pool.acquire(1, 'c.test.lua', amount(256, 1));
    assert.deepEqual(pool.state().used, amount(512, 2));
    // Beyond it: only the excess is drawn from the pool.
    const r2 = await pool.acquire(1, 'c.test.lua', amount(512, 2));
    assert.deepEqual(pool.state().used, amount(768, 3));
    r2();
    r1();
    assert.deepEqual(pool.state().used, amount(512, 2));
    await assert.rejects(pool.claim(1, 'c.test.lua', amount(1, 0)), /claim already taken/);
    pool.releaseSession(1);
    pool.releaseSession(1);
    assert.deepEqual(pool.state().used, amount(0, 0));
    assert.deepEqual(events.filter((e) => e.kind.startsWith('claim_')).map((e) => e.kind), ['claim_acquired', 'claim_released']);
  });

  it('fails the waits of a file that ended and gives back everything it held', async () => {
    const { pool } = setup(512, 2);
    const hold = await pool.acquire(1, 'a', amount(512, 1));
    const waiting = pool.acquire(2, 'b', amount(256, 1));
    pool.releaseSession(2);
    await assert.rejects(waiting, /b: the file ended while waiting for resources/);
    pool.releaseSession(1);
    hold(); // after the session release: harmless
    assert.deepEqual(pool.state().used, amount(0, 0));
  });

  it('honours an abort signal while waiting', async () => {
    const { pool } = setup(256, 1);
    const hold = await pool.acquire(1, 'a', amount(256, 1));
    const ac = new AbortController();
    const waiting = pool.acquire(2, 'b', amount(256, 1), ac.signal);
    ac.abort();
    await assert.rejects(waiting, /cancelled while waiting/);
    hold();
    assert.equal(pool.waiting, 0);
  });

  it('breaks a hold-and-wait deadlock instead of hanging', async () => {
    const { pool } = setup(1024, 4);
    const a = await pool.acquire(1, 'a.test.lua', amount(512, 1));
    const b = await pool.acquire(2, 'b.test.lua', amount(512, 1));
    const aMore = pool.acquire(1, 'a.test.lua', amount(256, 1));
    const bMore = pool.acquire(2, 'b.test.lua', amount(256, 1));
    // b's wait completes the cycle: b is failed, with a message that says what to do.
    await assert.rejects(bMore, /b.test.lua: resource deadlock: this file holds 512M memory, 1 cpu and waits for 256M memory, 1 cpu more.*lab:claim/);
    b();
    const rel = await aMore;
    rel();
    a();
  });
});

describe('sizePool', () => {
  it('derives the pool and the default -j from memory, cpus and the overcommit', () => {
    assert.deepEqual(sizePool({ memoryBytes: 16 * G, cpus: 4, cpuOvercommit: 1 }), { total: { memory_bytes: 16 * G, cpus: 4 }, defaultJobs: 4 });
    assert.equal(sizePool({ memoryBytes: 1 * G, cpus: 8, cpuOvercommit: 1 }).defaultJobs, 2);
    assert.equal(sizePool({ memoryBytes: 16 * G, cpus: 2, cpuOvercommit: 2 }).total.cpus, 4);
    assert.equal(sizePool({ memoryBytes: 16 * G, cpus: 2, cpuOvercommit: 100 }).total.cpus, 16);
    assert.equal(sizePool({ memoryBytes: 100 * M, cpus: 1, cpuOvercommit: 0.1 }).defaultJobs, 1);
    // Overcommit admits more vCPUs, but files at once stay one per host cpu.
    assert.deepEqual(sizePool({ memoryBytes: 16 * G, cpus: 2, cpuOvercommit: 4 }), { total: { memory_bytes: 16 * G, cpus: 8 }, defaultJobs: 2 });
  });
});

describe('ResourcePool room held for later (warm spares)', () => {
  it('tryAcquire takes only free room, never while someone waits', async () => {
    const { pool } = setup(512, 2);
    const spare = pool.tryAcquire(0, '(warm pool)', amount(256, 1));
    assert.ok(spare, 'free room is taken');
    assert.equal(pool.tryAcquire(0, '(warm pool)', amount(512, 1)), undefined, 'more than is free is refused');
    const r1 = await pool.acquire(1, 'a', amount(256, 1));
    const waiting = pool.acquire(2, 'b', amount(256, 1));
    await tick();
    spare!();
    const r2 = await waiting;
    assert.equal(pool.tryAcquire(0, '(warm pool)', amount(1, 0)), undefined, 'nothing is free');
    r1();
    r2();
  });

  it('a boot that would wait reclaims spares first, synchronously', async () => {
    const { pool, kinds } = setup(512, 2);
    const spares = [pool.tryAcquire(0, '(warm pool)', amount(256, 1))!, pool.tryAcquire(0, '(warm pool)', amount(256, 1))!];
    let reclaimed = 0;
    pool.setReclaimer(() => {
      const release = spares.pop();
      if (!release) return false;
      release();
      reclaimed++;
      return true;
    });
    const r = await pool.acquire(1, 'a', amount(384, 1));
    assert.equal(reclaimed, 2, 'both spares went: one alone was not enough');
    assert.ok(!kinds().includes('file_blocked'), 'the file never waited');
    r();
  });
});
