import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decode, encode } from '@msgpack/msgpack';
import { agentHello, resolveAccel } from '../../src/vmm/accel.js';
import { hostKey } from '../../src/vmm/host.js';

let dir: string;
let n = 0;

function frame(value: unknown): Buffer {
  const body = encode(value);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/** A fake agent socket: `onHello` gets the decoded request and the socket. */
async function fakeAgent(onHello: (req: any, sock: Socket) => void): Promise<{ path: string; server: Server }> {
  const path = join(dir, `agent${n++}.sock`);
  const server = createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return;
      const len = buf.readUInt32BE(0);
      if (buf.length < 4 + len) return;
      onHello(decode(buf.subarray(4, 4 + len)), sock);
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server };
}

describe('agentHello', () => {
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'provium-accel-test-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('sends hello{protocol_version: 1} and resolves with the ok data, skipping id-0 events', async () => {
    let seen: any;
    const f = await fakeAgent((req, sock) => {
      seen = req;
      // An unsolicited event first, then the reply split across two writes.
      sock.write(frame({ id: 0, kind: 'agent_error', data: { message: 'noise' } }));
      const reply = frame({ id: 1, kind: 'ok', data: { protocol_version: 1, mode: 'standalone', pid: 1 } });
      sock.write(reply.subarray(0, 3));
      setTimeout(() => sock.write(reply.subarray(3)), 10);
    });
    const data = await agentHello(f.path, 2000);
    assert.deepEqual(seen, { id: 1, kind: 'hello', data: { protocol_version: 1 } });
    assert.equal(data['mode'], 'standalone');
    f.server.close();
  });

  it('rejects an err reply with its data', async () => {
    const f = await fakeAgent((_req, sock) => {
      sock.write(frame({ id: 1, kind: 'err', data: { errno: 71, message: 'protocol version 1 unsupported' } }));
    });
    await assert.rejects(agentHello(f.path, 2000), /agent answered hello with err: .*protocol version 1 unsupported/);
    f.server.close();
  });

  it('times out when the agent never answers (a guest that crawls)', async () => {
    const f = await fakeAgent(() => {});
    await assert.rejects(agentHello(f.path, 100), /no agent hello reply within 100 ms/);
    f.server.close();
  });

  it('rejects an oversized frame and a missing socket', async () => {
    const f = await fakeAgent((_req, sock) => {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(512 * 1024 * 1024);
      sock.write(head);
    });
    await assert.rejects(agentHello(f.path, 2000), /agent sent a 536870912-byte frame/);
    f.server.close();
    await assert.rejects(agentHello(join(dir, 'none.sock'), 2000), /agent socket .*none\.sock: .*ENOENT/);
  });
});

describe('resolveAccel', () => {
  it('takes tcg as asked without probing', async () => {
    assert.equal(await resolveAccel('tcg'), 'tcg');
  });
});

describe('hostKey', () => {
  it('follows the QEMU binary by path and stamp, without running it', async () => {
    const own = await mkdtemp(join(tmpdir(), 'provium-hostkey-'));
    const qemu = join(own, 'qemu-system-x86_64');
    // Not a QEMU: running it would fail, so a key that still comes back was made without a spawn.
    await writeFile(qemu, '#!/bin/sh\nexit 3\n', { mode: 0o755 });
    const saved = process.env['PROVIUM_QEMU'];
    process.env['PROVIUM_QEMU'] = qemu;
    try {
      const before = await hostKey();
      assert.match(before, new RegExp(`\\| ${qemu} \\d+:`));
      assert.equal(await hostKey(), before);
      // An upgrade replaces the binary: a new file, a new key.
      await copyFile(qemu, `${qemu}.new`);
      await rm(qemu);
      await copyFile(`${qemu}.new`, qemu);
      assert.notEqual(await hostKey(), before);
    } finally {
      if (saved === undefined) delete process.env['PROVIUM_QEMU'];
      else process.env['PROVIUM_QEMU'] = saved;
      await rm(own, { recursive: true, force: true });
    }
  });
});
