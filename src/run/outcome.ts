// What a file and a run came to: file status, counts, and the exit code (reference §2.3, issue 4
// item 8): 0 when everything passed (or was skipped), 1 when any file failed, timed out or
// crashed, 2 for usage/config/environment errors, 130 when the run was interrupted.

import type { FileStatus, ResourceAmount } from '../protocol/events.js';
import type { DiscoveredFile } from './discovery.js';
import type { FileResult } from '../protocol/task.js';

export const ExitCode = {
  ok: 0,
  failed: 1,
  usage: 2,
  interrupted: 130,
} as const;

/** A file as the run plans it: discovery plus its stable key (timings, shards). */
export interface PlannedFile extends DiscoveredFile {
  /** Path relative to the project (provium.toml's directory), '/' separators. */
  key: string;
  /** A literal lab:claim in the file, found before dispatch (file_discovered, file_dispatched). */
  declaredClaim?: ResourceAmount | null;
  /** Literal barrier names in the file (its static scan). */
  barriers?: string[];
  /** Its duration in the timing record (ms), when recorded: the progress display's ETA. */
  recordedMs?: number;
}

export interface FileOutcome {
  file: PlannedFile;
  status: FileStatus;
  /** What the file's reports came to (its FileJob's record, whatever way the file ended). */
  result: FileResult;
  durationMs: number;
  /** The worker slot (0-based) it ran on. */
  worker: number;
  /** Why the file failed outside its tests (timeout, crash), one line; absent otherwise. */
  error?: string;
}

export interface TestCounts {
  passed: number;
  failed: number;
  skipped: number;
  /** Passed on a retry after failing (included in `passed`). */
  flaky: number;
  /** Declared, but never started: the file timed out, crashed or was interrupted first. */
  notRun: number;
}

/** Status of a file whose worker returned a result. */
export function statusOf(result: FileResult): FileStatus {
  if (result.fatalErrors.length > 0 || result.tests.some((t) => t.status === 'failed')) return 'failed';
  if (result.tests.length > 0 && result.tests.every((t) => t.status === 'skipped')) return 'skipped';
  return 'passed';
}

/** A file that ran to its end without declaring a single test: nothing was checked (a warning). */
export function hasNoTests(outcome: FileOutcome): boolean {
  return outcome.status === 'passed' && outcome.result.tests.length === 0 && outcome.result.fatalErrors.length === 0;
}

export function isFailure(status: FileStatus): boolean {
  return status === 'failed' || status === 'timed_out' || status === 'crashed';
}

/**
 * Test counts of one file, interrupted ones included (what finished before Ctrl-C counts). A file
 * that failed without any failed test (a file-scope error, a timeout or crash outside a test)
 * counts one failure, so the summary never reads "0 failed" for a failed run.
 */
export function countFile(outcome: FileOutcome): TestCounts {
  const counts: TestCounts = { passed: 0, failed: 0, skipped: 0, flaky: 0, notRun: 0 };
  for (const test of outcome.result.tests) {
    if (test.status === 'not_run') counts.notRun++;
    else counts[test.status]++;
    if (test.status === 'passed' && test.flaky) counts.flaky++;
  }
  if (isFailure(outcome.status) && counts.failed === 0) counts.failed = 1;
  return counts;
}

export interface RunSummary extends TestCounts {
  /** Files that finished (any status but interrupted). */
  files: number;
  filesFailed: number;
  /** Files that declared no test (see hasNoTests). */
  filesWithoutTests: number;
  /** Files never started (fail-fast or interrupt) plus files interrupted while running. */
  filesNotRun: number;
  wallMs: number;
  interrupted: boolean;
  /** Stopped dispatching after a failure. */
  failFastStopped: boolean;
  exitCode: number;
}

export function summarize(
  outcomes: FileOutcome[],
  opts: { plannedFiles: number; wallMs: number; interrupted: boolean; failFastStopped: boolean },
): RunSummary {
  const total: TestCounts = { passed: 0, failed: 0, skipped: 0, flaky: 0, notRun: 0 };
  let files = 0;
  let filesFailed = 0;
  let filesWithoutTests = 0;
  for (const outcome of outcomes) {
    if (hasNoTests(outcome)) filesWithoutTests++;
    const c = countFile(outcome);
    total.passed += c.passed;
    total.failed += c.failed;
    total.skipped += c.skipped;
    total.flaky += c.flaky;
    total.notRun += c.notRun;
    if (outcome.status !== 'interrupted') files++;
    if (isFailure(outcome.status)) filesFailed++;
  }
  const exitCode = opts.interrupted ? ExitCode.interrupted : filesFailed > 0 ? ExitCode.failed : ExitCode.ok;
  return {
    ...total,
    files,
    filesFailed,
    filesWithoutTests,
    filesNotRun: opts.plannedFiles - files,
    wallMs: opts.wallMs,
    interrupted: opts.interrupted,
    failFastStopped: opts.failFastStopped,
    exitCode,
  };
}

/** The closing line's first half, exactly `N passed, N failed, N skipped` (+ `, N flaky`, `, N not run`). */
export function countsLine(c: TestCounts): string {
  const extra = `${c.flaky > 0 ? `, ${c.flaky} flaky` : ''}${c.notRun > 0 ? `, ${c.notRun} not run` : ''}`;
  return `${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped${extra}`;
}
