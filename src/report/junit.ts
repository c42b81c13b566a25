// --junit FILE: JUnit XML, written once when the run ends (atomically, so a CI step never reads
// half a report), including after Ctrl-C: every file that started is there, with the tests that
// finished (and their logs) and the ones that did not as <skipped message="not run: …">; a file
// that never started is one skipped `(file)` testcase. One <testsuite> per file, one <testcase>
// per test; a failure carries its message, where it failed and was declared, and the console
// excerpt in <failure>. A file that failed outside its tests (syntax error, top-level error,
// timeout or crash) gets a `(file)` testcase with an <error>, so it counts in every CI dashboard.

import { hostname } from 'node:os';
import { isFailure, type FileOutcome, type PlannedFile, type RunSummary } from '../run/outcome.js';
import type { TestResult } from '../protocol/task.js';
import { capLog, capText } from '../protocol/test-log.js';
import { writeFileAtomic } from '../run/atomic-write.js';
import { ReportWriteError, type Reporter, type RunInfo } from '../run/reporter.js';

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
  const parts = [capText(test.message ?? 'failed')];
  const at = test.failureLocation ?? test.location;
  if (at) parts.push(`at ${at.file}:${at.line}`);
  if (test.location && test.location !== at) parts.push(`test declared at ${test.location.file}:${test.location.line}`);
  if (test.attempts > 1) parts.push(`(failed all ${test.attempts} attempts)`);
  if (test.consoleExcerpt) parts.push(`--- console excerpt ---\n${test.consoleExcerpt}`);
  return parts.join('\n');
}

/** `<tag message type>body</tag>` for a failure or an earlier attempt's failure (Surefire's shapes). */
/** The longest `message` attribute: the first line of a failure, cut with a note past this. */
const kAttrChars = 4096;

function failureElement(tag: string, message: string, body: string, type: string): string {
  const nl = message.indexOf('\n');
  const firstLine = capText(nl < 0 ? message : message.slice(0, nl), kAttrChars);
  return `      <${tag}${attrs({ message: firstLine, type })}>${escapeText(body)}</${tag}>\n`;
}

/**
 * One <testcase>. Only the attributes the consumers' schema accepts (Jenkins xunit's junit-10.xsd,
 * which GitLab and GitHub reporters read too): name, classname, time; where a test was declared
 * and where it failed go into the failure's text. Retries follow Maven Surefire: a test that passed
 * on a rerun carries one <flakyFailure> per failed attempt; one that failed every attempt has its
 * <failure> (the last attempt) and one <rerunFailure> per earlier attempt.
 */
function testcase(path: string, test: TestResult): { xml: string; failed: boolean; skipped: boolean } {
  const head = `    <testcase${attrs({ name: test.name, classname: path, time: seconds(test.durationMs) })}`;
  // The log and the message are capped per test with a note (1e6 prints made a 101 MB file).
  const out = test.log.length ? `      <system-out>${escapeText(capLog(test.log).join('\n'))}</system-out>\n` : '';
  const earlier = test.retryFailures ?? [];
  if (test.status === 'failed') {
    const reruns = earlier.map((m) => failureElement('rerunFailure', m, capText(m), 'failure')).join('');
    return { xml: `${head}>\n${failureElement('failure', test.message ?? 'failed', failureBody(test), 'failure')}${reruns}${out}    </testcase>`, failed: true, skipped: false };
  }
  if (test.status === 'skipped' || test.status === 'not_run') {
    const message = test.status === 'not_run' ? `not run: ${test.message ?? 'the file ended first'}` : (test.message ?? 'skipped');
    return { xml: `${head}>\n      <skipped${attrs({ message })}/>\n${out}    </testcase>`, failed: false, skipped: true };
  }
  const flaky = test.flaky ? (earlier.length ? earlier : ['failed on an earlier attempt']).map((m) => failureElement('flakyFailure', m, capText(m), 'failure')).join('') : '';
  return { xml: flaky || out ? `${head}>\n${flaky}${out}    </testcase>` : `${head}/>`, failed: false, skipped: false };
}

interface Counts {
  tests: number;
  failures: number;
  errors: number;
  skipped: number;
}

function suite(name: string, counts: Counts, extra: { time: string; timestamp: string; hostname: string; status: string }, cases: string[]): string {
  return (
    `  <testsuite${attrs({ name, tests: counts.tests, failures: counts.failures, errors: counts.errors, skipped: counts.skipped, time: extra.time, timestamp: extra.timestamp, hostname: extra.hostname, file: name })}>\n` +
    `    <properties><property name="status" value="${escapeAttr(extra.status)}"/></properties>\n` +
    (cases.length ? `${cases.join('\n')}\n` : '') +
    '  </testsuite>'
  );
}

