import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { JunitReporter, renderJunit } from '../../src/report/junit.js';
import type { FileOutcome } from '../../src/run/outcome.js';
import type { TestResult } from '../../src/protocol/task.js';
import { project } from './run-capture.js';
import { parseXml } from './report-xml.js';

const test = (o: Partial<TestResult> & Pick<TestResult, 'name' | 'status'>): TestResult => ({
  log: [],
  durationMs: 12,
  meta: {},
  attempts: 1,
  flaky: false,
  ...o,
});

function outcome(path: string, status: FileOutcome['status'], tests: TestResult[], chunkError?: string): FileOutcome {
  const result: FileOutcome['result'] = { file: `/abs/${path}`, displayPath: path, fatalErrors: [], tests, durationMs: 1500 };
  if (chunkError) result.fatalErrors.push({ message: chunkError, location: { file: path, line: 4 } });
  return { file: { file: `/abs/${path}`, displayPath: path, root: '/abs', rootPath: path, key: path }, status, result, durationMs: 1500, worker: 0 };
}

describe('JUnit XML', () => {
  const outcomes = [
    outcome('spec/a.test.lua', 'failed', [
      test({ name: 'boots', status: 'passed', location: { file: 'spec/a.test.lua', line: 3 } }),
      test({
        name: 'reads <files> & "quotes"',
        status: 'failed',
        message: 'expected "a" ~= "b"\nsecond line',
        location: { file: 'spec/a.test.lua', line: 12 },
        failureLocation: { file: 'spec/a.test.lua', line: 14 },
        consoleExcerpt: 'Linux version 6.1\n\u001b[31mred\u001b[0m \u0007bell\u0000nul ]]> end',
        log: ['step 1'],
      }),
      test({ name: 'later', status: 'skipped', message: 'skipped: not today' }),
      test({ name: 'wobbly', status: 'passed', flaky: true, attempts: 2 }),
    ]),
    outcome('spec/broken.test.lua', 'failed', [], 'spec/broken.test.lua:4: syntax error near <eof>'),
    outcome('spec/slow.test.lua', 'timed_out', [test({ name: 'forever', status: 'failed', message: 'file timed out after 1s (--timeout)' })]),
    outcome('spec/gone.test.lua', 'interrupted', [
      test({ name: 'done first', status: 'passed', log: ['kept'] }),
      test({ name: 'cut off', status: 'not_run', message: 'the run was interrupted' }),
    ]),
  ];

  it('is well-formed XML with one testcase per test and a (file) case for file errors', () => {
    const xml = renderJunit(outcomes, { startedAt: Date.UTC(2024, 0, 2, 3, 4, 5), wallMs: 2500 });
    const root = parseXml(xml);
    assert.equal(root.name, 'testsuites');
    assert.deepEqual(
      { tests: root.attrs['tests'], failures: root.attrs['failures'], errors: root.attrs['errors'], skipped: root.attrs['skipped'], time: root.attrs['time'] },
      { tests: '8', failures: '2', errors: '1', skipped: '2', time: '2.500' },
    );
    // The interrupted file is there: what finished, with its log, and what never ran, as skipped.
    assert.deepEqual(root.children.map((s) => s.attrs['name']), ['spec/a.test.lua', 'spec/broken.test.lua', 'spec/slow.test.lua', 'spec/gone.test.lua']);
    const [a, broken, , gone] = root.children;
    const goneCases = gone!.children.filter((c) => c.name === 'testcase');
    assert.equal(goneCases[0]!.children.find((c) => c.name === 'system-out')!.text, 'kept');
    assert.equal(goneCases[1]!.children[0]!.attrs['message'], 'not run: the run was interrupted');
    const cases = a!.children.filter((c) => c.name === 'testcase');
    assert.deepEqual(cases.map((c) => c.attrs['name']), ['boots', 'reads <files> & "quotes"', 'later', 'wobbly']);
    assert.equal(cases[0]!.attrs['time'], '0.012');
    assert.equal(cases[0]!.attrs['classname'], 'spec/a.test.lua');
    // `line` is where each test was declared; a failure's own location is in its body.
    assert.equal(cases[0]!.attrs['line'], '3');
    assert.equal(cases[1]!.attrs['line'], '12');
    const failure = cases[1]!.children.find((c) => c.name === 'failure')!;
    assert.equal(failure.attrs['message'], 'expected "a" ~= "b"');
    assert.match(failure.text, /expected "a" ~= "b"\nsecond line\nat spec\/a.test.lua:14\n--- console excerpt ---\nLinux version 6.1\nred bellnul \]\]> end/);
    assert.equal(cases[1]!.children.find((c) => c.name === 'system-out')!.text, 'step 1');
    assert.equal(cases[2]!.children[0]!.name, 'skipped');
    assert.equal(cases[2]!.children[0]!.attrs['message'], 'skipped: not today');
    const error = broken!.children.find((c) => c.name === 'testcase')!.children[0]!;
    assert.equal(error.name, 'error');
    assert.equal(error.attrs['type'], 'chunk_error');
    assert.match(error.text, /syntax error near <eof>\nat spec\/broken.test.lua:4/);
  });

  it('is written once, atomically, when the run ends', async () => {
    const dir = await project({});
    const path = join(dir, 'out', 'junit.xml');
    const reporter = new JunitReporter(path);
    reporter.onBegin({ files: [], selectedFiles: 0, workers: 1, shard: null, shardMethod: null, startedAt: Date.now(), accel: 'tcg', estimatedMs: null, seed: '7' });
    for (const o of outcomes) reporter.onFileEnd(o);
    await assert.rejects(readFile(path), /ENOENT/);
    await reporter.onEnd({ passed: 2, failed: 3, skipped: 1, flaky: 1, notRun: 0, files: 3, filesFailed: 3, filesNotRun: 1, wallMs: 10, interrupted: true, failFastStopped: false, exitCode: 130 });
    assert.equal(parseXml(await readFile(path, 'utf8')).children.length, 4);
  });
});
