// A test log or failure message of any size reaches the reports (issue 15 part 5), and `print` in
// a tight loop is capped per test with a note (part 4): the worker keeps the first and last lines,
// the JUnit and JSON reports cap again with the same limits, the text reporter survives a
// 200k-line message and log.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capLog, capText, kLogCapNote, kLogEndChars, kLogEndLines, kLogLineChars, TestLog } from '../../src/protocol/test-log.js';
import type { TestResult } from '../../src/protocol/task.js';
import { fileToJson } from '../../src/report/json.js';
import { renderJunit } from '../../src/report/junit.js';
import { streamScreen } from '../../src/report/screen.js';
import { TextReporter } from '../../src/report/text.js';
import type { FileOutcome } from '../../src/run/outcome.js';
import { assertAllPassed, runLua } from './lua-fake-broker.js';
import { Capture } from './run-capture.js';

const kHuge = 200_000;
const numbered = (n: number, prefix = 'line'): string[] => Array.from({ length: n }, (_, i) => `${prefix} ${i}`);

function outcomeOf(test: Partial<TestResult>): FileOutcome {
  const t: TestResult = { name: 'chatty', status: 'failed', log: [], durationMs: 1, meta: {}, attempts: 1, flaky: false, ...test };
  const path = 'spec/chatty.test.lua';
  return {
    file: { file: `/p/${path}`, displayPath: path, root: '/p', rootPath: path, key: path },
    status: 'failed',
    result: { file: `/p/${path}`, displayPath: path, fatalErrors: [], tests: [t], durationMs: 1 },
    durationMs: 1,
    worker: 0,
  };
}

describe('TestLog', () => {
  it('keeps the first and last lines of a flood, with one note saying how much was dropped', () => {
    const log = new TestLog();
    for (let i = 0; i < 1_000_000; i++) log.push(`line ${i}`);
    const lines = log.lines();
    assert.equal(lines.length, 2 * kLogEndLines + 1);
    assert.equal(lines[0], 'line 0');
    assert.equal(lines[kLogEndLines - 1], `line ${kLogEndLines - 1}`);
    assert.equal(lines.at(-1), 'line 999999');
    const notes = lines.filter((l) => l.startsWith(kLogCapNote));
    assert.equal(notes.length, 1);
    assert.match(notes[0]!, /990000 lines \(.* MiB\) dropped here; a test's log keeps its first and last 5000 lines/);
    assert.equal(log.droppedLines, 990_000);
  });

  it('bounds characters as well as lines, and cuts one huge line with a note', () => {
    const log = new TestLog();
    const big = 'x'.repeat(kLogLineChars * 4);
    for (let i = 0; i < 100; i++) log.push(big);
    const lines = log.lines();
    const chars = lines.reduce((n, l) => n + l.length, 0);
    assert.ok(chars < 2 * kLogEndChars + 4096, `${chars} chars`);
    assert.match(lines[0]!, /\[provium: line cut, 192\.0 KiB more\]$/);
    assert.ok(lines.some((l) => l.startsWith(kLogCapNote)));
  });

  it('a short log is untouched, and capping a capped log adds no second note', () => {
    assert.deepEqual(capLog(['a', 'b']), ['a', 'b']);
    const once = capLog(numbered(50_000));
    assert.deepEqual(capLog(once), once);
    assert.equal(capText('short'), 'short');
    assert.match(capText('y'.repeat(kLogEndChars + 10)), /\n\[provium: 10 B more not shown\]$/);
  });
});

describe('reports of a huge log and message', () => {
  const message = numbered(kHuge, 'message line').join('\n');
  const outcome = outcomeOf({ message, log: numbered(kHuge) });

  it('the text reporter prints a 200k-line message and log without overflowing the stack', () => {
    const out = new Capture({ isTTY: false });
    const reporter = new TextReporter({ screen: streamScreen(out, {}), verbosity: 'normal', cwd: '/p' });
    const text = reporter.formatFile(outcome);
    assert.match(text, /message line 199999/);
    assert.match(text, /log: line 199999/);
  });

  it('JUnit caps the log and the message per test, with notes', () => {
    const xml = renderJunit([outcome], { startedAt: 0, wallMs: 1 });
    assert.ok(xml.length < 4 * kLogEndChars, `${xml.length} chars of XML`);
    assert.match(xml, /\[provium: log capped: 190000 lines/);
    assert.match(xml, /line 199999<\/system-out>/);
    assert.match(xml, /more not shown\]/);
  });

  it('JSON caps the log and the message per test, with notes', () => {
    const json = fileToJson(outcome) as { tests: { log: string[]; message: string }[] };
    const t = json.tests[0]!;
    assert.equal(t.log.length, 2 * kLogEndLines + 1);
    assert.ok(t.log.some((l) => l.startsWith(kLogCapNote)));
    assert.equal(t.log.at(-1), 'line 199999');
    assert.ok(t.message.length <= kLogEndChars + 100);
    assert.match(t.message, /more not shown\]$/);
  });
});

describe('print in a test file', () => {
  it('a tight print loop is capped per test with a note, and the next test starts with an empty log', async () => {
    const { result } = await runLua(String.raw`
test("flood", function(t)
  for i = 1, 200000 do print("flood", i) end
  t:log("the end")
end)
test("next", function(t) print("quiet") end)
`);
    assertAllPassed(result, 2);
    const [flood, next] = result.tests;
    assert.equal(flood!.log.length, 2 * kLogEndLines + 1);
    assert.equal(flood!.log[0], 'flood\t1');
    assert.equal(flood!.log.at(-1), 'the end');
    assert.match(flood!.log.find((l) => l.startsWith(kLogCapNote))!, /190001 lines .* dropped here/);
    assert.deepEqual(next!.log, ['quiet']);
  });
});
