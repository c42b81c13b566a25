import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  builtinProfiles,
  kAgentRdinit,
  kTunedCmdline,
  minimalProfile,
  ProfileError,
  rdinitOf,
  resolveProfiles,
  resolveProfileSources,
  type ProfileSource,
} from '../../src/config/profiles.js';

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
      assert.match(err.message, /^profile `web`: unknown key `memroy`; accepted keys: kernel, initrd, root, cmdline, cmdline_file, memory, cpus, machine, accel, inject_agent, agent_boot_timeout, disks, build, build_out, build_inputs, extends, debian, init$/);
      return true;
    });
  });

  it('rejects bad values, naming the profile and the key', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{}, /profile `x`: `kernel` is required \(a path to a bzImage or PVH vmlinux\), or `root` .* or `extends`/],
      [{ kernel: '/k', build: '' }, /profile `x`: `build` is empty; give a shell command such as "\.\/build\.sh \{out\}"/],
      [{ kernel: '/k', build: 3 }, /profile `x`: `build` must be a string, got number 3/],
      [{ kernel: '/k', build_inputs: ['a'] }, /profile `x`: `build_inputs` needs `build` in the same table/],
      [{ kernel: '/k', build: 'make', build_inputs: 'src' }, /profile `x`: `build_inputs` must be an array of globs .* got "src"/],
      [{ kernel: '/k', build: 'make', build_inputs: [''] }, /`build_inputs` must be an array of globs/],
      [{ kernel: '/k', build_out: '{out}/x' }, /profile `x`: `build_out` cannot contain \{out\}/],
      [{ kernel: '/k', root: '' }, /profile `x`: `root` is empty/],
      [{ kernel: '/k', cmdline_file: 7 }, /profile `x`: `cmdline_file` must be a string, got number 7/],
      [{ extends: 'x' }, /profile `x`: `extends` makes a cycle: x → x/],
      [{ extends: 'no such' }, /profile `x`: `extends` must name a profile, got "no such"/],
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
      memoryBytes: 512 * MiB, cpus: 1, machine: 'q35', accel: 'auto', injectAgent: false, agentTimeoutMs: 30_000, builtin: true,
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

// Issue 11: the built-in adjusted, `extends`, `{out}`, a kernel of one's own on the minimal userland.
const image = { kernel: '/img/vmlinux', initrd: '/img/initrd.cpio.gz' };
const withMinimal = { builtins: { minimal: minimalProfile(image) }, cacheDir: '/cache', env: {} };
const src = (name: string, table: Record<string, unknown>, dir = '/proj'): ProfileSource => ({ name, table, dir, source: `${dir}/provium.toml` });

