import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openOverlayImage, openRawImage } from '../../src/disk/image.js';
import { kMiB, qemuIo, rig, type Rig } from './disk-helpers.js';

async function sha(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

describe('disk: images', () => {
  let r: Rig;
  before(async () => {
    r = await rig();
  });
  after(() => r.close());

  it('a raw image is created sparse with the given size, and grows an existing smaller file', async () => {
    const path = join(r.dir, 'sparse.img');
    const img = await openRawImage({ path, sizeBytes: 256 * kMiB });
    await img.write(128 * kMiB, Buffer.alloc(4096, 1));
    await img.close();
    const st = await stat(path);
    assert.equal(st.size, 256 * kMiB);
    assert.ok(st.blocks * 512 < 4 * kMiB, `allocated ${st.blocks * 512} bytes`);
    const grown = await openRawImage({ path, sizeBytes: 512 * kMiB });
    assert.equal(grown.sizeBytes, 512 * kMiB);
    const buf = Buffer.alloc(8192);
    await grown.readInto(128 * kMiB, buf);
    assert.deepEqual(buf, Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(4096)]));
    await grown.close();
    await assert.rejects(openRawImage({ path: join(r.dir, 'missing.img') }), /ENOENT/);
  });

  it('zeroing a raw image keeps holes as holes', async () => {
    const path = join(r.dir, 'holes.img');
    const img = await openRawImage({ path, sizeBytes: 64 * kMiB });
    await img.write(0, Buffer.alloc(4096, 9));
    await img.writeZeroes(0, 64 * kMiB);
    const buf = Buffer.alloc(4096, 1);
    await img.readInto(0, buf);
    assert.deepEqual(buf, Buffer.alloc(4096));
    await img.close();
    assert.ok((await stat(path)).blocks * 512 <= 1 * kMiB + 64 * 1024); // only the one chunk that held data
  });

  it('an overlay reads the backing image, takes every write and never modifies the backing file', async () => {
    const backing = join(r.dir, 'base.img');
    const content = Buffer.alloc(2 * kMiB);
    for (let i = 0; i < content.length; i += 512) content.fill(i / 512 + 1, i, i + 512);
    await writeFile(backing, content);
    const before = await sha(backing);
    const disk = await r.addDisk('ov', { image: { kind: 'overlay', backingPath: backing, overlayPath: join(r.dir, 'ov.overlay') } });
    assert.equal(disk.sizeBytes, 2 * kMiB);
    // Partial extents (copy-up), an unaligned write, zeroes over a whole and a partial extent, and FUA.
    const res = await qemuIo(r.sock, 'ov', [
      'write -P 0xee 1000 3000',
      'write -P 0xdd 65536 65536',
      'write -z 131072 70000',
      'write -f -P 0xcc 1048576 512',
      'flush',
      'read -P 0xee 1000 3000',
      'read -P 0xdd 65536 65536',
      'read -P 0 131072 70000',
    ]);
    assert.ok(res.ok && !/mismatch|error/i.test(res.out), res.out);
    assert.equal(await sha(backing), before);
    // Untouched bytes of a copied-up extent still come from the backing.
    const s = await disk.readSectors(0, 1);
    assert.deepEqual(s, content.subarray(0, 512));
    const tail = await disk.readSectors(7, 2); // bytes 3584..4608: 0xee up to 4000, then the backing
    assert.deepEqual(tail.subarray(0, 4000 - 3584), Buffer.alloc(4000 - 3584, 0xee));
    assert.deepEqual(tail.subarray(4000 - 3584), content.subarray(4000, 4608));
    const after201k = await disk.readSectors((131072 + 70000) >> 9, 4);
    assert.deepEqual(after201k.subarray((131072 + 70000) % 512), content.subarray(131072 + 70000, ((131072 + 70000) >> 9) * 512 + 2048));
    await disk.writeSectors(3000, Buffer.alloc(512, 0x77));
    await disk.close();
    assert.equal(await sha(backing), before);
  });

  it('an overlay may be larger than its backing: the rest reads as zeroes', async () => {
    const backing = join(r.dir, 'small.img');
    await writeFile(backing, Buffer.alloc(100_000, 3));
    const img = await openOverlayImage({ backingPath: backing, overlayPath: join(r.dir, 'small.overlay'), sizeBytes: 1 * kMiB });
    const buf = Buffer.alloc(8192, 1);
    await img.readInto(96 * 1024, buf);
    assert.deepEqual(buf.subarray(0, 100_000 - 96 * 1024), Buffer.alloc(100_000 - 96 * 1024, 3));
    assert.deepEqual(buf.subarray(100_000 - 96 * 1024), Buffer.alloc(8192 - (100_000 - 96 * 1024)));
    await img.write(99_000, Buffer.alloc(2000, 4));
    await img.readInto(96 * 1024, buf);
    assert.deepEqual(buf.subarray(99_000 - 96 * 1024, 101_000 - 96 * 1024), Buffer.alloc(2000, 4));
    await img.close();
  });
});
