// The real broker and a real QEMU: a file that ends while one of its VMs is still booting must
// not leave that guest running.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { Broker } from '../../src/broker/broker.js';
import { builtinProfiles } from '../../src/config/profiles.js';
import { EventBus } from '../../src/events/bus.js';
import { imageInfo } from '../../src/vmm/image.js';
import { cacheDir } from '../../src/vmm/paths.js';

const image = await imageInfo();

function qemuRunningNamed(name: string): boolean {
  try {
    execFileSync('pgrep', ['-f', '--', `qemu-system-x86_64 -name ${name} `]);
    return true;
  } catch (err) {
    // pgrep exits 1 when nothing matches; anything else is a broken check, not an answer.
    if ((err as { status?: number }).status === 1) return false;
    throw err;
  }
}

describe('broker sessions with a real guest', { skip: !image && 'guest image not built (provium image build)' }, () => {
  for (const delayMs of [0, 60, 400]) {
    it(`closing a session ${delayMs} ms into a boot leaves no QEMU behind`, async () => {
      const bus = new EventBus();
      const broker = new Broker({ bus, profiles: await builtinProfiles(imageInfo), resources: { memory_bytes: 8 * 1024 ** 3, cpus: 8 }, cacheDir: cacheDir() });
      const name = `leak-${process.pid}-${delayMs}`;
      const session = broker.openSession({ path: '/leak.test.lua', displayPath: 'leak.test.lua' }, () => undefined);
      try {
        const replies: unknown[] = [];
        session.port.on('message', (m) => replies.push(m));
        session.port.postMessage({ type: 'call', seq: 1, op: 'vm.create', args: { name, profile: 'minimal', labPath: 'provium' } });
        await new Promise((r) => setTimeout(r, 20));
        // Per-boot files force a cold boot, the slowest path.
        const files = [{ path: '/marker', content: new Uint8Array([1]) }];
        session.port.postMessage({ type: 'call', seq: 2, op: 'vm.boot', args: { vmId: 1, opts: { memoryBytes: 128 * 1024 ** 2, files } } });
        await new Promise((r) => setTimeout(r, delayMs));
        await broker.closeSession(session.sessionId);
        assert.equal(qemuRunningNamed(name), false, `QEMU of ${name} still running after closeSession`);
        assert.deepEqual(broker.poolState().used, { memory_bytes: 0, cpus: 0 });
      } finally {
        await broker.close();
        session.port.close();
      }
    });
  }
});
