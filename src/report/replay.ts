// A run read back from its event stream: the files, their tests and outcomes, the shard and the
// seed. `provium merge` combines the shards' streams through this, and the HTML report is drawn
// from the same events, so a merged report and a live one count alike. Every fact needed is in
// the events (reference §4.6 plus our fields: log, location, fatal_errors, key).

import type { AnyEvent, EventLocation, EventPayloads, FileStatus } from '../protocol/events.js';
import type { SourceLocation, TestResult } from '../protocol/task.js';
import type { FileOutcome, PlannedFile } from '../run/outcome.js';

export interface ReplayedRun {
  shard: { index: number; count: number } | null;
  seed: string;
  workers: number;
  /** ms since the epoch. */
  startedAt: number;
  /** From run_started to run_finished (or the last event). */
  wallMs: number;
  interrupted: boolean;
  /** run_finished was seen: the stream is complete. */
  finished: boolean;
  /** Every file the run planned (file_discovered), in order. */
  planned: PlannedFile[];
  /** Every file that ended (file_completed), in completion order. */
  outcomes: FileOutcome[];
}

interface FileState {
  worker: number;
  tests: Map<string, TestResult>;
  retries: Map<string, string[]>;
  flaky: Set<string>;
}

const loc = (l: EventLocation | null | undefined): SourceLocation | undefined => (l ? { file: l.file, line: l.line } : undefined);

function plannedFile(path: string, key: string): PlannedFile {
  return { file: path, displayPath: path, root: '.', rootPath: path, key };
}

export function replayRun(events: AnyEvent[]): ReplayedRun {
  const run: ReplayedRun = { shard: null, seed: '', workers: 0, startedAt: 0, wallMs: 0, interrupted: false, finished: false, planned: [], outcomes: [] };
  const files = new Map<string, FileState>();
  const planned = new Map<string, PlannedFile>();
  const state = (path: string): FileState => {
    let s = files.get(path);
    if (!s) files.set(path, (s = { worker: 0, tests: new Map(), retries: new Map(), flaky: new Set() }));
    return s;
  };
  const firstTs = events[0]?.ts ?? 0;
  let startTs = firstTs;
  let endTs = events.at(-1)?.ts ?? firstTs;
  const end = (path: string, test: TestResult): void => {
    const s = state(path);
    const retries = s.retries.get(test.name);
    if (retries) test.retryFailures = retries;
    s.tests.set(test.name, test);
  };
  for (const event of events) {
    switch (event.kind) {
      case 'run_started': {
        const p = event.payload;
        run.shard = p.shard;
        run.seed = p.seed;
        run.workers = p.workers;
        startTs = event.ts;
        break;
      }
      case 'file_discovered':
        planned.set(event.payload.path, plannedFile(event.payload.path, event.payload.key ?? event.payload.path));
        break;
      case 'file_dispatched':
        state(event.payload.path).worker = event.payload.worker;
        break;
      case 'test_retry':
        state(event.payload.path).retries.set(event.payload.name, [...(state(event.payload.path).retries.get(event.payload.name) ?? []), event.payload.reason]);
        break;
      case 'test_flaky':
        state(event.payload.path).flaky.add(event.payload.name);
        break;
      case 'test_passed':
      case 'test_failed':
      case 'test_skipped':
        end(event.payload.path, testOf(event));
        break;
      case 'file_completed': {
        const p = event.payload;
        const s = state(p.path);
        for (const name of s.flaky) {
          const t = s.tests.get(name);
          if (t) t.flaky = true;
        }
        const file = planned.get(p.path) ?? plannedFile(p.path, p.path);
        const durationMs = p.duration_ns / 1e6;
        const outcome: FileOutcome = {
          file,
          status: p.status as FileStatus,
          result: {
            file: file.file,
            displayPath: p.path,
            fatalErrors: (p.fatal_errors ?? []).map((e) => ({ message: e.message, ...(e.location ? { location: loc(e.location)! } : {}) })),
            tests: [...s.tests.values()],
            durationMs,
          },
          durationMs,
          worker: s.worker,
        };
        if (p.status === 'timed_out' || p.status === 'crashed' || p.status === 'interrupted') {
          const first = p.fatal_errors?.[0]?.message;
          if (first) outcome.error = first;
        }
        run.outcomes.push(outcome);
        break;
      }
      case 'run_finished':
        run.finished = true;
        run.interrupted = event.payload.interrupted;
        endTs = event.ts;
        break;
      default:
        break;
    }
  }
  run.planned = [...planned.values()];
  run.startedAt = startTs / 1e6;
  run.wallMs = Math.max(0, (endTs - startTs) / 1e6);
  return run;
}

type TestEnd = { [K in 'test_passed' | 'test_failed' | 'test_skipped']: { kind: K; payload: EventPayloads[K] } }[
  'test_passed' | 'test_failed' | 'test_skipped'
];

function testOf(event: TestEnd): TestResult {
  const p = event.payload;
  const base = { name: p.name, meta: p.meta ?? {}, flaky: false };
  const location = loc(p.location);
  const withLocation = <T extends object>(t: T): T => (location ? { ...t, location } : t);
  switch (event.kind) {
    case 'test_passed':
      return withLocation({ ...base, status: 'passed', log: event.payload.log ?? [], durationMs: event.payload.duration_ns / 1e6, attempts: event.payload.attempt });
    case 'test_failed': {
      const f = event.payload;
      const test: TestResult = withLocation({ ...base, status: 'failed', message: f.reason, log: f.log ?? [], durationMs: f.duration_ns / 1e6, attempts: f.attempt });
      const failureLocation = loc(f.failure_location);
      if (failureLocation) test.failureLocation = failureLocation;
      if (f.console_excerpt) test.consoleExcerpt = f.console_excerpt;
      return test;
    }
    case 'test_skipped': {
      const s = event.payload;
      const notRun = s.not_run === true;
      return withLocation({
        ...base,
        status: notRun ? 'not_run' : 'skipped',
        message: notRun ? s.reason.replace(/^not run: /, '') : s.reason,
        log: [],
        durationMs: 0,
        attempts: notRun ? 0 : 1,
      });
    }
  }
}
