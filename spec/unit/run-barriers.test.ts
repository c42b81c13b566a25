import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BarrierError, Barriers, type SchedulerView } from '../../src/broker/barriers.js';

function view(slots: number, queued = 0): SchedulerView & { queuedNow: number } {
  const v = { slots, queuedNow: queued, queued: () => v.queuedNow };
  return v;
}

/** Resolves to 'released' or the error message, without letting a rejection go unhandled. */
const settle = (p: Promise<void>): Promise<string> => p.then(() => 'released', (e: Error) => e.message);

describe('Barriers', () => {
  it('releases everyone when the count is reached, then starts a new generation', async () => {
    const b = new Barriers(view(3));
    for (const id of [1, 2, 3]) b.sessionStarted(id, `f${id}.test.lua`);
    const first = settle(b.arrive(1, 'f1.test.lua', 'meet', 2, 5000));
    const second = settle(b.arrive(2, 'f2.test.lua', 'meet', 2, 5000));
    assert.equal(await first, 'released');
    assert.equal(await second, 'released');
    assert.deepEqual(b.waiting(), []);
    // The same name again: a fresh generation that needs 2 new arrivals.
    const again = settle(b.arrive(3, 'f3.test.lua', 'meet', 2, 5000));
    const late = settle(b.arrive(1, 'f1.test.lua', 'meet', 2, 5000));
    assert.equal(await again, 'released');
    assert.equal(await late, 'released');
  });

  it('times out saying how many arrived', async () => {
    const b = new Barriers(view(3));
    for (const id of [1, 2, 3]) b.sessionStarted(id, `f${id}.test.lua`);
    const started = Date.now();
    const p1 = settle(b.arrive(1, 'f1.test.lua', 'x', 3, 50));
    const p2 = settle(b.arrive(2, 'f2.test.lua', 'x', 3, 5000));
    const m1 = await p1;
    assert.match(m1, /^barrier `x`: 2 of 3 arrived within 50ms/);
    assert.ok(Date.now() - started < 1000);
    b.sessionEnded(2);
    assert.match(await p2, /the file ended while waiting/);
  });

  it('fails at once when the count exceeds the files that can run at once (-j)', async () => {
    const b = new Barriers(view(2, 5));
    b.sessionStarted(1, 'a.test.lua');
    const started = Date.now();
    const message = await settle(b.arrive(1, 'a.test.lua', 'big', 3, 60_000));
    assert.ok(Date.now() - started < 100, 'must not wait for the timeout');
    assert.match(message, /barrier `big` can never fill: 1 of 3 arrived; it needs 3 files waiting at the same time but at most 2 run at once \(-j 2\); raise -j/);
  });

  it('fails at once when too few files are left running or queued', async () => {
    const v = view(4, 0);
    const b = new Barriers(v);
    b.sessionStarted(1, 'a.test.lua');
    b.sessionStarted(2, 'b.test.lua');
    const message = await settle(b.arrive(1, 'a.test.lua', 'trio', 3, 60_000));
    assert.match(message, /1 of 3 arrived; only 1 other file is still running or queued/);

    // Enough files at first; the others finish without arriving: fail when the last one ends.
    const b2 = new Barriers(view(4, 1));
    b2.sessionStarted(1, 'a.test.lua');
    b2.sessionStarted(2, 'b.test.lua');
    const waiting = settle(b2.arrive(1, 'a.test.lua', 'pair', 2, 60_000));
    b2.sessionEnded(2);
    const v2 = (b2 as unknown as { _view: { queuedNow: number } })._view;
    v2.queuedNow = 0;
    b2.scheduleChanged();
    assert.match(await waiting, /can never fill: 1 of 2 arrived; no other file is still running or queued/);
  });

  it('waits while a queued file could still come', async () => {
    const v = view(2, 1);
    const b = new Barriers(v);
    b.sessionStarted(1, 'a.test.lua');
    const waiting = settle(b.arrive(1, 'a.test.lua', 'pair', 2, 60_000));
    // The queued file starts (queued drops, a session appears) and arrives.
    v.queuedNow = 0;
    b.sessionStarted(2, 'b.test.lua');
    b.scheduleChanged();
    await b.arrive(2, 'b.test.lua', 'pair', 2, 60_000);
    assert.equal(await waiting, 'released');
  });

  it('detects a deadlock: every running file waits and nothing queued can start', async () => {
    const v = view(2, 3);
    const b = new Barriers(v);
    b.sessionStarted(1, 'a.test.lua');
    b.sessionStarted(2, 'b.test.lua');
    const x = settle(b.arrive(1, 'a.test.lua', 'x', 2, 60_000));
    const y = settle(b.arrive(2, 'b.test.lua', 'y', 2, 60_000));
    const [mx, my] = await Promise.all([x, y]);
    assert.match(mx, /all 2 running files wait at barriers \(`x` 1\/2, `y` 1\/2\) and the 3 queued files cannot start \(-j 2\)/);
    assert.match(my, /can never fill/);
  });

  it('rejects a count that differs from the waiting parties, and bad arguments', async () => {
    const b = new Barriers(view(4, 2));
    b.sessionStarted(1, 'a.test.lua');
    b.sessionStarted(2, 'b.test.lua');
    const first = settle(b.arrive(1, 'a.test.lua', 'n', 2, 60_000));
    await assert.rejects(b.arrive(2, 'b.test.lua', 'n', 3, 1000), (e: Error) => e instanceof BarrierError && /b.test.lua asks for 3 parties but a.test.lua is waiting for 2/.test(e.message));
    await assert.rejects(b.arrive(2, 'b.test.lua', 'n', 0, 1000), /count must be an integer >= 1/);
    await assert.rejects(b.arrive(2, 'b.test.lua', '', 2, 1000), /name must be a non-empty string/);
    b.sessionEnded(1);
    assert.match(await first, /ended while waiting/);
    await assert.rejects(b.arrive(1, 'a.test.lua', 'n', 2, 1000), /already ended/);
  });

  it('a count of 1 releases at once', async () => {
    const b = new Barriers(view(1));
    await b.arrive(7, 'solo.test.lua', 'solo', 1, 1000);
  });
});
