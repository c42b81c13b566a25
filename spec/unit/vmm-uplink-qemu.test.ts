// The uplink's guest-less QEMU, started by the process launcher: it dials the switch port's
// socket, stops on request, and one that QEMU refuses exits with its own message.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UplinkQemu } from '../../src/vmm/uplink-qemu.js';
import { closeProcessLauncher } from '../../src/vmm/process-launcher.js';

describe('the uplink QEMU', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-uplink-test-'));
  });

  after(async () => {
    await closeProcessLauncher();
    await rm(dir, { recursive: true, force: true });
  });

  it('dials the port socket, and stop() ends it', async () => {
    const socketPath = path.join(dir, 'port.sock');
    const connected = new Promise<Socket>((resolve) => {
      const server = createServer((s) => {
        server.close();
        resolve(s);
      });
      server.listen(socketPath);
    });
    const q = await UplinkQemu.launch({ name: 'lan', net: '10.4.0.0/24', host: '10.4.0.2', dns: '10.4.0.3', socketPath, stderrPath: path.join(dir, 'ok.stderr') });
    const socket = await connected;
    assert.equal(q.running, true);
    await q.stop();
    assert.equal(q.running, false);
    const exit = await q.exited;
    assert.ok(exit.code === 0 || exit.signal !== null, JSON.stringify(exit));
    socket.destroy();
  });

  it('an argument QEMU refuses: it exits, and its message is in the exit', async () => {
    const q = await UplinkQemu.launch({ name: 'lan', net: '10.4.0.0/33', host: '10.4.0.2', dns: '10.4.0.3', socketPath: path.join(dir, 'none.sock'), stderrPath: path.join(dir, 'bad.stderr') });
    const exit = await q.exited;
    assert.notEqual(exit.code, 0);
    assert.match(exit.stderr, /Invalid netmask/);
  });
});
