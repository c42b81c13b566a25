// Reporters: one interface of optional hooks (Playwright's ReporterV2), driven by the run
// controller, and a fan-out that isolates them: a reporter that throws is reported once on
// stderr and detached, and the others keep receiving. `onEnd` is awaited (JUnit writes then).

import type { AnyEvent } from '../protocol/events.js';
import type { FileOutcome, PlannedFile, RunSummary } from '../run/outcome.js';
import type { ShardSpec } from '../run/shard.js';

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
}

export interface Reporter {
  onBegin?(info: RunInfo): void;
  /** Every bus event, as it happens. */
  onEvent?(event: AnyEvent): void;
  /** A file ended (any status, including interrupted). */
  onFileEnd?(outcome: FileOutcome): void;
  /** A run-level notice (a warning, "interrupted", "fail-fast: stopped dispatching"). */
  onNotice?(message: string): void;
  onEnd?(summary: RunSummary): void | Promise<void>;
}

type Hook = 'onBegin' | 'onEvent' | 'onFileEnd' | 'onNotice';

export class ReporterFanout implements Reporter {
  private readonly _reporters: { name: string; reporter: Reporter }[];

  constructor(
    reporters: { name: string; reporter: Reporter }[],
    private readonly _onError: (message: string) => void = (m) => process.stderr.write(`provium: ${m}\n`),
  ) {
    this._reporters = [...reporters];
  }

  private _call<H extends Hook>(hook: H, arg: Parameters<NonNullable<Reporter[H]>>[0]): void {
    for (const entry of [...this._reporters]) {
      const fn = entry.reporter[hook] as ((a: typeof arg) => void) | undefined;
      if (!fn) continue;
      try {
        fn.call(entry.reporter, arg);
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

  onEvent(event: AnyEvent): void {
    this._call('onEvent', event);
  }

  onFileEnd(outcome: FileOutcome): void {
    this._call('onFileEnd', outcome);
  }

  onNotice(message: string): void {
    this._call('onNotice', message);
  }

  async onEnd(summary: RunSummary): Promise<void> {
    for (const entry of [...this._reporters]) {
      if (!entry.reporter.onEnd) continue;
      try {
        await entry.reporter.onEnd(summary);
      } catch (err) {
        this._detach(entry, 'onEnd', err);
      }
    }
  }
}
