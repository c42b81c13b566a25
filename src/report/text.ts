// The text reporter (reference §2.4): one PASS/FAIL line per file, each failure with its message
// and file:line, -v adds per-test PASS/SKIP lines, -q keeps only failures and the summary. A file
// that declares no test is a warning, not a silent PASS. The run closes with a recap of every
// failed test (name, file:line, the message's first line), then the line `N passed, N failed,
// N skipped` (plus `, N flaky`), alone on its line so scripts can match it, and the wall time.

import { isAbsolute, relative } from 'node:path';
import { countFile, countsLine, hasNoTests, isFailure, type FileOutcome, type RunSummary } from '../run/outcome.js';
import type { TestResult } from '../protocol/task.js';
import type { Reporter, RunInfo } from '../run/reporter.js';
import { formatDuration, paintFor, sanitizeForTerminal, type Paint, type Screen } from './screen.js';

import type { Verbosity } from '../run/controller.js';

export type { Verbosity };

export interface TextReporterOptions {
  screen: Screen;
  verbosity: Verbosity;
  cwd: string;
  /** Prefix file lines with `[i/N] ` (the interactive, progress-bar mode). */
  counterPrefix?: boolean;
  /** Console lines shown under a failure (all of them with -v). */
  consoleLines?: number;
}

const kConsoleLines = 12;

export class TextReporter implements Reporter {
  private readonly _paint: Paint;
  private _total = 0;
  private _done = 0;
  /** One line per failed test (or file failed outside its tests), for the closing recap. */
  private readonly _recap: string[] = [];

  constructor(private readonly _opts: TextReporterOptions) {
    this._paint = paintFor(_opts.screen.colors);
  }

  onBegin(info: RunInfo): void {
    this._total = info.files.length;
    if (this._opts.verbosity === 'quiet') return;
    const parts = [`${info.files.length} file${info.files.length === 1 ? '' : 's'}`, `${info.workers} worker${info.workers === 1 ? '' : 's'}`];
    if (info.shard) {
      parts.push(`shard ${info.shard.index}/${info.shard.count} of ${info.selectedFiles} files${info.shardMethod === 'timings' ? ', balanced by recorded durations' : ''}`);
    }
    if (info.accel) parts.push(`accel ${info.accel}`);
    parts.push(`seed ${info.seed}`);
    this._opts.screen.write(this._paint.dim(`provium: ${parts.join(', ')}`) + '\n');
  }

  onNotice(message: string): void {
    this._opts.screen.write(`provium: ${message}\n`);
  }

  onFileEnd(outcome: FileOutcome): void {
    this._done++;
    this._noteFailures(outcome);
    const failed = isFailure(outcome.status);
    if (hasNoTests(outcome)) {
      this._opts.screen.write(`provium: warning: ${outcome.file.displayPath} declares no tests (no test() call ran); nothing in it was checked\n`);
    }
    if (this._opts.verbosity === 'quiet' && !failed) return;
    this._opts.screen.write(this.formatFile(outcome));
  }

  private _noteFailures(outcome: FileOutcome): void {
    const where = (l: { file: string; line: number } | undefined): string => (l ? `${this._shortPath(l.file)}:${l.line}` : outcome.file.displayPath);
    const first = (message: string, at: string): string => {
      const line = sanitizeForTerminal(message).split('\n')[0]!.trim();
      // Lua errors start with the place they were raised: said once is enough.
      return line.startsWith(`${at}: `) ? line.slice(at.length + 2) : line;
    };
    let any = false;
    for (const test of outcome.result.tests) {
      if (test.status !== 'failed') continue;
      any = true;
      const at = where(test.failureLocation ?? test.location);
      this._recap.push(`  ${this._paint.red('FAIL')} ${at} › ${test.name}: ${first(test.message ?? 'failed', at)}`);
    }
    if (!any && isFailure(outcome.status)) {
      const fatal = outcome.result.fatalErrors[0];
      const at = where(fatal?.location);
      this._recap.push(`  ${this._paint.red('FAIL')} ${at} › (file): ${first(fatal?.message ?? outcome.error ?? outcome.status, at)}`);
    }
  }

  private _shortPath(file: string): string {
    return isAbsolute(file) ? relative(this._opts.cwd, file) || file : file;
  }

