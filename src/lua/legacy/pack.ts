// provium.pack / provium.unpack with the legacy format words of seed 002: `u8 u16 i16 u32 i32 u64
// i64`, little-endian, separated by spaces (or commas). The encoding is Lua 5.3's string.pack
// with `<B <I2 <i2 <I4 <i4 <I8 <i8`, including its range checks ("integer overflow", "unsigned
// overflow"), with two differences fengari's 32-bit integers force:
//   - u32 takes a negative 32-bit Lua *integer* as its unsigned pattern, because fengari's bitwise
//     operators give 32-bit patterns (`~0` is -1; the syscall arguments follow the same rule);
//   - 64-bit values are exact: pack takes numbers up to 2^53 and decimal or hex strings for the
//     rest; unpack returns a number while |v| <= 2^53 and a decimal string past it
//     (Lua 5.3 would wrap u64 values past 2^63 to negative integers).
// A format made only of these words is legacy; any other goes to string.pack (lab.ts).

import { lua } from 'fengari';
import type { Args } from '../args.js';
import { getText, parseIntString, pushBytes, pushIntegral, pushText } from '../values.js';

export type Word = 'u8' | 'u16' | 'i16' | 'u32' | 'i32' | 'u64' | 'i64';

interface WordInfo {
  bytes: number;
  signed: boolean;
}

const kWords: Record<Word, WordInfo> = {
  u8: { bytes: 1, signed: false },
  u16: { bytes: 2, signed: false },
  i16: { bytes: 2, signed: true },
  u32: { bytes: 4, signed: false },
  i32: { bytes: 4, signed: true },
  u64: { bytes: 8, signed: false },
  i64: { bytes: 8, signed: true },
};
const kTwo53 = 2n ** 53n;

/** A value to pack: its integer value and whether Lua held it as a (32-bit) integer. */
export interface PackArg {
  value: bigint;
  int32?: boolean;
}

/** A problem with one value; the binding adds the argument number. */
export class PackError extends Error {
  override name = 'PackError';
  /** The value (0-based) that did not fit, when one did not. */
  index?: number;
}

/** The words of a legacy format, or null when `fmt` is not one (then it is a string.pack format). */
export function parseFormat(fmt: string): Word[] | null {
  const words = fmt.split(/[\s,]+/).filter((w) => w !== '');
  if (words.length === 0) return null;
  return words.every((w): w is Word => Object.prototype.hasOwnProperty.call(kWords, w)) ? words : null;
}

/** The bytes of `arg` as `word` (little-endian). Throws PackError when it does not fit. */
export function encodeWord(word: Word, arg: PackArg): Uint8Array {
  const { bytes, signed } = kWords[word];
  const bits = BigInt(bytes * 8);
  let v = arg.value;
  if (bytes === 4 && !signed && arg.int32 && v < 0n && v >= -(2n ** 31n)) v += 2n ** 32n;
  if (bytes < 8) {
    if (signed) {
      const lim = 1n << (bits - 1n);
      if (v < -lim || v >= lim) throw new PackError(`integer overflow: ${v} does not fit ${word} (${-lim} to ${lim - 1n})`);
    } else if (v < 0n || v >= 1n << bits) {
      throw new PackError(`unsigned overflow: ${v} does not fit ${word} (0 to ${(1n << bits) - 1n})`);
    }
  } else {
    // Lua 5.3 packs any 64-bit integer into 8 bytes; a value past that range has no 64-bit form.
    const max = signed ? 2n ** 63n - 1n : 2n ** 64n - 1n;
    if (v < -(2n ** 63n) || v > max) throw new PackError(`${v} is outside the range of ${word} (${-(2n ** 63n)} to ${max})`);
  }
  const out = new Uint8Array(bytes);
  let u = BigInt.asUintN(bytes * 8, v);
  for (let i = 0; i < bytes; i++, u >>= 8n) out[i] = Number(u & 0xffn);
  return out;
}

