// provium.pack / provium.unpack (seed 002) against Lua 5.3's string.pack: each legacy word is
// `<B <I2 <i2 <I4 <i4 <I8 <i8`. Where a value fits fengari's 32-bit integers the expected bytes
// come from fengari's own string.pack (Lua 5.3's lstrlib); past that they are Lua 5.3's 64-bit
// two's complement, written out with DataView. Edge values: 0, max, min/negative, 2^53, 2^64-1.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { lauxlib, lua, lualib, to_luastring } from 'fengari';
import { encodeWord, formatSize, luaValue, pack, PackError, parseFormat, unpack, type Word } from '../../src/lua/legacy/pack.js';

/** Lua 5.3 string.pack format of each word. */
const kLua: Record<Word, string> = { u8: '<B', u16: '<I2', i16: '<i2', u32: '<I4', i32: '<i4', u64: '<I8', i64: '<i8' };

/** string.pack(fmt, n) in fengari (n a 32-bit integer), or the error it raises. */
function fengariPack(fmt: string, n: number): Uint8Array | Error {
  const L = lauxlib.luaL_newstate();
  lauxlib.luaL_requiref(L, to_luastring('string'), lualib.luaopen_string, 1);
  lua.lua_getfield(L, -1, to_luastring('pack'));
  const f = to_luastring(fmt);
  lua.lua_pushlstring(L, f, f.length);
  lua.lua_pushinteger(L, n);
  if (lua.lua_pcall(L, 2, 1, 0) !== lua.LUA_OK) return new Error(lua.lua_tojsstring(L, -1) ?? "error");
  return lua.lua_tolstring(L, -1)!.slice();
}

/** Lua 5.3's 8-byte little-endian two's complement of `v`. */
function le64(v: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
  return out;
}

const arg = (value: bigint | number, int32 = false) => ({ value: BigInt(value), int32 });

test('parseFormat: only legacy words make a legacy format', () => {
  assert.deepEqual(parseFormat('u32 u32 u64'), ['u32', 'u32', 'u64']);
  assert.deepEqual(parseFormat('  u8,i16\ti64 '), ['u8', 'i16', 'i64']);
  assert.equal(parseFormat('<I4'), null);
  assert.equal(parseFormat('u32 <I4'), null);
  assert.equal(parseFormat('i8'), null, 'i8 is not a legacy word (string.pack reads it as an 8-byte int)');
  assert.equal(parseFormat(''), null);
  assert.equal(formatSize(['u8', 'u16', 'i16', 'u32', 'i32', 'u64', 'i64']), 1 + 2 + 2 + 4 + 4 + 8 + 8);
});

test('every word matches Lua 5.3 string.pack for values fengari holds (0, 1, max, min, -1)', () => {
  const cases: [Word, number[]][] = [
    ['u8', [0, 1, 127, 255]],
    ['u16', [0, 1, 513, 65535]],
    ['i16', [0, 1, -1, 32767, -32768]],
    ['u32', [0, 1, 0x7fffffff]],
    ['i32', [0, 1, -1, 0x7fffffff, -0x80000000]],
    ['u64', [0, 1, 0x7fffffff]],
    ['i64', [0, 1, -1, 0x7fffffff, -0x80000000]],
  ];
  for (const [word, values] of cases) {
    for (const v of values) {
      const expected = fengariPack(kLua[word], v);
      assert.ok(expected instanceof Uint8Array, `string.pack(${kLua[word]}, ${v}) failed: ${expected}`);
      assert.deepEqual(encodeWord(word, arg(v, true)), expected, `${word} ${v}`);
    }
  }
});

test('out of range: Lua 5.3 overflow errors for 8-, 16- and 32-bit words', () => {
  // fengari checks these sizes as Lua 5.3 does (its integers are 32-bit, so 4 bytes is unchecked there).
  for (const [word, v] of [['u8', 256], ['u8', -1], ['u16', 65536], ['u16', -1], ['i16', 32768], ['i16', -32769]] as [Word, number][]) {
    assert.ok(fengariPack(kLua[word], v) instanceof Error, `string.pack(${kLua[word]}, ${v}) should fail`);
    assert.throws(() => encodeWord(word, arg(v, true)), /overflow/, `${word} ${v}`);
  }
  // Lua 5.3 with 64-bit integers checks 4-byte words too.
  assert.throws(() => encodeWord('u32', arg(2 ** 32)), /unsigned overflow: 4294967296 does not fit u32 \(0 to 4294967295\)/);
  assert.throws(() => encodeWord('i32', arg(2 ** 31)), /integer overflow: 2147483648 does not fit i32/);
  assert.throws(() => encodeWord('i32', arg(-(2 ** 31) - 1)), /integer overflow/);
  assert.throws(() => encodeWord('u32', arg(-1)), /unsigned overflow: -1/, 'a negative float or string is no u32');
  assert.throws(() => encodeWord('u64', arg(2n ** 64n)), /outside the range of u64/);
  assert.throws(() => encodeWord('i64', arg(2n ** 63n)), /outside the range of i64/);
  assert.throws(() => encodeWord('i64', arg(-(2n ** 63n) - 1n)), /outside the range of i64/);
});

