// Errors on their way from TS bindings to Lua, and source locations on their way back. A binding
// throws a LuaError; the protecting wrapper (classes.ts / runtime.ts) turns it into a Lua error
// raised at the binding's caller, i.e. `error(msg, 2)` semantics, so the message starts with the
// test file's `file:line:`.

import { lua, to_jsstring, to_luastring, type lua_State } from 'fengari';
import type { SourceLocation } from '../protocol/task.js';
import { pushText } from './values.js';

/** A message for the Lua caller. `level` 1 = the caller of the binding; 0 = no position. */
export class LuaError extends Error {
  override name = 'LuaError';
  constructor(
    message: string,
    readonly level = 1,
  ) {
    super(message);
  }
}

/** An agent op failed with an OS error: carries the errno for `nil, errno` style returns. */
export class GuestOpError extends LuaError {
  override name = 'GuestOpError';
  constructor(
    message: string,
    readonly errno: number | undefined,
    readonly agentMessage: string,
  ) {
    super(message);
  }
}

/** The running test passed its deadline. Sticky: the runner fails the test whatever Lua does. */
export class TestTimeoutError extends LuaError {
  override name = 'TestTimeoutError';
}

const kSl = to_luastring('Sl', true);

/** The chunk name as users see it: `@spec/a.test.lua` → `spec/a.test.lua`. */
export function displaySource(source: Uint8Array | null): string {
  if (!source || source.length === 0) return '?';
  const s = to_jsstring(source);
  if (s.startsWith('@') || s.startsWith('=')) return s.slice(1);
  const firstLine = s.split('\n', 1)[0]!;
  return `[string "${firstLine.length > 40 ? firstLine.slice(0, 37) + '...' : firstLine}"]`;
}

/** `file:line: ` of the function at `level` (0 = running function), or '' when unknown. */
export function where(L: lua_State, level: number): string {
  const ar = new lua.lua_Debug();
  if (lua.lua_getstack(L, level, ar)) {
    lua.lua_getinfo(L, kSl, ar);
    if (ar.currentline > 0) return `${displaySource(ar.source)}:${ar.currentline}: `;
  }
  return '';
}

/** Raises a Lua error with `message` positioned at `level`. Never returns. */
export function raise(L: lua_State, message: string, level = 1): never {
  pushText(L, (level > 0 ? where(L, level) : '') + message);
  return lua.lua_error(L);
}

/** The innermost frame whose chunk name satisfies `match` (given without the leading `@`). */
export function findFrame(L: lua_State, match: (file: string) => boolean, fromLevel = 0): SourceLocation | null {
  const ar = new lua.lua_Debug();
  for (let level = fromLevel; lua.lua_getstack(L, level, ar); level++) {
    lua.lua_getinfo(L, kSl, ar);
    if (ar.currentline <= 0 || !ar.source || ar.source[0] !== 0x40 /* @ */) continue;
    const file = to_jsstring(ar.source).slice(1);
    if (match(file)) return { file, line: ar.currentline };
  }
  return null;
}

/** Parses the `file:line:` prefix Lua puts on messages (syntax errors, runtime errors). */
export function locationFromMessage(message: string): SourceLocation | undefined {
  const m = /^(.+?):(\d+): /.exec(message);
  if (!m || m[1]!.startsWith('[string')) return undefined;
  return { file: m[1]!, line: Number(m[2]) };
}

/** Error text for a JS error that reached a binding boundary unexpectedly. */
export function describeJsError(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
