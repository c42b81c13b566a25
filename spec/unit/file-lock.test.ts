// The cross-process lock file (src/vmm/file-lock.ts): waiting, stale takeover, and two real
// processes racing for one lock.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { acquireFileLock, FileLockTimeoutError, readFileLock, removeStaleFileLock } from '../../src/vmm/file-lock.js';

const lockModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/vmm/file-lock.js');

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

describe('file lock', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-lock-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes pid and holder; release removes it and is idempotent', async () => {
    const lock = path.join(dir, 'a', 'one.lock'); // the directory is created
    const release = await acquireFileLock(lock, { holder: 'spec/one.lua' });
    const [pid, holder] = (await readFile(lock, 'utf8')).split('\n');
    assert.equal(Number(pid), process.pid);
    assert.equal(holder, 'spec/one.lua');
    assert.deepEqual(await readFileLock(lock), { pid: process.pid, holder: 'spec/one.lua', stale: false });
    await release();
    await release();
    await assert.rejects(stat(lock), { code: 'ENOENT' });
    assert.equal(await readFileLock(lock), undefined);
  });

  it('a second acquirer (same process) waits, is told the holder once, and gets it after release', async () => {
    const lock = path.join(dir, 'wait.lock');
    const release = await acquireFileLock(lock, { holder: 'first' });
    const told: { pid: number; holder: string }[] = [];
    let got = false;
    const second = acquireFileLock(lock, { holder: 'second', pollMs: 5, onWait: (h) => told.push(h) })
      .then((r) => { got = true; return r; });
    await sleep(60);
    assert.equal(got, false);
    assert.deepEqual(told, [{ pid: process.pid, holder: 'first' }]);
    await release();
    const release2 = await second;
    assert.equal(told.length, 1);
    assert.equal((await readFile(lock, 'utf8')).split('\n')[1], 'second');
    await release2();
  });

  it('times out with an error naming the path, the holder and the fix', async () => {
    const lock = path.join(dir, 'timeout.lock');
    const release = await acquireFileLock(lock, { holder: 'db/fixtures/warm' });
    const err = await acquireFileLock(lock, { holder: 'x', timeoutMs: 30, pollMs: 5 }).catch((e: unknown) => e);
    await release();
    assert.ok(err instanceof FileLockTimeoutError);
    assert.equal(err.path, lock);
    assert.deepEqual(err.heldBy, { pid: process.pid, holder: 'db/fixtures/warm' });
    assert.match(err.message, new RegExp(`${lock}.*pid ${process.pid} \\(db/fixtures/warm\\).*kill ${process.pid}.*remove`));
  });

  it('takes over a lock whose pid is dead, without telling anyone it waited', async () => {
    const lock = path.join(dir, 'dead.lock');
    const pid = await deadPid();
    await writeFile(lock, `${pid}\ncrashed build\n`);
    assert.equal((await readFileLock(lock))?.stale, true);
    let told = false;
    const release = await acquireFileLock(lock, { holder: 'me', timeoutMs: 1000, onWait: () => { told = true; } });
    assert.equal(told, false);
    assert.equal(Number((await readFile(lock, 'utf8')).split('\n')[0]), process.pid);
    await release();
  });

  it('takes over a lock written on another machine or boot, even if that pid is alive here', async () => {
    const lock = path.join(dir, 'elsewhere.lock');
    await writeFile(lock, `${process.pid}\nci runner\nsome-other-host 00000000-0000-0000-0000-000000000000\n`);
    assert.equal((await readFileLock(lock))?.stale, true);
    const release = await acquireFileLock(lock, { holder: 'me', timeoutMs: 1000 });
    await release();
  });

  it('a lock without a pid is stale only once it is 10 s old', async () => {
    const lock = path.join(dir, 'nopid.lock');
    await writeFile(lock, '');
    assert.equal((await readFileLock(lock))?.stale, false);
    await assert.rejects(acquireFileLock(lock, { holder: 'me', timeoutMs: 20, pollMs: 5 }), FileLockTimeoutError);
    const old = new Date(Date.now() - 20_000);
    await utimes(lock, old, old);
    const release = await acquireFileLock(lock, { holder: 'me', timeoutMs: 1000 });
    await release();
  });

  it('removeStaleFileLock removes only dead owners', async () => {
    const lock = path.join(dir, 'clean.lock');
    await writeFile(lock, `${await deadPid()}\nx\n`);
    assert.equal(await removeStaleFileLock(lock), true);
    await assert.rejects(stat(lock), { code: 'ENOENT' });
    const release = await acquireFileLock(lock, { holder: 'live' });
    assert.equal(await removeStaleFileLock(lock), false);
    await stat(lock);
    await release();
  });

  it('two processes racing for one lock never hold it together', async () => {
    const lock = path.join(dir, 'race.lock');
    const counter = path.join(dir, 'counter');
    const inside = path.join(dir, 'inside');
    await writeFile(counter, '0');
    // Each child takes the lock N times; under it, it checks nobody else is inside, then does a
    // slow read-modify-write of the counter. A double holder shows as "inside" or a lost update.
    const script = `
      import { acquireFileLock } from ${JSON.stringify(lockModule)};
      import { open, readFile, rm, writeFile } from 'node:fs/promises';
      const [counter, inside, lock] = process.argv.slice(1);
      for (let i = 0; i < 15; i++) {
        const release = await acquireFileLock(lock, { holder: 'child ' + process.pid, pollMs: 2, timeoutMs: 5000 });
        const fh = await open(inside, 'wx').catch(() => { console.error('two holders'); process.exit(3); });
        await fh.close();
        const n = Number(await readFile(counter, 'utf8'));
        await new Promise((r) => setTimeout(r, 1));
        await writeFile(counter, String(n + 1));
        await rm(inside);
        await release();
      }`;
    const run = () => new Promise<void>((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '-e', script, counter, inside, lock], { timeout: 10_000 }, (err, _out, stderr) => {
        if (err) reject(new Error(`child failed: ${err.message} ${stderr}`));
        else resolve();
      });
    });
    await Promise.all([run(), run()]);
    assert.equal(await readFile(counter, 'utf8'), '30');
    await assert.rejects(stat(lock), { code: 'ENOENT' });
  });
});
