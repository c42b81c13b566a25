// Moving values between the Lua stack and JS. Lua strings are byte strings (Uint8Array in
// fengari): data travels as bytes and never through a JS string; only names and paths are decoded
// (UTF-8). fengari integers are 32-bit, so 64-bit quantities are read from integers, integral
// floats (exact to 2^53) or decimal/hex strings into bigint, and come back as integers when they
// fit 32 bits, else as floats (exact to 2^53).

import { lua, lauxlib, to_luastring, type lua_State } from 'fengari';

const kDecoder = new TextDecoder('utf-8');
const kEncoder = new TextEncoder();
const kTwo53 = 2 ** 53;
const kInt32Min = -(2 ** 31);
const kInt32Max = 2 ** 31 - 1;
const kInt64Min = -(1n << 63n);
const kUint64Max = (1n << 64n) - 1n;

/** Interned luastrings for keys used on every call. */
const keyCache = new Map<string, Uint8Array>();
export function key(name: string): Uint8Array {
  let k = keyCache.get(name);
  if (!k) {
    k = to_luastring(name);
    keyCache.set(name, k);
  }
  return k;
}

// 1. Bytes and strings.

/** The bytes of the string at `idx` (a copy: Lua strings are shared and immutable). */
export function getBytes(L: lua_State, idx: number): Uint8Array {
  const s = lua.lua_tolstring(L, idx);
  return s ? s.slice() : new Uint8Array(0);
}

/** The string at `idx` decoded as UTF-8 (invalid sequences become U+FFFD): for names and paths. */
export function getText(L: lua_State, idx: number): string {
  const s = lua.lua_tolstring(L, idx);
  return s ? kDecoder.decode(s) : '';
}

export function pushBytes(L: lua_State, bytes: Uint8Array): void {
  // A Buffer or a view into a larger ArrayBuffer is fine: fengari copies `subarray(0, len)`.
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes as ArrayLike<number>);
  lua.lua_pushlstring(L, u8, u8.length);
}

/** Pushes a JS string encoded as UTF-8. */
export function pushText(L: lua_State, text: string): void {
  const bytes = kEncoder.encode(text);
  lua.lua_pushlstring(L, bytes, bytes.length);
}

export function textBytes(text: string): Uint8Array {
  return kEncoder.encode(text);
}

export function bytesText(bytes: Uint8Array): string {
  return kDecoder.decode(bytes);
}

// 2. Numbers.

/** Pushes an integer-valued JS number: a Lua integer when it fits 32 bits, else a float. */
export function pushIntegral(L: lua_State, n: number): void {
  if (Number.isInteger(n) && n >= kInt32Min && n <= kInt32Max) lua.lua_pushinteger(L, n);
  else lua.lua_pushnumber(L, n);
}

/** Pushes a 64-bit value from the wire (number or bigint); beyond 2^53 the float is inexact. */
export function pushInt64(L: lua_State, v: number | bigint): void {
  pushIntegral(L, typeof v === 'bigint' ? Number(v) : v);
}

export function int64ToNumber(v: number | bigint): number {
  return typeof v === 'bigint' ? Number(v) : v;
}

export function int64ToBigInt(v: number | bigint): bigint {
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}

/** A bigint as the wire wants it: a plain number when exact, else the bigint. */
export function wireInt64(v: bigint): number | bigint {
  return v >= -BigInt(kTwo53) && v <= BigInt(kTwo53) ? Number(v) : v;
}

export type Int64Mode = 'signed' | 'unsigned';

/**
 * Reads a 64-bit integer. Accepts a Lua integer, an integral float with |x| <= 2^53, or a string
 * in decimal or hex (`"-1"`, `"0xC0104B00"`, `"18446744073709551615"`). In unsigned mode a
 * negative Lua *integer* is read as its unsigned 32-bit value, because fengari's bitwise operators
 * give 32-bit patterns (`3 << 30` is negative); other negative values wrap modulo 2^64.
 * Signed mode maps values at or above 2^63 to their two's complement. Returns the value, or a
 * string explaining why it was refused.
 */
