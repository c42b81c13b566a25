// The real CLI, runner, piscina pool and Lua worker (no VM needed): a broken file, a stuck file
// and a crashing file fail alone, and every other result still reaches the report.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function provium(cwd: string, args: string[]): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { cwd, env: { ...process.env, CI: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as NodeJS.ErrnoException & { code?: number }).code as unknown as number) : 0, stdout, stderr });
    });
  });
}

describe('provium CLI end to end (real worker threads, no VM)', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-cli-e2e-'));
    await mkdir(path.join(dir, 't'));
    await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
    await writeFile(path.join(dir, 't/good.test.lua'), 'test("adds", function(t) t:assert_eq(1 + 1, 2) end)\ntest("logs", function(t) t:log("hi") end)\n');
    await writeFile(path.join(dir, 't/syntax.test.lua'), 'test("never", function(t)\n  local = 1\nend)\n');
    await writeFile(path.join(dir, 't/toplevel.test.lua'), 'local x = nil\nlocal y = x.field\n');
    await writeFile(path.join(dir, 't/stuck.test.lua'), 'while true do end\n');
    await writeFile(path.join(dir, 't/fails.test.lua'), 'test("one", function(t)\n  t:assert_eq(1, 2, "math")\nend)\ntest("two", function(t) end)\n');
    await writeFile(path.join(dir, 't/exits.test.lua'), 'test("exit", function(t)\n  os.exit(3)\nend)\ntest("after", function(t) end)\n');
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reports every file, failing only the broken ones, with file:line', async () => {
    const r = await provium(dir, ['--timeout', '3s', '--no-progress', '-j', '2']);
    assert.equal(r.code, 1, r.stderr);
    const out = r.stdout + r.stderr;
    assert.match(out, /PASS t\/good\.test\.lua \(2 passed, 0 failed, 0 skipped\)/);
    assert.match(out, /FAIL t\/syntax\.test\.lua/);
    assert.match(out, /t\/syntax\.test\.lua:2:/);
    assert.match(out, /FAIL t\/toplevel\.test\.lua/);
    assert.match(out, /t\/toplevel\.test\.lua:2: .*attempt to index a nil value/);
    assert.match(out, /FAIL t\/fails\.test\.lua \(1 passed, 1 failed, 0 skipped\)/);
    assert.match(out, /t\/fails\.test\.lua:2: math: 1 ~= 2/);
    // os.exit raises inside the test; the worker lives on and the next test runs.
    assert.match(out, /FAIL t\/exits\.test\.lua \(1 passed, 1 failed, 0 skipped\)/);
    assert.match(out, /os\.exit is not available in a test file/);
    assert.match(out, /TIME t\/stuck\.test\.lua .*\n.*file timed out after 3s \(--timeout\); its worker was replaced/);
    assert.match(out, /^4 passed, 5 failed, 0 skipped$/m);
  });

  it('shards save their timings and `timings merge` combines them for the next split', async () => {
    const files = ['t/good.test.lua', 't/fails.test.lua', 't/syntax.test.lua', 't/toplevel.test.lua', 't/exits.test.lua'];
    for (const i of [1, 2]) {
      const r = await provium(dir, [...files, '--shard', `${i}/2`, '--save-timings', `shard${i}.json`, '--no-progress']);
      assert.ok(r.code === 0 || r.code === 1, r.stderr);
    }
    const merge = await provium(dir, ['timings', 'merge', 'all.json', 'shard1.json', 'shard2.json']);
    assert.equal(merge.code, 0, merge.stderr);
    const merged = JSON.parse(await readFile(path.join(dir, 'all.json'), 'utf8')) as { files: Record<string, { duration_ms: number }> };
    // Entries from earlier runs are carried forward; every file the shards ran is there.
    for (const file of files) assert.ok(merged.files[file], `${file} missing from ${Object.keys(merged.files).join(', ')}`);
    const bad = await provium(dir, ['timings', 'merge', 'x.json', 'missing.json']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /missing\.json: .*--save-timings/);
  });

  it('--retries passes a flaky test on a later attempt and reports it flaky, in every report', async () => {
    const flaky = await mkdtemp(path.join(os.tmpdir(), 'provium-cli-flaky-'));
    try {
      await writeFile(
        path.join(flaky, 'flaky.test.lua'),
        'attempts = 0\ntest("second time lucky", function(t)\n  attempts = attempts + 1\n  if attempts < 2 then error("flake") end\nend)\n',
      );
      const once = await provium(flaky, ['flaky.test.lua', '--no-progress']);
      assert.equal(once.code, 1);
      const r = await provium(flaky, ['flaky.test.lua', '--retries', '1', '--no-progress', '--junit', 'report.xml']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /^1 passed, 0 failed, 0 skipped, 1 flaky$/m);
      const xml = await readFile(path.join(flaky, 'report.xml'), 'utf8');
      assert.match(xml, /<testcase [^>]*name="second time lucky"/);
      assert.doesNotMatch(xml, /<failure/);
      const json = await provium(flaky, ['flaky.test.lua', '--retries', '1', '--json']);
      const line = JSON.parse(json.stdout.trim().split('\n').at(-2)!) as { passed: boolean; tests: { name: string; status: string }[] };
      assert.equal(line.passed, true);
      assert.deepEqual(line.tests.map((t) => [t.name, t.status]), [['second time lucky', 'passed']]);
    } finally {
      await rm(flaky, { recursive: true, force: true });
    }
  });

  it('exits 2 before running anything when a used profile\'s kernel is missing, naming it and the config; an unused one blocks nothing', async () => {
    const broken = await mkdtemp(path.join(os.tmpdir(), 'provium-cli-kernel-'));
    try {
      await writeFile(path.join(broken, 'provium.toml'), '[profiles.mine]\nkernel = "nope/vmlinux"\ncmdline = "console=ttyS0"\n');
      await writeFile(path.join(broken, 'k.test.lua'), 'local vm = provium:vm("a", "mine")\ntest("x", function(t) end)\n');
      await writeFile(path.join(broken, 'unused.test.lua'), 'test("x", function(t) end)\n');
      const r = await provium(broken, ['k.test.lua']);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /profile `mine`: kernel .*nope\/vmlinux does not exist/);
      assert.match(r.stderr, /fix the paths in .*provium\.toml/);
      assert.doesNotMatch(r.stdout, /PASS|FAIL/);
      const other = await provium(broken, ['unused.test.lua']);
      assert.equal(other.code, 0, other.stderr);
    } finally {
      await rm(broken, { recursive: true, force: true });
    }
  });

  it('a file that times out reports its unstarted tests as not run, in text, JSON and JUnit', async () => {
    const d = await mkdtemp(path.join(os.tmpdir(), 'provium-cli-notrun-'));
    try {
      await writeFile(
        path.join(d, 'cut.test.lua'),
        'test("first", function(t) t:log("kept") end)\ntest("spins", function(t)\n  while true do end\nend)\ntest("third", function(t) end)\n',
      );
      const r = await provium(d, ['cut.test.lua', '--timeout', '2s', '--json', '--junit', 'report.xml']);
      assert.equal(r.code, 1, r.stderr);
      const line = JSON.parse(r.stdout.trim().split('\n').at(-2)!) as { tests: { name: string; status: string; message: string | null; log: string[] }[] };
      assert.deepEqual(line.tests.map((t) => [t.name, t.status]), [['first', 'passed'], ['spins', 'failed'], ['third', 'not_run']]);
      assert.match(line.tests[2]!.message!, /file timed out after 2s/);
      assert.deepEqual(line.tests[0]!.log, ['kept']);
      const xml = await readFile(path.join(d, 'report.xml'), 'utf8');
      assert.match(xml, /<testsuites [^>]*tests="3"/);
      assert.match(xml, /<testcase name="first" classname="cut\.test\.lua"/);
      assert.match(xml, /<testcase name="third" [^>]*>\s*<skipped message="not run: file timed out after 2s/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it('SIGTERM mid-run keeps what finished, with its log, in JUnit, and exits 130', async () => {
    const d = await mkdtemp(path.join(os.tmpdir(), 'provium-cli-term-'));
    try {
      await writeFile(
        path.join(d, 'long.test.lua'),
        'test("quick", function(t) t:log("done quickly") end)\ntest("long", function(t)\n  while true do end\nend)\n',
      );
      const child = spawn(process.execPath, [cli, 'long.test.lua', '--junit', 'report.xml', '--no-progress'], { cwd: d, env: { ...process.env, CI: '1' } });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      const code = await new Promise<number | null>((resolve) => {
        // The worker reaches the spinning test within a second; then stop the run.
        setTimeout(() => child.kill('SIGTERM'), 1500);
        child.on('exit', (c) => resolve(c));
      });
      assert.equal(code, 130, out);
      const xml = await readFile(path.join(d, 'report.xml'), 'utf8');
      assert.match(xml, /<testsuites [^>]*tests="2"/);
      assert.match(xml, /<testcase name="quick"[^]*?<system-out>done quickly<\/system-out>/);
      assert.match(xml, /<testcase name="long"[^]*?<skipped message="not run: the run was interrupted/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it('exits 2 with the fix for bad usage', async () => {
    const r = await provium(dir, ['--shard', '0/3']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--shard/);
  });
});
