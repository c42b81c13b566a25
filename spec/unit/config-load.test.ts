import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { kTunedCmdline } from '../../src/config/profiles.js';
import { project } from './run-capture.js';

/** An image lookup that finds nothing: the built-in minimal is then unavailable. */
const noImage = async () => undefined;

describe('loadConfig', () => {
  it('uses defaults when there is no provium.toml', async () => {
    const dir = await project({});
    const config = await loadConfig({ cwd: dir, skipProfiles: true });
    assert.equal(config.path, null);
    assert.equal(config.baseDir, dir);
    assert.deepEqual(config.roots, []);
    assert.equal(config.cacheMaxSizeBytes, 20 * 1024 ** 3);
  });

  it('reads [provium] roots and cache_dir relative to the file', async () => {
    const dir = await project({
      'proj/provium.toml': '[provium]\nroots = ["spec", "examples", "spec"]\ncache_dir = ".cache"\ncache_max_size = "2G"\n',
    });
    const config = await loadConfig({ cwd: dir, path: 'proj/provium.toml', skipProfiles: true });
    assert.equal(config.path, join(dir, 'proj/provium.toml'));
    assert.deepEqual(config.roots, [join(dir, 'proj/spec'), join(dir, 'proj/examples')]);
    assert.equal(config.cacheDir, join(dir, 'proj/.cache'));
    assert.equal(config.cacheMaxSizeBytes, 2 * 1024 ** 3);
  });

  it('names file:line:column for a parse error', async () => {
    const dir = await project({ 'provium.toml': '[provium]\nroots = ["a"\n' });
    await assert.rejects(loadConfig({ cwd: dir, skipProfiles: true }), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.equal((e as ConfigError).exitCode, 2);
      assert.match(e.message, new RegExp(`^${join(dir, 'provium.toml').replace(/[.]/g, '\\.')}:\\d+:\\d+: `));
      return true;
    });
  });

  it('lists the accepted keys for an unknown key or section, with its line', async () => {
    const dir = await project({ 'provium.toml': '# comment\n[provium]\nroots = ["a"]\nrootz = ["b"]\n' });
    await assert.rejects(
      loadConfig({ cwd: dir, skipProfiles: true }),
      /provium\.toml:4: unknown key `rootz` in \[provium\]; accepted keys: roots, cache_dir, cache_max_size/,
    );
    const dir2 = await project({ 'provium.toml': '[provium]\nroots = ["a"]\n\n[runner]\nx = 1\n' });
    await assert.rejects(loadConfig({ cwd: dir2, skipProfiles: true }), /provium\.toml:4: unknown section `runner`; accepted: \[provium\], \[profiles\]/);
  });

  it('rejects wrong types and a missing explicit --config', async () => {
    const dir = await project({ 'provium.toml': '[provium]\nroots = "spec"\n', 'b.toml': '[provium]\ncache_max_size = "lots"\n' });
    await assert.rejects(loadConfig({ cwd: dir, skipProfiles: true }), /provium\.toml:2: `roots` must be an array of directory paths/);
    await assert.rejects(loadConfig({ cwd: dir, path: 'b.toml', skipProfiles: true }), /b\.toml:2: cache_max_size: invalid size "lots"/);
    await assert.rejects(loadConfig({ cwd: dir, path: 'nope.toml', findMinimalImage: noImage }), /nope\.toml: no such file \(given with --config\)/);
  });

  it('passes [profiles] to the profile resolver and reports its errors with the file', async () => {
    const dir = await project({
      'provium.toml': '[profiles.fast]\nkernel = "k/bzImage"\nmemory = "1G"\n\n[profiles.bad]\nkernel = "x"\nmemroy = 5\n',
    });
    await assert.rejects(loadConfig({ cwd: dir, findMinimalImage: noImage }), /provium\.toml:5: profile `bad`: unknown key `memroy`/);
    const ok = await project({ 'provium.toml': '[profiles.fast]\nkernel = "k/bzImage"\nmemory = "1G"\n' });
    const config = await loadConfig({ cwd: ok, findMinimalImage: noImage });
    assert.equal(config.profiles['fast']!.kernel, join(ok, 'k/bzImage'));
    assert.equal(config.profiles['fast']!.memoryBytes, 1024 ** 3);
  });

  it('builds the built-in minimal from the injected image lookup, or explains why not', async () => {
    const dir = await project({});
    const missing = await loadConfig({ cwd: dir, findMinimalImage: noImage });
    assert.equal(missing.profiles['minimal'], undefined);
    assert.match(missing.unavailableProfiles['minimal']!, /profile `minimal`: the guest image is not built — run `provium image build`/);

    const built = await loadConfig({ cwd: dir, findMinimalImage: async () => ({ kernel: '/img/vmlinux', initrd: '/img/initrd.cpio.gz' }) });
    const minimal = built.profiles['minimal']!;
    assert.deepEqual(built.unavailableProfiles, {});
    assert.equal(minimal.kernel, '/img/vmlinux');
    assert.equal(minimal.initrd, '/img/initrd.cpio.gz');
    assert.equal(minimal.cmdline, `${kTunedCmdline} rdinit=/sbin/provium-agent`);
    assert.equal(minimal.builtin, true);
  });

  it('looks the image up after applying cache_dir, and never when profiles are skipped', async () => {
    const dir = await project({ 'provium.toml': '[provium]\ncache_dir = "cache"\n' });
    const seen: (string | undefined)[] = [];
    const lookup = async () => {
      seen.push(process.env['PROVIUM_CACHE_DIR']);
      return undefined;
    };
    await loadConfig({ cwd: dir, findMinimalImage: lookup });
    assert.deepEqual(seen, [join(dir, 'cache')]);
    await loadConfig({ cwd: dir, skipProfiles: true });
    assert.equal(seen.length, 1);
  });
});
