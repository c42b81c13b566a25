// --junit FILE: JUnit XML, written once when the run ends (atomically, so a CI step never reads
// half a report), including after Ctrl-C: every file that started is there, with the tests that
// finished (and their logs) and the ones that did not as <skipped message="not run: …">. One
// <testsuite> per file, one <testcase> per test; `line` is where the test was declared, and a
// failure carries its message, the failure's location and console excerpt in <failure>. A file
// that failed outside its tests (syntax error, top-level error, timeout or crash) gets a `(file)`
// testcase with an <error>, so it counts in every CI dashboard.

import { hostname } from 'node:os';
import { isFailure, type FileOutcome, type RunSummary } from '../run/outcome.js';
import type { TestResult } from '../protocol/task.js';
import { writeFileAtomic } from '../run/atomic-write.js';
import type { Reporter, RunInfo } from '../run/reporter.js';

/** Removes what XML 1.0 cannot carry (control characters, lone surrogates) and terminal escapes. */
export function xmlSafe(text: string): string {
  return text
    .replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, '')
    .replace(/[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]/gu, '');
}

export function escapeText(text: string): string {
  return xmlSafe(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function escapeAttr(text: string): string {
  return escapeText(text).replace(/"/g, '&quot;').replace(/'/g, '&apos;').replace(/\n/g, '&#10;').replace(/\r/g, '&#13;').replace(/\t/g, '&#9;');
}

function seconds(ms: number): string {
  return (Math.max(0, ms) / 1000).toFixed(3);
}

function attrs(values: Record<string, string | number | undefined>): string {
  return Object.entries(values)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${escapeAttr(String(v))}"`)
    .join('');
}

function failureBody(test: TestResult): string {
  const parts = [test.message ?? 'failed'];
  const at = test.failureLocation ?? test.location;
  if (at) parts.push(`at ${at.file}:${at.line}`);
  if (test.attempts > 1) parts.push(`(failed all ${test.attempts} attempts)`);
  if (test.consoleExcerpt) parts.push(`--- console excerpt ---\n${test.consoleExcerpt}`);
  return parts.join('\n');
}

/** The whole document for every file that ran, interrupted ones included. */
export function renderJunit(outcomes: FileOutcome[], opts: { startedAt: number; wallMs: number }): string {
  const host = hostname();
  const timestamp = new Date(opts.startedAt).toISOString().replace(/\.\d+Z$/, '');
  const suites: string[] = [];
  const totals = { tests: 0, failures: 0, errors: 0, skipped: 0 };
  for (const outcome of outcomes) {
    const path = outcome.file.displayPath;
    const cases: string[] = [];
    const counts = { tests: 0, failures: 0, errors: 0, skipped: 0 };
    for (const test of outcome.result.tests) {
      counts.tests++;
      const head = `    <testcase${attrs({ name: test.name, classname: path, time: seconds(test.durationMs), file: path, line: test.location?.line })}`;
      const out = test.log.length ? `      <system-out>${escapeText(test.log.join('\n'))}</system-out>\n` : '';
      if (test.status === 'failed') {
        counts.failures++;
        const message = (test.message ?? 'failed').split('\n')[0]!;
        cases.push(`${head}>\n      <failure${attrs({ message, type: 'failure' })}>${escapeText(failureBody(test))}</failure>\n${out}    </testcase>`);
      } else if (test.status === 'skipped' || test.status === 'not_run') {
        counts.skipped++;
        const message = test.status === 'not_run' ? `not run: ${test.message ?? 'the file ended first'}` : (test.message ?? 'skipped');
        cases.push(`${head}>\n      <skipped${attrs({ message })}/>\n${out}    </testcase>`);
      } else {
        const flaky = test.flaky ? `      <properties><property name="flaky" value="passed on attempt ${test.attempts}"/></properties>\n` : '';
        cases.push(flaky || out ? `${head}>\n${flaky}${out}    </testcase>` : `${head}/>`);
      }
    }
    const fatal = outcome.result.fatalErrors;
    if (fatal.length > 0 && isFailure(outcome.status)) {
      counts.tests++;
      counts.errors++;
      const type = outcome.status === 'failed' ? 'chunk_error' : outcome.status;
      const body = fatal.map((e) => (e.location ? `${e.message}\nat ${e.location.file}:${e.location.line}` : e.message)).join('\n\n');
      cases.push(
        `    <testcase${attrs({ name: '(file)', classname: path, time: seconds(outcome.durationMs), file: path })}>\n` +
          `      <error${attrs({ message: fatal[0]!.message.split('\n')[0]!, type })}>${escapeText(body)}</error>\n    </testcase>`,
      );
    }
    totals.tests += counts.tests;
    totals.failures += counts.failures;
    totals.errors += counts.errors;
    totals.skipped += counts.skipped;
    suites.push(
      `  <testsuite${attrs({ name: path, tests: counts.tests, failures: counts.failures, errors: counts.errors, skipped: counts.skipped, time: seconds(outcome.durationMs), timestamp, hostname: host, file: path })}>\n` +
        `    <properties><property name="status" value="${escapeAttr(outcome.status)}"/></properties>\n` +
        (cases.length ? `${cases.join('\n')}\n` : '') +
        '  </testsuite>',
    );
  }
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<testsuites${attrs({ name: 'provium', tests: totals.tests, failures: totals.failures, errors: totals.errors, skipped: totals.skipped, time: seconds(opts.wallMs), timestamp })}>\n` +
    (suites.length ? `${suites.join('\n')}\n` : '') +
    '</testsuites>\n'
  );
}

export class JunitReporter implements Reporter {
  private readonly _outcomes: FileOutcome[] = [];
  private _startedAt = Date.now();

  constructor(private readonly _path: string) {}

  onBegin(info: RunInfo): void {
    this._startedAt = info.startedAt;
  }

  onFileEnd(outcome: FileOutcome): void {
    this._outcomes.push(outcome);
  }

  async onEnd(summary: RunSummary): Promise<void> {
    await writeFileAtomic(this._path, renderJunit(this._outcomes, { startedAt: this._startedAt, wallMs: summary.wallMs }));
  }
}
