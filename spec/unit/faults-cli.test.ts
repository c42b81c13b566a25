// The fault suite's out-of-process cases (issue 15 part 7): the real CLI on real guests, broken
// from outside the way production breaks it (QEMU SIGKILLed mid-test, SIGINT, a second SIGINT
// during teardown, SIGTERM). Each asserts that the run goes on, that the other files' results
// reach JUnit and JSON, and that nothing is left behind: no QEMU, no scratch dir, no temp file.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cliMain } from './cli-run.js';

interface Project {
  dir: string;
  tmp: string;
}

async function project(files: Record<string, string>): Promise<Project> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-faults-'));
  const tmp = path.join(dir, 'tmp');
  await mkdir(tmp);
  await mkdir(path.join(dir, 't'));
  await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, 't', name), text);
  return { dir, tmp };
}

/** QEMU processes whose scratch dir is under `tmp` (this run's). */
function qemusUnder(tmp: string): { pid: number; scratch: string }[] {
  const out: { pid: number; scratch: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.startsWith('Z')) continue;
    } catch {
      continue;
    }
    if (!argv[0]?.includes('qemu-system')) continue;
    const con = argv.find((a) => a.includes(`${tmp}/`) && a.includes('console.log'));
    const m = con ? /logfile=([^,]+)\/console\.log/.exec(con) : null;
    if (m) out.push({ pid: Number(entry), scratch: m[1]! });
  }
  return out;
}

/** The QEMU whose console log shows `marker` (the test printed it to /dev/console). */
async function waitForMarker(tmp: string, marker: string, timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const q of qemusUnder(tmp)) {
      try {
        if (readFileSync(path.join(q.scratch, 'console.log'), 'utf8').includes(marker)) return q.pid;
      } catch {
        // not yet
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`no guest printed ${marker} within ${timeoutMs} ms`);
}

interface Run {
  code: number | null;
  out: string;
  stdout: string;
}

function start(p: Project, args: string[]): { child: ReturnType<typeof spawn>; done: Promise<Run> } {
  const child = spawn(process.execPath, [cliMain, '--no-progress', ...args], { cwd: p.dir, env: { ...process.env, CI: '1', TMPDIR: p.tmp } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Run>((resolve) => child.on('exit', (code) => resolve({ code, out: stdout + stderr, stdout })));
  return { child, done };
}

async function assertNothingLeft(p: Project): Promise<void> {
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(qemusUnder(p.tmp), [], 'a QEMU of the run is still running');
  assert.deepEqual(await readdir(p.tmp), [], 'the run left files in its TMPDIR');
}

const kMarker = (name: string) => `echo FAULT-MARK-${name} > /dev/console`;

const kHealthy = [
  'local vm = provium:vm("ok", "minimal", {memory = "128M"}):boot()',
  'test("healthy", function(t) t:assert_eq(vm:run("echo ok").stdout, "ok\\n") end)',
  '',
].join('\n');

describe('the fault suite: a run broken from outside goes on and leaves nothing behind (real guests)', () => {
  it('QEMU SIGKILLed mid-test, a syntax error and a healthy file: every result reaches JUnit and JSON', async () => {
    const p = await project({
      'a-victim.test.lua': [
        'local vm = provium:vm("victim", "minimal", {memory = "128M"}):boot()',
        'test("killed", function(t)',
        `  vm:run("${kMarker('victim')}; sleep 60")`,
        'end)',
        'test("the file goes on", function(t) t:assert_eq(1, 1) end)',
        '',
      ].join('\n'),
      'b-syntax.test.lua': 'test("never", function(t)\n  if then\nend)\n',
      'c-healthy.test.lua': kHealthy,
    });
    try {
      const junit = path.join(p.dir, 'junit.xml');
      const run = start(p, ['-j2', '--json', '--junit', junit]);
      const qemu = await waitForMarker(p.tmp, 'FAULT-MARK-victim');
      process.kill(qemu, 'SIGKILL');
      const r = await run.done;
      assert.equal(r.code, 1, r.out);
      const files = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>).filter((o) => o.path);
      const byPath = Object.fromEntries(files.map((f) => [f.path, f]));
      const victim = byPath['t/a-victim.test.lua'];
      assert.equal(victim?.status, 'failed', r.out);
      assert.match(victim.tests[0].message, /QEMU killed by SIGKILL/);
      assert.equal(victim.tests[1].status, 'passed');
      assert.match(JSON.stringify(byPath['t/b-syntax.test.lua']), /unexpected symbol|syntax/i);
      assert.equal(byPath['t/c-healthy.test.lua']?.status, 'passed');
      const xml = await readFile(junit, 'utf8');
      assert.match(xml, /QEMU killed by SIGKILL/);
      for (const name of ['killed', 'the file goes on', 'healthy']) assert.match(xml, new RegExp(`testcase [^>]*name="${name}"`));
      await assertNothingLeft(p);
    } finally {
      await rm(p.dir, { recursive: true, force: true });
    }
  });

  for (const [what, signals] of [
    ['SIGINT', ['SIGINT']],
    ['SIGTERM', ['SIGTERM']],
    ['a second SIGINT during teardown', ['SIGINT', 'SIGINT']],
  ] as const) {
    it(`${what} mid-test: the finished file's results are reported and nothing is left behind`, async () => {
      const p = await project({
        'a-healthy.test.lua': kHealthy,
        'b-hangs.test.lua': [
          'local vm = provium:vm("hangs", "minimal", {memory = "128M"}):boot()',
          `test("interrupted", function(t) vm:run("${kMarker('hangs')}; sleep 60") end)`,
          '',
        ].join('\n'),
      });
      try {
        const junit = path.join(p.dir, 'junit.xml');
        const run = start(p, ['-j1', '--json', '--junit', junit]);
        await waitForMarker(p.tmp, 'FAULT-MARK-hangs');
        for (const sig of signals) {
          run.child.kill(sig);
          await new Promise((r) => setTimeout(r, 150));
        }
        const r = await run.done;
        assert.equal(r.code, 130, r.out);
        // A second signal kills at once: only what was already reported (JSON lines) is there.
        if (signals.length === 1) {
          assert.ok(existsSync(junit), `no JUnit after ${what}:\n${r.out}`);
          assert.match(await readFile(junit, 'utf8'), /testcase [^>]*name="healthy"/);
        }
        assert.match(r.stdout, /"path":"t\/a-healthy\.test\.lua"[^\n]*"status":"passed"/);
        await assertNothingLeft(p);
      } finally {
        await rm(p.dir, { recursive: true, force: true });
      }
    });
  }
});
