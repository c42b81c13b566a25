// The progress display (issue 4 item 6, issue 13 item 2), for an interactive terminal only: an
// overall bar (files, tests passed/failed/skipped, elapsed, ETA) and one line per worker with its
// current file and test, kept at the bottom by a LiveArea. Other output (file lines, failures)
// goes through `screen`, which prints it above the bars. The controller decides whether to use it
// (TTY, no CI, no --no-progress); this class trusts it.

import type { TestResult } from '../protocol/task.js';
import type { FileOutcome, PlannedFile, RunSummary } from '../run/outcome.js';
import type { FileSlot, Reporter, RunInfo } from '../run/reporter.js';
import { LiveArea } from './live-area.js';
import { formatDuration, paintFor, type OutputStream, type Paint, type Screen } from './screen.js';

export interface ProgressOptions {
  stream: OutputStream & NodeJS.WritableStream;
  colors: boolean;
  /** Redraws per second. */
  fps?: number;
}

interface Counters {
  files: number;
  passed: number;
  failed: number;
  skipped: number;
}

interface Running {
  file: PlannedFile;
  startedAt: number;
  test?: string;
}

export class ProgressDisplay implements Reporter {
  private readonly _paint: Paint;
  private readonly _area: LiveArea;
  private _timer: NodeJS.Timeout | undefined;
  private _workers = 0;
  /** slot → what it runs now. */
  private readonly _running = new Map<number, Running>();
  /** Files not started yet (by display path) with their expected duration. */
  private readonly _queued = new Map<string, number>();
  private readonly _counters: Counters = { files: 0, passed: 0, failed: 0, skipped: 0 };
  /** The expected duration of each file (ms), from the timing record; null without one. */
  private _estimates: Map<string, number> | null = null;
  private _startedAt = 0;
  private _total = 0;

  /** Writes above the bars while they are shown, straight to the stream otherwise. */
  readonly screen: Screen;

  constructor(private readonly _opts: ProgressOptions) {
    this._paint = paintFor(_opts.colors);
    this._area = new LiveArea(_opts.stream);
    const area = this._area;
    this.screen = {
      write: (text) => area.log(text),
      isTTY: true,
      colors: _opts.colors,
      get columns() {
        return area.columns;
      },
    };
  }

  onBegin(info: RunInfo): void {
    this._startedAt = Date.now();
    this._total = info.files.length;
    this._workers = Math.min(info.workers, Math.max(1, info.files.length));
    this._estimates = expectedDurations(info.files);
    for (const f of info.files) this._queued.set(f.displayPath, this._estimates?.get(f.displayPath) ?? 0);
    this._area.start();
    this._render();
    this._timer = setInterval(() => this._render(), 1000 / (this._opts.fps ?? 8));
    this._timer.unref();
  }

  onFileBegin({ file, slot }: FileSlot): void {
    this._queued.delete(file.displayPath);
    this._running.set(slot, { file, startedAt: Date.now() });
  }

  onTestBegin({ slot }: FileSlot, test: { name: string }): void {
    const running = this._running.get(slot);
    if (running) running.test = test.name;
  }

  onTestEnd({ slot }: FileSlot, test: TestResult): void {
    if (test.status !== 'not_run') this._counters[test.status]++;
    const running = this._running.get(slot);
    if (running?.test === test.name) delete running.test;
  }

  onFileEnd(outcome: FileOutcome): void {
    this._counters.files++;
    if (this._running.get(outcome.worker)?.file.displayPath === outcome.file.displayPath) this._running.delete(outcome.worker);
  }

  onInterrupt(): void {
    this.stop();
  }

  onNotice(message: string): void {
    this.screen.write(`provium: ${message}\n`);
  }

  /** Erases the bars; later output goes straight to the terminal. */
  stop(): void {
    if (this._timer) clearInterval(this._timer);
    this._timer = undefined;
    this._area.stop();
  }

  onEnd(_summary: RunSummary): void {
    this.stop();
  }

  private _render(): void {
    const lines = [this._overallLine()];
    for (let slot = 0; slot < this._workers; slot++) lines.push(this._workerLine(slot));
    this._area.render(lines);
  }

  /** ms left: recorded durations of what is queued and the rest of what runs, over the workers. */
  private _etaMs(elapsedMs: number): number | undefined {
    const done = this._counters.files;
    if (done >= this._total) return undefined;
    if (this._estimates) {
      const now = Date.now();
      let work = 0;
      for (const ms of this._queued.values()) work += ms;
      for (const running of this._running.values()) {
        work += Math.max(0, (this._estimates.get(running.file.displayPath) ?? 0) - (now - running.startedAt));
      }
      return work / Math.max(1, this._workers);
    }
    // No record: the average file so far; honest, never negative.
    return done > 0 ? (elapsedMs / done) * (this._total - done) : undefined;
  }

  private _overallLine(): string {
    const p = this._paint;
    const c = this._counters;
    const width = 24;
    const ratio = this._total > 0 ? c.files / this._total : 1;
    const filled = Math.round(width * ratio);
    const bar = p.green('█'.repeat(filled)) + p.dim('░'.repeat(width - filled));
    const elapsedMs = Date.now() - this._startedAt;
    const etaMs = this._etaMs(elapsedMs);
    const tests = `${p.green(`${c.passed} passed`)}, ${c.failed ? p.red(`${c.failed} failed`) : `${c.failed} failed`}, ${p.yellow(`${c.skipped} skipped`)}`;
    return `${bar} ${c.files}/${this._total} files | ${tests} | ${formatDuration(elapsedMs)} elapsed | ETA ${etaMs === undefined ? '--' : formatDuration(etaMs)}`;
  }

  private _workerLine(slot: number): string {
    const running = this._running.get(slot);
    const label = `  w${slot + 1} `;
    if (!running) return this._paint.dim(`${label}idle`);
    return `${label}${running.file.displayPath}${running.test ? this._paint.dim(` › ${running.test}`) : ''}`;
  }
}

/** Display path → recorded duration; files without one get the mean of those with one. */
function expectedDurations(files: PlannedFile[]): Map<string, number> | null {
  const known = files.filter((f) => f.recordedMs !== undefined);
  if (known.length === 0) return null;
  const mean = known.reduce((sum, f) => sum + f.recordedMs!, 0) / known.length;
  return new Map(files.map((f) => [f.displayPath, f.recordedMs ?? mean]));
}