export function readInt64(L: lua_State, idx: number, mode: Int64Mode): bigint | string {
  const t = lua.lua_type(L, idx);
  let v: bigint;
  if (t === lua.LUA_TNUMBER) {
    if (lua.lua_isinteger(L, idx)) {
      const n = lua.lua_tointegerx(L, idx) as number;
      v = mode === 'unsigned' && n < 0 ? BigInt(n >>> 0) : BigInt(n);
    } else {
      const f = lua.lua_tonumberx(L, idx) as number;
      if (!Number.isFinite(f)) return `got ${f}`;
      if (!Number.isInteger(f)) return `got ${f}, which is not an integer`;
      if (Math.abs(f) > kTwo53) {
        return `got ${f}, beyond 2^53 where floats are inexact; pass it as a string (e.g. "0x${BigInt(f).toString(16)}")`;
      }
      v = BigInt(f);
    }
  } else if (t === lua.LUA_TSTRING) {
    const s = getText(L, idx).trim();
    const parsed = parseIntString(s);
    if (parsed === null) return `got string ${JSON.stringify(s)}, which is not a decimal or hex integer`;
    v = parsed;
  } else {
    return `got ${typeName(L, idx)}`;
  }
  if (v < kInt64Min || v > kUint64Max) return `got ${v}, outside the 64-bit range`;
  return mode === 'signed' ? BigInt.asIntN(64, v) : BigInt.asUintN(64, v);
}

/** A decimal or hex integer string (`"-1"`, `"0xC0104B00"`, spaces around allowed), or null. */
export function parseIntString(text: string): bigint | null {
  const m = /^([+-]?)(0[xX][0-9a-fA-F]+|[0-9]+)$/.exec(text.trim());
  if (!m) return null;
  const v = BigInt(m[2]!);
  return m[1] === '-' ? -v : v;
}

// 3. Describing values for messages.

/** `nil`, `boolean`, `number`, `string`, `table`, `function`, or a userdata's type name (`VM`). */
export function typeName(L: lua_State, idx: number): string {
  const t = lua.lua_type(L, idx);
  if (t === lua.LUA_TNONE) return 'no value';
  if (t === lua.LUA_TUSERDATA || t === lua.LUA_TTABLE) {
    if (lauxlib.luaL_getmetafield(L, idx, key('__name')) === lua.LUA_TSTRING) {
      const name = getText(L, -1);
      lua.lua_pop(L, 1);
      return name;
    }
  }
  if (t === lua.LUA_TNUMBER) return lua.lua_isinteger(L, idx) ? 'integer' : 'number';
  return getText0(lua.lua_typename(L, t));
}

function getText0(s: Uint8Array): string {
  return kDecoder.decode(s);
}

/** A short rendering of a value for assertion messages: strings quoted, long ones cut. */
export function repr(L: lua_State, idx: number, max = 200): string {
  const t = lua.lua_type(L, idx);
  if (t === lua.LUA_TSTRING) {
    const bytes = lua.lua_tolstring(L, idx)!;
    const cut = bytes.length > max;
    const shown = quoteBytes(cut ? bytes.subarray(0, max) : bytes);
    return cut ? `${shown}…(${bytes.length} bytes)` : shown;
  }
  if (t === lua.LUA_TNIL || t === lua.LUA_TNONE) return 'nil';
  if (t === lua.LUA_TBOOLEAN) return lua.lua_toboolean(L, idx) ? 'true' : 'false';
  return getText0(lauxlib.luaL_tolstring(L, idx)) + popOne(L);
}

function popOne(L: lua_State): string {
  lua.lua_pop(L, 1);
  return '';
}

