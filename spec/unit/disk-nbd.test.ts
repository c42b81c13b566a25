import assert from 'node:assert/strict';
import { access, writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { NbdServer } from '../../src/disk/nbd-server.js';
import { kMiB, qemuIo, RawClient, rig, run, type Rig } from './disk-helpers.js';

const EPERM = 1;
const EINVAL = 22;
const ENOSPC = 28;

/** Waits until `cond` holds (polling), for effects of a closed socket on the server. */
async function until(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await sleep(10);
  }
}

describe('disk: NBD server with real clients', () => {
  let r: Rig;
  before(async () => {
    r = await rig();
    await r.addDisk('d0');
    await r.addDisk('d1', { image: { kind: 'raw', path: `${r.dir}/d1.img`, sizeBytes: 4 * kMiB } });
    await writeFile(`${r.dir}/ro.img`, Buffer.alloc(1 * kMiB, 0x42));
    await r.addDisk('ro', { readOnly: true, image: { kind: 'raw', path: `${r.dir}/ro.img`, sizeBytes: 1 * kMiB } });
  });
  after(() => r.close());

  it('qemu-nbd --list shows every export with its size and flags', async () => {
    const res = await run('qemu-nbd', ['--list', '-k', r.sock]);
    assert.ok(res.ok, res.out);
    assert.match(res.out, /exports available: 3/);
    assert.match(res.out, /export: 'd0'\s+size:\s+16777216\s+flags: 0x16d \( flush fua trim zeroes multi \)/);
    assert.match(res.out, /export: 'd1'\s+size:\s+4194304/);
    assert.match(res.out, /export: 'ro'\s+size:\s+1048576\s+flags: 0x103 \( readonly multi \)/);
    assert.match(res.out, /max block: 33554432/);
  });

  it('qemu-io writes, reads back, flushes, trims and writes zeroes', async () => {
    const res = await qemuIo(r.sock, 'd0', [
      'write -P 0xab 0 64k',
      'read -P 0xab 0 64k',
      'flush',
      'write -P 0x11 1m 128k',
      'write -z 1m 64k',
      'read -P 0 1m 64k',
      'read -P 0x11 1088k 64k',
      'discard 2m 64k',
      'write -f -P 0x22 3m 4k',
      'read -P 0x22 3m 4k',
    ]);
    assert.ok(res.ok, res.out);
    assert.doesNotMatch(res.out, /fail|error|mismatch/i);
    assert.match(res.out, /discard 65536\/65536 bytes at offset 2097152/);
  });

  it('host readSectors sees what the guest wrote, and the guest sees writeSectors', async () => {
    const d1 = r.disks.get('d1')!;
    assert.ok((await qemuIo(r.sock, 'd1', ['write -P 0x5a 4096 1024'])).ok);
    const got = await d1.readSectors(8, 2);
    assert.deepEqual(got, Buffer.alloc(1024, 0x5a));
    await d1.writeSectors(100, Buffer.alloc(2048, 0xc3));
    const res = await qemuIo(r.sock, 'd1', ['read -P 0xc3 51200 2048', 'read -P 0 53248 512']);
    assert.ok(res.ok && !/mismatch/.test(res.out), res.out);
  });

  it('a read-only export advertises READ_ONLY and refuses writes with EPERM', async () => {
    const c = await RawClient.connect(r.sock);
    const info = await c.open('ro');
    assert.equal(info.flags & 2, 2);
    assert.equal((await c.write(0, Buffer.alloc(512, 1))).error, EPERM);
    c.request(6, 0, 512); // WRITE_ZEROES
    assert.equal((await c.reply()).error, EPERM);
    assert.deepEqual((await c.read(0, 512)).data, Buffer.alloc(512, 0x42));
    c.destroy();
    const res = await qemuIo(r.sock, 'ro', ['write -P 1 0 512']);
    assert.ok(!res.ok || /read-only|Permission|not permitted/i.test(res.out), res.out);
    await assert.rejects(r.disks.get('ro')!.writeSectors(0, Buffer.alloc(512)), /read-only/);
  });
});