describe('[profiles.minimal] and extends', () => {
  it('a [profiles.minimal] table changes the built-in\'s settings and keeps its image and agent', () => {
    const { profiles } = resolveProfileSources([src('minimal', { memory: '1G', cpus: 2 })], withMinimal);
    const m = profiles['minimal']!;
    assert.equal(m.memoryBytes, 1024 * MiB);
    assert.equal(m.cpus, 2);
    assert.equal(m.kernel, image.kernel);
    assert.equal(m.initrd, image.initrd);
    assert.equal(m.cmdline, `${kTunedCmdline} rdinit=${kAgentRdinit}`);
    assert.equal(m.injectAgent, false, 'the agent is baked into the image');
    assert.equal(m.builtin, true);
  });

  it('without the image, [profiles.minimal] stays unavailable unless it names its own kernel', () => {
    const reason = 'profile `minimal`: the guest image is not built — run `provium image build`';
    const unavailable = { unavailableBuiltins: { minimal: reason }, cacheDir: '/cache', env: {} };
    const adjusted = resolveProfileSources([src('minimal', { memory: '1G' })], unavailable);
    assert.equal(adjusted.profiles['minimal'], undefined);
    assert.equal(adjusted.unavailable['minimal'], reason);
    const own = resolveProfileSources([src('minimal', { kernel: 'k', initrd: 'i' })], unavailable);
    assert.equal(own.profiles['minimal']!.kernel, '/proj/k');
    assert.deepEqual(own.unavailable, {});
  });

  it('extends = "minimal" makes a new profile overriding only the keys given', () => {
    const { profiles } = resolveProfileSources([src('big', { extends: 'minimal', memory: '1G' })], withMinimal);
    const big = profiles['big']!;
    assert.equal(big.name, 'big');
    assert.equal(big.memoryBytes, 1024 * MiB);
    assert.equal(big.cpus, 1);
    assert.equal(big.kernel, image.kernel);
    assert.equal(big.initrd, image.initrd);
    assert.equal(big.cmdline, `${kTunedCmdline} rdinit=${kAgentRdinit}`);
    assert.equal(big.injectAgent, false);
    assert.equal(big.builtin, false);
    // The built-in itself is untouched.
    assert.equal(profiles['minimal']!.memoryBytes, 512 * MiB);
  });

  it('extends chains through user profiles, each resolving paths against its own directory', () => {
    const { profiles } = resolveProfileSources([
      src('base', { kernel: 'k/bzImage', initrd: 'i.gz', cmdline: 'quiet', memory: '64M', cpus: 2 }, '/a'),
      src('mid', { extends: 'base', initrd: 'other.gz' }, '/b'),
      src('top', { extends: 'mid', cpus: 4 }, '/c'),
    ], withMinimal);
    assert.equal(profiles['top']!.kernel, '/a/k/bzImage');
    assert.equal(profiles['top']!.initrd, '/b/other.gz');
    assert.equal(profiles['top']!.memoryBytes, 64 * MiB);
    assert.equal(profiles['top']!.cpus, 4);
    assert.equal(profiles['top']!.cmdline, 'console=ttyS0 quiet rdinit=/sbin/provium-agent');
    assert.equal(profiles['top']!.injectAgent, true, 'its own initrd: the agent is appended');
  });

  it('a new initrd on top of minimal gets the agent injected; a new root drops the inherited kernel', () => {
    const { profiles } = resolveProfileSources([
      src('own', { extends: 'minimal', initrd: 'mine.gz' }),
      src('rooted', { extends: 'minimal', root: 'rootfs' }),
    ], withMinimal);
    assert.equal(profiles['own']!.injectAgent, true);
    assert.equal(profiles['own']!.initrd, '/proj/mine.gz');
    assert.equal(profiles['rooted']!.kernel, '', 'found in the root at first use');
    assert.equal(profiles['rooted']!.root, '/proj/rootfs');
  });

  it('names a cycle in extends, an unknown parent, and extends inside [profiles.minimal]', () => {
    assert.throws(() => resolveProfileSources([src('a', { extends: 'b' }), src('b', { extends: 'c' }), src('c', { extends: 'a' })], withMinimal),
      /profile `a`: `extends` makes a cycle: a → b → c → a; remove `extends` from one of them/);
    assert.throws(() => resolveProfileSources([src('a', { extends: 'nope' })], withMinimal),
      /profile `a`: `extends` names an unknown profile `nope`; known profiles: a, minimal/);
    assert.throws(() => resolveProfileSources([src('minimal', { extends: 'x', memory: '1G' }), src('x', { kernel: '/k' })], withMinimal),
      /profile `minimal`: `extends` is not allowed here: \[profiles\.minimal\] adjusts the built-in profile `minimal`/);
  });

  it('a profile that extends an unavailable built-in is unavailable, saying why', () => {
    const r = resolveProfileSources([src('big', { extends: 'minimal', memory: '1G' })], { unavailableBuiltins: { minimal: 'profile `minimal`: the guest image is not built — run `provium image build`' } });
    assert.equal(r.profiles['big'], undefined);
    assert.match(r.unavailable['big']!, /^profile `big` extends `minimal`, which is unavailable: .*run `provium image build`/);
  });
});

