// provium.toml profiles as a user writes them (issue 11): `[profiles] from_dir`, its name clash
// with an inline table, `[profiles.minimal]`, `extends`, `build_out` and PROVIUM_BUILD_DIR, and
// where each error points.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { kAgentRdinit, kTunedCmdline } from '../../src/config/profiles.js';
import { project } from './run-capture.js';

const image = async () => ({ kernel: '/img/vmlinux', initrd: '/img/initrd.cpio.gz' });
const noImage = async () => undefined;

describe('[profiles] from_dir', () => {
  it('makes a profile of each subdirectory with profile.provium.toml, its paths and build relative to it', async () => {
    const dir = await project({
      'provium.toml': '[provium]\ncache_dir = "cache"\n\n[profiles]\nfrom_dir = "profiles"\n\n[profiles.inline]\nkernel = "k"\n',
      'profiles/kernel-only/profile.provium.toml': 'kernel = "bzImage"\nmemory = "128M"\n',
      'profiles/built/profile.provium.toml': 'build = "./build.sh {out}"\nkernel = "{out}/vmlinux"\ncmdline_file = "cmdline.txt"\n',
      'profiles/notes/README.md': 'not a profile: no profile.provium.toml here\n',
    });
    const config = await loadConfig({ cwd: dir, findMinimalImage: image });
    assert.deepEqual(Object.keys(config.profiles).sort(), ['built', 'inline', 'kernel-only', 'minimal']);
    const only = config.profiles['kernel-only']!;
    assert.equal(only.kernel, join(dir, 'profiles/kernel-only/bzImage'));
    assert.equal(only.memoryBytes, 128 * 1024 * 1024);
    assert.equal(only.firstUse!.source, join(dir, 'profiles/kernel-only/profile.provium.toml'));
    const built = config.profiles['built']!;
    assert.equal(built.firstUse!.build!.cwd, join(dir, 'profiles/built'));
    assert.equal(built.firstUse!.build!.out, join(dir, 'cache/build/built'));
    assert.equal(built.firstUse!.build!.command, `./build.sh ${join(dir, 'cache/build/built')}`);
    assert.equal(built.kernel, join(dir, 'cache/build/built/vmlinux'), '{out} paths are absolute, not under the profile');
    assert.equal(built.firstUse!.cmdlineFile, join(dir, 'profiles/built/cmdline.txt'));
    assert.equal(config.profiles['inline']!.kernel, join(dir, 'k'));
  });

  it('an inline profile of the same name is an error naming both places', async () => {
    const dir = await project({
      'provium.toml': '[profiles]\nfrom_dir = "profiles"\n\n[profiles.web]\nkernel = "k"\n',
      'profiles/web/profile.provium.toml': 'kernel = "k"\n',
    });
    await assert.rejects(loadConfig({ cwd: dir, findMinimalImage: noImage }), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, `profile \`web\` is defined twice: [profiles.web] in ${join(dir, 'provium.toml')}:4 and ${join(dir, 'profiles/web/profile.provium.toml')} (from_dir = "profiles"); remove one, or rename the table or the directory`);
      return true;
    });
  });

  it('names the from_dir file (and line) of a bad key, and a parse error in it', async () => {
    const dir = await project({
      'provium.toml': '[profiles]\nfrom_dir = "p"\n',
      'p/a/profile.provium.toml': 'kernel = "k"\n# a comment\nmemroy = "1G"\n',
    });
    await assert.rejects(loadConfig({ cwd: dir, findMinimalImage: noImage }),
      new RegExp(`^ConfigError: ${join(dir, 'p/a/profile.provium.toml')}:3: profile \`a\`: unknown key \`memroy\`; accepted keys: kernel, `.replace(/[.]/g, '\\.')));
    const broken = await project({ 'provium.toml': '[profiles]\nfrom_dir = "p"\n', 'p/a/profile.provium.toml': 'kernel = \n' });
    await assert.rejects(loadConfig({ cwd: broken, findMinimalImage: noImage }), new RegExp(`${join(broken, 'p/a/profile.provium.toml').replace(/[.]/g, '\\.')}:1:\\d+: `));
  });

  it('a from_dir that is missing or holds no profile is an error with the fix', async () => {
    const missing = await project({ 'provium.toml': '[profiles]\nfrom_dir = "profiles"\n' });
    await assert.rejects(loadConfig({ cwd: missing, findMinimalImage: noImage }),
      /provium\.toml:1: \[profiles\] from_dir = "profiles": .*\/profiles does not exist; create it with one subdirectory per profile, each holding profile\.provium\.toml, or remove from_dir/);
    const empty = await project({ 'provium.toml': '[profiles]\nfrom_dir = "profiles"\n', 'profiles/x/README': '' });
    await assert.rejects(loadConfig({ cwd: empty, findMinimalImage: noImage }), /no subdirectory of .*\/profiles holds a profile\.provium\.toml/);
    const bad = await project({ 'provium.toml': '[profiles]\nfrom_dir = 3\n' });
    await assert.rejects(loadConfig({ cwd: bad, findMinimalImage: noImage }), /\[profiles\] `from_dir` must be a directory path, e\.g\. from_dir = "profiles", got 3/);
  });

  it('a from_dir profile may extend an inline one and the built-in', async () => {
    const dir = await project({
      'provium.toml': '[profiles]\nfrom_dir = "p"\n\n[profiles.base]\nextends = "minimal"\ncpus = 2\n',
      'p/big/profile.provium.toml': 'extends = "base"\nmemory = "1G"\n',
    });
    const config = await loadConfig({ cwd: dir, findMinimalImage: image });
    const big = config.profiles['big']!;
    assert.equal(big.cpus, 2);
    assert.equal(big.memoryBytes, 1024 ** 3);
    assert.equal(big.kernel, '/img/vmlinux');
    assert.equal(big.cmdline, `${kTunedCmdline} rdinit=${kAgentRdinit}`);
  });
});

