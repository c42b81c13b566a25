// One file's results in the main thread (Playwright's JobDispatcher role). The worker reports the
// file's tests only on its session port (FileReport); this object is their one consumer and the
// only source of truth for the file: it turns each report into bus events and reporter calls as
// it arrives, and when the file ends however it ends (file_done, timeout, crash, interrupt) it
// closes every test that has not ended, so each declared test gets exactly one begin and one end.

import type { EventBus } from '../events/bus.js';
import type { MetaMap } from '../protocol/events.js';
import type { DeclaredTest, FatalError, FileReport, FileResult, TestResult } from '../protocol/task.js';
import type { PlannedFile } from './outcome.js';
import type { FileSlot, Reporter } from './reporter.js';

/** How the file's task ended, as the dispatcher saw it. */
export type FileEnding =
  /** The worker acknowledged the task; its file_done says how the file went. */
  | { kind: 'acknowledged' }
  | { kind: 'timed_out' | 'crashed' | 'interrupted'; message: string };

interface Running {
  name: string;
  meta: MetaMap;
  startedAtMs: number;
  attempt: number;
}

export class FileJob {
  private readonly _where: FileSlot;
  private readonly _declared = new Map<string, DeclaredTest>();
  private readonly _ended = new Map<string, TestResult>();
  private readonly _begun = new Set<string>();
  /** name → failure messages of its earlier attempts (JUnit's flakyFailure/rerunFailure). */
  private readonly _retryFailures = new Map<string, string[]>();
  private _running: Running | undefined;
  private _fatalErrors: FatalError[] | undefined;

  constructor(
    readonly file: PlannedFile,
    slot: number,
    private readonly _bus: EventBus,
    private readonly _reporter: Reporter,
  ) {
    this._where = { file, slot };
  }

  get slot(): number {
    return this._where.slot;
  }

  /** file_done arrived: the worker finished the file, whatever the file came to. */
  get done(): boolean {
    return this._fatalErrors !== undefined;
  }

  private get _path(): string {
    return this.file.displayPath;
  }

  begin(reservation: { memory_bytes: number; cpus: number }): void {
    this._bus.emit('file_dispatched', { path: this._path, reservation, worker: this._where.slot });
    this._reporter.onFileBegin?.(this._where);
  }

  /** One report from the worker, in the order it sent them. Reports after file_done are ignored. */
  onReport(report: FileReport): void {
    if (this.done) return;
    switch (report.type) {
      case 'tests_declared':
        for (const test of report.tests) this._declared.set(test.name, test);
        return;
      case 'test_begin':
        this._begin(report.name);
        return;
      case 'test_retry':
        if (this._running?.name === report.name) this._running.attempt = report.attempt + 1;
        this._retryFailures.set(report.name, [...(this._retryFailures.get(report.name) ?? []), report.reason]);
        this._bus.emit('test_retry', { path: this._path, name: report.name, attempt: report.attempt, reason: report.reason });
        return;
      case 'test_end':
        this._end(report.test);
        return;
      case 'file_done':
        this._fatalErrors = report.fatalErrors;
        return;
    }
  }

  /**
   * The file ended. Closes what is open: after a clean end, declared tests that never began (the
   * top level failed before they ran) are not run; after a timeout or crash the running test
   * fails with the reason (and `consoleExcerpt`), after an interrupt it is not run, and tests
   * that never began are not run.
   */
  finish(ending: FileEnding, durationMs: number, consoleExcerpt = ''): FileResult {
    const fatalErrors = [...(this._fatalErrors ?? [])];
    if (ending.kind === 'acknowledged') {
      if (!this.done) fatalErrors.push({ message: 'the worker finished the file without reporting its end (file_done); its results may be incomplete' });
      const reason = fatalErrors.length > 0 ? 'the file failed outside its tests' : 'the file ended before it ran';
      if (this._running) this._end(this._abandoned(this._running, 'failed', `${reason} while the test was running`, consoleExcerpt));
      this._closeUnstarted(reason);
    } else {
      if (this._running) {
        const status = ending.kind === 'interrupted' ? 'not_run' : 'failed';
        this._end(this._abandoned(this._running, status, ending.message, ending.kind === 'interrupted' ? '' : consoleExcerpt));
      }
      this._closeUnstarted(ending.message);
      // Outside any test (file-scope code): the file itself carries the reason.
      if (ending.kind !== 'interrupted' && ![...this._ended.values()].some((t) => t.status === 'failed')) {
        fatalErrors.push({ message: ending.message });
      }
    }
    return { file: this.file.file, displayPath: this._path, fatalErrors, tests: this._inOrder(), durationMs };
  }

