// A profile's first use (issue 11): its build (skipped while its inputs are unchanged), the kernel
// found in its root, its cmdline_file, and the path checks; and the run's preflight, which checks
// only the profiles the selected files use.
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { toRunOptions } from '../../src/cli/flags.js';
import { prepareUsedProfiles } from '../../src/cli/wiring.js';
import { loadConfig } from '../../src/config/config.js';
import { ProfileBuildError, runProfileBuild, stampPath, type BuildOptions } from '../../src/config/profile-build.js';
import { findRootKernel, inspectProfileFiles, prepareProfile } from '../../src/config/profile-prepare.js';
import { resolveProfiles, type ProfileBuild } from '../../src/config/profiles.js';
import { UsageError } from '../../src/run/errors.js';
import { Capture, project } from './run-capture.js';

const lines = async (file: string) => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);

/** Build options that record the log; `rebuild` as given. */
function opts(cacheDir: string, rebuild = false): BuildOptions & { logged: string[] } {
  const logged: string[] = [];
  return { cacheDir, rebuild, log: (l) => logged.push(l), logged };
}

/** A build that counts its runs in `<dir>/runs` and writes {out}/vmlinux. */
async function counting(inputs?: string[]): Promise<{ dir: string; cache: string; build: ProfileBuild }> {
  const dir = await project({ 'src/a.c': 'int a;\n', 'src/b.c': 'int b;\n', 'build.sh': 'echo built >> runs\necho "kernel" > "$1/vmlinux"\necho "to stderr" >&2\n' });
  const out = join(dir, 'out');
  const build: ProfileBuild = { owner: 'k', command: `sh build.sh ${out}`, cwd: dir, out };
  if (inputs) build.inputs = inputs;
  return { dir, cache: join(dir, 'cache'), build };
}

describe('build', () => {
  it('runs once, then not again while its inputs are unchanged', async () => {
    const { dir, cache, build } = await counting(['src/**', 'build.sh']);
    const first = opts(cache);
    const one = await runProfileBuild(build, first);
    assert.equal(one.ran, true);
    assert.equal(await readFile(join(dir, 'out/vmlinux'), 'utf8'), 'kernel\n');
    assert.ok(first.logged.includes('[k] to stderr'), 'output is logged, prefixed with the profile');
    assert.ok(first.logged.some((l) => l.startsWith('[k] building (no successful build recorded): sh build.sh')));
    const again = opts(cache);
    assert.deepEqual(await runProfileBuild(build, again), { ran: false, why: 'current' });
    assert.match(again.logged.join('\n'), /\[k\] build is current \(inputs unchanged\); skipped/);
    assert.equal((await lines(join(dir, 'runs'))).length, 1);
  });

  it('runs again when an input file changes, naming it', async () => {
    const { dir, cache, build } = await counting(['src/**', 'build.sh']);
    await runProfileBuild(build, opts(cache));
    await writeFile(join(dir, 'src/b.c'), 'int b = 2;\n');
    const log = opts(cache);
    const two = await runProfileBuild(build, log);
    assert.equal(two.ran, true);
    assert.equal(two.why, 'input changed: src/b.c');
    // A new file matched by a glob, and a deleted one, count too.
    await writeFile(join(dir, 'src/c.c'), '');
    assert.equal((await runProfileBuild(build, opts(cache))).ran, true);
    await rm(join(dir, 'src/a.c'));
    assert.match((await runProfileBuild(build, opts(cache))).why, /input changed: src\/a\.c/);
    assert.equal((await lines(join(dir, 'runs'))).length, 4);
  });

  it('ignores a file outside its inputs, and runs anyway with rebuild', async () => {
    const { dir, cache, build } = await counting(['src/*.c']);
    await runProfileBuild(build, opts(cache));
    await writeFile(join(dir, 'unrelated.txt'), 'x');
    assert.equal((await runProfileBuild(build, opts(cache))).ran, false);
    const forced = await runProfileBuild(build, opts(cache, true));
    assert.equal(forced.ran, true);
    assert.match(forced.why, /forced/);
    assert.equal((await lines(join(dir, 'runs'))).length, 2);
  });

  it('without build_inputs, the command and {out} existing are the stamp', async () => {
    const { dir, cache, build } = await counting();
    await runProfileBuild(build, opts(cache));
    await writeFile(join(dir, 'src/a.c'), 'changed');
    assert.equal((await runProfileBuild(build, opts(cache))).ran, false, 'inputs are not tracked');
    await rm(build.out, { recursive: true });
    assert.match((await runProfileBuild(build, opts(cache))).why, /\{out\} .* is missing/);
    assert.match((await runProfileBuild({ ...build, command: `${build.command} # v2` }, opts(cache))).why, /the command changed/);
    assert.equal((await lines(join(dir, 'runs'))).length, 3);
  });

  it('a failing build names the profile, the command, the exit code and the tail of its output, and leaves no stamp', async () => {
    const dir = await project({});
    const cache = join(dir, 'cache');
    const build: ProfileBuild = {
      owner: 'broken', cwd: dir, out: join(dir, 'out'),
      command: 'for i in $(seq 1 30); do echo "line $i"; done; echo "cc: error: no such file" >&2; exit 3',
    };
    await assert.rejects(runProfileBuild(build, opts(cache)), (e: Error) => {
      assert.ok(e instanceof ProfileBuildError);
      assert.equal(e.exitCode, 3);
      assert.match(e.message, /^profile `broken`: `build` failed \(exit code 3\): for i in .* exit 3\n {2}in \/.*\n {2}last output:\n/);
      assert.match(e.message, /line 30\n {4}cc: error: no such file\n/);
      assert.doesNotMatch(e.message, /line 10\n/, 'only the tail');
      assert.equal(e.tail.length, 20);
      return true;
    });
    await assert.rejects(readFile(stampPath(cache, build)));
  });

  it('sees {out} created, PROVIUM_PROFILE and PROVIUM_BUILD_OUT, and runs in its directory', async () => {
    const dir = await project({ 'here.txt': 'yes' });
    const out = join(dir, 'deep/out');
    const build: ProfileBuild = { owner: 'env', cwd: dir, out, command: 'cat here.txt > "$PROVIUM_BUILD_OUT/seen"; echo "$PROVIUM_PROFILE" >> "$PROVIUM_BUILD_OUT/seen"' };
    await runProfileBuild(build, opts(join(dir, 'cache')));
    assert.equal(await readFile(join(out, 'seen'), 'utf8'), 'yesenv\n');
  });
});