describe('disk: NBD handshake and framing (raw socket)', () => {
  let r: Rig;
  before(async () => {
    r = await rig();
    await r.addDisk('x', { image: { kind: 'raw', path: `${r.dir}/x.img`, sizeBytes: 1 * kMiB } });
  });
  after(() => r.close());

  it('greets with FIXED_NEWSTYLE|NO_ZEROES, answers unsupported options with ERR_UNSUP and unknown exports with ERR_UNKNOWN', async () => {
    const c = await RawClient.connect(r.sock);
    assert.equal(await c.greet(), 3);
    for (const opt of [8, 10, 5, 99]) {
      c.sendOption(opt, opt === 8 ? undefined : Buffer.alloc(4));
      const rep = await c.optionReply();
      assert.equal(rep.option, opt);
      assert.equal(rep.type, 0x80000001);
    }
    c.sendOption(7, RawClient.goData('nope'));
    assert.equal((await c.optionReply()).type, 0x80000006);
    c.sendOption(3, Buffer.alloc(1)); // LIST with data: invalid
    assert.equal((await c.optionReply()).type, 0x80000003);
    c.sendOption(3);
    const names: string[] = [];
    for (;;) {
      const rep = await c.optionReply();
      if (rep.type === 1) break;
      assert.equal(rep.type, 2);
      names.push(rep.data.toString('utf8', 4, 4 + rep.data.readUInt32BE(0)));
    }
    assert.deepEqual(names, ['x']);
    c.sendOption(6, RawClient.goData('x', [3])); // INFO with BLOCK_SIZE
    const infos: number[] = [];
    for (;;) {
      const rep = await c.optionReply();
      if (rep.type === 1) break;
      infos.push(rep.data.readUInt16BE(0));
    }
    assert.deepEqual(infos.sort(), [0, 3]);
    c.sendOption(2); // ABORT
    assert.equal((await c.optionReply()).type, 1);
    await c.closed;
  });

  it('NBD_OPT_EXPORT_NAME sends 124 zeroes unless NO_ZEROES was negotiated', async () => {
    for (const [flags, bytes] of [
      [1, 134],
      [3, 10],
    ] as const) {
      const c = await RawClient.connect(r.sock);
      await c.greet(flags);
      c.sendOption(1, Buffer.from('x'));
      const rep = await c.reader.read(bytes);
      assert.equal(Number(rep.readBigUInt64BE(0)), 1 * kMiB);
      assert.equal((await c.read(0, 4096)).error, 0);
      c.destroy();
    }
  });

  it('unknown client flags and unknown EXPORT_NAME close the connection', async () => {
    const a = await RawClient.connect(r.sock);
    await a.greet(0x10);
    await a.closed;
    const b = await RawClient.connect(r.sock);
    await b.greet();
    b.sendOption(1, Buffer.from('nope'));
    await b.closed;
  });

  it('out-of-range and invalid requests get error replies and the connection goes on', async () => {
    const c = await RawClient.connect(r.sock);
    const { sizeBytes } = await c.open('x');
    assert.equal((await c.read(sizeBytes - 512, 1024)).error, EINVAL);
    assert.equal((await c.write(sizeBytes - 512, Buffer.alloc(1024))).error, ENOSPC);
    c.request(0, 0xffffffffffffff00n, 512);
    assert.equal((await c.reply()).error, EINVAL);
    c.request(6, sizeBytes, 512); // WRITE_ZEROES past the end
    assert.equal((await c.reply()).error, ENOSPC);
    c.request(4, sizeBytes, 512); // TRIM past the end
    assert.equal((await c.reply()).error, EINVAL);
    c.request(0, 0, 64 * kMiB); // READ above the maximum request size
    assert.equal((await c.reply()).error, EINVAL);
    c.request(7, 0, 512); // BLOCK_STATUS was never negotiated
    assert.equal((await c.reply()).error, EINVAL);
    c.request(0, 0, 512, { flags: 1 << 2 }); // DF without structured replies
    assert.equal((await c.reply()).error, EINVAL);
    c.request(3, 0, 8); // FLUSH with a length
    assert.equal((await c.reply()).error, EINVAL);
    const ok = await c.read(sizeBytes - 512, 512);
    assert.equal(ok.error, 0);
    assert.equal(ok.data.length, 512);
    c.destroy();
  });

  it('answers pipelined requests in order', async () => {
    const c = await RawClient.connect(r.sock);
    await c.open('x');
    const handles = [
      c.request(1, 0, 4096, { data: Buffer.alloc(4096, 7) }),
      c.request(0, 0, 4096),
      c.request(3, 0, 0),
      c.request(0, 4096, 512),
    ];
    const replies = [await c.reply(), await c.reply(4096), await c.reply(), await c.reply(512)];
    assert.deepEqual(
      replies.map((x) => x.handle),
      handles,
    );
    assert.deepEqual(replies[1]!.data, Buffer.alloc(4096, 7));
    c.request(2, 0, 0); // DISC: the server closes
    await c.closed;
  });

  it('a malformed or oversized header closes only that connection', async () => {
    const good = await RawClient.connect(r.sock);
    await good.open('x');
    const bad = await RawClient.connect(r.sock);
    await bad.open('x');
    bad.request(0, 0, 512, { magic: 0xdeadbeef });
    await bad.closed;
    const big = await RawClient.connect(r.sock);
    await big.open('x');
    big.request(1, 0, 0x7fffffff); // no payload follows; the server must not wait for 2 GiB
    await big.closed;
    assert.equal((await good.read(0, 512)).error, 0);
    good.destroy();
  });

  it('a client that disconnects mid-request does not disturb the server', async () => {
    const before = r.server.connectionCount;
    const c = await RawClient.connect(r.sock);
    await c.open('x');
    c.request(1, 0, 65536); // header of a write ...
    c.socket.write(Buffer.alloc(1000, 9)); // ... and a part of its payload
    c.request(0, 0, 512);
    c.destroy();
    const d = await RawClient.connect(r.sock);
    await d.open('x');
    d.request(0, 0, 1 * kMiB); // a big read whose reply nobody takes
    d.destroy();
    await until(() => r.server.connectionCount === before);
    const e = await RawClient.connect(r.sock);
    await e.open('x');
    assert.equal((await e.read(0, 512)).error, 0);
    e.destroy();
  });
});

