import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { kMiB, qemuIo, RawClient, rig, type Rig } from './disk-helpers.js';

const kFua = 1;

describe('disk: write cache and power cut', () => {
  let r: Rig;
  before(async () => {
    r = await rig();
  });
  after(() => r.close());

  it('a power cut loses unflushed writes and keeps flushed ones (raw client)', async () => {
    const disk = await r.addDisk('pc');
    const c = await RawClient.connect(r.sock);
    await c.open('pc');
    assert.equal((await c.write(0, Buffer.alloc(4096, 0xaa))).error, 0);
    assert.equal((await c.flush()).error, 0);
    assert.equal((await c.write(0, Buffer.alloc(512, 0xbb))).error, 0); // over flushed data
    assert.equal((await c.write(1 * kMiB, Buffer.alloc(4096, 0xcc))).error, 0);
    assert.equal((await c.write(2 * kMiB, Buffer.alloc(4096, 0xdd), kFua)).error, 0);
    // Read-your-writes, for the guest and the host.
    assert.deepEqual((await c.read(0, 1024)).data, Buffer.concat([Buffer.alloc(512, 0xbb), Buffer.alloc(512, 0xaa)]));
    assert.deepEqual(await disk.readSectors(2048, 1), Buffer.alloc(512, 0xcc));
    assert.ok(disk.dirtyBytes > 0);
    // The image file holds only what was flushed or written with FUA.
    const file = await readFile(join(r.dir, 'pc.img'));
    assert.deepEqual(file.subarray(0, 512), Buffer.alloc(512, 0xaa));
    assert.deepEqual(file.subarray(1 * kMiB, 1 * kMiB + 4096), Buffer.alloc(4096));

    const lost = await disk.powerCut();
    assert.equal(lost.lostExtents, 2);
    assert.equal(disk.dirtyBytes, 0);
    assert.deepEqual((await c.read(0, 4096)).data, Buffer.alloc(4096, 0xaa));
    assert.deepEqual((await c.read(1 * kMiB, 4096)).data, Buffer.alloc(4096));
    assert.deepEqual((await c.read(2 * kMiB, 4096)).data, Buffer.alloc(4096, 0xdd));
    c.destroy();
    assert.deepEqual(r.events.at(-1), { kind: 'power_cut', export: 'pc', values: { lost_bytes: 2 * 65536, lost_extents: 2 } });
  });

  it('a power cut as qemu-io sees it: flushed writes stay, writes of a client that never flushed vanish', async () => {
    const disk = await r.addDisk('pcq');
    // qemu-io flushes when it closes the image (even with -t unsafe), so the second client is
    // interactive and killed after the power cut, the way a guest dies with its disk.
    assert.ok((await qemuIo(r.sock, 'pcq', ['write -P 0x11 0 64k'])).ok);
    const child = spawn('qemu-io', ['-t', 'writeback', '-f', 'raw', `nbd+unix:///pcq?socket=${r.sock}`], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      // qemu-io takes one command per read of its stdin: send the next once the last one landed.
      const deadline = Date.now() + 10_000;
      for (const [cmd, dirty] of [
        ['write -P 0x22 64k 64k', 65536],
        ['write -P 0x23 0 4k', 2 * 65536],
      ] as const) {
        child.stdin.write(`${cmd}\n`);
        while (disk.dirtyBytes < dirty && Date.now() < deadline) await sleep(5);
      }
      assert.equal(disk.dirtyBytes, 2 * 65536);
      assert.ok((await qemuIo(r.sock, 'pcq', ['read -P 0x22 64k 64k', 'read -P 0x23 0 4k'], ['-r'])).ok);
      await disk.powerCut();
    } finally {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    const res = await qemuIo(r.sock, 'pcq', ['read -P 0x11 0 64k', 'read -P 0 64k 64k']);
    assert.ok(res.ok && !/mismatch|failed/.test(res.out), res.out);
  });

  it('write zeroes in the cache: whole extents cost no memory, and are lost on a power cut too', async () => {
    const disk = await r.addDisk('wz');
    await disk.writeSectors(0, Buffer.alloc(256 * 1024, 0x31));
    const c = await RawClient.connect(r.sock);
    await c.open('wz');
    c.request(6, 0, 192 * 1024); // three whole extents
    assert.equal((await c.reply()).error, 0);
    c.request(6, 200 * 1024, 1024); // part of the fourth
    assert.equal((await c.reply()).error, 0);
    assert.equal(disk.dirtyBytes, 64 * 1024);
    assert.deepEqual((await c.read(0, 192 * 1024)).data, Buffer.alloc(192 * 1024));
    assert.deepEqual((await c.read(199 * 1024, 3 * 1024)).data, Buffer.concat([Buffer.alloc(1024, 0x31), Buffer.alloc(1024), Buffer.alloc(1024, 0x31)]));
    await disk.powerCut();
    assert.deepEqual((await c.read(0, 256 * 1024)).data, Buffer.alloc(256 * 1024, 0x31));
    c.request(6, 0, 128 * 1024);
    await c.reply();
    assert.equal((await c.flush()).error, 0);
    await disk.powerCut();
    assert.deepEqual((await c.read(0, 256 * 1024)).data, Buffer.concat([Buffer.alloc(128 * 1024), Buffer.alloc(128 * 1024, 0x31)]));
    c.destroy();
  });

  it('above the cache size the cache is written back by itself', async () => {
    const disk = await r.addDisk('small', { cacheSizeBytes: 256 * 1024, image: { kind: 'raw', path: join(r.dir, 'small.img'), sizeBytes: 4 * kMiB } });
    const c = await RawClient.connect(r.sock);
    await c.open('small');
    for (let i = 0; i < 4; i++) await c.write(i * 65536, Buffer.alloc(65536, i + 1));
    assert.equal(disk.dirtyBytes, 4 * 65536); // at the limit, not above
    await c.write(4 * 65536, Buffer.alloc(65536, 5));
    assert.equal(disk.dirtyBytes, 0);
    await c.write(5 * 65536, Buffer.alloc(512, 6));
    await disk.powerCut();
    assert.deepEqual((await c.read(4 * 65536, 512)).data, Buffer.alloc(512, 5));
    assert.deepEqual((await c.read(5 * 65536, 512)).data, Buffer.alloc(512));
    c.destroy();
  });

  it('host writes are durable at once and the guest reads them over its own cached data', async () => {
    const disk = await r.addDisk('host');
    const c = await RawClient.connect(r.sock);
    await c.open('host');
    await c.write(0, Buffer.alloc(4096, 0x41)); // unflushed
    await disk.writeSectors(2, Buffer.alloc(1024, 0x42));
    assert.deepEqual((await c.read(0, 4096)).data, Buffer.concat([Buffer.alloc(1024, 0x41), Buffer.alloc(1024, 0x42), Buffer.alloc(2048, 0x41)]));
    await disk.powerCut();
    assert.deepEqual((await c.read(0, 4096)).data, Buffer.concat([Buffer.alloc(1024), Buffer.alloc(1024, 0x42), Buffer.alloc(2048)]));
    await assert.rejects(disk.readSectors(16 * 2048, 1), /outside/);
    await assert.rejects(disk.writeSectors(0, Buffer.alloc(100)), /multiple of 512/);
    c.destroy();
  });
});