describe('the kernel in a root', () => {
  it('finds the single usr/lib/modules/<rel>/vmlinuz-<rel>, or boot/vmlinuz-<rel>', async () => {
    const one = await project({ 'usr/lib/modules/6.1.0-9/vmlinuz-6.1.0-9': 'k', 'usr/lib/modules/6.1.0-9/modules.dep': '', 'boot/vmlinuz-6.1.0-9': 'same kernel' });
    assert.deepEqual(await findRootKernel(one), { kernel: join(one, 'usr/lib/modules/6.1.0-9/vmlinuz-6.1.0-9'), release: '6.1.0-9' });
    const boot = await project({ 'boot/vmlinuz-6.6.1': 'k', 'boot/config-6.6.1': '' });
    assert.deepEqual(await findRootKernel(boot), { kernel: join(boot, 'boot/vmlinuz-6.6.1'), release: '6.6.1' });
  });

  it('follows an absolute symlink inside the root, not on the host', async () => {
    const root = await project({ 'usr/lib/modules/6.1/vmlinuz-6.1': 'k' });
    await mkdir(join(root, 'boot'));
    await symlink('/usr/lib/modules/6.1/vmlinuz-6.1', join(root, 'boot/vmlinuz-6.2'));
    await symlink('/no/such/file', join(root, 'boot/vmlinuz-6.3'));
    // vmlinuz-6.2 resolves inside the root (a second release); the dangling one is ignored.
    assert.match(JSON.stringify(await findRootKernel(root)), /holds 2 kernels \(usr\/lib\/modules\/6\.1\/vmlinuz-6\.1, boot\/vmlinuz-6\.2\)/);
  });

  it('none, two, or no root at all are clear problems', async () => {
    const none = await project({ 'usr/lib/modules/6.1/modules.dep': '', 'etc/hostname': 'x' });
    assert.deepEqual(await findRootKernel(none), {
      problem: 'holds no kernel: expected one usr/lib/modules/<release>/vmlinuz-<release> (or boot/vmlinuz-<release>); install one into the root, or set `kernel`',
    });
    const two = await project({ 'usr/lib/modules/6.1/vmlinuz-6.1': 'a', 'usr/lib/modules/6.2/vmlinuz-6.2': 'b' });
    assert.deepEqual(await findRootKernel(two), {
      problem: 'holds 2 kernels (usr/lib/modules/6.1/vmlinuz-6.1, usr/lib/modules/6.2/vmlinuz-6.2); keep one, or set `kernel` to the one to boot',
    });
    assert.deepEqual(await findRootKernel(join(two, 'nope')), { problem: 'does not exist' });
  });

  it('first use sets the profile\'s kernel from its root; a broken root names the profile and the fix', async () => {
    const dir = await project({ 'rootfs/usr/lib/modules/6.1/vmlinuz-6.1': 'k', 'empty/etc/x': '' });
    const profiles = resolveProfiles({ r: { root: 'rootfs', inject_agent: false }, e: { root: 'empty', inject_agent: false } }, dir, { cacheDir: join(dir, 'cache') });
    const done = await prepareProfile(profiles['r']!, opts(join(dir, 'cache')));
    assert.equal(done.kernel, join(dir, 'rootfs/usr/lib/modules/6.1/vmlinuz-6.1'));
    assert.equal(profiles['r']!.kernel, done.kernel);
    await assert.rejects(prepareProfile(profiles['e']!, opts(join(dir, 'cache'))),
      new RegExp(`^ProfileError: profile \`e\`: root ${join(dir, 'empty')} holds no kernel: .*\\nfix the paths in provium\\.toml \\(relative paths start at ${dir}\\)$`));
  });
});

