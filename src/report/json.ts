// --json (reference §2.4): one JSON object per file, one per line, as each file ends:
//   {"path","timeout":"in_time"|"timed_out","passed":bool,"chunk_error":str|null,
//    "tests":[{"name","status","message","log":[]}]}
// plus fields of our own (status, fatal_errors, duration_ms, per-test duration_ms, attempts, flaky,
// location, failure_location, console_excerpt; a test's status may be `not_run`) that readers of the reference shape can ignore.

import { isFailure, type FileOutcome } from '../run/outcome.js';
import type { Reporter } from '../run/reporter.js';

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
    duration_ms: Math.round(outcome.durationMs),
    tests: r.tests.map((t) => ({
      name: t.name,
      status: t.status,
      message: t.message ?? null,
      log: t.log,
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

export class JsonReporter implements Reporter {
  constructor(private readonly _out: LineSink) {}

  onFileEnd(outcome: FileOutcome): void {
    // Meta comes from Lua and may hold values JSON has no form for: bigints become strings.
    this._out.write(`${JSON.stringify(fileToJson(outcome), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
  }
}

/** The line printed instead of any file when discovery finds nothing (reference §2.4). */
export const kNoFilesJson = '{"type":"no_files","message":"no *.test.lua files found"}';
