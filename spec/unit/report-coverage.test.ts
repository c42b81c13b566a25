// Issue 14 item 6: coverage by spec. The grouping (a string is a bucket, a list counts once per
// string, anything else is `<unset>`), `provium coverage` over a saved stream (table, --by,
// --json, the exit code), and `--coverage` at the end of a run. Pure Lua tests: no guest boots.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { bucketsOf, CoverageTable } from '../../src/report/coverage.js';
import { cliMain, runProvium } from './cli-run.js';
import { project } from './run-capture.js';

describe('coverage grouping', () => {
  it('puts a string in one bucket, a list in each of its strings, and anything else in <unset>', () => {
    assert.deepEqual(bucketsOf('auth'), ['auth']);
    assert.deepEqual(bucketsOf(['auth', 'net', 'auth', 3]), ['auth', 'net']);
    assert.deepEqual(bucketsOf(undefined), [null]);
    assert.deepEqual(bucketsOf(7), [null]);
    assert.deepEqual(bucketsOf({ a: 'b' }), [null]);
    assert.deepEqual(bucketsOf([]), [null]);

    const table = new CoverageTable('spec');
    table.add('test_passed', { meta: { spec: 'auth' } });
    table.add('test_failed', { meta: { spec: ['auth', 'net'] } });
    table.add('test_skipped', { meta: {} });
    table.add('test_passed', { meta: { spec: 1 } });
    table.add('test_started', { meta: { spec: 'ignored' } });
    assert.deepEqual(table.toJson(), {
      by: 'spec',
      buckets: [
        { name: 'auth', passed: 1, failed: 1, skipped: 0 },
        { name: 'net', passed: 0, failed: 1, skipped: 0 },
      ],
      uncategorised: { passed: 1, failed: 0, skipped: 1 },
    });
    assert.equal(table.hasFailures, true);
    assert.equal(table.render(), ['spec      passed  failed skipped', 'auth           1       1       0', 'net            0       1       0', '<unset>        1       0       1', ''].join('\n'));
  });
});

const kSuite = {
  'provium.toml': '[provium]\nroots = ["t"]\n',
  't/cov.test.lua': [
    'test("one", {spec = "auth", area = "x"}, function(t) end)',
    'test("two", {spec = {"auth", "net"}}, function(t) t:fail("broken") end)',
    'test("three", function(t) end)',
    'test("four", {spec = "net", skip = "not today"}, function(t) end)',
    '',
  ].join('\n'),
};

function coverage(cwd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cliMain, 'coverage', ...args], { cwd }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
  });
}

describe('provium coverage and --coverage', () => {
  it('groups a saved stream by spec or another key, and fails when a bucket has a failure', async () => {
    const dir = await project(kSuite);
    const events = path.join(dir, 'events.bin');
    const run = await runProvium(dir, ['--coverage'], events);
    assert.equal(run.code, 1, run.out);
    // --coverage: the table after the summary.
    assert.match(run.out, /2 passed, 1 failed, 1 skipped\n[^]*\nspec +passed +failed +skipped\nauth +1 +1 +0\nnet +0 +1 +1\n<unset> +1 +0 +0\n/);

    const table = await coverage(dir, ['--from', events]);
    assert.equal(table.code, 1, table.out);
    assert.match(table.out, /^auth +1 +1 +0$/m);
    const byArea = await coverage(dir, ['--from', events, '--by', 'area', '--json']);
    assert.equal(byArea.code, 1, byArea.out);
    assert.deepEqual(JSON.parse(byArea.out), {
      by: 'area',
      buckets: [{ name: 'x', passed: 1, failed: 0, skipped: 0 }],
      uncategorised: { passed: 1, failed: 1, skipped: 1 },
    });
    const missing = await coverage(dir, ['--from', 'nope.bin']);
    assert.equal(missing.code, 2);
    assert.match(missing.out, /provium coverage: nope\.bin: no such file; write one with `provium --save-events nope\.bin`/);
  });

  it('exits 0 when no bucket has a failure, reading stdin by default', async () => {
    const dir = await project({ 'provium.toml': kSuite['provium.toml'], 't/ok.test.lua': 'test("fine", {spec = "auth"}, function(t) end)\n' });
    const events = path.join(dir, 'events.bin');
    const run = await runProvium(dir, [], events);
    assert.equal(run.code, 0, run.out);
    const piped = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile('sh', ['-c', `${process.execPath} ${cliMain} coverage < ${events}`], { cwd: dir }, (err, stdout) => resolve({ code: err ? 1 : 0, out: stdout }));
    });
    assert.equal(piped.code, 0, piped.out);
    assert.match(piped.out, /^auth +1 +0 +0$/m);
  });
});