describe('the built-in profile in provium.toml', () => {
  it('[profiles.minimal] memory = "1G" adjusts it instead of failing', async () => {
    const dir = await project({ 'provium.toml': '[profiles.minimal]\nmemory = "1G"\n' });
    const config = await loadConfig({ cwd: dir, findMinimalImage: image });
    assert.equal(config.profiles['minimal']!.memoryBytes, 1024 ** 3);
    assert.equal(config.profiles['minimal']!.kernel, '/img/vmlinux');
    assert.deepEqual(config.unavailableProfiles, {});
  });

  it('extends names its cycle with the line of the table', async () => {
    const dir = await project({ 'provium.toml': '[profiles.a]\nextends = "b"\n\n[profiles.b]\nextends = "a"\n' });
    await assert.rejects(loadConfig({ cwd: dir, findMinimalImage: image }), /provium\.toml:1: profile `a`: `extends` makes a cycle: a → b → a; remove `extends` from one of them/);
  });

  it('a profile extending the unbuilt minimal is unavailable, not an error at load', async () => {
    const dir = await project({ 'provium.toml': '[profiles.big]\nextends = "minimal"\nmemory = "1G"\n' });
    const config = await loadConfig({ cwd: dir, findMinimalImage: noImage });
    assert.equal(config.profiles['big'], undefined);
    assert.match(config.unavailableProfiles['big']!, /profile `big` extends `minimal`, which is unavailable: .*provium image build/);
  });
});

describe('build_out defaults', () => {
  const toml = '[provium]\ncache_dir = "cache"\n\n[profiles.b]\nbuild = "make OUT={out}"\nkernel = "{out}/bzImage"\n';

  it('is <cache>/build/<profile> without PROVIUM_BUILD_DIR', async () => {
    const saved = process.env['PROVIUM_BUILD_DIR'];
    delete process.env['PROVIUM_BUILD_DIR'];
    try {
      const dir = await project({ 'provium.toml': toml });
      const b = (await loadConfig({ cwd: dir, findMinimalImage: noImage })).profiles['b']!;
      assert.equal(b.firstUse!.build!.out, join(dir, 'cache/build/b'));
      assert.equal(b.kernel, join(dir, 'cache/build/b/bzImage'));
    } finally {
      if (saved !== undefined) process.env['PROVIUM_BUILD_DIR'] = saved;
    }
  });

  it('is $PROVIUM_BUILD_DIR/<profile> when it is set', async () => {
    const saved = process.env['PROVIUM_BUILD_DIR'];
    process.env['PROVIUM_BUILD_DIR'] = '/srv/builds';
    try {
      const dir = await project({ 'provium.toml': toml });
      const b = (await loadConfig({ cwd: dir, findMinimalImage: noImage })).profiles['b']!;
      assert.equal(b.firstUse!.build!.out, '/srv/builds/b');
      assert.equal(b.firstUse!.build!.command, 'make OUT=/srv/builds/b');
    } finally {
      if (saved === undefined) delete process.env['PROVIUM_BUILD_DIR'];
      else process.env['PROVIUM_BUILD_DIR'] = saved;
    }
  });
});
