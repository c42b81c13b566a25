// The `json` global (reference §1.1): encode/decode between Lua values and JSON text, host-side.
//
// Encoding: a table whose keys are exactly 1..N (gaps allowed) is an array, gaps becoming null;
// any other table is an object (integer keys stringified), keys sorted so output is stable.
// fengari integers are 32-bit, so an integral float below 2^53 is written as a JSON integer
// (3e9 → 3000000000). NaN, infinities, functions, userdata, cycles and invalid UTF-8 are errors.
//
// Decoding: null becomes nil (object keys dropped, array holes). Integers are read as 64-bit:
// values past i64::MAX wrap to the same bit pattern (18446744073709551615 → -1); the result is a
// Lua integer when it fits 32 bits, else a float (exact to 2^53).

import { lua, type lua_State } from 'fengari';
import { LuaError } from './errors.js';
import type { BindingRuntime } from './args.js';
import { eachPair, getText, key, pushIntegral, pushText, typeName } from './values.js';

const kMaxDepth = 200;
const kStrictDecoder = new TextDecoder('utf-8', { fatal: true });

/** `rt` is the file's runtime (runtime.ts), seen through the binding surface so legacy/ may use pushDecoded. */
export function installJson(rt: BindingRuntime & { readonly L: lua_State }): void {
  const L = rt.L;
  lua.lua_createtable(L, 0, 2);
  lua.lua_pushcfunction(
    L,
    rt.fn('json.encode', (a) => {
      pushText(a.L, encodeValue(a.L, a.idx(1)));
      return 1;
    }),
  );
  lua.lua_setfield(L, -2, key('encode'));
  lua.lua_pushcfunction(
    L,
    rt.fn('json.decode', (a) => {
      pushDecoded(a.L, a.bytes(1, 'text'), a.label);
      return 1;
    }),
  );
  lua.lua_setfield(L, -2, key('decode'));
  lua.lua_setglobal(L, key('json'));
}

/** Pushes the Lua value of JSON `text` (nil for `null`). Throws LuaError prefixed with `label`. */
export function pushDecoded(L: lua_State, text: Uint8Array, label: string): void {
  let source: string;
  try {
    source = kStrictDecoder.decode(text);
  } catch {
    throw new LuaError(`${label}: input is not valid UTF-8`);
  }
  if (!new Decoder(L, source).decodeDocument()) lua.lua_pushnil(L);
}

/** JSON text of the Lua value at `idx`. Throws LuaError naming the offending path. */
export function encodeValue(L: lua_State, idx: number): string {
  const seen = new Set<object>();
  const out: string[] = [];
  encode(L, lua.lua_absindex(L, idx), '$', 0, seen, out);
  return out.join('');
}

function fail(path: string, message: string): never {
  throw new LuaError(`json.encode: ${path}: ${message}`);
}

function encode(L: lua_State, idx: number, path: string, depth: number, seen: Set<object>, out: string[]): void {
  const t = lua.lua_type(L, idx);
  if (t === lua.LUA_TNIL || t === lua.LUA_TNONE) out.push('null');
  else if (t === lua.LUA_TBOOLEAN) out.push(lua.lua_toboolean(L, idx) ? 'true' : 'false');
  else if (t === lua.LUA_TNUMBER) out.push(encodeNumber(L, idx, path));
  else if (t === lua.LUA_TSTRING) out.push(encodeString(lua.lua_tolstring(L, idx)!, path));
  else if (t === lua.LUA_TTABLE) encodeTable(L, idx, path, depth, seen, out);
  else fail(path, `cannot encode a ${typeName(L, idx)} value`);
}

function encodeNumber(L: lua_State, idx: number, path: string): string {
  if (lua.lua_isinteger(L, idx)) return String(lua.lua_tointegerx(L, idx));
  const n = lua.lua_tonumberx(L, idx) as number;
  if (!Number.isFinite(n)) fail(path, `cannot encode ${n} (JSON has no NaN or infinity)`);
  if (Number.isInteger(n) && Math.abs(n) < 1e21) return BigInt(n).toString();
  return JSON.stringify(n);
}

