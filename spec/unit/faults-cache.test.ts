// The fault suite's cache cases (issue 15 part 7), through the real CLI on real guests, on a cache
// of their own: two runs at once on a fresh cache (one image build, both pass), a corrupt image
// and a corrupt boot snapshot (each named in one line, rebuilt, the run passes), and a cache on a
// full filesystem (a tmpfs; needs root) where the boot snapshot cannot be saved.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { cacheDir } from '../../src/vmm/paths.js';
import { assertNothingLeft, kHealthy, project, start, type Project } from './faults-run.js';

/** Runs the CLI on `p` with `cache` as its cache; asserts it passed and left nothing behind. */
async function runPasses(p: Project, cache: string): Promise<string> {
  const r = await start(p, ['-j1'], { PROVIUM_CACHE_DIR: cache }).done;
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /1 passed, 0 failed/);
  await assertNothingLeft(p);
  return r.out;
}

/** Writes `bytes` at `offset` of `file` in place (same size, a new mtime unless `keepMtime`). */
async function overwrite(file: string, offset: number, bytes: Buffer, keepMtime = false): Promise<void> {
  // touch -r copies the timestamps to the nanosecond (a Date would round them to the millisecond).
  if (keepMtime) execFileSync('touch', ['-r', file, `${file}.when`]);
  const fh = await open(file, 'r+');
  await fh.write(bytes, 0, bytes.length, offset);
  await fh.close();
  if (keepMtime) {
    execFileSync('touch', ['-r', `${file}.when`, file]);
    await rm(`${file}.when`);
  }
}

async function snapshots(cache: string): Promise<string[]> {
  return (await readdir(path.join(cache, 'boot-snapshots')).catch(() => [] as string[])).sort();
}

/** The boot snapshot saved last (earlier images' keys stay until evicted). */
async function newestSnapshot(cache: string): Promise<string> {
  const files = (await snapshots(cache)).filter((n) => n.endsWith('.snap')).map((n) => path.join(cache, 'boot-snapshots', n));
  const stamped = await Promise.all(files.map(async (f) => ({ f, mtimeMs: (await stat(f)).mtimeMs })));
  stamped.sort((a, b) => b.mtimeMs - a.mtimeMs);
  assert.ok(stamped[0], 'no boot snapshot was saved');
  return stamped[0].f;
}

