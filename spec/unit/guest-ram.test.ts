// Guest RAM in a file (src/vmm/guest-ram.ts): the argv, the choice between a shared tmpfs file, a
// private map of a snapshot's image and anonymous memory, and the real CLI on real guests both with
// a RAM dir (snapshots get a sparse `.ram` image) and without one (whole-stream snapshots), each
// leaving nothing in the RAM dir; and a saved file linked, or copied sparse across file systems.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { minimalProfile } from '../../src/config/profiles.js';
import { buildQemuArgs } from '../../src/vmm/cmdline.js';
import { linkOrCopySparse, prepareGuestRam, ramImageOf } from '../../src/vmm/guest-ram.js';
import { assertNothingLeft, start } from './faults-run.js';

const profile = minimalProfile({ kernel: '/k', initrd: '/i', agentOverlay: '/a' } as never);
const ctx = { accel: 'tcg' as const, initrdPath: '/i', qmpSocketPath: '/q', agentSocketPath: '/ag', consoleSocketPath: '/c', consoleLogPath: '/l', tscKhz: undefined };

async function withRamDir<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env['PROVIUM_RAM_DIR'];
  process.env['PROVIUM_RAM_DIR'] = dir;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env['PROVIUM_RAM_DIR'];
    else process.env['PROVIUM_RAM_DIR'] = before;
  }
}

describe('guest RAM: the argv', () => {
  const spec = { name: 'v', profile, memoryBytes: 512 * 1024 * 1024, cpus: 1 };

  it('anonymous memory has no backend', () => {
    const a = buildQemuArgs(spec, ctx);
    assert.ok(!a.some((x) => x.includes('memory-backend')));
  });

  it('a RAM file is the machine memory backend, shared or private, with the guest size', () => {
    const shared = buildQemuArgs(spec, { ...ctx, ram: { path: '/dev/shm/provium-ram-1-a,b', shared: true } });
    assert.ok(shared.includes('q35,accel=tcg,memory-backend=pc.ram'));
    assert.ok(shared.includes('memory-backend-file,id=pc.ram,size=512M,mem-path=/dev/shm/provium-ram-1-a,,b,share=on'));
    const priv = buildQemuArgs(spec, { ...ctx, ram: { path: '/c/x.snap.ram', shared: false } });
    assert.ok(priv.includes('memory-backend-file,id=pc.ram,size=512M,mem-path=/c/x.snap.ram,share=off'));
  });
});

describe('guest RAM: where it lives', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-ram-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a VM without sharedRam or an image gets anonymous memory', async () => {
    assert.deepEqual(await withRamDir(dir, () => prepareGuestRam({ memoryBytes: 1 << 20 })), { fillFirst: [] });
  });

  it('a shared file in the RAM dir, named with the pid; a restore fills it from the image, sparse, before QEMU runs', async () => {
    const image = path.join(dir, 'x.snap.ram');
    // 64 MiB with 4 KiB of data in the middle.
    const fh = await open(image, 'w');
    await fh.truncate(64 << 20);
    await fh.write(Buffer.alloc(4096, 7), 0, 4096, 32 << 20);
    await fh.close();
    const ramDir = path.join(dir, 'shm');
    await mkdir(ramDir);
    const fresh = await withRamDir(ramDir, () => prepareGuestRam({ memoryBytes: 1 << 20, sharedRam: true }));
    assert.equal(fresh.ram?.shared, true);
    assert.deepEqual(fresh.fillFirst, []);
    assert.match(path.basename(fresh.ram!.path), new RegExp(`^provium-ram-${process.pid}-[0-9a-f]+$`));
    const restored = await withRamDir(ramDir, () => prepareGuestRam({ memoryBytes: 1 << 20, sharedRam: true, ramImage: image }));
    assert.equal(restored.ram?.shared, true);
    // The prefix copies, then runs the command after it with its arguments intact.
    const [cmd, ...rest] = [...restored.fillFirst, 'printf', '%s|', 'a b', '"c"'];
    const out = await new Promise<string>((resolve, reject) => execFile(cmd!, rest, (err, stdout) => (err ? reject(err) : resolve(stdout))));
    assert.equal(out, 'a b|"c"|');
    const st = await stat(restored.ram!.path);
    assert.equal(st.size, 64 << 20);
    assert.ok(st.blocks * 512 < 1 << 20, `the copy keeps its holes (${st.blocks * 512} bytes allocated)`);
    assert.deepEqual((await readFile(restored.ram!.path)).subarray(32 << 20, (32 << 20) + 4096), Buffer.alloc(4096, 7));
  });

  it('without a RAM dir (none) or without room in it, a restore maps the image privately', async () => {
    const image = path.join(dir, 'y.snap.ram');
    await writeFile(image, 'x');
    assert.deepEqual(await withRamDir('none', () => prepareGuestRam({ memoryBytes: 1 << 20, sharedRam: true, ramImage: image })), { ram: { path: image, shared: false }, fillFirst: [] });
    assert.deepEqual(await withRamDir('none', () => prepareGuestRam({ memoryBytes: 1 << 20, sharedRam: true })), { fillFirst: [] });
    const tooBig = Number.MAX_SAFE_INTEGER;
    assert.deepEqual(await withRamDir(dir, () => prepareGuestRam({ memoryBytes: tooBig, ramImage: image })), { ram: { path: image, shared: false }, fillFirst: [] });
  });
});