function encodeString(bytes: Uint8Array, path: string): string {
  let text: string;
  try {
    text = kStrictDecoder.decode(bytes);
  } catch {
    return fail(path, 'string is not valid UTF-8 (JSON strings are text; encode binary data first)');
  }
  return JSON.stringify(text);
}

function encodeTable(L: lua_State, idx: number, path: string, depth: number, seen: Set<object>, out: string[]): void {
  const id = lua.lua_topointer(L, idx)!;
  if (seen.has(id)) fail(path, 'table contains a reference to itself (cycle)');
  if (depth >= kMaxDepth) fail(path, `nesting deeper than ${kMaxDepth}`);
  seen.add(id);
  lua.lua_checkstack(L, 6);
  // 1. Classify the keys.
  let count = 0;
  let maxIndex = 0;
  let allPositiveInts = true;
  const keys: { json: string; text: string; push: () => void }[] = [];
  eachPair(L, idx, () => {
    count++;
    const kt = lua.lua_type(L, -2);
    if (kt === lua.LUA_TNUMBER) {
      const n = lua.lua_tonumberx(L, -2) as number;
      if (Number.isInteger(n) && n >= 1) maxIndex = Math.max(maxIndex, n);
      else allPositiveInts = false;
      const text = lua.lua_isinteger(L, -2) || Number.isInteger(n) ? String(n) : JSON.stringify(n);
      const isInt = lua.lua_isinteger(L, -2);
      keys.push({
        json: JSON.stringify(text),
        text,
        push: () => (isInt ? lua.lua_pushinteger(L, n) : lua.lua_pushnumber(L, n)),
      });
    } else if (kt === lua.LUA_TSTRING) {
      allPositiveInts = false;
      const bytes = lua.lua_tolstring(L, -2)!.slice();
      const text = getText(L, -2);
      keys.push({ json: encodeString(bytes, path), text, push: () => lua.lua_pushlstring(L, bytes, bytes.length) });
    } else {
      fail(path, `cannot encode a table key of type ${typeName(L, -2)}`);
    }
  });
  // 2. Arrays: keys exactly 1..N with gaps allowed.
  if (count > 0 && allPositiveInts) {
    out.push('[');
    for (let i = 1; i <= maxIndex; i++) {
      if (i > 1) out.push(',');
      lua.lua_rawgeti(L, idx, i);
      encode(L, lua.lua_absindex(L, -1), `${path}[${i}]`, depth + 1, seen, out);
      lua.lua_pop(L, 1);
    }
    out.push(']');
  } else {
    // 3. Objects, keys sorted for stable output.
    keys.sort((x, y) => (x.text < y.text ? -1 : x.text > y.text ? 1 : 0));
    out.push('{');
    keys.forEach((k, i) => {
      if (i > 0) out.push(',');
      out.push(k.json, ':');
      k.push();
      lua.lua_rawget(L, idx);
      encode(L, lua.lua_absindex(L, -1), `${path}.${k.text}`, depth + 1, seen, out);
      lua.lua_pop(L, 1);
    });
    out.push('}');
  }
  seen.delete(id);
}

const kInt64Min = -(1n << 63n);
const kUint64Max = (1n << 64n) - 1n;

/** A recursive-descent JSON parser that pushes straight onto the Lua stack. */
class Decoder {
  private _pos = 0;

  constructor(
    private readonly _L: lua_State,
    private readonly _s: string,
  ) {}

  /** Pushes the document's value; false (nothing pushed) when it is null. */
  decodeDocument(): boolean {
    this._ws();
    const pushed = this._value(0);
    this._ws();
    if (this._pos < this._s.length) this._fail('trailing characters after the JSON value');
    return pushed;
  }

  private _fail(message: string): never {
    const before = this._s.slice(0, this._pos);
    const line = before.split('\n').length;
    const column = this._pos - before.lastIndexOf('\n');
    throw new LuaError(`json.decode: ${message} at line ${line} column ${column}`);
  }