describe('cmdline_file', () => {
  it('collapses its whitespace and puts the inline cmdline after it (inline wins)', async () => {
    const dir = await project({ 'k': '', 'i': '', 'cmdline': '  root=/dev/vda\n\tinit=/sbin/init   loglevel=3\n\n' });
    const p = resolveProfiles({ c: { kernel: 'k', initrd: 'i', cmdline_file: 'cmdline', cmdline: 'loglevel=7 quiet' } }, dir)['c']!;
    assert.equal(p.cmdline, 'console=ttyS0 loglevel=7 quiet rdinit=/sbin/provium-agent', 'before first use: the inline part');
    const done = await prepareProfile(p, opts(join(dir, 'cache')));
    assert.equal(done.cmdline, 'console=ttyS0 root=/dev/vda init=/sbin/init loglevel=3 loglevel=7 quiet rdinit=/sbin/provium-agent');
    assert.equal(p.cmdline, done.cmdline);
  });

  it('is read at first use: a missing file or a conflicting rdinit in it is a problem then, not at load', async () => {
    const dir = await project({ 'k': '', 'i': '', 'bad': 'rdinit=/init quiet' });
    const r = resolveProfiles({ m: { kernel: 'k', initrd: 'i', cmdline_file: 'missing' }, b: { kernel: 'k', initrd: 'i', cmdline_file: 'bad' } }, dir);
    const missing = await inspectProfileFiles(r['m']!);
    assert.deepEqual(missing.problems.map((p) => `${p.key} ${p.problem}`), ['cmdline_file does not exist']);
    const bad = await inspectProfileFiles(r['b']!);
    assert.match(bad.problems[0]!.problem, /^`cmdline_file` .*\/bad sets rdinit=\/init, which conflicts with inject_agent/);
  });
});

describe('first use', () => {
  it('builds, then checks what the build made; a profile and the one extending it share one build', async () => {
    const dir = await project({ 'make.sh': 'echo run >> runs; printf "a=1\\n b=2" > "$1/cmdline"; : > "$1/vmlinux"\n', 'i': '' });
    const cache = join(dir, 'cache');
    const profiles = resolveProfiles({
      built: { build: 'sh make.sh {out}', kernel: '{out}/vmlinux', initrd: 'i', cmdline_file: '{out}/cmdline' },
      more: { extends: 'built', memory: '1G' },
    }, dir, { cacheDir: cache, env: {} });
    const [a, b] = await Promise.all([prepareProfile(profiles['built']!, opts(cache)), prepareProfile(profiles['more']!, opts(cache))]);
    assert.equal(a.build?.ran, true);
    assert.equal(b.build?.ran, true, 'the same build, not a second one');
    assert.equal(b.cmdline, 'console=ttyS0 a=1 b=2 rdinit=/sbin/provium-agent');
    assert.equal((await lines(join(dir, 'runs'))).length, 1);
    // Once per process: a second call is the first one's result.
    assert.equal(await prepareProfile(profiles['built']!, opts(cache, true)), a);
  });

  it('names what the build should have made', async () => {
    const dir = await project({});
    const cache = join(dir, 'cache');
    const p = resolveProfiles({ lazy: { build: 'true', kernel: '{out}/vmlinux', inject_agent: false } }, dir, { cacheDir: cache, env: {} })['lazy']!;
    await assert.rejects(prepareProfile(p, opts(cache)),
      /^ProfileError: profile `lazy`: kernel .*\/cache\/build\/lazy\/vmlinux does not exist \(under \{out\}: the build `true` should make it\)\nmake the build write these files, or fix the paths$/);
  });
});

