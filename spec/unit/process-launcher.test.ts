// The process launcher (process-launcher.c and .ts) starts QEMU without forking the Node process.
// These tests run the real launcher: what a started process gets (argv, env, stdio), how its exit
// is reported, that many starts at once are told apart, that a program that is not there is named
// with its errno, and that nothing it started outlives it, or the Node process that runs it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { closeProcessLauncher, launchProcess, LaunchError } from '../../src/vmm/process-launcher.js';
import { processLauncherPath } from '../../src/vmm/paths.js';

const built = existsSync(processLauncherPath()) ? undefined : `${processLauncherPath()} is missing (npm run build)`;

/** The parent pid of `pid`, from /proc (the launcher, for what it started). */
function ppidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** Whether `pid` is gone or a zombie: it no longer runs. */
function ended(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('process launcher', { skip: built }, () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'provium-launcher-test-')); });
  after(async () => {
    await closeProcessLauncher();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs argv with the given environment, stdin and stdout on /dev/null, stderr appended to the file', async () => {
    const stderrPath = join(dir, 'one.stderr');
    const script = 'echo "arg=$1 env=$LAUNCH_TEST" >&2; echo to-stdout; read -r line || echo "stdin at EOF" >&2; exit 3';
    const first = await launchProcess(['/bin/sh', '-c', script, 'sh', 'two words'], { env: { LAUNCH_TEST: 'yes', PATH: '/usr/bin:/bin' }, stderrPath });
    assert.ok(first.pid > 0);
    assert.deepEqual(await first.exit, { code: 3, signal: null });
    const again = await launchProcess(['/bin/sh', '-c', 'echo second >&2'], { env: {}, stderrPath });
    assert.deepEqual(await again.exit, { code: 0, signal: null });
    assert.equal(await readFile(stderrPath, 'utf8'), 'arg=two words env=yes\nstdin at EOF\nsecond\n');
  });

  it('finds a bare program name on PATH and reports the signal that ended it', async () => {
    const p = await launchProcess(['sleep', '30'], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }, stderrPath: join(dir, 'sleep.stderr') });
    process.kill(p.pid, 'SIGTERM');
    assert.deepEqual(await p.exit, { code: null, signal: 'SIGTERM' });
  });

  it('names a program that is not there, with its errno', async () => {
    await assert.rejects(launchProcess(['/nonexistent/qemu-system-x86_64', '-version'], { env: {}, stderrPath: join(dir, 'missing.stderr') }), (err: unknown) => {
      assert.ok(err instanceof LaunchError);
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.message, 'spawn /nonexistent/qemu-system-x86_64 ENOENT (no such file or directory)');
      return true;
    });
    // And goes on starting others.
    const p = await launchProcess(['/bin/true'], { env: {}, stderrPath: join(dir, 'true.stderr') });
    assert.deepEqual(await p.exit, { code: 0, signal: null });
  });

  it('refuses an argv and environment over its limit, and goes on', async () => {
    const huge = 'x'.repeat(2 * 1024 * 1024);
    const running = await launchProcess(['sleep', '30'], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }, stderrPath: join(dir, 'huge.stderr') });
    await assert.rejects(launchProcess(['/bin/echo', huge], { env: {}, stderrPath: join(dir, 'huge.stderr') }), (err: unknown) => {
      assert.ok(err instanceof LaunchError);
      assert.equal(err.code, 'E2BIG');
      assert.match(err.message, /^spawn \/bin\/echo E2BIG \(its argv and environment are \d+ bytes in 6 strings; the limits are 1048576 and 4096\)$/);
      return true;
    });
    const manyVars = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`V${i}`, '1']));
    await assert.rejects(launchProcess(['/bin/true'], { env: manyVars, stderrPath: join(dir, 'huge.stderr') }), (err: unknown) => {
      assert.ok(err instanceof LaunchError);
      assert.equal(err.code, 'E2BIG');
      assert.match(err.message, / in 5005 strings; the limits are 1048576 and 4096\)$/);
      return true;
    });
    assert.ok(!ended(running.pid), 'what runs is not disturbed');
    process.kill(running.pid, 'SIGKILL');
    assert.deepEqual(await running.exit, { code: null, signal: 'SIGKILL' });
  });

  it('tells many starts at once apart', async () => {
    const all = await Promise.all(Array.from({ length: 24 }, (_, i) =>
      launchProcess(['/bin/sh', '-c', `exit ${i}`], { env: {}, stderrPath: join(dir, 'many.stderr') })));
    assert.equal(new Set(all.map((p) => p.pid)).size, 24);
    assert.deepEqual(await Promise.all(all.map((p) => p.exit.then((e) => e.code))), Array.from({ length: 24 }, (_, i) => i));
  });

  it('what it started dies with it, and a new launcher takes the next start', async () => {
    const p = await launchProcess(['sleep', '60'], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }, stderrPath: join(dir, 'orphan.stderr') });
    const launcherPid = ppidOf(p.pid);
    assert.notEqual(launcherPid, process.pid, 'the launcher, not Node, is the parent');
    process.kill(launcherPid, 'SIGKILL');
    assert.deepEqual(await p.exit, { code: null, signal: 'SIGKILL' });
    await waitFor(() => ended(p.pid), `sleep (pid ${p.pid}) to die with its launcher`);
    // A process that stays up long enough to read its parent.
    const next = await launchProcess(['sleep', '30'], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }, stderrPath: join(dir, 'next.stderr') });
    assert.notEqual(ppidOf(next.pid), launcherPid);
    process.kill(next.pid, 'SIGKILL');
    assert.deepEqual(await next.exit, { code: null, signal: 'SIGKILL' });
  });

  it('nothing it started outlives a Node process that is SIGKILLed; an idle launcher keeps none alive', async () => {
    const module = fileURLToPath(new URL('../../src/vmm/process-launcher.js', import.meta.url));
    const script = `
      const { launchProcess } = await import(${JSON.stringify(module)});
      const p = await launchProcess(['sleep', '60'], { env: process.env, stderrPath: ${JSON.stringify(join(dir, 'child.stderr'))} });
      console.log(p.pid);
      if (process.argv[1] === 'exit') { process.kill(p.pid, 'SIGTERM'); await p.exit; } else setInterval(() => {}, 1000);`;
    // SIGKILLed while its child runs: the child goes too.
    const node = spawn(process.execPath, ['--input-type=module', '-e', script, 'hold'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = Number(await new Promise<string>((resolve) => node.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
    assert.ok(!ended(pid), 'the child runs');
    node.kill('SIGKILL');
    await waitFor(() => ended(pid), `sleep (pid ${pid}) to die with the Node process`);
    // Done with its child: it exits by itself, the launcher does not hold its event loop.
    const done = spawn(process.execPath, ['--input-type=module', '-e', script, 'exit'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const code = await new Promise((resolve) => done.once('exit', resolve));
    assert.equal(code, 0);
  });
});
