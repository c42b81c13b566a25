// The fixture cache store (src/broker/fixture-cache.ts) with real zstd and real files: round
// trips, corruption found by size (lookup) and by checksum (extract), replacement, LRU eviction.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { FixtureCache, FixtureCorruptError, type FixtureEntry } from '../../src/broker/fixture-cache.js';
import { Prng } from '../../src/net/prng.js';

const kMiB = 1024 * 1024;

/** A snapshot-like tree: a sparse-ish 8 MiB `vm.snap`, small sidecars, a nested disk file. */
async function makeFixture(dir: string, seed: number): Promise<void> {
  await mkdir(path.join(dir, 'disks', 'a'), { recursive: true });
  const rng = new Prng(seed);
  const fh = await open(path.join(dir, 'vm.snap'), 'w');
  // Like booted guest RAM: the first 2 MiB a quarter random pages, then zeros with one random
  // page at 5 MiB; the last pages are zero too.
  for (let page = 0; page < 512; page += 1) {
    if (rng.nextUint32() % 4 === 0) await fh.write(randomBytes(4096), 0, 4096, page * 4096);
  }
  await fh.write(randomBytes(4096), 0, 4096, 5 * kMiB);
  await fh.truncate(8 * kMiB);
  await fh.close();
  await writeFile(path.join(dir, 'vm.snap.json'), JSON.stringify({ seed }));
  await writeFile(path.join(dir, 'vm.snap.console'), 'Linux version 6.1\nprovium-agent: ready\n');
  await writeFile(path.join(dir, 'disks', 'a', 'vm.snap.disk-data'), Buffer.concat([Buffer.alloc(100_000, seed), randomBytes(30_000)]));
  await writeFile(path.join(dir, 'empty'), '');
}

async function treeHashes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const d of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!d.isFile()) continue;
    const file = path.join(d.parentPath ?? d.path, d.name);
    out[path.relative(dir, file)] = createHash('sha256').update(await readFile(file)).digest('hex');
  }
  return out;
}

function assertEntry(x: FixtureEntry | { corrupt: string } | undefined): FixtureEntry {
  assert.ok(x !== undefined && !('corrupt' in x), `expected an entry, got ${JSON.stringify(x)}`);
  return x;
}

