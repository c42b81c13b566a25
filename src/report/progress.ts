// The progress display (issue 4 item 6), for an interactive terminal only: an overall bar (files,
// tests passed/failed/skipped, elapsed, ETA) and one line per worker with its current file and
// test. Other output (file lines, failures) goes through `screen`, which prints above the bars.
// The controller decides whether to use it (TTY, no CI, no --no-progress); this class trusts it.

import cliProgress from 'cli-progress';
import type { TestResult } from '../protocol/task.js';
import type { FileOutcome, RunSummary } from '../run/outcome.js';
import type { FileSlot, Reporter, RunInfo } from '../run/reporter.js';
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

export class ProgressDisplay implements Reporter {
  private readonly _paint: Paint;
  private _multibar: cliProgress.MultiBar | undefined;
  private _overall: cliProgress.SingleBar | undefined;
  private readonly _workerBars: cliProgress.SingleBar[] = [];
  /** slot → current file. */
  private readonly _slotFile = new Map<number, string>();
  /** slot → the test it runs now. */
  private readonly _currentTest = new Map<number, string>();
  private readonly _counters: Counters = { files: 0, passed: 0, failed: 0, skipped: 0 };
  private _startedAt = 0;
  private _total = 0;
  private _stopped = false;

  /** Writes above the bars while they are shown, straight to the stream otherwise. */
  readonly screen: Screen;

  constructor(private readonly _opts: ProgressOptions) {
    this._paint = paintFor(_opts.colors);
    const stream = _opts.stream;
    this.screen = {
      write: (text) => {
        if (this._multibar && !this._stopped) this._multibar.log(text);
        else stream.write(text);
      },
      isTTY: true,
      colors: _opts.colors,
      get columns() {
        return stream.columns && stream.columns > 0 ? stream.columns : 100;
      },
    };
  }

  onBegin(info: RunInfo): void {
    this._startedAt = Date.now();
    this._total = info.files.length;
    this._multibar = new cliProgress.MultiBar({
      stream: this._opts.stream,
      fps: this._opts.fps ?? 8,
      clearOnComplete: true,
      hideCursor: true,
      linewrap: false,
      // We own SIGINT: the controller stops the bars while it tears the run down.
      gracefulExit: false,
      autopadding: false,
      emptyOnZero: true,
    });
    this._overall = this._multibar.create(Math.max(1, info.files.length), 0, {}, { format: () => this._overallLine() });
    const workers = Math.min(info.workers, Math.max(1, info.files.length));
    for (let slot = 0; slot < workers; slot++) {
      this._workerBars.push(this._multibar.create(1, 0, {}, { format: () => this._workerLine(slot) }));
    }
  }

  onFileBegin({ file, slot }: FileSlot): void {
    this._slotFile.set(slot, file.displayPath);
    this._currentTest.delete(slot);
  }

  onTestBegin({ slot }: FileSlot, test: { name: string }): void {
    this._currentTest.set(slot, test.name);
  }

  onTestEnd({ slot }: FileSlot, test: TestResult): void {
    if (test.status !== 'not_run') this._counters[test.status]++;
    if (this._currentTest.get(slot) === test.name) this._currentTest.delete(slot);
  }

  onFileEnd(outcome: FileOutcome): void {
    this._counters.files++;
    this._overall?.update(this._counters.files);
    if (this._slotFile.get(outcome.worker) === outcome.file.displayPath) {
      this._slotFile.delete(outcome.worker);
      this._currentTest.delete(outcome.worker);
    }
  }

  onInterrupt(): void {
    this.stop();
  }

  onNotice(message: string): void {
    this.screen.write(`provium: ${message}\n`);
  }

  /** Stops the bars (flushing what was logged above them); later output goes straight out. */
  stop(): void {
    if (this._stopped || !this._multibar) return;
    // update() flushes the log buffer; stop() alone would drop lines logged since the last frame.
    this._multibar.update();
    this._multibar.stop();
    this._stopped = true;
  }

  onEnd(_summary: RunSummary): void {
    this.stop();
  }

  private _overallLine(): string {
    const p = this._paint;
    const c = this._counters;
    const width = 24;
    const ratio = this._total > 0 ? c.files / this._total : 1;
    const filled = Math.round(width * ratio);
    const bar = p.green('█'.repeat(filled)) + p.dim('░'.repeat(width - filled));
    const elapsedMs = Date.now() - this._startedAt;
    // ETA by the files' average so far: crude, but honest and never negative.
    const etaMs = c.files > 0 && c.files < this._total ? (elapsedMs / c.files) * (this._total - c.files) : undefined;
    const tests = `${p.green(`${c.passed} passed`)}, ${c.failed ? p.red(`${c.failed} failed`) : `${c.failed} failed`}, ${p.yellow(`${c.skipped} skipped`)}`;
    return `${bar} ${c.files}/${this._total} files | ${tests} | ${formatDuration(elapsedMs)} elapsed | ETA ${etaMs === undefined ? '--' : formatDuration(etaMs)}`;
  }

  private _workerLine(slot: number): string {
    const file = this._slotFile.get(slot);
    const label = `  w${slot + 1} `;
    if (!file) return this._paint.dim(`${label}idle`);
    const test = this._currentTest.get(slot);
    return `${label}${file}${test ? this._paint.dim(` › ${test}`) : ''}`;
  }
}
