// The real CLI in a child process for the fault suite (spec/unit/faults-*.test.ts): a project of
// its own with its own TMPDIR, the QEMUs of that run, and the check that nothing is left behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cliMain } from './cli-run.js';

export interface Project {
  dir: string;
  tmp: string;
}

export async function project(files: Record<string, string>): Promise<Project> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-faults-'));
  const tmp = path.join(dir, 'tmp');
  await mkdir(tmp);
  await mkdir(path.join(dir, 't'));
  await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, 't', name), text);
  return { dir, tmp };
}

/** QEMU processes whose scratch dir is under `tmp` (this run's). */
export function qemusUnder(tmp: string): { pid: number; scratch: string }[] {
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
export async function waitForMarker(tmp: string, marker: string, timeoutMs = 120_000): Promise<number> {
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

export interface Run {
  code: number | null;
  out: string;
  stdout: string;
}

export function start(p: Project, args: string[], env: Record<string, string> = {}): { child: ReturnType<typeof spawn>; done: Promise<Run> } {
  const child = spawn(process.execPath, [cliMain, '--no-progress', ...args], { cwd: p.dir, env: { ...process.env, CI: '1', TMPDIR: p.tmp, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Run>((resolve) => child.on('exit', (code) => resolve({ code, out: stdout + stderr, stdout })));
  return { child, done };
}

export async function assertNothingLeft(p: Project): Promise<void> {
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(qemusUnder(p.tmp), [], 'a QEMU of the run is still running');
  assert.deepEqual(await readdir(p.tmp), [], 'the run left files in its TMPDIR');
}

/** The --json file lines of a run, by path. */
export function jsonFiles(stdout: string): Record<string, any> {
  const files = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>).filter((o) => o.path);
  return Object.fromEntries(files.map((f) => [f.path, f]));
}

export const kMarker = (name: string) => `echo FAULT-MARK-${name} > /dev/console`;

export const kHealthy = [
  'local vm = provium:vm("ok", "minimal", {memory = "128M"}):boot()',
  'test("healthy", function(t) t:assert_eq(vm:run("echo ok").stdout, "ok\\n") end)',
  '',
].join('\n');
