import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReporterFanout } from '../../src/run/reporter.js';
import { colorsWanted, streamScreen } from '../../src/report/screen.js';
import { TextReporter } from '../../src/report/text.js';
import { countsLine, summarize, type FileOutcome } from '../../src/run/outcome.js';
import type { TestResult } from '../../src/protocol/task.js';
import { Capture } from './run-capture.js';

const t = (o: Partial<TestResult> & Pick<TestResult, 'name' | 'status'>): TestResult => ({ log: [], durationMs: 5, meta: {}, attempts: 1, flaky: false, ...o });

function outcome(path: string, status: FileOutcome['status'], tests: TestResult[]): FileOutcome {
  return {
    file: { file: `/p/${path}`, displayPath: path, root: '/p', rootPath: path, key: path },
    status,
    result: { file: `/p/${path}`, displayPath: path, fatalErrors: [], tests, durationMs: 10 },
    durationMs: 1234,
    worker: 0,
  };
}

const passing = outcome('spec/ok.test.lua', 'passed', [t({ name: 'one', status: 'passed' }), t({ name: 'two', status: 'skipped', message: 'skipped (meta.skip)' })]);
const failing = outcome('spec/bad.test.lua', 'failed', [
  t({ name: 'boom', status: 'failed', message: 'expected 1 ~= 2', location: { file: 'spec/bad.test.lua', line: 7 }, consoleExcerpt: 'a\nb\n\u001b[1mc\u001b[0m\n' }),
  t({ name: 'fine', status: 'passed', flaky: true, attempts: 2 }),
]);

const ESC = /\u001b/;

function run(verbosity: 'quiet' | 'normal' | 'verbose', env: NodeJS.ProcessEnv = {}, isTTY = false) {
  const out = new Capture({ isTTY });
  const reporter = new TextReporter({ screen: streamScreen(out, env), verbosity, cwd: '/p' });
  reporter.onBegin({ files: [passing.file, failing.file], selectedFiles: 2, workers: 2, shard: null, shardMethod: null, startedAt: 0, accel: 'tcg', estimatedMs: null, seed: '7' });
  reporter.onFileEnd(passing);
  reporter.onFileEnd(failing);
  reporter.onEnd(summarize([passing, failing], { plannedFiles: 2, wallMs: 3456, interrupted: false, failFastStopped: false }));
  return out.text;
}

describe('text reporter', () => {
  it('prints one PASS/FAIL line per file, failures with message and file:line, and the closing lines', () => {
    const text = run('normal');
    assert.doesNotMatch(text, ESC, 'no escape codes without a TTY');
    const lines = text.split('\n');
    assert.ok(lines.includes('PASS spec/ok.test.lua (1 passed, 0 failed, 1 skipped, 0 flaky) 1.23s') || lines.some((l) => l.startsWith('PASS spec/ok.test.lua (1 passed, 0 failed, 1 skipped) ')), text);
    assert.ok(lines.some((l) => l.startsWith('FAIL spec/bad.test.lua (1 passed, 1 failed, 0 skipped, 1 flaky) ')), text);
    assert.ok(lines.includes('    FAIL boom'));
    assert.ok(lines.includes('        expected 1 ~= 2'));
    assert.ok(lines.includes('        at spec/bad.test.lua:7'));
    assert.ok(lines.includes('          c'), 'console excerpt, escape codes stripped');
    assert.ok(lines.includes('    FLAKY fine (passed on attempt 2)'));
    // The closing line, alone and exact, then the wall time.
    const closing = lines.findIndex((l) => /^\d+ passed, \d+ failed, \d+ skipped/.test(l));
    assert.equal(lines[closing], '2 passed, 1 failed, 1 skipped, 1 flaky');
    assert.equal(lines[closing + 1], '2 files (1 failed) in 3.46s');
    assert.doesNotMatch(text, /    PASS one/);
  });

  it('-v adds per-test PASS and SKIP lines; -q keeps only failures and the summary', () => {
    const verbose = run('verbose');
    assert.match(verbose, /\n    PASS one 5ms\n/);
    assert.match(verbose, /\n    SKIP two \(skipped \(meta\.skip\)\)\n/);
    const quiet = run('quiet');
    assert.doesNotMatch(quiet, /PASS spec\/ok/);
    assert.doesNotMatch(quiet, /provium: 2 files/);
    assert.match(quiet, /FAIL spec\/bad.test.lua/);
    assert.match(quiet, /\n2 passed, 1 failed, 1 skipped, 1 flaky\n/);
  });

  it('colours only on a TTY without NO_COLOR', () => {
    assert.match(run('normal', {}, true), ESC);
    assert.doesNotMatch(run('normal', { NO_COLOR: '1' }, true), ESC);
    assert.equal(colorsWanted(true, { TERM: 'dumb' }), false);
    assert.equal(colorsWanted(false, {}), false);
  });

  it('counts a file that failed outside its tests as a failure', () => {
    const crashed = outcome('spec/crash.test.lua', 'crashed', []);
    crashed.result.fatalErrors.push({ message: 'the worker exited unexpectedly' });
    const s = summarize([crashed], { plannedFiles: 3, wallMs: 1, interrupted: false, failFastStopped: true });
    assert.equal(countsLine(s), '0 passed, 1 failed, 0 skipped');
    assert.equal(s.exitCode, 1);
    assert.equal(s.filesNotRun, 2);
    assert.equal(summarize([], { plannedFiles: 0, wallMs: 1, interrupted: true, failFastStopped: false }).exitCode, 130);
    assert.equal(summarize([passing], { plannedFiles: 1, wallMs: 1, interrupted: false, failFastStopped: false }).exitCode, 0);
  });
});

describe('reporter fan-out', () => {
  it('detaches a reporter that throws and keeps the others', async () => {
    const errors: string[] = [];
    const seen: string[] = [];
    const fanout = new ReporterFanout(
      [
        { name: 'bad', reporter: { onFileEnd: () => { throw new Error('disk full'); }, onEnd: () => { seen.push('bad end'); } } },
        { name: 'good', reporter: { onFileEnd: (o) => seen.push(o.file.displayPath), onEnd: () => { seen.push('good end'); } } },
      ],
      (m) => errors.push(m),
    );
    fanout.onFileEnd(passing);
    fanout.onFileEnd(failing);
    await fanout.onEnd(summarize([], { plannedFiles: 0, wallMs: 0, interrupted: false, failFastStopped: false }));
    assert.deepEqual(seen, ['spec/ok.test.lua', 'spec/bad.test.lua', 'good end']);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /the bad reporter failed in onFileEnd and was detached: disk full/);
  });
});
