// The globals of seed 002 and the string methods its results rely on:
//   assert(cond, msg?)                  Lua's assert, with the caller's file:line in the message
//   assert_eq(expected, actual, msg?)   deep equality (compare.ts), both values shown
//   assert_contains(haystack, needle, msg?)  plain substring check
// Inside a test, a failed assert_eq / assert_contains is sticky like t:assert_eq (a pcall that
// catches it still fails the test); assert is not, so helpers may pcall it as Lua code does.
//
// Every string gets `.value` (the string itself), `contains(s)`, `starts_with(s)` and `trim()`,
// callable with a colon or a dot: legacy results hand out stdout as a wrapper with these, and a
// plain string that has them still compares with `==`, works with tonumber and json.decode.

import { lua, type lua_CFunction, type lua_State } from 'fengari';
import type { Args } from '../args.js';
import { describe, deepEqual } from '../compare.js';
import { LuaError, raise } from '../errors.js';
import type { LuaRuntime } from '../runtime.js';
import type { TestContext } from '../test-context.js';
import { getBytes, getText, key, pushText, repr, typeName } from '../values.js';

/** Lua's %s: space, \t, \n, \v, \f, \r. */
const kSpace = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);

export function installLegacyGlobals(rt: LuaRuntime): void {
  const L = rt.L;
  const setGlobal = (name: string, body: (a: Args) => number) => {
    lua.lua_pushcfunction(L, rt.fn(name, body));
    lua.lua_setglobal(L, key(name));
  };
  setGlobal('assert', (a) => {
    if (lua.lua_toboolean(a.L, a.idx(1))) return a.count();
    if (a.count() < 1) throw a.error('bad argument #1 (value expected)');
    if (a.isNil(2)) throw new LuaError('assertion failed!');
    const t = a.type(2);
    // A non-string error object is raised as is, as Lua's assert does.
    if (t !== lua.LUA_TSTRING && t !== lua.LUA_TNUMBER) {
      lua.lua_pushvalue(a.L, a.idx(2));
      return lua.lua_error(a.L);
    }
    throw new LuaError(getText(a.L, a.idx(2)));
  });
  setGlobal('assert_eq', (a) => {
    if (a.count() < 2) throw a.error('needs two values to compare: assert_eq(expected, actual, msg?)');
    if (deepEqual(a.L, a.idx(1), a.idx(2))) return 0;
    throw fail(rt, a, `${message(rt, a, 3, 'assert_eq failed')}: expected ${describe(a.L, a.idx(1))}, got ${describe(a.L, a.idx(2))}`);
  });
  setGlobal('assert_contains', (a) => {
    const haystack = a.bytes(1, 'haystack');
    const needle = a.bytes(2, 'needle');
    if (Buffer.from(haystack).indexOf(Buffer.from(needle)) >= 0) return 0;
    throw fail(rt, a, `${message(rt, a, 3, 'assert_contains failed')}: ${repr(a.L, a.idx(1))} does not contain ${repr(a.L, a.idx(2))}`);
  });
  extendStrings(rt);
}

function message(rt: LuaRuntime, a: Args, n: number, fallback: string): string {
  return a.isNil(n) ? fallback : rt.safeToString(a.idx(n), a.L);
}

/** Inside a test the failure is recorded (sticky) as t's assertions do; at file scope it is raised. */
function fail(rt: LuaRuntime, a: Args, text: string): LuaError {
  const ctx: TestContext | null = rt.currentTest;
  return ctx ? ctx.fail(a, text) : new LuaError(text);
}

/** The string methods, each taking the string and its arguments (from stack index `at`). */
const kStringMethods: Record<string, { args: number; fn: (L: lua_State, s: Uint8Array, at: number) => number }> = {
  contains: {
    args: 1,
    fn: (L, s, at) => {
      lua.lua_pushboolean(L, Buffer.from(s).indexOf(Buffer.from(checkString(L, at, 'contains', 'needle'))) >= 0);
      return 1;
    },
  },
  starts_with: {
    args: 1,
    fn: (L, s, at) => {
      const prefix = checkString(L, at, 'starts_with', 'prefix');
      lua.lua_pushboolean(L, prefix.length <= s.length && Buffer.from(s.subarray(0, prefix.length)).equals(Buffer.from(prefix)));
      return 1;
    },
  },
  trim: {
    args: 0,
    fn: (L, s) => {
      let start = 0;
      let end = s.length;
      while (start < end && kSpace.has(s[start]!)) start++;
      while (end > start && kSpace.has(s[end - 1]!)) end--;
      lua.lua_pushlstring(L, s.subarray(start, end), end - start);
      return 1;
    },
  },
};

function checkString(L: lua_State, idx: number, fn: string, name: string): Uint8Array {
  if (lua.lua_type(L, idx) !== lua.LUA_TSTRING) raise(L, `string:${fn}: argument (${name}) must be a string, got ${typeName(L, idx)}`);
  return getBytes(L, idx);
}

/** The string metatable's __index: the string library first, then `value` and kStringMethods. */
function extendStrings(rt: LuaRuntime): void {
  const L = rt.L;
  const bound = new Map<string, lua_CFunction>();
  for (const [name, m] of Object.entries(kStringMethods)) {
    // Upvalue 1 is the string; `s:m(x)` passes it again first, `s.m(x)` does not.
    bound.set(name, (L1) => {
      const colon = lua.lua_gettop(L1) > m.args && lua.lua_rawequal(L1, 1, lua.lua_upvalueindex(1));
      return m.fn(L1, getBytes(L1, lua.lua_upvalueindex(1)), colon ? 2 : 1);
    });
  }
  pushText(L, '');
  lua.lua_getmetatable(L, -1);
  lua.lua_getfield(L, -1, key('__index'));
  lua.lua_pushcclosure(
    L,
    (L1) => {
      lua.lua_pushvalue(L1, 2);
      if (lua.lua_rawget(L1, lua.lua_upvalueindex(1)) !== lua.LUA_TNIL) return 1;
      if (lua.lua_type(L1, 2) !== lua.LUA_TSTRING) return 1;
      const name = getText(L1, 2);
      if (name === 'value') {
        lua.lua_pushvalue(L1, 1);
        return 1;
      }
      const method = bound.get(name);
      if (!method) return 1;
      lua.lua_pushvalue(L1, 1);
      lua.lua_pushcclosure(L1, method, 1);
      return 1;
    },
    1,
  );
  lua.lua_setfield(L, -2, key('__index'));
  lua.lua_pop(L, 2);
}