  private _ws(): void {
    const s = this._s;
    while (this._pos < s.length) {
      const c = s.charCodeAt(this._pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this._pos++;
      else break;
    }
  }

  /** Pushes one value; returns false for null (nothing pushed). */
  private _value(depth: number): boolean {
    if (depth > kMaxDepth) this._fail(`nesting deeper than ${kMaxDepth}`);
    const L = this._L;
    const c = this._s[this._pos];
    if (c === '{') return this._object(depth), true;
    if (c === '[') return this._array(depth), true;
    if (c === '"') return pushText(L, this._string()), true;
    if (this._s.startsWith('true', this._pos)) return (this._pos += 4), lua.lua_pushboolean(L, true), true;
    if (this._s.startsWith('false', this._pos)) return (this._pos += 5), lua.lua_pushboolean(L, false), true;
    if (this._s.startsWith('null', this._pos)) return (this._pos += 4), false;
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this._number(), true;
    return this._fail(c === undefined ? 'unexpected end of input' : `unexpected character ${JSON.stringify(c)}`);
  }

  private _number(): void {
    const m = /^-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this._s.slice(this._pos, this._pos + 400));
    if (!m) this._fail('invalid number');
    this._pos += m[0].length;
    const L = this._L;
    if (m[1] === undefined && m[2] === undefined) {
      const big = BigInt(m[0]);
      if (big >= kInt64Min && big <= kUint64Max) {
        pushIntegral(L, Number(BigInt.asIntN(64, big)));
        return;
      }
    }
    lua.lua_pushnumber(L, Number(m[0]));
  }

  private _string(): string {
    const s = this._s;
    this._pos++; // opening quote
    let out = '';
    let start = this._pos;
    for (;;) {
      if (this._pos >= s.length) this._fail('unterminated string');
      const c = s.charCodeAt(this._pos);
      if (c === 0x22) {
        out += s.slice(start, this._pos);
        this._pos++;
        return out;
      }
      if (c < 0x20) this._fail('control character in string');
      if (c === 0x5c) {
        out += s.slice(start, this._pos);
        const e = s[this._pos + 1];
        const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e !== undefined && simple[e] !== undefined) {
          out += simple[e];
          this._pos += 2;
        } else if (e === 'u') {
          const hex = s.slice(this._pos + 2, this._pos + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this._fail('invalid \\u escape');
          out += String.fromCharCode(parseInt(hex, 16));
          this._pos += 6;
        } else {
          this._fail('invalid escape in string');
        }
        start = this._pos;
        continue;
      }
      this._pos++;
    }
  }

  private _array(depth: number): void {
    const L = this._L;
    lua.lua_checkstack(L, 4);
    this._pos++;
    lua.lua_createtable(L, 0, 0);
    this._ws();
    if (this._s[this._pos] === ']') {
      this._pos++;
      return;
    }
    for (let i = 1; ; i++) {
      this._ws();
      if (this._value(depth + 1)) lua.lua_rawseti(L, -2, i);
      this._ws();
      const c = this._s[this._pos++];
      if (c === ']') return;
      if (c !== ',') this._pos--, this._fail("expected ',' or ']' in array");
    }
  }

  private _object(depth: number): void {
    const L = this._L;
    lua.lua_checkstack(L, 4);
    this._pos++;
    lua.lua_createtable(L, 0, 0);
    this._ws();
    if (this._s[this._pos] === '}') {
      this._pos++;
      return;
    }
    for (;;) {
      this._ws();
      if (this._s[this._pos] !== '"') this._fail('expected a string key in object');
      const k = this._string();
      this._ws();
      if (this._s[this._pos] !== ':') this._fail("expected ':' after object key");
      this._pos++;
      this._ws();
      if (this._value(depth + 1)) {
        pushText(L, k);
        lua.lua_insert(L, -2);
        lua.lua_rawset(L, -3);
      }
      this._ws();
      const c = this._s[this._pos++];
      if (c === '}') return;
      if (c !== ',') this._pos--, this._fail("expected ',' or '}' in object");
    }
  }
}
