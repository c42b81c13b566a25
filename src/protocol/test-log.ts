// A test's log (`print`, `t:log`) as it travels in TestResult.log, capped: a `print` in a tight
// loop must not grow the worker's memory, the events or the reports without bound (1e6 lines made
// a 101 MB JUnit file). The log keeps its first and its last lines, with one note between them
// saying how much was dropped. The worker caps as the test prints; the JUnit and JSON reports cap
// again with the same limits, which changes nothing the worker capped already but bounds a log
// that came from elsewhere (an event file from another version).

/** Lines kept at each end of a log. */
export const kLogEndLines = 5000;
/** Characters kept at each end of a log. */
export const kLogEndChars = 512 * 1024;
/** One line longer than this keeps its start and says how much it lost. */
export const kLogLineChars = 64 * 1024;
/** Room for the notes the cap itself adds. */
const kNoteSlack = 1024;
/** The start of the note that replaces the dropped middle of a log. */
export const kLogCapNote = '[provium: log capped:';

/** Bounded log: appends are O(1) and memory stays under about twice kLogEndChars. */
export class TestLog {
  private readonly _head: string[] = [];
  private _headChars = 0;
  /** A queue of the latest lines: _tail[_tailStart..] are live. */
  private _tail: string[] = [];
  private _tailStart = 0;
  private _tailChars = 0;
  private _droppedLines = 0;
  private _droppedChars = 0;

  push(line: string): void {
    const text = clipLine(line);
    // 1. The head fills first and is never dropped: the first lines say how the test started.
    if (this._tail.length === 0 && this._head.length < kLogEndLines && this._headChars + text.length <= kLogEndChars) {
      this._head.push(text);
      this._headChars += text.length;
      return;
    }
    // 2. Then the tail keeps the latest lines, dropping its oldest past either limit.
    this._tail.push(text);
    this._tailChars += text.length;
    while (this._tail.length - this._tailStart > kLogEndLines || this._tailChars > kLogEndChars) {
      const old = this._tail[this._tailStart++]!;
      this._tailChars -= old.length;
      this._droppedLines++;
      this._droppedChars += old.length;
    }
    // Compact now and then so the queue's dead prefix does not grow with the test.
    if (this._tailStart > kLogEndLines) {
      this._tail = this._tail.slice(this._tailStart);
      this._tailStart = 0;
    }
  }

  /** Lines dropped so far (0 while the log is within its limits). */
  get droppedLines(): number {
    return this._droppedLines;
  }

  /** The log as reported: head, the note if anything was dropped, tail. */
  lines(): string[] {
    const out = this._head.slice();
    if (this._droppedLines > 0) {
      out.push(
        `${kLogCapNote} ${this._droppedLines} lines (${formatChars(this._droppedChars)}) dropped here; a test's log keeps ` +
          `its first and last ${kLogEndLines} lines (${formatChars(kLogEndChars)} each): write bulk output to a guest file instead]`,
      );
    }
    for (let i = this._tailStart; i < this._tail.length; i++) out.push(this._tail[i]!);
    return out;
  }
}

/** `lines` within the log limits (the same cut the worker makes as a test prints). */
export function capLog(lines: readonly string[]): string[] {
  // A log the worker capped already (head, note, tail) fits as it is: never a second note.
  let chars = 0;
  for (const line of lines) chars += line.length;
  if (lines.length <= 2 * kLogEndLines + 1 && chars <= 2 * kLogEndChars + kNoteSlack && lines.every((l) => l.length <= kLogLineChars + kNoteSlack)) {
    return lines.slice();
  }
  const log = new TestLog();
  for (const line of lines) log.push(line);
  return log.lines();
}

/** A message or excerpt of at most `max` characters: its start, then a note of what was cut. */
export function capText(text: string, max = kLogEndChars): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}\n[provium: ${formatChars(text.length - max)} more not shown]`;
}

function clipLine(line: string): string {
  if (line.length <= kLogLineChars) return line;
  return `${line.slice(0, kLogLineChars)} [provium: line cut, ${formatChars(line.length - kLogLineChars)} more]`;
}

function formatChars(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}
