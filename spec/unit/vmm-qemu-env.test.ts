// How QEMU is started: every QEMU provium starts has no-malloc-trim.so preloaded (qemuEnv), so
// its RCU thread's malloc_trim() calls (a TLB shootdown per free page range) do nothing; its
// malloc asks for huge pages (GLIBC_TUNABLES), with the host's tunables kept and winning; and a
// binary that is not there fails the launch with its path and the reason. The bench's floors
// run QEMU the same way; BENCHMARKS.md shows what the preload saves.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { minimalProfile } from '../../src/config/profiles.js';
import { imageInfo } from '../../src/vmm/image.js';
import { noMallocTrimPath } from '../../src/vmm/paths.js';
import { qemuEnv, QemuVm } from '../../src/vmm/qemu.js';

const MiB = 1024 * 1024;
/** The dynamic loader, which lists the tunables in force for an environment. */
const kLdSo = '/lib64/ld-linux-x86-64.so.2';
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

  it('asks glibc for huge-page heaps, before the host\'s own tunables so that those win', { skip: existsSync(kLdSo) ? undefined : `${kLdSo} is missing` }, () => {
    const saved = process.env['GLIBC_TUNABLES'];
    try {
      delete process.env['GLIBC_TUNABLES'];
      assert.equal(qemuEnv()['GLIBC_TUNABLES'], 'glibc.malloc.hugetlb=1');
      process.env['GLIBC_TUNABLES'] = 'glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2';
      assert.equal(qemuEnv()['GLIBC_TUNABLES'], 'glibc.malloc.hugetlb=1:glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2');
      // What glibc makes of that string: the host's 0 is the value in force.
      const listed = execFileSync(kLdSo, ['--list-tunables'], { env: qemuEnv(), encoding: 'utf8' });
      assert.match(listed, /glibc\.malloc\.hugetlb: 0x0 /);
      delete process.env['GLIBC_TUNABLES'];
      const ours = execFileSync(kLdSo, ['--list-tunables'], { env: qemuEnv(), encoding: 'utf8' });
      assert.match(ours, /glibc\.malloc\.hugetlb: 0x1 /, 'this glibc knows the tunable and takes it');
    } finally {
      if (saved === undefined) delete process.env['GLIBC_TUNABLES'];
      else process.env['GLIBC_TUNABLES'] = saved;
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
      const environ = readFileSync(`/proc/${vm.pid}/environ`, 'utf8').split('\0');
      assert.ok(environ.some((e) => e.startsWith('GLIBC_TUNABLES=glibc.malloc.hugetlb=1')), `QEMU (pid ${vm.pid}) runs with the malloc tunable`);
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
        assert.match(err.message, /ENOENT \(no such file or directory\)/);
        assert.match(err.message, /install it with `apt-get install qemu-system-x86` or set PROVIUM_QEMU/);
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env['PROVIUM_QEMU'];
      else process.env['PROVIUM_QEMU'] = saved;
    }
  });
});
