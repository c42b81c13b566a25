// How QEMU is started: every QEMU provium starts has no-malloc-trim.so preloaded (qemuEnv), so
// its RCU thread's malloc_trim() calls (a TLB shootdown per free page range) do nothing, and a
// binary that is not there fails the launch with its path and the reason. The bench's floors
// run QEMU the same way; BENCHMARKS.md shows what the preload saves.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { minimalProfile } from '../../src/config/profiles.js';
import { imageInfo } from '../../src/vmm/image.js';
import { noMallocTrimPath } from '../../src/vmm/paths.js';
import { qemuEnv, QemuVm } from '../../src/vmm/qemu.js';

const MiB = 1024 * 1024;
const built = existsSync(noMallocTrimPath()) ? undefined : `${noMallocTrimPath()} is missing (npm run build)`;

describe('QEMU environment', () => {
  it('preloads no-malloc-trim.so after whatever LD_PRELOAD the host has', { skip: built }, () => {
    const saved = process.env['LD_PRELOAD'];
    try {
      delete process.env['LD_PRELOAD'];
      assert.equal(qemuEnv()['LD_PRELOAD'], noMallocTrimPath());
      assert.equal(qemuEnv()['PATH'], process.env['PATH'], 'the rest of the host environment is kept');
      process.env['LD_PRELOAD'] = '/opt/host-wide.so';
      assert.equal(qemuEnv()['LD_PRELOAD'], `/opt/host-wide.so ${noMallocTrimPath()}`);
    } finally {
      if (saved === undefined) delete process.env['LD_PRELOAD'];
      else process.env['LD_PRELOAD'] = saved;
    }
  });

  it('a launched QEMU has it mapped: its malloc_trim is the no-op', { skip: built }, async (t) => {
    const image = await imageInfo();
    if (!image) return t.skip('the minimal image is not built (npm run setup)');
    const profile = { ...minimalProfile(image), accel: 'tcg' as const };
    const vm = await QemuVm.launch({ name: 'qemu-env', profile, memoryBytes: 64 * MiB, cpus: 1, hotplugSlots: 0 });
    try {
      const maps = readFileSync(`/proc/${vm.pid}/maps`, 'utf8');
      assert.ok(maps.includes(noMallocTrimPath()), `QEMU (pid ${vm.pid}) maps ${noMallocTrimPath()}`);
    } finally {
      await vm.stop();
    }
  });

  it('a QEMU binary that is not there fails the launch, naming it and why', async (t) => {
    const image = await imageInfo();
    if (!image) return t.skip('the minimal image is not built (npm run setup)');
    const saved = process.env['PROVIUM_QEMU'];
    process.env['PROVIUM_QEMU'] = '/nonexistent/qemu-system-x86_64';
    try {
      const profile = { ...minimalProfile(image), accel: 'tcg' as const };
      await assert.rejects(QemuVm.launch({ name: 'no-qemu', profile, memoryBytes: 64 * MiB, cpus: 1, hotplugSlots: 0 }), (err: Error) => {
        assert.match(err.message, /VM no-qemu \(profile minimal\)/);
        assert.match(err.message, /\/nonexistent\/qemu-system-x86_64/);
        assert.match(err.message, /No such file or directory|ENOENT/);
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env['PROVIUM_QEMU'];
      else process.env['PROVIUM_QEMU'] = saved;
    }
  });
});