test('u32 max and a fengari-wrapped hex literal: 0xFFFFFFFF arrives as the integer -1', () => {
  assert.deepEqual(encodeWord('u32', arg(0xffffffff)), new Uint8Array([255, 255, 255, 255]));
  assert.deepEqual(encodeWord('u32', arg(-1, true)), new Uint8Array([255, 255, 255, 255]));
  assert.deepEqual(encodeWord('u32', arg(-0x3fefb500, true)), encodeWord('u32', arg(0xc0104b00)));
});

test('64-bit words: 0, 2^53, max, min and negative as Lua 5.3 packs them', () => {
  const cases: [Word, bigint][] = [
    ['u64', 0n],
    ['u64', 2n ** 53n],
    ['u64', 2n ** 53n + 1n],
    ['u64', 2n ** 64n - 1n],
    ['u64', -1n],
    ['i64', 2n ** 53n],
    ['i64', -(2n ** 53n)],
    ['i64', 2n ** 63n - 1n],
    ['i64', -(2n ** 63n)],
    ['i64', -1n],
  ];
  for (const [word, v] of cases) assert.deepEqual(encodeWord(word, arg(v)), le64(v), `${word} ${v}`);
  assert.deepEqual(encodeWord('u64', arg(-1n)), new Uint8Array(8).fill(255), 'Lua 5.3 packs -1 as I8 into all ones');
});

test('pack concatenates in order and checks the count', () => {
  const data = pack(['u32', 'u32', 'u64'], [arg(1), arg(42), arg(0)]);
  assert.deepEqual([...data], [1, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.throws(() => pack(['u32', 'u32'], [arg(1)]), /takes 2 values, got 1/);
  assert.throws(
    () => pack(['u8', 'u8'], [arg(1), arg(300)]),
    (err: unknown) => err instanceof PackError && err.index === 1 && /unsigned overflow: 300/.test(err.message),
  );
});

test('unpack: Lua 5.3 values, exact past 2^53 as decimal strings', () => {
  const all: Word[] = ['u8', 'u16', 'i16', 'u32', 'i32', 'u64', 'i64'];
  const ones = new Uint8Array(formatSize(all)).fill(255);
  assert.deepEqual(unpack(all, ones), [255n, 65535n, -1n, 4294967295n, -1n, 2n ** 64n - 1n, -1n]);
  assert.deepEqual(unpack(all, new Uint8Array(formatSize(all))), all.map(() => 0n));
  // Round trips at the edges.
  for (const [word, v] of [['i16', -32768n], ['i32', -(2n ** 31n)], ['u32', 2n ** 32n - 1n], ['u64', 2n ** 53n], ['i64', -(2n ** 63n)]] as [Word, bigint][]) {
    assert.deepEqual(unpack([word], encodeWord(word, arg(v))), [v], `${word} ${v}`);
  }
  assert.throws(() => unpack(['u64'], new Uint8Array(7)), /data string too short: the format needs 8 bytes, got 7/);
  // Trailing bytes are ignored, as string.unpack does.
  assert.deepEqual(unpack(['u8'], new Uint8Array([7, 8])), [7n]);
});

test('luaValue: numbers while exact (|v| <= 2^53), decimal strings past', () => {
  assert.equal(luaValue(0n), 0);
  assert.equal(luaValue(-1n), -1);
  assert.equal(luaValue(2n ** 53n), 2 ** 53);
  assert.equal(luaValue(-(2n ** 53n)), -(2 ** 53));
  assert.equal(luaValue(2n ** 53n + 1n), '9007199254740993');
  assert.equal(luaValue(2n ** 64n - 1n), '18446744073709551615');
  assert.equal(luaValue(-(2n ** 63n)), '-9223372036854775808');
});