  private _begin(name: string): void {
    if (this._begun.has(name)) return;
    this._begun.add(name);
    const meta = this._declared.get(name)?.meta ?? {};
    this._running = { name, meta, startedAtMs: performance.now(), attempt: 1 };
    this._bus.emit('test_started', { path: this._path, name, meta, attempt: 1 });
    this._reporter.onTestBegin?.(this._where, { name });
  }

  private _end(ended: TestResult): void {
    if (this._ended.has(ended.name)) return;
    if (!this._begun.has(ended.name)) this._begin(ended.name);
    const retries = this._retryFailures.get(ended.name);
    const test = retries && !ended.retryFailures ? { ...ended, retryFailures: retries } : ended;
    this._ended.set(test.name, test);
    if (this._running?.name === test.name) this._running = undefined;
    const location = test.location ?? this._declared.get(test.name)?.location ?? null;
    const base = { path: this._path, name: test.name, meta: test.meta };
    const duration_ns = Math.round(test.durationMs * 1e6);
    switch (test.status) {
      case 'passed':
        this._bus.emit('test_passed', { ...base, duration_ns, attempt: test.attempts, log: test.log, location });
        if (test.flaky) this._bus.emit('test_flaky', { path: this._path, name: test.name, attempts: test.attempts });
        break;
      case 'failed':
        this._bus.emit('test_failed', {
          ...base,
          duration_ns,
          reason: test.message ?? 'failed',
          console_excerpt: test.consoleExcerpt ?? '',
          attempt: test.attempts,
          log: test.log,
          location,
          failure_location: test.failureLocation ?? null,
        });
        break;
      case 'skipped':
        this._bus.emit('test_skipped', { ...base, reason: test.message ?? 'skipped', location, not_run: false });
        break;
      case 'not_run':
        // The reference has no kind for it: a skip whose reason says why it never ran.
        this._bus.emit('test_skipped', { ...base, reason: `not run: ${test.message ?? 'the file ended first'}`, location, not_run: true });
        break;
    }
    this._reporter.onTestEnd?.(this._where, test);
  }

  private _abandoned(running: Running, status: 'failed' | 'not_run', message: string, consoleExcerpt: string): TestResult {
    const declared = this._declared.get(running.name);
    const test: TestResult = {
      name: running.name,
      status,
      message,
      log: [],
      durationMs: Math.max(0, performance.now() - running.startedAtMs),
      meta: running.meta,
      attempts: running.attempt,
      flaky: false,
    };
    if (declared) test.location = declared.location;
    if (consoleExcerpt) test.consoleExcerpt = consoleExcerpt;
    return test;
  }

  private _closeUnstarted(reason: string): void {
    for (const declared of this._declared.values()) {
      if (this._begun.has(declared.name)) continue;
      this._end({
        name: declared.name,
        status: 'not_run',
        message: reason,
        location: declared.location,
        log: [],
        durationMs: 0,
        meta: declared.meta,
        attempts: 0,
        flaky: false,
      });
    }
  }

  /** Declaration order; anything that ended without being declared after it. */
  private _inOrder(): TestResult[] {
    const tests: TestResult[] = [];
    for (const name of this._declared.keys()) {
      const test = this._ended.get(name);
      if (test) tests.push(test);
    }
    for (const [name, test] of this._ended) if (!this._declared.has(name)) tests.push(test);
    return tests;
  }
}