describe('disk: NBD server lifecycle', () => {
  it('stop() is idempotent, closes clients and removes the socket', async () => {
    const r = await rig();
    await r.addDisk('x');
    const c = await RawClient.connect(r.sock);
    await c.open('x');
    await Promise.all([r.server.stop(), r.server.stop()]);
    await r.server.stop();
    await c.closed;
    await assert.rejects(access(r.sock));
    await r.close();
  });

  it('rejects a duplicate export name and a bad maximum request size', async () => {
    const r = await rig();
    await r.addDisk('x');
    assert.throws(() => r.server.addExport(r.disks.get('x')!), /already exists/);
    assert.throws(() => new NbdServer({ socketPath: `${r.dir}/y.sock`, maxRequestBytes: 2 ** 33 }), /maxRequestBytes/);
    await r.close();
  });
});

describe('disk: NBD server stop under a delay fault', () => {
  it('stop() does not wait for requests held by a long delay', async () => {
    const r = await rig();
    const disk = await r.addDisk('x');
    disk.faults.delay(60_000);
    const c = await RawClient.connect(r.sock);
    await c.open('x');
    c.request(0, 0, 512);
    await sleep(20);
    const t0 = performance.now();
    await r.server.stop();
    assert.ok(performance.now() - t0 < 1000);
    disk.faults.clear();
    await r.close();
  });
});
