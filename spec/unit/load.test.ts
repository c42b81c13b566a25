// Load (issue 15 part 8), on real guests through the real CLI at -j2: 40 files × 50 commands,
// one file booting 8 VMs at once, one guest running 200 processes at once. Every result must be
// present, and the main process's peak RSS is reported and bounded. The Lua tests are tagged
// slow (meta.slow): a plain run skips them; this test runs them with --include-slow.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { it } from 'node:test';
import { cliMain } from './cli-run.js';

const kFiles = 40;
const kCommands = 50;
/** The main process of a run this size: far below what a leak per command or file would reach. */
const kPeakRssLimitBytes = 400 * 1024 * 1024;

it('load: 40 files × 50 commands, 8 VMs booting at once, 200 concurrent processes; every result, bounded RSS', { timeout: 20 * 60_000 }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-load-'));
  const tmp = path.join(dir, 'tmp');
  try {
    await mkdir(tmp);
    await mkdir(path.join(dir, 't'));
    await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
    for (let f = 0; f < kFiles; f++) {
      await writeFile(
        path.join(dir, 't', `cmd-${String(f).padStart(2, '0')}.test.lua`),
        [
          'local vm = provium:vm("v", "minimal", {memory = "128M"}):boot()',
          `test("${kCommands} commands", {slow = true}, function(t)`,
          `  for i = 1, ${kCommands} do t:assert_eq(vm:run("echo " .. i).stdout, i .. "\\n") end`,
          'end)',
          '',
        ].join('\n'),
      );
    }
    await writeFile(
      path.join(dir, 't', 'eight.test.lua'),
      [
        'test("8 VMs booting at once", {slow = true, timeout = "5m"}, function(t)',
        '  local lab = provium:lab("eight")',
        '  for i = 1, 8 do lab:vm("g" .. i, "minimal", {memory = "128M"}) end',
        '  lab:boot()',
        '  for i = 1, 8 do t:assert_eq(lab:vm("g" .. i):run("echo " .. i).stdout, i .. "\\n") end',
        'end)',
        '',
      ].join('\n'),
    );
    await writeFile(
      path.join(dir, 't', 'procs.test.lua'),
      [
        'local vm = provium:vm("p", "minimal", {memory = "128M"}):boot()',
        'test("200 concurrent run_async processes", {slow = true, timeout = "5m"}, function(t)',
        '  local ps = {}',
        '  for i = 1, 200 do ps[i] = vm:run_async("sleep 2; echo " .. i) end',
        '  for i = 1, 200 do t:assert_eq(ps[i]:wait("2m").stdout, i .. "\\n") end',
        'end)',
        '',
      ].join('\n'),
    );
    const started = Date.now();
    const child = spawn(process.execPath, [cliMain, '--no-progress', '--include-slow', '-j2', '--json'], { cwd: dir, env: { ...process.env, CI: '1', TMPDIR: tmp } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let peak = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) * 1024);
      } catch {
        // exited
      }
    }, 100);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearInterval(poll);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { path?: string; status?: string; type?: string; passed?: number });
    const files = lines.filter((l) => l.path);
    const summary = lines.find((l) => l.type === 'summary');
    // Reported with the test's output (node --test prints diagnostics).
    console.log(`load: ${files.length} files in ${((Date.now() - started) / 1000).toFixed(0)} s, main process peak RSS ${(peak / 1024 / 1024).toFixed(0)} MiB`);
    assert.equal(code, 0, `${stderr.slice(-4000)}`);
    assert.equal(files.length, kFiles + 2);
    assert.ok(files.every((f) => f.status === 'passed'), JSON.stringify(files.filter((f) => f.status !== 'passed')));
    assert.equal(summary?.passed, kFiles + 2);
    assert.ok(peak > 0, 'the peak RSS was read');
    assert.ok(peak < kPeakRssLimitBytes, `main process peak RSS ${(peak / 1024 / 1024).toFixed(0)} MiB ≥ ${kPeakRssLimitBytes / 1024 / 1024} MiB`);
    assert.deepEqual(await readdir(tmp), [], 'the run left files in its TMPDIR');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
