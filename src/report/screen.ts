// Where human output goes, injected (STYLE: "progress gets its stream and isTTY injected"). A
// Screen writes whole lines. Colour only on an interactive terminal, never with NO_COLOR set
// (https://no-color.org: any non-empty value) or TERM=dumb; without a TTY output is plain text
// with no escape codes at all.

import type { OutputStream } from '../run/controller.js';

export type { OutputStream };

export interface Screen {
  /** Writes text made of whole lines (each ends with "\n"). */
  write(text: string): void;
  readonly isTTY: boolean;
  readonly colors: boolean;
  readonly columns: number;
}

export function colorsWanted(isTTY: boolean, env: NodeJS.ProcessEnv): boolean {
  if (env['NO_COLOR']) return false;
  if (env['TERM'] === 'dumb') return false;
  return isTTY;
}

export function streamScreen(stream: OutputStream, env: NodeJS.ProcessEnv): Screen {
  const isTTY = stream.isTTY === true;
  return {
    write: (text) => {
      stream.write(text);
    },
    isTTY,
    colors: colorsWanted(isTTY, env),
    get columns() {
      return stream.columns && stream.columns > 0 ? stream.columns : 100;
    },
  };
}

export interface Paint {
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  dim(s: string): string;
  bold(s: string): string;
}

const kIdentity: Paint = { red: (s) => s, green: (s) => s, yellow: (s) => s, dim: (s) => s, bold: (s) => s };
const kAnsi: Paint = {
  red: (s) => `\u001b[31m${s}\u001b[39m`,
  green: (s) => `\u001b[32m${s}\u001b[39m`,
  yellow: (s) => `\u001b[33m${s}\u001b[39m`,
  dim: (s) => `\u001b[2m${s}\u001b[22m`,
  bold: (s) => `\u001b[1m${s}\u001b[22m`,
};

export function paintFor(colors: boolean): Paint {
  return colors ? kAnsi : kIdentity;
}

/** Strips escape sequences and other control characters (except \n and \t) from guest text. */
export function sanitizeForTerminal(text: string): string {
  return text
    .replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, '')
    .replace(/\u001b[@-Z\\-_]/g, '')
    .replace(/\r\n/g, '\n')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');
}

/** "1.23s", "2m05s", "850ms". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return `${minutes}m${String(seconds).padStart(2, '0')}s`;
}

const kAnsiAt = /\u001b\[[0-9;?]*[ -/]*[@-~]/y;

/** Columns `text` takes on a terminal: escape sequences take none, every code point one. */
export function visibleWidth(text: string): number {
  let width = 0;
  for (let i = 0; i < text.length; ) {
    kAnsiAt.lastIndex = i;
    const escape = kAnsiAt.exec(text);
    if (escape) {
      i += escape[0].length;
      continue;
    }
    i += String.fromCodePoint(text.codePointAt(i)!).length;
    width++;
  }
  return width;
}

/**
 * `text` cut to `width` columns, ending in `…` when it was longer; escape sequences are kept (and
 * the style reset after a cut) so a cut never leaves a colour running or half a sequence.
 */
export function truncateToWidth(text: string, width: number): string {
  if (visibleWidth(text) <= width) return text;
  let out = '';
  let used = 0;
  let styled = false;
  for (let i = 0; i < text.length; ) {
    kAnsiAt.lastIndex = i;
    const escape = kAnsiAt.exec(text);
    if (escape) {
      out += escape[0];
      styled = true;
      i += escape[0].length;
      continue;
    }
    const ch = String.fromCodePoint(text.codePointAt(i)!);
    if (used + 1 > width - 1) break;
    out += ch;
    used++;
    i += ch.length;
  }
  return `${out}${styled ? '\u001b[0m' : ''}${width > 0 ? '…' : ''}`;
}