describe('the fault suite: a broken cache is named, rebuilt, and the run passes (real guests)', () => {
  const cleanup: string[] = [];
  after(async () => Promise.all(cleanup.map((d) => rm(d, { recursive: true, force: true }))));
  let cache = '';

  it('two runs at once on a fresh cache: the image is built once (the other waits), both pass', async () => {
    cache = await mkdtemp(path.join(os.tmpdir(), 'provium-fresh-cache-'));
    cleanup.push(cache);
    // The .deb files only (hard links): the build itself is what this is about, not the network.
    const debs = path.join(cacheDir(), 'downloads');
    if (existsSync(debs)) execFileSync('cp', ['-al', debs, path.join(cache, 'downloads')]);
    const [p1, p2] = await Promise.all([project({ 'a.test.lua': kHealthy }), project({ 'a.test.lua': kHealthy })]);
    cleanup.push(p1!.dir, p2!.dir);
    const runs = await Promise.all([p1!, p2!].map((p) => start(p, ['-j1'], { PROVIUM_CACHE_DIR: cache }).done));
    for (const r of runs) {
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /the guest image `minimal` is not built \(.*\); building it/);
    }
    const builds = runs.filter((r) => /building image `minimal` \(/.test(r.out));
    assert.equal(builds.length, 1, runs.map((r) => r.out).join('\n-----\n'));
    const waiter = runs.find((r) => r !== builds[0])!;
    assert.match(waiter.out, /waiting for another image build \(pid \d+\)/);
    await assertNothingLeft(p1!);
    await assertNothingLeft(p2!);
    assert.deepEqual(await readdir(path.join(cache, 'images')), ['minimal'], 'no staging copy or lock is left');
  });

  it('a corrupt image (bytes overwritten in place) is named in one line, rebuilt, and the run passes', async () => {
    const p = await project({ 'a.test.lua': kHealthy });
    cleanup.push(p.dir);
    const initrd = path.join(cache, 'images', 'minimal', 'initrd.cpio.gz');
    await overwrite(initrd, 4096, Buffer.alloc(512, 0xaa));
    const out = await runPasses(p, cache);
    const named = out.split('\n').filter((l) => l.includes('is corrupt'));
    assert.deepEqual(named.length, 1, out);
    assert.match(named[0]!, new RegExp(`^provium: the guest image \`minimal\` is corrupt: ${initrd} does not have the bytes it was built with \\(sha256 [0-9a-f]{12}…, the manifest says [0-9a-f]{12}…\\); rebuilding it$`));
    assert.match(out, /image `minimal` built in/);
  });

  it('a truncated image is named and rebuilt', async () => {
    const p = await project({ 'a.test.lua': kHealthy });
    cleanup.push(p.dir);
    const vmlinux = path.join(cache, 'images', 'minimal', 'vmlinux');
    const { size } = await stat(vmlinux);
    execFileSync('truncate', ['-s', '1000', vmlinux]);
    const out = await runPasses(p, cache);
    assert.match(out, new RegExp(`provium: the guest image \`minimal\` is corrupt: ${vmlinux} has 1000 bytes, the manifest says ${size}; rebuilding it\n`));
  });

  it('a corrupt boot snapshot (bytes overwritten) is named in one line, removed, saved again, and the run passes', async () => {
    const p = await project({ 'a.test.lua': kHealthy });
    cleanup.push(p.dir);
    // The image was rebuilt: this run boots cold and saves the snapshot of the new key.
    await runPasses(p, cache);
    const snap = await newestSnapshot(cache);
    // Inside the stream (device state: a few hundred KB; RAM is in its `.ram` image).
    await overwrite(snap, Math.floor((await stat(snap)).size / 2), Buffer.alloc(4096, 0x55));
    const out = await runPasses(p, cache);
    const named = out.split('\n').filter((l) => l.includes('boot snapshot'));
    assert.equal(named.length, 1, out);
    assert.match(named[0]!, new RegExp(`^provium: warning: boot snapshot ${snap} is corrupt \\(its bytes changed since it was saved \\(sha1 [0-9a-f]{12}, saved as [0-9a-f]{12}\\)\\); removed it, this boot is cold and saves a new one$`));
    // Saved again by that cold boot, and used by the next run without a word.
    assert.ok(existsSync(`${snap}.sum`), 'the cold boot saved a new snapshot');
    const quiet = await runPasses(p, cache);
    assert.doesNotMatch(quiet, /boot snapshot/);
  });

  it('a boot snapshot whose RAM image was written since it was saved is named, removed, saved again, and the run passes', async () => {
    const p = await project({ 'a.test.lua': kHealthy });
    cleanup.push(p.dir);
    await runPasses(p, cache);
    const snap = await newestSnapshot(cache);
    await overwrite(`${snap}.ram`, 16 << 20, Buffer.alloc(4096, 0x55));
    const out = await runPasses(p, cache);
    const named = out.split('\n').filter((l) => l.includes('boot snapshot'));
    assert.equal(named.length, 1, out);
    assert.match(named[0]!, new RegExp(`^provium: warning: boot snapshot ${snap} is corrupt \\(its RAM image ${snap}\\.ram is missing or was written since it was saved\\); removed it, this boot is cold and saves a new one$`));
    assert.doesNotMatch(await runPasses(p, cache), /boot snapshot/);
  });

  it('a boot snapshot corrupted behind the checksum\'s back (mtime kept) fails to restore: named, removed, cold boot, the run passes', async () => {
    const p = await project({ 'a.test.lua': kHealthy });
    cleanup.push(p.dir);
    const snap = await newestSnapshot(cache);
    // The stream's header: QEMU refuses it.
    await overwrite(snap, 0, Buffer.alloc(64, 0), true);
    const out = await runPasses(p, cache);
    assert.match(out, new RegExp(`provium: warning: boot snapshot ${snap} did not restore \\(corrupt, or saved by another QEMU\\); removed it, this boot is cold and saves a new one\n`));
    assert.ok(existsSync(`${snap}.sum`), 'the cold boot saved a new snapshot');
  });

  it('a cache on a full filesystem: the snapshot save fails with ENOSPC named with its path and fix, nothing half-written is used, the run passes',
    { skip: process.getuid?.() !== 0 && 'not root: cannot mount a tmpfs' }, async () => {
      // A tmpfs just big enough for the image and 4 MiB more: a 128 MiB guest's snapshot does not fit.
      const image = path.join(cache, 'images', 'minimal');
      const imageBytes = (await Promise.all((await readdir(image)).map((n) => stat(path.join(image, n))))).reduce((a, s) => a + s.size, 0);
      const mnt = await mkdtemp(path.join(os.tmpdir(), 'provium-full-cache-'));
      cleanup.push(mnt);
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil(imageBytes / 4096) * 4096 + 4 * 1024 * 1024}`, 'tmpfs', mnt]);
      try {
        await mkdir(path.join(mnt, 'images'));
        execFileSync('cp', ['-a', image, path.join(mnt, 'images', 'minimal')]);
        const p = await project({ 'a.test.lua': kHealthy });
        cleanup.push(p.dir);
        for (let round = 0; round < 2; round++) {
          const out = await runPasses(p, mnt);
          const line = out.split('\n').find((l) => l.includes('not saved'));
          assert.ok(line, `round ${round}: no line about the snapshot:\n${out}`);
          assert.match(line, new RegExp(`^provium: warning: boot snapshot ${mnt}/boot-snapshots/[0-9a-f]{32}\\.snap not saved: no space left on the device of ${mnt}/boot-snapshots — free space there, move the cache \\(PROVIUM_CACHE_DIR or \\[provium\\] cache_dir in provium\\.toml\\), or turn boot snapshots off with PROVIUM_BOOT_SNAPSHOTS=0$`));
          // Nothing half-written: no snapshot, no temporary file, no sidecar; the next round boots cold again.
          assert.deepEqual(await snapshots(mnt), [], `round ${round}`);
        }
      } finally {
        execFileSync('umount', [mnt]);
      }
    });

  it('vm:snapshot(path) onto a full filesystem: an error naming the path, the lack of space and the fix; nothing left there, the VM runs on',
    { skip: process.getuid?.() !== 0 && 'not root: cannot mount a tmpfs' }, async () => {
      const mnt = await mkdtemp(path.join(os.tmpdir(), 'provium-full-snap-'));
      cleanup.push(mnt);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
      try {
        const p = await project({
          'a.test.lua': [
            'local vm = provium:vm("v", "minimal", {memory = "128M"}):boot()',
            'test("a snapshot that does not fit", function(t)',
            `  local err = t:assert_raises(function() vm:snapshot("${mnt}/s") end)`,
            `  t:assert_contains(err, "no space left on the filesystem of ${mnt}")`,
            '  t:assert_contains(err, "free space there or write the snapshot elsewhere")',
            '  t:assert_eq(vm:run("echo alive").stdout, "alive\\n")',
            'end)',
            '',
          ].join('\n'),
        });
        cleanup.push(p.dir);
        await runPasses(p, cache);
        assert.deepEqual(await readdir(mnt), []);
      } finally {
        execFileSync('umount', [mnt]);
      }
    });
});