/**
 * The whole document: every file that ran, interrupted ones included, and every planned file that
 * never started (fail-fast, Ctrl-C) as one skipped `(file)` testcase, so nothing is missing.
 */
export function renderJunit(outcomes: FileOutcome[], opts: { startedAt: number; wallMs: number; planned?: PlannedFile[]; notStartedReason?: string }): string {
  const host = hostname();
  const timestamp = new Date(opts.startedAt).toISOString().replace(/\.\d+Z$/, '');
  const suites: string[] = [];
  const totals: Counts = { tests: 0, failures: 0, errors: 0, skipped: 0 };
  const add = (c: Counts): void => {
    totals.tests += c.tests;
    totals.failures += c.failures;
    totals.errors += c.errors;
    totals.skipped += c.skipped;
  };
  for (const outcome of outcomes) {
    const path = outcome.file.displayPath;
    const cases: string[] = [];
    const counts: Counts = { tests: 0, failures: 0, errors: 0, skipped: 0 };
    for (const test of outcome.result.tests) {
      const c = testcase(path, test);
      counts.tests++;
      if (c.failed) counts.failures++;
      if (c.skipped) counts.skipped++;
      cases.push(c.xml);
    }
    const fatal = outcome.result.fatalErrors;
    if (fatal.length > 0 && isFailure(outcome.status)) {
      counts.tests++;
      counts.errors++;
      const type = outcome.status === 'failed' ? 'chunk_error' : outcome.status;
      const body = fatal.map((e) => (e.location ? `${e.message}\nat ${e.location.file}:${e.location.line}` : e.message)).join('\n\n');
      cases.push(
        `    <testcase${attrs({ name: '(file)', classname: path, time: seconds(outcome.durationMs) })}>\n` +
          `      <error${attrs({ message: fatal[0]!.message.split('\n')[0]!, type })}>${escapeText(body)}</error>\n    </testcase>`,
      );
    }
    add(counts);
    suites.push(suite(path, counts, { time: seconds(outcome.durationMs), timestamp, hostname: host, status: outcome.status }, cases));
  }
  const ran = new Set(outcomes.map((o) => o.file.displayPath));
  for (const file of opts.planned ?? []) {
    if (ran.has(file.displayPath)) continue;
    const message = `not run: ${opts.notStartedReason ?? 'the run stopped before this file started'}`;
    const counts: Counts = { tests: 1, failures: 0, errors: 0, skipped: 1 };
    add(counts);
    const xml = `    <testcase${attrs({ name: '(file)', classname: file.displayPath, time: seconds(0) })}>\n      <skipped${attrs({ message })}/>\n    </testcase>`;
    suites.push(suite(file.displayPath, counts, { time: seconds(0), timestamp, hostname: host, status: 'not_run' }, [xml]));
  }
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<testsuites${attrs({ name: 'provium', tests: totals.tests, failures: totals.failures, errors: totals.errors, time: seconds(opts.wallMs) })}>\n` +
    (suites.length ? `${suites.join('\n')}\n` : '') +
    '</testsuites>\n'
  );
}

/** Why planned files never started, as the summary says it. */
export function notStartedReason(summary: RunSummary): string {
  return summary.interrupted ? 'the run was interrupted before this file started' : summary.failFastStopped ? '--fail-fast stopped the run before this file started' : 'the run stopped before this file started';
}

export class JunitReporter implements Reporter {
  private readonly _outcomes: FileOutcome[] = [];
  private _startedAt = Date.now();
  private _planned: PlannedFile[] = [];

  constructor(private readonly _path: string) {}

  onBegin(info: RunInfo): void {
    this._startedAt = info.startedAt;
    this._planned = info.files;
  }

  onFileEnd(outcome: FileOutcome): void {
    this._outcomes.push(outcome);
  }

  async onEnd(summary: RunSummary): Promise<void> {
    const xml = renderJunit(this._outcomes, { startedAt: this._startedAt, wallMs: summary.wallMs, planned: this._planned, notStartedReason: notStartedReason(summary) });
    await writeFileAtomic(this._path, xml).catch((err: unknown) => Promise.reject(new ReportWriteError('--junit', this._path, err)));
  }
}