describe('preflight checks only the profiles the selected files use', () => {
  async function setup(testFile: string, extra: Record<string, string> = {}) {
    const dir = await project({
      'provium.toml': '[provium]\nroots = ["t"]\ncache_dir = "cache"\n\n[profiles.good]\nkernel = "k"\ninitrd = "i"\n\n[profiles.broken]\nkernel = "nope/bzImage"\ninitrd = "i"\n\n' +
        '[profiles.failing]\nbuild = "echo compiling; exit 7"\nkernel = "{out}/k"\ninitrd = "i"\n',
      'k': '', 'i': '',
      't/a.test.lua': testFile,
      ...extra,
    });
    const config = await loadConfig({ cwd: dir, findMinimalImage: async () => undefined });
    const stderr = new Capture();
    const run = () => prepareUsedProfiles(config, { options: toRunOptions([], {}, config, {}, dir), cwd: dir, rebuild: false, stderr });
    return { dir, config, stderr, run };
  }

  it('a broken profile no selected test uses does not fail the run', async () => {
    const { config, run } = await setup('local vm = provium:vm("a", "good")\ntest("x", function() end)\n');
    await run();
    assert.ok(config.profiles['good']!.firstUse, 'good was prepared');
  });

  it('a used one does, naming the profile, the path and the fix', async () => {
    const { dir, run } = await setup('test("x", function() provium:vm("a", "broken"):boot() end)\n');
    await assert.rejects(run(), (e: Error) => {
      assert.ok(e instanceof UsageError);
      assert.equal(e.message, `profile \`broken\`: kernel ${join(dir, 'nope/bzImage')} does not exist\nfix the paths in ${join(dir, 'provium.toml')} (relative paths start at ${dir})`);
      return true;
    });
  });

  it('follows fixtures and helper modules to the profiles they use', async () => {
    const viaFixture = await setup('local vm = provium:vm_fixture("fx/warm")\n', { 't/fx/warm.fixture.lua': 'local vm = provium:vm("w", "broken")\nreturn vm:snapshot()\n' });
    await assert.rejects(viaFixture.run(), /profile `broken`: kernel .*nope\/bzImage does not exist/);
    const viaHelper = await setup('local h = require("helpers.boot")\n', { 't/helpers/boot.lua': 'return provium:vm("h", "broken")\n' });
    await assert.rejects(viaHelper.run(), /profile `broken`: kernel .*nope\/bzImage does not exist/);
    // Seed 002: provium.fixture("db") is fixtures/db.lua beside the file, and provium.create names a profile.
    const viaLegacy = await setup('local vm = provium.fixture("db")\n', { 't/fixtures/db.lua': 'local vm = provium.create("broken")\nvm:boot()\nreturn vm\n' });
    await assert.rejects(viaLegacy.run(), /profile `broken`: kernel .*nope\/bzImage does not exist/);
  });

  it('a failed build of a used profile ends the run with its command and output', async () => {
    const { run, stderr } = await setup('provium:vm("a", "failing")\n');
    await assert.rejects(run(), (e: Error) => {
      assert.ok(e instanceof UsageError);
      assert.equal(e.exitCode, 2);
      assert.match(e.message, /^profile `failing`: `build` failed \(exit code 7\): echo compiling; exit 7\n .*\n {2}last output:\n {4}compiling\n/);
      return true;
    });
    assert.match(stderr.text, /\[failing\] compiling\n/);
  });

  it('with a computed profile name, every profile is built; problems of unnamed ones are warnings', async () => {
    const { run } = await setup('local name = os.getenv and "good" or "good"\nprovium:vm("a", name)\nprovium:vm("b", "good")\n');
    await assert.rejects(run(), /profile `failing`: `build` failed/);
    const noBuild = await setup('local name = "good"\nprovium:vm("a", name)\n');
    const fixed = noBuild.config.profiles['failing']!;
    delete fixed.firstUse!.build;
    await noBuild.run();
    assert.match(noBuild.stderr.text, /provium: warning: profile `broken`: kernel .*\n {2}fix the paths in .*\n {2}\(a computed profile name in t\/a\.test\.lua may use it; its boots would fail\)/);
  });

  it('an unknown profile name is left to the boot, which lists the known ones', async () => {
    const { run } = await setup('provium:vm("a", "no-such-profile")\n');
    await run();
  });
});