/** Packs one value per word; a PackError names the 0-based index of the value that did not fit. */
export function pack(words: Word[], args: PackArg[]): Uint8Array {
  if (args.length !== words.length) {
    throw new PackError(`the format ${JSON.stringify(words.join(' '))} takes ${words.length} value${words.length === 1 ? '' : 's'}, got ${args.length}`);
  }
  const parts = words.map((w, i) => {
    try {
      return encodeWord(w, args[i]!);
    } catch (err) {
      if (err instanceof PackError) err.index = i;
      throw err;
    }
  });
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The bytes a format takes. */
export function formatSize(words: Word[]): number {
  return words.reduce((n, w) => n + kWords[w].bytes, 0);
}

/** One value per word, as exact bigints. Throws PackError when `data` is too short. */
export function unpack(words: Word[], data: Uint8Array): bigint[] {
  const need = formatSize(words);
  if (data.length < need) throw new PackError(`data string too short: the format needs ${need} bytes, got ${data.length}`);
  let at = 0;
  return words.map((w) => {
    const { bytes, signed } = kWords[w];
    let u = 0n;
    for (let i = bytes - 1; i >= 0; i--) u = (u << 8n) | BigInt(data[at + i]!);
    at += bytes;
    return signed ? BigInt.asIntN(bytes * 8, u) : u;
  });
}

/** How an unpacked value reaches Lua: a number while exact (|v| <= 2^53), else its decimal string. */
export function luaValue(v: bigint): number | string {
  return v >= -kTwo53 && v <= kTwo53 ? Number(v) : v.toString();
}

// The Lua side.

function readArg(a: Args, n: number, word: Word): PackArg {
  const L = a.L;
  const idx = a.idx(n);
  const t = lua.lua_type(L, idx);
  const what = `argument #${n} (${word})`;
  if (t === lua.LUA_TNUMBER) {
    if (lua.lua_isinteger(L, idx)) return { value: BigInt(lua.lua_tointegerx(L, idx) as number), int32: true };
    const f = lua.lua_tonumberx(L, idx) as number;
    if (!Number.isInteger(f)) throw a.error(`${what} has no integer representation: ${f}`);
    if (Math.abs(f) > 2 ** 53) throw a.error(`${what} is ${f}, past 2^53 where floats are inexact; pass it as a decimal or hex string ("${BigInt(f)}")`);
    return { value: BigInt(f) };
  }
  if (t === lua.LUA_TSTRING) {
    const v = parseIntString(getText(L, idx));
    if (v === null) throw a.error(`${what} must be an integer or a decimal/hex string, got string ${JSON.stringify(getText(L, idx))}`);
    return { value: v };
  }
  throw a.error(`${what} must be an integer (or a decimal/hex string past 2^53), got ${a.got(idx)}`);
}

/** provium.pack(fmt, ...) with legacy words: pushes the packed string. */
export function legacyPack(a: Args, words: Word[]): number {
  const given = Math.max(0, a.count() - 1);
  const args = Array.from({ length: Math.min(given, words.length) }, (_, i) => readArg(a, i + 2, words[i]!));
  for (let i = args.length; i < given; i++) args.push({ value: 0n });
  try {
    pushBytes(a.L, pack(words, args));
  } catch (err) {
    if (!(err instanceof PackError)) throw err;
    throw a.error(err.index === undefined ? err.message : `argument #${err.index + 2}: ${err.message}`);
  }
  return 1;
}

/** provium.unpack(fmt, data) with legacy words: one value per word. */
export function legacyUnpack(a: Args, words: Word[]): number {
  const data = a.bytes(2, 'data');
  a.noMoreThan(2, `${a.label}(fmt, data)`);
  let values: bigint[];
  try {
    values = unpack(words, data);
  } catch (err) {
    if (err instanceof PackError) throw a.error(err.message);
    throw err;
  }
  lua.lua_checkstack(a.L, values.length);
  for (const v of values) {
    const out = luaValue(v);
    if (typeof out === 'number') pushIntegral(a.L, out);
    else pushText(a.L, out);
  }
  return values.length;
}

/** The legacy words of the format argument, or null for a string.pack format. */
export function legacyWords(a: Args): Word[] | null {
  return a.type(1) === lua.LUA_TSTRING ? parseFormat(getText(a.L, a.idx(1))) : null;
}
