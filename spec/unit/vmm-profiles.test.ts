import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { builtinProfiles, kAgentRdinit, kTunedCmdline, ProfileError, rdinitOf, resolveProfiles } from '../../src/config/profiles.js';

const MiB = 1024 * 1024;

describe('resolveProfiles', () => {
  it('fills defaults and resolves relative paths against the base dir', () => {
    const p = resolveProfiles({ mine: { kernel: 'k/bzImage', initrd: '/abs/initrd.gz' } }, '/proj')['mine']!;
    assert.equal(p.name, 'mine');
    assert.equal(p.kernel, '/proj/k/bzImage');
    assert.equal(p.initrd, '/abs/initrd.gz');
    assert.equal(p.cmdline, 'console=ttyS0 rdinit=/sbin/provium-agent');
    assert.equal(p.memoryBytes, 512 * MiB);
    assert.equal(p.cpus, 1);
    assert.equal(p.machine, 'q35');
    assert.equal(p.accel, 'auto');
    assert.equal(p.injectAgent, true);
    assert.equal(p.agentTimeoutMs, 30_000);
    assert.equal(p.builtin, false);
  });

  it('reads every accepted key', () => {
    const p = resolveProfiles({
      big: {
        kernel: '/k', cmdline: 'quiet console=ttyS0,115200', memory: '1G', cpus: 2, machine: 'microvm',
        accel: 'tcg', inject_agent: false, agent_boot_timeout: 90.0,
      },
    }, '/')['big']!;
    assert.equal(p.cmdline, 'quiet console=ttyS0,115200');
    assert.equal(p.memoryBytes, 1024 * MiB);
    assert.equal(p.cpus, 2);
    assert.equal(p.machine, 'microvm');
    assert.equal(p.accel, 'tcg');
    assert.equal(p.injectAgent, false);
    assert.equal(p.agentTimeoutMs, 90_000);
    assert.equal(p.initrd, undefined);
  });

  it('takes memory as bytes or a suffixed string and agent_boot_timeout as a duration string', () => {
    const r = resolveProfiles({ a: { kernel: '/k', memory: 268435456, agent_boot_timeout: '500ms' } }, '/');
    assert.equal(r['a']!.memoryBytes, 256 * MiB);
    assert.equal(r['a']!.agentTimeoutMs, 500);
  });

  it('always has console=ttyS0 and adds rdinit only when injecting', () => {
    const r = resolveProfiles({
      a: { kernel: '/k', cmdline: 'quiet' },
      b: { kernel: '/k', cmdline: 'quiet', inject_agent: false },
      c: { kernel: '/k', cmdline: 'rdinit=/sbin/provium-agent quiet' },
    }, '/');
    assert.equal(r['a']!.cmdline, 'console=ttyS0 quiet rdinit=/sbin/provium-agent');
    assert.equal(r['b']!.cmdline, 'console=ttyS0 quiet');
    assert.equal(r['c']!.cmdline, 'console=ttyS0 rdinit=/sbin/provium-agent quiet');
  });

  it('rejects an rdinit that conflicts with inject_agent', () => {
    assert.throws(() => resolveProfiles({ a: { kernel: '/k', cmdline: 'rdinit=/init' } }, '/'),
      /profile `a`: `cmdline` sets rdinit=\/init, which conflicts with inject_agent .* set inject_agent = false/);
    // Without injection the profile's own rdinit stays.
    assert.equal(resolveProfiles({ a: { kernel: '/k', cmdline: 'rdinit=/init', inject_agent: false } }, '/')['a']!.cmdline,
      'console=ttyS0 rdinit=/init');
  });

  it('takes disks: sizes as strings, images relative to the config', () => {
    const p = resolveProfiles({ a: { kernel: '/k', disks: [{ id: 'data', size: '64M' }, { id: 'base', image: 'golden.img', readonly: true, backend: 'qemu' }] } }, '/proj')['a']!;
    assert.deepEqual(p.disks, [{ id: 'data', sizeBytes: 64 * 1024 * 1024 }, { id: 'base', image: '/proj/golden.img', readonly: true, backend: 'qemu' }]);
  });

  it('names the unknown key, the profile and the accepted keys', () => {
    assert.throws(() => resolveProfiles({ web: { kernel: '/k', memroy: '1G' } }, '/'), (err: Error) => {
      assert.ok(err instanceof ProfileError);
      assert.match(err.message, /^profile `web`: unknown key `memroy`; accepted keys: kernel, initrd, cmdline, memory, cpus, machine, accel, inject_agent, agent_boot_timeout, disks$/);
      return true;
    });
  });

  it('rejects bad values, naming the profile and the key', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{}, /profile `x`: `kernel` is required/],
      [{ kernel: 3 }, /profile `x`: `kernel` must be a string, got number 3/],
      [{ kernel: '' }, /profile `x`: `kernel` is empty/],
      [{ kernel: '/k', cpus: 0 }, /profile `x`: cpus must be an integer from 1 to 64, got number 0/],
      [{ kernel: '/k', cpus: 1.5 }, /cpus must be an integer/],
      [{ kernel: '/k', cpus: '2' }, /cpus must be an integer .* got "2"/],
      [{ kernel: '/k', machine: 'virt' }, /profile `x`: `machine` must be one of "q35", "microvm", "pc", got "virt"/],
      [{ kernel: '/k', accel: 'hvf' }, /`accel` must be one of "auto", "kvm", "tcg", got "hvf"/],
      [{ kernel: '/k', inject_agent: 'yes' }, /`inject_agent` must be true or false, got "yes"/],
      [{ kernel: '/k', memory: '12X' }, /profile `x`: memory: invalid size "12X"/],
      [{ kernel: '/k', memory: '1M' }, /profile `x`: memory 1048576 bytes is too small; use at least "32M"/],
      [{ kernel: '/k', agent_boot_timeout: 'soon' }, /profile `x`: agent_boot_timeout: invalid duration "soon"/],
      [{ kernel: '/k', agent_boot_timeout: 0 }, /agent_boot_timeout must be more than 0/],
      [{ kernel: '/k', cmdline: ['a'] }, /`cmdline` must be a string, got an array/],
      [{ kernel: '/k', disks: { id: 'a' } }, /profile `x`: disks must be an array of tables/],
      [{ kernel: '/k', disks: [{ size: '1M' }] }, /profile `x`: disks\[1\]: `id` is required/],
      [{ kernel: '/k', disks: [{ id: 'a' }] }, /disks\[1\]: give `size`/],
      [{ kernel: '/k', disks: [{ id: 'a', size: '1M', ro: true }] }, /disks\[1\]: unknown key `ro`; accepted keys: id, size, image, readonly, backend/],
      [{ kernel: '/k', disks: [{ id: 'a', size: '1M', backend: 'file' }] }, /disks\[1\]: `backend` must be "nbd" \(every fault, the default\) or "qemu" .* got "file"/],
    ];
    for (const [table, re] of bad) assert.throws(() => resolveProfiles({ x: table }, '/'), re, JSON.stringify(table));
  });

  it('rejects a non-table profile, a bad name and a non-table [profiles]', () => {
    assert.throws(() => resolveProfiles({ x: 'kernel' }, '/'), /profile `x`: expected a \[profiles\.x\] table, got "kernel"/);
    assert.throws(() => resolveProfiles({ 'a b': { kernel: '/k' } }, '/'), /profile `a b`: invalid name/);
    assert.throws(() => resolveProfiles([1], '/'), /\[profiles\] must be a table/);
  });

  it('accepts no profiles at all', () => {
    assert.deepEqual(resolveProfiles(undefined, '/'), {});
    assert.deepEqual(resolveProfiles({}, '/'), {});
  });
});

