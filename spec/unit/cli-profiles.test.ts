// Profiles end to end, with the real CLI and real guests (issue 11): spec/lua/profiles.test.lua
// under spec/lua/data/profiles/provium.toml boots a profile made by its `build` (the minimal
// kernel copied to {out}, a cmdline_file), one that extends the built-in, and the built-in
// adjusted. The build runs once, is skipped while its inputs are unchanged, and runs again with
// --rebuild or `provium prepare`. The cache is this test's own; the built image is the real one's.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cacheDir } from '../../src/config/cache-dir.js';
import { cliMain } from './cli-run.js';

/** The checkout: the spec and its config are named relative to it. */
const repo = path.resolve(path.dirname(cliMain), '../../..');
const kConfig = 'spec/lua/data/profiles/provium.toml';
const kSpec = 'spec/lua/profiles.test.lua';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function provium(args: string[], cache: string): Promise<Run> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, CI: '1', PROVIUM_CACHE_DIR: cache };
    delete env['PROVIUM_BUILD_DIR'];
    // runProvium (cli-run.ts) keeps the environment; this run needs a cache of its own.
    execFile(process.execPath, [cliMain, ...args], { cwd: repo, env }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('profiles from provium.toml (real guests)', () => {
  let dir: string;
  let cache: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-profiles-e2e-'));
    cache = path.join(dir, 'cache');
    await mkdir(cache);
    // The built image is shared; build outputs, stamps and boot snapshots are this test's own.
    const images = path.join(cacheDir(), 'images');
    await stat(path.join(images, 'minimal')).catch(() => {
      throw new Error(`the minimal image is not built in ${images}: run \`provium image build\` (npm run setup)`);
    });
    await symlink(images, path.join(cache, 'images'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('builds the profile before its first boot and checks each profile inside the guest', async () => {
    const run = await provium(['--config', kConfig, '--no-progress', '-v', kSpec], cache);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /PASS spec\/lua\/profiles\.test\.lua \(3 passed, 0 failed, 0 skipped\)/);
    assert.match(run.stderr, /^\[built\] building \(no successful build recorded\): sh \.\/build\.sh .*\/cache\/build\/built$/m);
    assert.match(run.stderr, /^\[built\] build\.sh: kernel and cmdline in .*\/cache\/build\/built$/m);
  });

  it('skips the build while its inputs are unchanged, and runs it with --rebuild', async () => {
    const again = await provium(['--config', kConfig, '--no-progress', kSpec], cache);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stderr, /^\[built\] build is current \(inputs unchanged\); skipped/m);
    assert.doesNotMatch(again.stderr, /build\.sh: kernel/);
    const forced = await provium(['--config', kConfig, '--no-progress', '--rebuild', kSpec], cache);
    assert.equal(forced.code, 0, forced.stdout + forced.stderr);
    assert.match(forced.stderr, /^\[built\] building \(forced by --rebuild or `provium prepare`\)/m);
    assert.match(forced.stdout, /3 passed, 0 failed, 0 skipped/);
  });

  it('`provium prepare` builds now and reports each profile', async () => {
    const run = await provium(['prepare', '--config', kConfig, 'built', 'big'], cache);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /^ready {4}built: built in [\d.]+s; kernel .*\/cache\/build\/built\/vmlinux$/m);
    assert.match(run.stdout, /^ready {4}big: no build; kernel .*\/images\/minimal\/vmlinux$/m);
    const unknown = await provium(['prepare', '--config', kConfig, 'nope'], cache);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /prepare: unknown profile `nope`; known profiles: big, built, minimal/);
  });
});