/** Lua-style quoting: printable ASCII kept, the rest escaped. */
export function quoteBytes(bytes: Uint8Array): string {
  let out = '"';
  for (const b of bytes) {
    if (b === 0x22) out += '\\"';
    else if (b === 0x5c) out += '\\\\';
    else if (b === 0x0a) out += '\\n';
    else if (b === 0x0d) out += '\\r';
    else if (b === 0x09) out += '\\t';
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\${b}`;
  }
  return out + '"';
}

// 4. Tables.

/** Length of the array part as `#t` sees it (raw). */
export function rawLen(L: lua_State, idx: number): number {
  return lua.lua_rawlen(L, idx);
}

/** Calls `fn` for each key/value of the table at `idx`; key at -2, value at -1 during the call. */
export function eachPair(L: lua_State, idx: number, fn: () => void): void {
  const t = lua.lua_absindex(L, idx);
  lua.lua_pushnil(L);
  while (lua.lua_next(L, t)) {
    fn();
    lua.lua_pop(L, 1);
  }
}

/** True when the table's keys are exactly 1..n (n >= 1) with no other keys. */
export function isSequence(L: lua_State, idx: number): boolean {
  const n = rawLen(L, idx);
  let count = 0;
  let ok = true;
  eachPair(L, idx, () => {
    count++;
    if (ok && !(lua.lua_type(L, -2) === lua.LUA_TNUMBER && lua.lua_isinteger(L, -2))) ok = false;
  });
  return ok && count === n;
}

/**
 * Converts a Lua value to plain JS data for events and metadata: strings (UTF-8), numbers,
 * booleans, arrays (sequence tables) and objects. Functions, userdata and cycles become strings.
 */
export function toPlain(L: lua_State, idx: number, seen: Set<unknown> = new Set()): unknown {
  const t = lua.lua_type(L, idx);
  if (t === lua.LUA_TNIL || t === lua.LUA_TNONE) return null;
  if (t === lua.LUA_TBOOLEAN) return lua.lua_toboolean(L, idx);
  if (t === lua.LUA_TNUMBER) return lua.lua_tonumberx(L, idx) as number;
  if (t === lua.LUA_TSTRING) return getText(L, idx);
  if (t !== lua.LUA_TTABLE) return `<${typeName(L, idx)}>`;
  const abs = lua.lua_absindex(L, idx);
  const id = lua.lua_topointer(L, abs);
  if (seen.has(id)) return '<cycle>';
  seen.add(id);
  lua.lua_checkstack(L, 4);
  let result: unknown;
  if (rawLen(L, abs) > 0 && isSequence(L, abs)) {
    const arr: unknown[] = [];
    const n = rawLen(L, abs);
    for (let i = 1; i <= n; i++) {
      lua.lua_rawgeti(L, abs, i);
      arr.push(toPlain(L, -1, seen));
      lua.lua_pop(L, 1);
    }
    result = arr;
  } else {
    const obj: Record<string, unknown> = {};
    eachPair(L, abs, () => {
      const k = lua.lua_type(L, -2) === lua.LUA_TSTRING ? getText(L, -2) : repr(L, -2);
      obj[k] = toPlain(L, -1, seen);
    });
    result = obj;
  }
  seen.delete(id);
  return result;
}

/** Pushes plain JS data: arrays become sequences, objects tables, Uint8Array strings. */
export function pushPlain(L: lua_State, v: unknown): void {
  lua.lua_checkstack(L, 4);
  if (v === null || v === undefined) lua.lua_pushnil(L);
  else if (typeof v === 'boolean') lua.lua_pushboolean(L, v);
  else if (typeof v === 'number') pushIntegral(L, v);
  else if (typeof v === 'bigint') pushInt64(L, v);
  else if (typeof v === 'string') pushText(L, v);
  else if (v instanceof Uint8Array) pushBytes(L, v);
  else if (Array.isArray(v)) {
    lua.lua_createtable(L, v.length, 0);
    v.forEach((item, i) => {
      pushPlain(L, item);
      lua.lua_rawseti(L, -2, i + 1);
    });
  } else if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>);
    lua.lua_createtable(L, 0, entries.length);
    for (const [k, item] of entries) {
      if (item === undefined) continue;
      pushPlain(L, item);
      lua.lua_setfield(L, -2, key(k));
    }
  } else lua.lua_pushnil(L);
}

/** Sets t[name] = value for the table on top of the stack (value pushed by `push`). */
export function setField(L: lua_State, name: string, push: () => void): void {
  push();
  lua.lua_setfield(L, -2, key(name));
}