describe('a kernel of your own', () => {
  it('with only `kernel`, boots the minimal userland (its initrd carries the agent) and the tuned command line', () => {
    const p = resolveProfiles({ mine: { kernel: 'bzImage' } }, '/proj', withMinimal)['mine']!;
    assert.equal(p.kernel, '/proj/bzImage');
    assert.equal(p.initrd, image.initrd);
    assert.equal(p.injectAgent, false);
    assert.equal(p.cmdline, `${kTunedCmdline} rdinit=${kAgentRdinit}`);
    assert.equal(p.memoryBytes, 512 * MiB);
  });

  it('keeps its own cmdline, and gets no userland with inject_agent = false or its own initrd', () => {
    const r = resolveProfiles({
      a: { kernel: '/k', cmdline: 'quiet' },
      b: { kernel: '/k', inject_agent: false },
      c: { kernel: '/k', initrd: '/i' },
    }, '/', withMinimal);
    assert.equal(r['a']!.initrd, image.initrd);
    assert.equal(r['a']!.cmdline, 'console=ttyS0 quiet rdinit=/sbin/provium-agent');
    assert.equal(r['b']!.initrd, undefined);
    assert.equal(r['c']!.initrd, '/i');
    assert.equal(r['c']!.injectAgent, true);
  });

  it('without the minimal image, the agent overlay alone is the initramfs (as before)', () => {
    const p = resolveProfiles({ mine: { kernel: '/k' } }, '/')['mine']!;
    assert.equal(p.initrd, undefined);
    assert.equal(p.injectAgent, true);
  });
});

