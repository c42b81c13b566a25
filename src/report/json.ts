// --json (reference §2.4): one JSON object per file, one per line, as each file ends:
//   {"path","timeout":"in_time"|"timed_out","passed":bool,"chunk_error":str|null,
//    "tests":[{"name","status","message","log":[]}]}
// plus fields of our own (status, fatal_errors, duration_ms, per-test duration_ms, attempts, flaky,
// location, failure_location, console_excerpt, no_tests; a test's status may be `not_run`) that
// readers of the reference shape can ignore. The stream ends with one summary record, written
// even for an empty shard:
//   {"type":"summary","passed","failed","skipped","flaky","not_run","no_tests","files",
//    "files_failed","files_not_run","duration_ms","shard":{"index","count"}|null,"seed","interrupted"}

import { hasNoTests, isFailure, type FileOutcome, type RunSummary } from '../run/outcome.js';
import type { Reporter, RunInfo } from '../run/reporter.js';
import { capLog, capText } from '../protocol/test-log.js';

export interface LineSink {
  write(chunk: string): unknown;
}

export function fileToJson(outcome: FileOutcome): Record<string, unknown> {
  const r = outcome.result;
  return {
    path: outcome.file.displayPath,
    timeout: outcome.status === 'timed_out' ? 'timed_out' : 'in_time',
    passed: !isFailure(outcome.status) && outcome.status !== 'interrupted',
    chunk_error: r.fatalErrors.length > 0 ? r.fatalErrors.map((e) => e.message).join('\n') : null,
    fatal_errors: r.fatalErrors,
    status: outcome.status,
    no_tests: hasNoTests(outcome),
    duration_ms: Math.round(outcome.durationMs),
    tests: r.tests.map((t) => ({
      name: t.name,
      status: t.status,
      // Capped per test with a note, so one chatty test cannot make the report unreadable.
      message: t.message === undefined ? null : capText(t.message),
      log: capLog(t.log),
      duration_ms: Math.round(t.durationMs),
      attempts: t.attempts,
      flaky: t.flaky,
      location: t.location ?? null,
      failure_location: t.failureLocation ?? null,
      meta: t.meta,
      ...(t.consoleExcerpt ? { console_excerpt: t.consoleExcerpt } : {}),
    })),
  };
}

/** The closing record of a run (or of merged shards). */
export function summaryToJson(summary: RunSummary, run: { shard: { index: number; count: number } | null; seed: string }): Record<string, unknown> {
  return {
    type: 'summary',
    passed: summary.passed,
    failed: summary.failed,
    skipped: summary.skipped,
    flaky: summary.flaky,
    not_run: summary.notRun,
    no_tests: summary.filesWithoutTests,
    files: summary.files,
    files_failed: summary.filesFailed,
    files_not_run: summary.filesNotRun,
    duration_ms: Math.round(summary.wallMs),
    shard: run.shard ? { index: run.shard.index, count: run.shard.count } : null,
    seed: run.seed,
    interrupted: summary.interrupted,
  };
}

/** One JSON line; meta comes from Lua and may hold values JSON has no form for: bigints become strings. */
export function jsonLine(value: Record<string, unknown>): string {
  return `${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`;
}

export class JsonReporter implements Reporter {
  private _run: { shard: { index: number; count: number } | null; seed: string } = { shard: null, seed: '' };

  constructor(private readonly _out: LineSink) {}

  onBegin(info: RunInfo): void {
    this._run = { shard: info.shard, seed: info.seed };
  }

  onFileEnd(outcome: FileOutcome): void {
    this._out.write(jsonLine(fileToJson(outcome)));
  }

  onEnd(summary: RunSummary): void {
    this._out.write(jsonLine(summaryToJson(summary, this._run)));
  }
}

/** The line printed instead of any file when discovery finds nothing (reference §2.4). */
export const kNoFilesJson = '{"type":"no_files","message":"no *.test.lua files found"}';
