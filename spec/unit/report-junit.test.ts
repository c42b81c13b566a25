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
      test({ name: 'wobbly', status: 'passed', flaky: true, attempts: 2, retryFailures: ['spec/a.test.lua:30: first try failed'] }),
      test({ name: 'stubborn', status: 'failed', attempts: 3, message: 'third', retryFailures: ['first', 'second'] }),
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
      { tests: root.attrs['tests'], failures: root.attrs['failures'], errors: root.attrs['errors'], time: root.attrs['time'] },
      { tests: '9', failures: '3', errors: '1', time: '2.500' },
    );
    assertJunitSchema(root);
    // The interrupted file is there: what finished, with its log, and what never ran, as skipped.
    assert.deepEqual(root.children.map((s) => s.attrs['name']), ['spec/a.test.lua', 'spec/broken.test.lua', 'spec/slow.test.lua', 'spec/gone.test.lua']);
    const [a, broken, , gone] = root.children;
    const goneCases = gone!.children.filter((c) => c.name === 'testcase');
    assert.equal(goneCases[0]!.children.find((c) => c.name === 'system-out')!.text, 'kept');
    assert.equal(goneCases[1]!.children[0]!.attrs['message'], 'not run: the run was interrupted');
    const cases = a!.children.filter((c) => c.name === 'testcase');
    assert.deepEqual(cases.map((c) => c.attrs['name']), ['boots', 'reads <files> & "quotes"', 'later', 'wobbly', 'stubborn']);
    assert.equal(cases[0]!.attrs['time'], '0.012');
    assert.equal(cases[0]!.attrs['classname'], 'spec/a.test.lua');
    // Where it failed and where it was declared are in the failure's body (the schema has no `line`).
    const failure = cases[1]!.children.find((c) => c.name === 'failure')!;
    assert.equal(failure.attrs['message'], 'expected "a" ~= "b"');
    assert.match(failure.text, /expected "a" ~= "b"\nsecond line\nat spec\/a.test.lua:14\ntest declared at spec\/a.test.lua:12\n--- console excerpt ---\nLinux version 6.1\nred bellnul \]\]> end/);
    // Retries as Maven Surefire writes them: a pass after a failure carries <flakyFailure>, a test
    // that failed every attempt its <failure> and one <rerunFailure> per earlier attempt.
    assert.deepEqual(cases[3]!.children.map((c) => [c.name, c.attrs['message'], c.attrs['type']]), [['flakyFailure', 'spec/a.test.lua:30: first try failed', 'failure']]);
    assert.deepEqual(cases[4]!.children.map((c) => [c.name, c.attrs['message']]), [['failure', 'third'], ['rerunFailure', 'first'], ['rerunFailure', 'second']]);
    assert.equal(cases[1]!.children.find((c) => c.name === 'system-out')!.text, 'step 1');
    assert.equal(cases[2]!.children[0]!.name, 'skipped');
    assert.equal(cases[2]!.children[0]!.attrs['message'], 'skipped: not today');
    const error = broken!.children.find((c) => c.name === 'testcase')!.children[0]!;
    assert.equal(error.name, 'error');
    assert.equal(error.attrs['type'], 'chunk_error');
    assert.match(error.text, /syntax error near <eof>\nat spec\/broken.test.lua:4/);
  });

  it('lists a planned file that never started as a skipped (file) case', () => {
    const planned = [outcomes[0]!.file, { file: '/abs/spec/later.test.lua', displayPath: 'spec/later.test.lua', root: '/abs', rootPath: 'spec/later.test.lua', key: 'spec/later.test.lua' }];
    const root = parseXml(renderJunit([outcomes[0]!], { startedAt: 0, wallMs: 1, planned, notStartedReason: 'the run was interrupted before this file started' }));
    assertJunitSchema(root);
    const later = root.children.find((s) => s.attrs['name'] === 'spec/later.test.lua')!;
    assert.equal(later.attrs['skipped'], '1');
    assert.equal(later.children.find((c) => c.name === 'testcase')!.children[0]!.attrs['message'], 'not run: the run was interrupted before this file started');
    assert.equal(root.attrs['tests'], '6');
  });

  it('is written once, atomically, when the run ends', async () => {
    const dir = await project({});
    const path = join(dir, 'out', 'junit.xml');
    const reporter = new JunitReporter(path);
    reporter.onBegin({ files: [], selectedFiles: 0, workers: 1, shard: null, shardMethod: null, startedAt: Date.now(), accel: 'tcg', estimatedMs: null, seed: '7' });
    for (const o of outcomes) reporter.onFileEnd(o);
    await assert.rejects(readFile(path), /ENOENT/);
    await reporter.onEnd({ passed: 2, failed: 3, skipped: 1, flaky: 1, notRun: 0, files: 3, filesFailed: 3, filesWithoutTests: 0, filesNotRun: 1, wallMs: 10, interrupted: true, failFastStopped: false, exitCode: 130 });
    assert.equal(parseXml(await readFile(path, 'utf8')).children.length, 4);
  });
});

/**
 * The attributes and children Jenkins xunit's junit-10.xsd allows (GitLab and the GitHub test
 * reporters read the same shape); anything else fails a validating consumer.
 */
const kSchema: Record<string, { attrs: string[]; children: string[] }> = {
  testsuites: { attrs: ['name', 'time', 'tests', 'failures', 'errors'], children: ['testsuite'] },
  testsuite: {
    attrs: ['name', 'tests', 'failures', 'errors', 'group', 'time', 'skipped', 'timestamp', 'hostname', 'id', 'package', 'file', 'log', 'url'],
    children: ['testsuite', 'properties', 'testcase', 'system-out', 'system-err'],
  },
  properties: { attrs: [], children: ['property'] },
  property: { attrs: ['name', 'value'], children: [] },
  testcase: {
    attrs: ['name', 'time', 'classname', 'group'],
    children: ['skipped', 'error', 'failure', 'rerunFailure', 'rerunError', 'flakyFailure', 'flakyError', 'system-out', 'system-err'],
  },
  failure: { attrs: ['type', 'message'], children: [] },
  error: { attrs: ['type', 'message'], children: [] },
  skipped: { attrs: ['type', 'message'], children: [] },
  rerunFailure: { attrs: ['message', 'type'], children: ['stackTrace', 'system-out', 'system-err'] },
  flakyFailure: { attrs: ['message', 'type'], children: ['stackTrace', 'system-out', 'system-err'] },
  'system-out': { attrs: [], children: [] },
  'system-err': { attrs: [], children: [] },
};

function assertJunitSchema(node: ReturnType<typeof parseXml>, path = ''): void {
  const rule = kSchema[node.name];
  assert.ok(rule, `${path}/${node.name}: not an element of the JUnit schema`);
  for (const attr of Object.keys(node.attrs)) assert.ok(rule.attrs.includes(attr), `${path}/${node.name}: attribute ${attr} is not in the schema`);
  if (node.name === 'rerunFailure' || node.name === 'flakyFailure') assert.ok(node.attrs['type'], `${path}/${node.name}: type is required`);
  for (const child of node.children) {
    assert.ok(rule.children.includes(child.name), `${path}/${node.name}: <${child.name}> is not allowed inside`);
    assertJunitSchema(child, `${path}/${node.name}`);
  }
}
