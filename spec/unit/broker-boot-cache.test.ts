import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { BootCache } from '../../src/broker/boot-cache.js';
import { consoleLogOf } from '../../src/vmm/snapshot.js';
import { minimalProfile } from '../../src/config/profiles.js';

describe('BootCache.store', () => {
  const dirs: string[] = [];
  after(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
  const warnings: string[] = [];
  const cache = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-bootcache-'));
    dirs.push(dir);
    warnings.length = 0;
    return new BootCache(dir, (m) => warnings.push(m));
  };
  const save = (text: string) => async (tmp: string) => {
    await writeFile(tmp, text);
    await writeFile(consoleLogOf(tmp), `${text} console`);
  };

  it('keeps the first snapshot of a key: boots that raced it and saved later restore that one', async () => {
    const c = await cache();
    await c.store('k', save('first'));
    await c.store('k', save('second'));
    const file = (await c.lookup('k'))!;
    assert.equal(await readFile(file, 'utf8'), 'first');
    assert.equal(await readFile(consoleLogOf(file), 'utf8'), 'first console', 'the log is the snapshot\'s own');
  });

  it('replaces a snapshot saved without its console log (an older version)', async () => {
    const c = await cache();
    await c.store('k', save('old'));
    const file = (await c.lookup('k'))!;
    await rm(consoleLogOf(file));
    assert.equal(await c.lookup('k'), undefined);
    await c.store('k', save('new'));
    assert.equal(await readFile((await c.lookup('k'))!, 'utf8'), 'new');
  });

  it('a snapshot truncated since it was saved is corrupt: one line names it, it is removed, the next store replaces it', async () => {
    const c = await cache();
    await c.store('k', save('a snapshot of some length'));
    const file = (await c.lookup('k'))!;
    await truncate(file, 5);
    assert.equal(await c.lookup('k'), undefined);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, new RegExp(`^boot snapshot ${file} is corrupt \\(it has 5 bytes, ${file}\\.sum says 25\\); removed it, this boot is cold and saves a new one$`));
    await assert.rejects(stat(file), /ENOENT/);
    await assert.rejects(stat(consoleLogOf(file)), /ENOENT/);
    await c.store('k', save('fresh'));
    assert.equal(await readFile((await c.lookup('k'))!, 'utf8'), 'fresh');
  });

  it('other bytes of the same size are corrupt; the same bytes copied (a new mtime) are not, and are restamped', async () => {
    const c = await cache();
    await c.store('k', save('0123456789'));
    const file = (await c.lookup('k'))!;
    // A copy: same bytes, new mtime.
    await writeFile(file, '0123456789');
    await utimes(file, new Date(), new Date(Date.now() + 5000));
    assert.equal(await c.lookup('k'), file);
    assert.deepEqual(warnings, []);
    assert.equal(JSON.parse(await readFile(`${file}.sum`, 'utf8')).mtimeMs, (await stat(file)).mtimeMs, 'restamped: the next lookup is a stat');
    // Overwritten in place.
    const fh = await open(file, 'r+');
    await fh.write('XY', 3);
    await fh.close();
    assert.equal(await c.lookup('k'), undefined);
    assert.match(warnings[0] ?? '', /is corrupt \(its bytes changed since it was saved \(sha1 [0-9a-f]{12}, saved as [0-9a-f]{12}\)\)/);
  });

  it('a snapshot that failed to restore is removed with one line naming it', async () => {
    const c = await cache();
    await c.store('k', save('x'));
    const file = (await c.lookup('k'))!;
    await c.discard('k');
    assert.equal(await c.lookup('k'), undefined);
    assert.deepEqual(warnings, [`boot snapshot ${file} did not restore (corrupt, or saved by another QEMU); removed it, this boot is cold and saves a new one`]);
  });

  it('a save that runs out of space says so with the path and the fix, and leaves nothing half-written', async () => {
    const c = await cache();
    const failing = async (tmp: string) => {
      await writeFile(tmp, 'half');
      throw new Error('VM v: snapshot to x failed: cat exited with 1: cat: write error: No space left on device');
    };
    await assert.rejects(c.store('k', failing), /No space left on device/);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^boot snapshot \S+\/boot-snapshots\/k\.snap not saved: no space left on the device of \S+\/boot-snapshots — free space there, move the cache \(PROVIUM_CACHE_DIR or \[provium\] cache_dir in provium\.toml\), or turn boot snapshots off with PROVIUM_BOOT_SNAPSHOTS=0$/);
    assert.equal(await c.lookup('k'), undefined);
    const dir = path.join(path.dirname(path.dirname(warnings[0]!.split(' ')[2]!)), 'boot-snapshots');
    assert.deepEqual(await readdir(dir), [], 'no temporary file or sidecar is left');
  });
});

describe('BootCache on a full filesystem (a 1 MiB tmpfs; needs root)', () => {
  const isRoot = process.getuid?.() === 0;
  it('a save that hits ENOSPC is named, nothing half-written stays, and the next lookup finds nothing', { skip: !isRoot && 'not root: cannot mount a tmpfs' }, async () => {
    const mnt = await mkdtemp(path.join(os.tmpdir(), 'provium-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      const warnings: string[] = [];
      const c = new BootCache(mnt, (m) => warnings.push(m));
      await mkdir(path.join(mnt, 'boot-snapshots'));
      // What the save does: the stream written by `cat`, so the error is cat's words, as in a real save.
      const write = async (tmp: string) => {
        execFileSync('sh', ['-c', `head -c 2000000 /dev/zero | cat > '${tmp}'`], { stdio: 'pipe' });
      };
      await assert.rejects(c.store('k', write), /No space left on device/);
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0]!, new RegExp(`^boot snapshot ${mnt}/boot-snapshots/k\\.snap not saved: no space left on the device of ${mnt}/boot-snapshots — free space there`));
      assert.deepEqual(await readdir(path.join(mnt, 'boot-snapshots')), []);
      assert.equal(await c.lookup('k'), undefined);
    } finally {
      execFileSync('umount', [mnt]);
      await rm(mnt, { recursive: true, force: true });
    }
  });
});

describe('BootCache.key', () => {
  it('names the boot files by their bytes: a copy elsewhere keeps the key, other bytes under the old size and mtime do not', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-bootkey-'));
    try {
      const kernel = path.join(dir, 'vmlinuz');
      const initrd = path.join(dir, 'initrd.img');
      await writeFile(kernel, 'kernel one');
      await writeFile(initrd, 'initrd');
      const specOf = (k: string) => ({ name: 'k', profile: { ...minimalProfile({ kernel: k, initrd }), injectAgent: false }, memoryBytes: 64 * 1024 * 1024, cpus: 1 });
      const c = new BootCache(dir);
      const first = await c.key(specOf(kernel), process.execPath);
      assert.ok(first);
      // A cache restored elsewhere (CI): the same bytes at another path, with a new mtime and inode.
      const moved = path.join(dir, 'restored-vmlinuz');
      await writeFile(moved, 'kernel one');
      assert.equal(await c.key(specOf(moved), process.execPath), first);
      // A rebuilt kernel that kept the size and the mtime.
      const st = await stat(kernel);
      await writeFile(kernel, 'kernel two');
      await utimes(kernel, st.atime, st.mtime);
      assert.notEqual(await c.key(specOf(kernel), process.execPath), first);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