  /** The block for one file (exposed for tests). */
  formatFile(outcome: FileOutcome): string {
    const p = this._paint;
    const verbose = this._opts.verbosity === 'verbose';
    const counts = countFile(outcome);
    const tag = {
      passed: p.green('PASS'),
      failed: p.red('FAIL'),
      crashed: p.red('FAIL'),
      timed_out: p.red('TIME'),
      skipped: p.yellow('SKIP'),
      interrupted: p.yellow('STOP'),
    }[outcome.status];
    const prefix = this._opts.counterPrefix ? `[${this._done}/${this._total}] ` : '';
    const detail = `${outcome.status === 'interrupted' ? 'interrupted: ' : ''}${countsLine(counts)}`;
    const lines = [`${prefix}${tag} ${outcome.file.displayPath} (${detail}) ${p.dim(formatDuration(outcome.durationMs))}`];

    // Errors outside any test (syntax error, error at top level, timeout or crash outside a test).
    for (const fatal of outcome.result.fatalErrors) {
      // Appended in a loop: a spread of a 125k-line message would overflow the stack.
      for (const line of this._messageLines('    ', `${outcome.status === 'failed' ? 'chunk_error: ' : ''}${fatal.message}`, fatal.location)) lines.push(line);
    }
    for (const test of outcome.result.tests) {
      if (test.status === 'failed') {
        lines.push(`    ${p.red('FAIL')} ${test.name}`);
        for (const line of this._testDetail(test)) lines.push(line);
      } else if (verbose && test.status === 'passed') {
        const flaky = test.flaky ? p.yellow(` flaky: passed on attempt ${test.attempts}`) : '';
        lines.push(`    ${p.green('PASS')} ${test.name} ${p.dim(formatDuration(test.durationMs))}${flaky}`);
      } else if (test.status === 'not_run' && outcome.status !== 'interrupted') {
        lines.push(`    ${p.yellow('NOT RUN')} ${test.name} (${test.message ?? 'the file ended first'})`);
      } else if (verbose && test.status === 'skipped') {
        lines.push(`    ${p.yellow('SKIP')} ${test.name} (${test.message ?? 'skipped'})`);
      } else if (test.status === 'passed' && test.flaky) {
        lines.push(`    ${p.yellow('FLAKY')} ${test.name} (passed on attempt ${test.attempts})`);
      }
    }
    return lines.join('\n') + '\n';
  }

  private _testDetail(test: TestResult): string[] {
    const lines = this._messageLines('        ', test.message ?? 'failed', test.failureLocation ?? test.location);
    if (test.attempts > 1) lines.push(`        ${this._paint.dim(`(failed all ${test.attempts} attempts)`)}`);
    for (const entry of test.log) lines.push(`        log: ${sanitizeForTerminal(entry)}`);
    if (test.consoleExcerpt) {
      const all = sanitizeForTerminal(test.consoleExcerpt).replace(/\n+$/, '').split('\n');
      const limit = this._opts.verbosity === 'verbose' ? all.length : this._opts.consoleLines ?? kConsoleLines;
      const shown = all.slice(-limit);
      lines.push(`        ${this._paint.dim(`console (last ${shown.length} of ${all.length} lines):`)}`);
      for (const line of shown) lines.push(`          ${this._paint.dim(line)}`);
    }
    return lines;
  }

  /** The message, indented, then `at file:line` unless the message already starts with it. */
  private _messageLines(indent: string, message: string, location?: { file: string; line: number }): string[] {
    const lines = sanitizeForTerminal(message).replace(/\n+$/, '').split('\n').map((l) => `${indent}${l}`);
    if (location) {
      const file = isAbsolute(location.file) ? relative(this._opts.cwd, location.file) || location.file : location.file;
      const where = `${file}:${location.line}`;
      if (!message.includes(where) && !message.includes(`${location.file}:${location.line}`)) lines.push(`${indent}at ${where}`);
    }
    return lines;
  }

  onEnd(summary: RunSummary): void {
    const p = this._paint;
    const counts = countsLine(summary);
    const colored = summary.failed > 0 ? p.red(counts) : p.green(counts);
    const facts = [`${summary.files} file${summary.files === 1 ? '' : 's'}`];
    if (summary.filesFailed > 0) facts[0] += ` (${summary.filesFailed} failed)`;
    if (summary.filesNotRun > 0) {
      const why = summary.interrupted ? 'interrupted' : summary.failFastStopped ? '--fail-fast' : 'stopped';
      facts.push(`${summary.filesNotRun} not run (${why})`);
    }
    if (summary.filesWithoutTests > 0) facts.push(`${summary.filesWithoutTests} without tests`);
    const recap = this._recap.length > 0 ? `\n${p.bold(`Failed tests (${this._recap.length}):`)}\n${this._recap.join('\n')}\n` : '';
    this._opts.screen.write(`${recap}\n${colored}\n${facts.join(', ')} in ${formatDuration(summary.wallMs)}\n`);
    if (summary.interrupted) this._opts.screen.write(p.yellow('provium: interrupted') + '\n');
  }
}
