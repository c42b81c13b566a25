// The bottom of an interactive terminal, kept for status lines (the progress bars). Text printed
// above them scrolls as usual: the area is erased whole (every row it drew), the text goes out
// with the terminal's own wrapping, and the area is drawn again below it. Status lines are cut to the width (with …) so they never wrap: the number of rows to move
// back over is then exact, and no piece of an old line survives in the scrollback.

import { truncateToWidth, visibleWidth } from './screen.js';

export interface TerminalStream {
  write(chunk: string): unknown;
  columns?: number;
}

const kEraseLine = '\u001b[2K';
const kHideCursor = '\u001b[?25l';
const kShowCursor = '\u001b[?25h';

export class LiveArea {
  /** Visible widths of the lines on screen now (the cursor is at the end of the last one). */
  private _drawn: number[] = [];
  private _lines: string[] = [];
  private _active = false;
  private readonly _restoreCursor = (): void => void this._out.write(kShowCursor);

  constructor(private readonly _out: TerminalStream) {}

  get columns(): number {
    return this._out.columns && this._out.columns > 0 ? this._out.columns : 100;
  }

  get active(): boolean {
    return this._active;
  }

  start(): void {
    if (this._active) return;
    this._active = true;
    this._out.write(kHideCursor);
    // A crash or process.exit must not leave the user's terminal without a cursor.
    process.once('exit', this._restoreCursor);
  }

  /** Replaces the status lines and draws them. */
  render(lines: string[]): void {
    if (!this._active) return;
    this._lines = lines;
    this._out.write(this._erase() + this._draw());
  }

  /** Prints whole lines above the area. */
  log(text: string): void {
    if (!this._active) {
      this._out.write(text);
      return;
    }
    this._out.write(this._erase() + text + this._draw());
  }

  /** Erases the area for good and gives the cursor back; later output goes straight out. */
  stop(): void {
    if (!this._active) return;
    this._out.write(this._erase() + kShowCursor);
    this._active = false;
    this._lines = [];
    process.off('exit', this._restoreCursor);
  }

  /** Back to the start of the area's first row, erasing down from there. */
  private _erase(): string {
    if (this._drawn.length === 0) return '';
    // Rows at today's width: a terminal that reflows on resize may have wrapped a line.
    const columns = this.columns;
    const rows = this._drawn.reduce((sum, width) => sum + Math.max(1, Math.ceil(width / columns)), 0);
    this._drawn = [];
    // Row by row (EL), not "erase below" (ED): tmux's scroll-on-clear would copy a screen
    // cleared from its top row into the scrollback, leftovers and all.
    const up = (n: number): string => (n > 0 ? `\u001b[${n}A` : '');
    return `\r${up(rows - 1)}${`${kEraseLine}\u001b[1B`.repeat(rows - 1)}${kEraseLine}${up(rows - 1)}`;
  }

  private _draw(): string {
    // One column spare: a line that fills the last column leaves some terminals waiting to wrap.
    const width = Math.max(1, this.columns - 1);
    const shown = this._lines.map((line) => truncateToWidth(line, width));
    this._drawn = shown.map((line) => visibleWidth(line));
    return shown.join('\n');
  }
}
