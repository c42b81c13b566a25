// Issue 14 items 1–3 with real guests: `provium repl` fed through stdin (an expression on the
// VM, an error that does not end it, a multi-line function, EOF) leaves no QEMU and no scratch
// behind; `--keep-failed` saves a failed test's artifacts and `repl --restore` brings its VM back
// as it was; `console --print-command` prints a command line that boots when run by hand.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cliMain } from './cli-run.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function provium(cwd: string, args: string[], input: string, env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [cliMain, ...args], { cwd, env: { ...process.env, CI: '1', ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin!.end(input);
  });
}

/** Command lines of running processes that mention `token`. */
function processesWith(token: string): Promise<string[]> {
  return new Promise((resolve) => {
    execFile('ps', ['-eo', 'args'], (_err, stdout) => resolve(stdout.split('\n').filter((l) => l.includes(token) && !l.includes('ps -eo'))));
  });
}

describe('repl, --keep-failed and console on real guests', () => {
  let dir: string;
  let tmp: string;
  const token = `replcheck${process.pid}`;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-repl-'));
    tmp = path.join(dir, 'tmp');
    await mkdir(tmp);
    await mkdir(path.join(dir, 't'));
    await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
    await writeFile(
      path.join(dir, 't/fails.test.lua'),
      [
        `local vm = provium:vm("${token}", "minimal"):boot()`,
        'test("leaves a marker and fails", function(t)',
        '  vm:write_file("/tmp/marker", "kept-" .. 42)',
        '  t:assert_eq(vm:run("cat /tmp/marker").stdout, "something else")',
        'end)',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('evaluates lines from stdin with the test API, survives an error, and tears down at EOF', async () => {
    const input = [
      'vm:run("echo hi").stdout',
      'error("boom")',
      'function double(x)',
      '  return x * 2',
      'end',
      'double(21)',
      '{a = 1, list = {2, 3}}',
      'vm:run("exit 3")',
      '',
    ].join('\n');
    const r = await provium(dir, ['repl', '--name', token], input, { TMPDIR: tmp });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], 'hi', r.stdout);
    assert.match(r.stderr, /^repl:1: boom$/m);
    assert.ok(lines.includes('42'), r.stdout);
    assert.ok(lines.includes('{a = 1, list = {2, 3}}'), r.stdout);
    assert.match(r.stdout, /^RunResult\{exit_code = 3, status = "exited", stdout = "", stderr = "", timed_out = false\}$/m);
    assert.deepEqual(await processesWith(token), [], 'a QEMU of the REPL outlived it');
    assert.deepEqual(await readdir(tmp), [], 'the REPL left files in TMPDIR');
  });

  it('--keep-failed saves the console, dmesg, processes and a snapshot that repl --restore brings back', async () => {
    const run = await provium(dir, ['--no-progress', '--keep-failed', 'kept'], '', { TMPDIR: tmp });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    const kept = path.join(dir, 'kept', 't_fails.test.lua', 'leaves_a_marker_and_fails');
    assert.match(run.stdout, new RegExp(`--keep-failed: ${kept.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.match(await readFile(path.join(kept, 'failure.txt'), 'utf8'), /fails\.test\.lua:4: assert_eq failed: "kept-42" ~= "something else"/);
    assert.match(await readFile(path.join(kept, `${token}.console.log`), 'utf8'), /provium-agent: ready/);
    assert.match(await readFile(path.join(kept, `${token}.dmesg.txt`), 'utf8'), /Linux version/);
    assert.match(await readFile(path.join(kept, `${token}.ps.txt`), 'utf8'), /provium-agent/);
    assert.ok((await stat(path.join(kept, 'snapshot', 'lab.json'))).size > 0);

    const restored = await provium(dir, ['repl', '--restore', path.join(kept, 'snapshot')], `vm:run("cat /tmp/marker").stdout\n${token} == vm\n`, { TMPDIR: tmp });
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(restored.stdout.split('\n').slice(0, 2), ['kept-42', 'true']);
    assert.deepEqual(await processesWith(token), []);
  });

  it('console --print-command prints a QEMU command line that boots to a shell', async () => {
    const printed = await provium(dir, ['console', 'minimal', '--print-command', '--', '-name', `${token}-console`], '', {});
    assert.equal(printed.code, 0, printed.stderr);
    const command = printed.stdout.trim();
    assert.match(command, /-serial mon:stdio/);
    assert.doesNotMatch(command, /qmp/);
    // Run by hand (through sh, as a user would paste it); type into the guest's shell once it is up.
    const child = spawn('sh', ['-c', command], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let typed = false;
    child.stdin.on('error', () => undefined);
    const seen = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no shell output in 60 s:\n${out}`)), 60_000);
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (!typed && out.includes('provium console: busybox sh')) {
          typed = true;
          child.stdin.write('echo "answer-$((6 * 7))"; exit\n');
        }
        if (out.includes('answer-42')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await seen;
      // `exit` ends PID 1's shell: the guest powers off and QEMU exits by itself.
      assert.equal(await exited, 0, out);
    } finally {
      child.kill('SIGKILL');
    }
    assert.deepEqual(await processesWith(`${token}-console`), []);
  });
});