describe('fixture cache', () => {
  let root: string;
  let built: string;
  let cacheDir: string;
  let n = 0;
  const fresh = (): string => path.join(root, `out-${n++}`);

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'provium-fixture-cache-'));
    built = path.join(root, 'built');
    await makeFixture(built, 1);
  });
  beforeEach(async () => {
    cacheDir = path.join(root, `cache-${n++}`);
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('install, lookup, extract: byte-identical files, nested dirs, holes where zeros', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    const before = await treeHashes(built);
    const installed = await cache.install('k1', built, { kind: 'vm', path: 'db/fixtures/warm' });
    assert.deepEqual(await treeHashes(built), before, 'builtDir is left as it was');
    let total = 0;
    for (const rel of Object.keys(before)) total += (await stat(path.join(built, rel))).size;
    assert.equal(installed.bytes, total);
    assert.equal(installed.files.length, 5);
    assert.ok(installed.storedBytes < kMiB, `stored ${installed.storedBytes}`);
    assert.deepEqual(installed.meta, { kind: 'vm', path: 'db/fixtures/warm' });

    const found = assertEntry(await cache.lookup('k1'));
    assert.equal(found.id, installed.id);
    assert.equal(found.storedBytes, installed.storedBytes);
    assert.ok(found.lastUsedMs >= installed.lastUsedMs);
    const out = fresh();
    await cache.extract(found, out);
    assert.deepEqual(await treeHashes(out), before);
    const snap = await stat(path.join(out, 'vm.snap'));
    assert.equal(snap.size, 8 * kMiB);
    assert.ok(snap.blocks * 512 <= 3 * kMiB, `long zero runs should be holes (${snap.blocks * 512} bytes allocated)`);
    assert.deepEqual((await cache.list()).map((e) => e.key), ['k1']);
  });

  it('a RAM image (`*.ram`) is stored without our hash and extracted sparse by zstd; a bit flip in it is caught by zstd', async () => {
    const dir = path.join(root, 'with-ram');
    await mkdir(dir, { recursive: true });
    const image = path.join(dir, 'vm.snap.ram');
    const fh = await open(image, 'w');
    await fh.truncate(256 * kMiB);
    const data = randomBytes(64 * 1024);
    await fh.write(data, 0, data.length, 100 * kMiB);
    await fh.close();
    await chmod(image, 0o600);
    await writeFile(path.join(dir, 'vm.snap'), randomBytes(100_000));
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    const e = await cache.install('kr', dir, { kind: 'vm', path: 'db/fixtures/ram' });
    assert.equal(e.files.find((f) => f.path === 'vm.snap.ram')?.sha256, null);
    const out = fresh();
    await cache.extract(assertEntry(await cache.lookup('kr')), out);
    const st = await stat(path.join(out, 'vm.snap.ram'));
    assert.equal(st.size, 256 * kMiB);
    assert.equal(st.mode & 0o777, 0o600, 'the image keeps its mode');
    assert.ok(st.blocks * 512 < 4 * kMiB, `extracted with holes (${st.blocks * 512} bytes allocated)`);
    const back = await open(path.join(out, 'vm.snap.ram'), 'r');
    const got = Buffer.alloc(data.length);
    await back.read(got, 0, got.length, 100 * kMiB);
    await back.close();
    assert.deepEqual(got, data);

    const zst = path.join(e.dir, 'data', 'vm.snap.ram.zst');
    const z = await open(zst, 'r+');
    const at = Math.floor((await z.stat()).size / 2);
    const byte = Buffer.alloc(1);
    await z.read(byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0x10;
    await z.write(byte, 0, 1, at);
    await z.close();
    const err = await cache.extract(assertEntry(await cache.lookup('kr')), fresh()).catch((x: unknown) => x);
    assert.ok(err instanceof FixtureCorruptError, String(err));
    assert.match(err.message, /vm\.snap\.ram\.zst.*removed/);
  });

  it('lookup of an unknown key is undefined; a bad key is refused', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: kMiB });
    assert.equal(await cache.lookup('0123abcd'), undefined);
    await assert.rejects(cache.lookup('../etc'), /not a plain name/);
    assert.throws(() => new FixtureCache({ dir: cacheDir, maxBytes: 0 }), /maxBytes \(cache_max_size\).*got 0/);
  });

  it('a truncated stored file: lookup reports corrupt (by size) and the entry is gone', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    const e = await cache.install('k2', built, { kind: 'vm', path: 'db/fixtures/warm' });
    await truncate(path.join(e.dir, 'data', 'vm.snap.zst'), 1000);
    const r = await cache.lookup('k2');
    assert.ok(r !== undefined && 'corrupt' in r);
    assert.match(r.corrupt, /fixture `db\/fixtures\/warm` \(key k2\).*vm\.snap.*1000 bytes.*truncated/);
    await assert.rejects(stat(e.dir), { code: 'ENOENT' });
    assert.equal(await cache.lookup('k2'), undefined);
    assert.deepEqual(await readdir(cacheDir), [], 'no trash left behind');
  });

  it('a missing manifest is corrupt too', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    const e = await cache.install('k2m', built, {});
    await rm(path.join(e.dir, 'manifest.json'));
    const r = await cache.lookup('k2m');
    assert.ok(r !== undefined && 'corrupt' in r && /manifest\.json is missing/.test(r.corrupt));
    assert.equal(await cache.lookup('k2m'), undefined);
  });

  it('a bit flip inside a compressed file: extract throws FixtureCorruptError, removes the entry and its output', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    const e = await cache.install('k3', built, { kind: 'vm', path: 'db/fixtures/warm' });
    const zst = path.join(e.dir, 'data', 'vm.snap.zst');
    const fh = await open(zst, 'r+');
    const byte = Buffer.alloc(1);
    const at = Math.floor((await fh.stat()).size / 2);
    await fh.read(byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0x10;
    await fh.write(byte, 0, 1, at);
    await fh.close();

    const found = assertEntry(await cache.lookup('k3')); // same size: lookup cannot tell
    const out = fresh();
    const err = await cache.extract(found, out).catch((x: unknown) => x);
    assert.ok(err instanceof FixtureCorruptError, String(err));
    assert.equal(err.key, 'k3');
    assert.equal(err.path, zst);
    assert.equal(err.removed, true);
    assert.match(err.message, /fixture `db\/fixtures\/warm` \(key k3\) is corrupt: .*vm\.snap\.zst.*removed/);
    await assert.rejects(stat(e.dir), { code: 'ENOENT' });
    await assert.rejects(stat(path.join(out, 'vm.snap')), { code: 'ENOENT' });
  });

  it('a changed small (uncompressed) file is caught by its sha256', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    const e = await cache.install('k3r', built, {});
    await writeFile(path.join(e.dir, 'data', 'vm.snap.json.raw'), JSON.stringify({ seed: 9 })); // same length
    const err = await cache.extract(assertEntry(await cache.lookup('k3r')), fresh()).catch((x: unknown) => x);
    assert.ok(err instanceof FixtureCorruptError && /does not match the manifest/.test(err.message), String(err));
    assert.equal(await cache.lookup('k3r'), undefined);
  });

  it('reinstalling a key replaces the entry; an extract of the old one is refused without removing the new', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    const first = await cache.install('k4', built, { v: 1 });
    const other = path.join(root, 'built-2');
    await makeFixture(other, 2);
    const second = await cache.install('k4', other, { v: 2 });
    assert.notEqual(second.id, first.id);
    const found = assertEntry(await cache.lookup('k4'));
    assert.deepEqual(found.meta, { v: 2 });
    const out = fresh();
    await cache.extract(found, out);
    assert.deepEqual(await treeHashes(out), await treeHashes(other));

    const stale = await cache.extract(first, fresh()).catch((x: unknown) => x);
    assert.ok(stale instanceof FixtureCorruptError && stale.removed === false, String(stale));
    assert.equal(assertEntry(await cache.lookup('k4')).id, second.id);
    assert.deepEqual((await readdir(cacheDir)).sort(), ['k4']);
  });

  it('evicts least recently used entries down to maxBytes, never the one just installed', async () => {
    const probe = new FixtureCache({ dir: path.join(root, 'probe'), maxBytes: 1024 * kMiB });
    const size = (await probe.install('p', built, {})).storedBytes;
    const evicted: string[] = [];
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: Math.floor(size * 2.5), onEvict: (e) => evicted.push(e.key) });
    await cache.install('a', built, {});
    await cache.install('b', built, {});
    await new Promise((r) => setTimeout(r, 5));
    assertEntry(await cache.lookup('a')); // a is now more recent than b
    await cache.install('c', built, {});
    assert.deepEqual(evicted, ['b']);
    assert.deepEqual((await cache.list()).map((e) => e.key).sort(), ['a', 'c']);

    // An entry bigger than the whole cache still stays while it is the newest.
    const tiny = new FixtureCache({ dir: cacheDir, maxBytes: 1 });
    await tiny.install('d', built, {});
    assert.deepEqual((await tiny.list()).map((e) => e.key), ['d']);
    assert.deepEqual(await tiny.evict().then((l) => l.map((e) => e.key)), ['d']);
    assert.deepEqual(await tiny.list(), []);
  });

  it('clean removes every entry, left-over temp dirs and dead locks, but not live locks', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: 1024 * kMiB });
    await cache.install('e1', built, {});
    await cache.install('e2', built, {});
    await mkdir(path.join(cacheDir, '.tmp-999999999-abcd-e3', 'data'), { recursive: true });
    await writeFile(path.join(cacheDir, 'e9.lock'), '999999999\ndead\n');
    const release = await cache.lock('e1', { holder: 'me' });
    await cache.clean();
    assert.deepEqual(await readdir(cacheDir), ['e1.lock']);
    await release();
    assert.deepEqual(await cache.list(), []);
  });

  it('lock: a second taker of one key waits and hears who holds it', async () => {
    const cache = new FixtureCache({ dir: cacheDir, maxBytes: kMiB });
    const release = await cache.lock('k5', { holder: 'spec/a.lua' });
    const heard: string[] = [];
    const second = cache.lock('k5', { holder: 'spec/b.lua', pollMs: 5, onWait: (h) => heard.push(h.holder) });
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(heard, ['spec/a.lua']);
    await release();
    await (await second)();
    assert.ok((await readdir(cacheDir)).every((name) => !name.endsWith('.lock')));
  });
});