describe('Debian profiles', () => {
  it('boot minimal\'s kernel and initramfs with the root disk named on the command line', () => {
    const p = resolveProfiles({ web: { debian: { packages: ['nginx', 'curl', 'nginx'] }, memory: '512M' } }, '/proj', withMinimal)['web']!;
    assert.equal(p.kernel, image.kernel);
    assert.equal(p.initrd, image.initrd);
    assert.equal(p.injectAgent, false);
    assert.deepEqual(p.debian, { suite: 'bookworm', variant: 'required', packages: ['curl', 'nginx'] });
    assert.equal(p.init, 'agent');
    assert.equal(p.cmdline, `${kTunedCmdline} provium.root=provium-root rdinit=${kAgentRdinit}`);
    assert.equal(p.rootImage, undefined, 'the image is found at first use, not when the config is read');
  });

  it('init = "systemd" adds systemd, udev and dbus, and says so on the command line; extends keeps the root', () => {
    const r = resolveProfiles({
      web: { debian: { packages: ['nginx'], suite: 'trixie', variant: 'essential', mirror: 'http://m/debian' } },
      sd: { extends: 'web', init: 'systemd' },
    }, '/', withMinimal);
    assert.deepEqual(r['sd']!.debian, { suite: 'trixie', variant: 'essential', packages: ['dbus', 'nginx', 'systemd', 'udev'], mirror: 'http://m/debian' });
    assert.match(r['sd']!.cmdline, / provium\.root=provium-root provium\.init=systemd rdinit=/);
    assert.deepEqual(r['web']!.debian!.packages, ['nginx']);
    assert.equal(r['sd']!.agentTimeoutMs, 120_000, 'a systemd boot waits longer by default');
    assert.equal(r['web']!.agentTimeoutMs, 30_000);
  });

  it('refuses what cannot work, naming the key and the fix', () => {
    const bad = (table: Record<string, unknown>, re: RegExp) =>
      assert.throws(() => resolveProfiles({ x: table }, '/', withMinimal), (e: Error) => e instanceof ProfileError && re.test(e.message));
    bad({ kernel: '/k', init: 'systemd' }, /`init` needs `debian`/);
    bad({ debian: { packages: ['Nginx!'] } }, /"Nginx!" is not a Debian package name/);
    bad({ debian: { packages: 'nginx' } }, /debian\.packages must be an array/);
    bad({ debian: { pkgs: [] } }, /debian: unknown key `pkgs`; accepted keys: packages, suite, variant, mirror/);
    bad({ debian: { variant: 'huge' } }, /debian\.variant` must be one of "essential", "required", "important", "standard"/);
    bad({ debian: {}, initrd: '/i' }, /remove `initrd`/);
    bad({ debian: {}, init: 'upstart' }, /`init` must be one of "agent", "systemd"/);
    assert.throws(() => resolveProfiles({ x: { debian: {} } }, '/'), /minimal image's kernel and initramfs, which are not built — run `provium image build`/);
  });
});

describe('{out}, build, root and cmdline_file', () => {
  it('expands {out} in build and in every path field; build runs in the profile directory', () => {
    const p = resolveProfiles({
      b: {
        build: './build.sh {out} --log {out}/log', kernel: '{out}/vmlinux', initrd: '{out}/initrd.gz', root: '{out}/root',
        cmdline_file: '{out}/cmdline', disks: [{ id: 'd', image: '{out}/disk.img' }], build_inputs: ['src/**', 'build.sh'],
      },
    }, '/proj', { cacheDir: '/cache', env: {} })['b']!;
    const out = '/cache/build/b';
    assert.equal(p.kernel, `${out}/vmlinux`);
    assert.equal(p.initrd, `${out}/initrd.gz`);
    assert.equal(p.root, `${out}/root`);
    assert.equal(p.disks![0]!.image, `${out}/disk.img`);
    assert.equal(p.firstUse!.cmdlineFile, `${out}/cmdline`);
    assert.deepEqual(p.firstUse!.build, { owner: 'b', command: `./build.sh ${out} --log ${out}/log`, cwd: '/proj', out, inputs: ['src/**', 'build.sh'] });
  });

  it('build_out: given (relative to the profile), else $PROVIUM_BUILD_DIR/<profile>, else <cache>/build/<profile>', () => {
    const table = { b: { build: 'make {out}', kernel: '{out}/k' } };
    assert.equal(resolveProfiles(table, '/proj', { cacheDir: '/cache', env: {} })['b']!.firstUse!.build!.out, '/cache/build/b');
    assert.equal(resolveProfiles(table, '/proj', { cacheDir: '/cache', env: { PROVIUM_BUILD_DIR: '/builds' } })['b']!.firstUse!.build!.out, '/builds/b');
    const given = resolveProfiles({ b: { ...table.b, build_out: 'out' } }, '/proj', { cacheDir: '/cache', env: { PROVIUM_BUILD_DIR: '/builds' } })['b']!;
    assert.equal(given.firstUse!.build!.out, '/proj/out');
    assert.equal(given.kernel, '/proj/out/k');
    assert.equal(given.firstUse!.build!.command, 'make /proj/out');
  });

  it('a profile that extends one with a build shares that build (one run for both)', () => {
    const { profiles } = resolveProfileSources([src('built', { build: 'make {out}', kernel: '{out}/k' }), src('more', { extends: 'built', memory: '1G' })], withMinimal);
    assert.equal(profiles['more']!.firstUse!.build, profiles['built']!.firstUse!.build);
    assert.equal(profiles['more']!.kernel, '/cache/build/built/k');
  });

  it('root alone is enough: the kernel is found at first use', () => {
    const p = resolveProfiles({ r: { root: 'rootfs', inject_agent: false } }, '/proj')['r']!;
    assert.equal(p.kernel, '');
    assert.equal(p.root, '/proj/rootfs');
  });

  it('cmdline_file: the inline cmdline is kept to go after the file at first use', () => {
    const p = resolveProfiles({ c: { kernel: '/k', initrd: '/i', cmdline_file: 'cmd.txt', cmdline: 'loglevel=7' } }, '/proj')['c']!;
    assert.equal(p.firstUse!.cmdlineFile, '/proj/cmd.txt');
    assert.equal(p.firstUse!.inlineCmdline, 'loglevel=7');
    assert.equal(p.firstUse!.agentRdinit, true);
  });
});
