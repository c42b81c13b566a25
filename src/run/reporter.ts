// Reporters: one interface of typed hooks (Playwright's ReporterV2), called by the run: each
// file's FileJob is the only source of its tests, so the progress display, text, JSON and JUnit
// all count from the same calls and cannot disagree. The fan-out isolates them: a reporter that
// throws is reported once on stderr and detached, and the others keep receiving. `onEnd` is
// awaited (JUnit writes then). src/report implements these; src/run never imports it.

import type { AnyEvent } from '../protocol/events.js';
import type { TestResult } from '../protocol/task.js';
import type { FileOutcome, PlannedFile, RunSummary } from './outcome.js';
import type { ShardSpec } from './shard.js';

export interface RunInfo {
  /** This run's files, in dispatch order. */
  files: PlannedFile[];
  /** Files discovered and kept by the filters, before sharding. */
  selectedFiles: number;
  workers: number;
  shard: ShardSpec | null;
  /** How the shard split was made. */
  shardMethod: 'timings' | 'hash' | null;
  /** ms since the epoch. */
  startedAt: number;
  accel: string;
  /** Sum of the recorded durations of this run's files (ms), when a timing record exists. */
  estimatedMs: number | null;
  /** The run's seed of random fault decisions, in decimal (`--seed` replays it). */
  seed: string;
}

/**
 * A report file could not be written (a bad path, a full disk). The run then exits 2 with this
 * message, which names the flag, the path and the OS error.
 */
export class ReportWriteError extends Error {
  override name = 'ReportWriteError';

  constructor(flag: string, path: string, cause: unknown) {
    super(`${flag} ${path}: cannot write the report: ${(cause as Error)?.message ?? String(cause)}; choose a writable path`);
  }
}

/** Where a file runs: its worker slot (0-based). */
export interface FileSlot {
  file: PlannedFile;
  slot: number;
}

export interface Reporter {
  onBegin?(info: RunInfo): void;
  /** A file was handed to a worker. */
  onFileBegin?(where: FileSlot): void;
  /** A test started (once per test; retries do not begin again). */
  onTestBegin?(where: FileSlot, test: { name: string }): void;
  /** A test ended: passed, failed, skipped, or not run because its file ended first. */
  onTestEnd?(where: FileSlot, test: TestResult): void;
  /** A file ended (any status, including interrupted), after all its tests ended. */
  onFileEnd?(outcome: FileOutcome): void;
  /** A run-level notice (a warning, "fail-fast: stopped dispatching"). */
  onNotice?(message: string): void;
  /** Ctrl-C or SIGTERM: stop drawing; teardown messages follow. */
  onInterrupt?(): void;
  /** Every event of the run's bus, as it is emitted (the HTML timeline is drawn from them). */
  onEvent?(event: AnyEvent): void;
  /** Throws ReportWriteError when its file cannot be written: the run exits 2. */
  onEnd?(summary: RunSummary): void | Promise<void>;
}

type Hook = 'onBegin' | 'onFileBegin' | 'onTestBegin' | 'onTestEnd' | 'onFileEnd' | 'onNotice' | 'onInterrupt' | 'onEvent';

export class ReporterFanout implements Reporter {
  private readonly _reporters: { name: string; reporter: Reporter }[];

  constructor(
    reporters: { name: string; reporter: Reporter }[],
    private readonly _onError: (message: string) => void = (m) => process.stderr.write(`provium: ${m}\n`),
  ) {
    this._reporters = [...reporters];
  }

  private _call<H extends Hook>(hook: H, ...args: Parameters<NonNullable<Reporter[H]>>): void {
    for (const entry of [...this._reporters]) {
      const fn = entry.reporter[hook] as ((...a: typeof args) => void) | undefined;
      if (!fn) continue;
      try {
        fn.apply(entry.reporter, args);
      } catch (err) {
        this._detach(entry, hook, err);
      }
    }
  }

  private _detach(entry: { name: string; reporter: Reporter }, hook: string, err: unknown): void {
    const i = this._reporters.indexOf(entry);
    if (i >= 0) this._reporters.splice(i, 1);
    this._onError(`the ${entry.name} reporter failed in ${hook} and was detached: ${(err as Error)?.message ?? String(err)}`);
  }

  onBegin(info: RunInfo): void {
    this._call('onBegin', info);
  }

  onFileBegin(where: FileSlot): void {
    this._call('onFileBegin', where);
  }

  onTestBegin(where: FileSlot, test: { name: string }): void {
    this._call('onTestBegin', where, test);
  }

  onTestEnd(where: FileSlot, test: TestResult): void {
    this._call('onTestEnd', where, test);
  }

  onFileEnd(outcome: FileOutcome): void {
    this._call('onFileEnd', outcome);
  }

  onNotice(message: string): void {
    this._call('onNotice', message);
  }

  onInterrupt(): void {
    this._call('onInterrupt');
  }

  onEvent(event: AnyEvent): void {
    this._call('onEvent', event);
  }

  async onEnd(summary: RunSummary): Promise<void> {
    await this.end(summary);
  }

  /** Ends every reporter; returns the reports that could not be written (each one's message). */
  async end(summary: RunSummary): Promise<string[]> {
    const unwritten: string[] = [];
    for (const entry of [...this._reporters]) {
      if (!entry.reporter.onEnd) continue;
      try {
        await entry.reporter.onEnd(summary);
      } catch (err) {
        if (err instanceof ReportWriteError) unwritten.push(err.message);
        else this._detach(entry, 'onEnd', err);
      }
    }
    return unwritten;
  }
}

/** The run's outputs, built by src/report from the options and handed to the controller. */
export interface RunOutputs {
  /** Every reporter, behind one isolating fan-out. */
  reporter: ReporterFanout;
  /** Human text that is not a report (plan messages, the interrupt notice); above the bars. */
  write(text: string): void;
  warn(message: string): void;
  /** There is nothing to run: `no_files` (exit 2) or every file filtered out (exit 0). */
  nothing(reason: 'no_files' | 'no_rerun_state' | 'filtered_out', message: string): void;
  /** Before anything runs: every report path can be written, else a ReportWriteError (exit 2). */
  checkPaths?(): Promise<void>;
}
