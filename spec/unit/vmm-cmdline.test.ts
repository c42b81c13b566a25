import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { kTunedCmdline, type Profile } from '../../src/config/profiles.js';
import {
  buildQemuArgs, kDefaultHotplugSlots, kernelCmdline, memoryArg, rngSeedHex, rtcBase, type LaunchContext, type LaunchSpec,
} from '../../src/vmm/cmdline.js';
import { mhzToKhz } from '../../src/vmm/host.js';

const MiB = 1024 * 1024;

function profile(over: Partial<Profile> = {}): Profile {
  return {
    name: 'minimal', kernel: '/img/vmlinux', initrd: '/img/initrd.cpio.gz',
    cmdline: `${kTunedCmdline} rdinit=/sbin/provium-agent`, memoryBytes: 256 * MiB, cpus: 1,
    machine: 'q35', accel: 'auto', injectAgent: false, agentTimeoutMs: 30_000, builtin: true, ...over,
  };
}

function spec(over: Partial<LaunchSpec> = {}): LaunchSpec {
  const p = over.profile ?? profile();
  return { name: 'web', profile: p, memoryBytes: p.memoryBytes, cpus: p.cpus, ...over };
}

const ctx: LaunchContext = {
  accel: 'tcg', initrdPath: '/img/initrd.cpio.gz', qmpSocketPath: '/s/qmp.sock', agentSocketPath: '/s/agent.sock',
  consoleSocketPath: '/s/console.sock', consoleLogPath: '/s/console.log', tscKhz: undefined,
};

/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => { if (a === flag) out.push(args[i + 1]!); });
  return out;
}

describe('kernelCmdline', () => {
  it('uses the profile cmdline and appends extra args last', () => {
    assert.equal(kernelCmdline(spec({ cmdlineAppend: 'foo=1  bar' })), `${kTunedCmdline} rdinit=/sbin/provium-agent foo=1 bar`);
  });

  it('re-adds console=ttyS0 and the profile rdinit to a replacement', () => {
    assert.equal(kernelCmdline(spec({ cmdlineReplace: 'quiet loglevel=3' })), 'console=ttyS0 quiet loglevel=3 rdinit=/sbin/provium-agent');
    // A replacement that brings its own rdinit keeps it.
    assert.equal(kernelCmdline(spec({ cmdlineReplace: 'console=ttyS0 rdinit=/bin/sh' })), 'console=ttyS0 rdinit=/bin/sh');
  });

  it('re-adds the injected agent rdinit for user profiles', () => {
    const p = profile({ builtin: false, injectAgent: true, cmdline: 'console=ttyS0 rdinit=/sbin/provium-agent' });
    assert.equal(kernelCmdline(spec({ profile: p, cmdlineReplace: 'quiet' })), 'console=ttyS0 quiet rdinit=/sbin/provium-agent');
    const q = profile({ builtin: false, injectAgent: false, cmdline: 'console=ttyS0' });
    assert.equal(kernelCmdline(spec({ profile: q, cmdlineReplace: 'quiet' })), 'console=ttyS0 quiet');
  });

  it('adds tsc_early_khz on microvm only', () => {
    assert.match(kernelCmdline(spec({ profile: profile({ machine: 'microvm' }) }), 2596138), / tsc_early_khz=2596138$/);
    assert.doesNotMatch(kernelCmdline(spec(), 2596138), /tsc_early_khz/);
  });
});

describe('buildQemuArgs: a Debian profile\'s root', () => {
  it('adds the root image as a read-only virtio disk with the serial the agent looks for', () => {
    const a = buildQemuArgs(spec({ profile: profile({ rootImage: '/cache/images/debian-k/root.sqfs' }) }), ctx);
    const nodes = values(a, '-blockdev').map((j) => JSON.parse(j) as Record<string, unknown>);
    assert.deepEqual(nodes, [
      { driver: 'file', 'node-name': 'root-file', filename: '/cache/images/debian-k/root.sqfs', 'read-only': true },
      { driver: 'raw', 'node-name': 'root', file: 'root-file', 'read-only': true },
    ]);
    assert.ok(values(a, '-device').includes('virtio-blk-pci,drive=root,id=root-dev,serial=provium-root'));
  });

  it('adds no disk for a profile without one', () => {
    assert.deepEqual(values(buildQemuArgs(spec(), ctx), '-blockdev'), []);
  });
});