describe('a saved file shared or copied (linkOrCopySparse)', () => {
  it('links on one file system, and copies, holes kept, across two', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-link-test-'));
    const shm = await mkdtemp('/dev/shm/provium-link-test-');
    try {
      const saved = path.join(dir, 'saved');
      const f = await open(saved, 'w');
      await f.write(Buffer.from('saved contents'), 0, 14, 1 << 20);
      await f.truncate(4 << 20);
      await f.close();
      const linked = path.join(dir, 'linked');
      await linkOrCopySparse(saved, linked);
      assert.equal((await stat(linked)).ino, (await stat(saved)).ino, 'the same file');
      const copied = path.join(shm, 'copied');
      await linkOrCopySparse(saved, copied);
      const st = await stat(copied);
      assert.notEqual(st.ino, (await stat(saved)).ino);
      assert.equal(st.size, 4 << 20);
      assert.ok(st.blocks * 512 < 1 << 20, `sparse: ${st.blocks * 512} bytes allocated`);
      assert.deepEqual(await readFile(copied), await readFile(saved));
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(shm, { recursive: true, force: true });
    }
  });
});

describe('guest RAM: snapshots and restores on real guests, with and without a RAM dir', () => {
  let dir: string;
  let ramDir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-guest-ram-'));
    // A tmpfs where there is one (the default is /dev/shm); the test's own, so it can be checked empty.
    ramDir = await mkdtemp(path.join((await stat('/dev/shm').then(() => '/dev/shm', () => os.tmpdir())), 'provium-guest-ram-'));
    await mkdir(path.join(dir, 't'));
    await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
    await writeFile(
      path.join(dir, 't/ram.test.lua'),
      [
        'test("a snapshot, a restore, and a snapshot of the clone restored again", function(t)',
        '  local dir = os.getenv("SNAP_DIR")',
        '  local vm = provium:vm("v", "minimal", {memory = "192M"}):boot()',
        '  vm:run("echo first > /root/mark && dd if=/dev/urandom of=/root/blob bs=1M count=8 2>/dev/null"):assert_ok()',
        '  local sum = vm:run("md5sum /root/blob"):assert_ok().stdout',
        '  vm:snapshot(dir .. "/one")',
        '  vm:shutdown()',
        '  local clone = provium:vm("c", "minimal", {memory = "192M"})',
        '  clone:restore(dir .. "/one")',
        '  t:assert_eq(clone:read_file("/root/mark"), "first\\n")',
        '  t:assert_eq(clone:run("md5sum /root/blob").stdout, sum)',
        '  clone:run("echo second >> /root/mark"):assert_ok()',
        '  clone:snapshot(dir .. "/two")',
        '  clone:shutdown()',
        '  local again = provium:vm("a", "minimal", {memory = "192M"})',
        '  again:restore(dir .. "/two")',
        '  t:assert_eq(again:read_file("/root/mark"), "first\\nsecond\\n")',
        '  t:assert_eq(again:run("md5sum /root/blob").stdout, sum)',
        'end)',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(ramDir, { recursive: true, force: true });
  });

  async function run(env: Record<string, string>, snapDir: string): Promise<void> {
    await mkdir(snapDir, { recursive: true });
    const p = { dir, tmp: path.join(dir, 'tmp') };
    await mkdir(p.tmp, { recursive: true });
    const r = await start(p, ['--no-warm-pool'], { SNAP_DIR: snapDir, ...env }).done;
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /PASS t\/ram\.test\.lua \(1 passed/);
    await assertNothingLeft(p);
  }

  it('with a RAM dir: each snapshot is a small device stream beside a sparse RAM image, and the RAM dir ends empty', async () => {
    const snaps = path.join(dir, 'shared');
    await run({ PROVIUM_RAM_DIR: ramDir }, snaps);
    for (const name of ['one', 'two']) {
      const [stream, image] = await Promise.all([stat(path.join(snaps, name)), stat(ramImageOf(path.join(snaps, name)))]);
      assert.ok(stream.size < 4 << 20, `${name}: the stream holds device state only (${stream.size} bytes)`);
      assert.equal(image.size, 192 << 20, `${name}: the image is the guest's RAM`);
      assert.ok(image.blocks * 512 < 150 << 20, `${name}: the image is sparse (${image.blocks * 512} bytes allocated)`);
    }
    assert.deepEqual(await readdir(ramDir), []);
  });

  it('without one (PROVIUM_RAM_DIR=none): whole-stream snapshots, no image, the same guest state', async () => {
    const snaps = path.join(dir, 'anon');
    await run({ PROVIUM_RAM_DIR: 'none' }, snaps);
    await assert.rejects(stat(ramImageOf(path.join(snaps, 'one'))), { code: 'ENOENT' });
    assert.ok((await stat(path.join(snaps, 'one'))).size > 8 << 20, 'RAM is in the stream');
  });
});