describe('builtinProfiles', () => {
  it('makes minimal from the image the lookup finds: tuned cmdline, agent baked in', async () => {
    const p = (await builtinProfiles(async () => ({ kernel: '/img/vmlinux', initrd: '/img/initrd.cpio.gz' })))['minimal']!;
    assert.deepEqual(p, {
      name: 'minimal', kernel: '/img/vmlinux', initrd: '/img/initrd.cpio.gz', cmdline: `${kTunedCmdline} rdinit=${kAgentRdinit}`,
      memoryBytes: 256 * MiB, cpus: 1, machine: 'q35', accel: 'auto', injectAgent: false, agentTimeoutMs: 30_000, builtin: true,
    });
  });

  it('throws a ProfileError naming the build command when the image is not built', async () => {
    await assert.rejects(builtinProfiles(async () => undefined), (err: Error) => {
      assert.ok(err instanceof ProfileError);
      assert.match(err.message, /^profile `minimal`: the guest image is not built — run `provium image build`/);
      return true;
    });
  });
});

describe('rdinitOf', () => {
  it('gives the last rdinit= of a command line, or undefined', () => {
    assert.equal(rdinitOf('console=ttyS0  rdinit=/a quiet rdinit=/b'), '/b');
    assert.equal(rdinitOf('console=ttyS0 init=/sbin/init'), undefined);
    assert.equal(rdinitOf(''), undefined);
  });
});