describe('buildQemuArgs', () => {
  it('builds the q35 + PVH default', () => {
    const a = buildQemuArgs(spec(), ctx);
    assert.deepEqual(values(a, '-machine'), ['q35,accel=tcg']);
    assert.deepEqual(values(a, '-cpu'), ['qemu64,+arat']);
    assert.deepEqual(values(a, '-m'), ['256M']);
    assert.deepEqual(values(a, '-smp'), ['1']);
    assert.deepEqual(values(a, '-kernel'), ['/img/vmlinux']);
    assert.deepEqual(values(a, '-initrd'), ['/img/initrd.cpio.gz']);
    for (const flag of ['-nodefaults', '-no-user-config', '-no-reboot']) assert.ok(a.includes(flag), flag);
    assert.deepEqual(values(a, '-display'), ['none']);
    assert.deepEqual(values(a, '-mon'), ['chardev=qmp,mode=control']);
    const chardevs = values(a, '-chardev');
    assert.ok(chardevs.includes('socket,id=qmp,path=/s/qmp.sock'));
    assert.ok(chardevs.includes('socket,id=con,path=/s/console.sock,server=on,wait=off,logfile=/s/console.log,logappend=on'));
    assert.ok(chardevs.includes('socket,id=agent,path=/s/agent.sock,server=on,wait=off'));
    assert.deepEqual(values(a, '-serial'), ['chardev:con']);
    const devices = values(a, '-device');
    assert.ok(devices.includes('virtio-serial-pci,id=vser0'));
    assert.ok(devices.includes('virtserialport,bus=vser0.0,chardev=agent,name=org.provium.agent,id=agent-port'));
    assert.ok(devices.includes('pvpanic'), 'a guest panic becomes QMP GUEST_PANICKED');
    assert.ok(devices.includes('virtio-rng-pci,rng=rng0'));
    assert.equal(devices.filter((d) => d.startsWith('pcie-root-port,')).length, kDefaultHotplugSlots);
    assert.deepEqual(values(a, '-rtc'), ['base=utc,clock=vm']);
    assert.ok(!a.includes('-incoming'));
    assert.ok(!a.includes('-fw_cfg'));
  });

  it('uses -cpu host on KVM', () => {
    const a = buildQemuArgs(spec(), { ...ctx, accel: 'kvm' });
    assert.deepEqual(values(a, '-cpu'), ['host']);
    assert.deepEqual(values(a, '-machine'), ['q35,accel=kvm']);
  });

  it('sizes memory and cpus from the spec, not the profile', () => {
    const a = buildQemuArgs(spec({ memoryBytes: 1024 * MiB + 1, cpus: 4 }), ctx);
    assert.deepEqual(values(a, '-m'), ['1025M']);
    assert.deepEqual(values(a, '-smp'), ['4']);
  });

  it('passes the rng seed, the initial time and -incoming', () => {
    const a = buildQemuArgs(spec({ rngSeed: 0x0123456789abcdefn, initialTime: 978307200.75, incomingSnapshot: true }), ctx);
    assert.deepEqual(values(a, '-fw_cfg'), ['name=opt/provium/rng-seed,string=0123456789abcdef']);
    assert.deepEqual(values(a, '-rtc'), ['base=2001-01-01T00:00:00,clock=vm']);
    assert.deepEqual(values(a, '-incoming'), ['defer']);
  });

  it('gives a restore its hot-plugged NICs and disks on their slots, with every block node', () => {
    const rules = { 'inject-error': [{ event: 'read_aio', iotype: 'read', errno: 5 }], 'set-state': [] };
    const a = buildQemuArgs(spec({
      slotDevices: [
        { kind: 'nic', slot: 'hp0', id: 'n0', socketPath: '/sw/a.sock', mac: '52:54:00:00:00:01' },
        { kind: 'disk', slot: 'hp1', node: 'disk-a', readonly: false, serial: 'a', backend: { kind: 'nbd', socketPath: '/nbd.sock', exportName: 'vm1-a' } },
        { kind: 'disk', slot: 'hp2', node: 'disk-b', readonly: true, serial: 'b', backend: { kind: 'file', path: '/d/b.img', filterNode: 'disk-b-f3', rules } },
      ],
    }), ctx);
    assert.deepEqual(values(a, '-netdev'), ['stream,id=n0,server=off,addr.type=unix,addr.path=/sw/a.sock']);
    assert.deepEqual(values(a, '-blockdev').map((j) => JSON.parse(j)), [
      { driver: 'nbd', 'node-name': 'disk-a', server: { type: 'unix', path: '/nbd.sock' }, export: 'vm1-a', 'read-only': false },
      { driver: 'file', 'node-name': 'disk-b-file', filename: '/d/b.img', 'read-only': true },
      { driver: 'blkdebug', 'node-name': 'disk-b-f3', image: 'disk-b-file', 'read-only': true, 'inject-error': rules['inject-error'] },
      { driver: 'raw', 'node-name': 'disk-b', file: 'disk-b-f3', 'read-only': true },
    ]);
    const devices = values(a, '-device');
    assert.ok(devices.includes('virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,id=n0-dev,bus=hp0'));
    assert.ok(devices.indexOf('virtio-blk-pci,drive=disk-a,id=disk-a-dev,bus=hp1,serial=a') < devices.indexOf('virtio-blk-pci,drive=disk-b,id=disk-b-dev,bus=hp2,serial=b'));
  });

  it('escapes commas in paths for QEMU option syntax', () => {
    const a = buildQemuArgs(spec(), { ...ctx, agentSocketPath: '/s,x/agent.sock' });
    assert.ok(values(a, '-chardev').includes('socket,id=agent,path=/s,,x/agent.sock,server=on,wait=off'));
  });

  it('builds microvm without hot-plug ports and with the host TSC', () => {
    const a = buildQemuArgs(spec({ profile: profile({ machine: 'microvm' }) }), { ...ctx, tscKhz: 2596138 });
    assert.match(values(a, '-machine')[0]!, /^microvm,accel=tcg,pcie=on,rtc=on/);
    assert.equal(values(a, '-device').filter((d) => d.startsWith('pcie-root-port')).length, 0);
    assert.match(values(a, '-append')[0]!, /tsc_early_khz=2596138/);
  });

  it('omits -initrd when there is none and honours hotplugSlots', () => {
    const a = buildQemuArgs(spec({ hotplugSlots: 0 }), { ...ctx, initrdPath: undefined });
    assert.ok(!a.includes('-initrd'));
    assert.equal(values(a, '-device').filter((d) => d.startsWith('pcie-root-port')).length, 0);
  });
});

describe('helpers', () => {
  it('formats seeds, times, memory and TSC frequencies', () => {
    assert.equal(rngSeedHex(1n), '0000000000000001');
    assert.equal(rngSeedHex(-1n), 'ffffffffffffffff');
    assert.equal(rtcBase(0), '1970-01-01T00:00:00');
    assert.throws(() => rtcBase(-1), /initial_time must be seconds since the epoch .* got -1/);
    assert.throws(() => rtcBase(NaN), /got NaN/);
    assert.equal(memoryArg(256 * MiB), '256M');
    assert.equal(memoryArg(1), '1M');
    assert.equal(mhzToKhz('2596.138'), 2596138);
    assert.equal(mhzToKhz('3000'), 3000000);
    assert.equal(mhzToKhz('2400.5'), 2400500);
  });
});
