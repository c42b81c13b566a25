// Equality and rendering for assertions (t:assert_eq and the legacy assert_eq). Two tables are
// equal when they hold equal values under the same keys, recursively (a table with an __eq
// metamethod decides for itself); everything else compares as Lua's `==` does. Tables render as
// constructors, `{1, 2, name = "x"}`, so a failure shows what differed instead of two addresses.

import { lauxlib, lua, type lua_State } from 'fengari';
import { eachPair, getText, key, quoteBytes, rawLen, repr } from './values.js';

/** How deep and how long a rendered table may get. */
const kMaxDepth = 4;
const kMaxChars = 400;

/** Deep equality of the values at `i1` and `i2`. */
export function deepEqual(L: lua_State, i1: number, i2: number): boolean {
  return equal(L, lua.lua_absindex(L, i1), lua.lua_absindex(L, i2), new Map());
}

/** Pairs of tables being compared (fengari's lua_topointer gives the table object itself). */
type Seen = Map<unknown, Set<unknown>>;

function equal(L: lua_State, a: number, b: number, seen: Seen): boolean {
  if (lua.lua_type(L, a) !== lua.LUA_TTABLE || lua.lua_type(L, b) !== lua.LUA_TTABLE) return lua.lua_compare(L, a, b, lua.LUA_OPEQ);
  if (lua.lua_rawequal(L, a, b)) return true;
  if (hasEq(L, a) || hasEq(L, b)) return lua.lua_compare(L, a, b, lua.LUA_OPEQ);
  // A pair already being compared further up is assumed equal (cyclic structures terminate).
  const ta = lua.lua_topointer(L, a);
  const tb = lua.lua_topointer(L, b);
  const peers = seen.get(ta) ?? new Set();
  if (peers.has(tb)) return true;
  seen.set(ta, peers.add(tb));
  lua.lua_checkstack(L, 6);
  let same = true;
  let countA = 0;
  eachPair(L, a, () => {
    countA++;
    if (!same) return;
    lua.lua_pushvalue(L, -2);
    lua.lua_rawget(L, b);
    same = lua.lua_type(L, -1) !== lua.LUA_TNIL && equal(L, lua.lua_absindex(L, -2), lua.lua_absindex(L, -1), seen);
    lua.lua_pop(L, 1);
  });
  if (!same) return false;
  let countB = 0;
  eachPair(L, b, () => void countB++);
  return countA === countB;
}

function hasEq(L: lua_State, idx: number): boolean {
  if (lauxlib.luaL_getmetafield(L, idx, key('__eq')) === lua.LUA_TNIL) return false;
  lua.lua_pop(L, 1);
  return true;
}

/** A value for a message: strings quoted, tables as constructors (nested, cut past a limit). */
export function describe(L: lua_State, idx: number): string {
  const abs = lua.lua_absindex(L, idx);
  if (lua.lua_type(L, abs) !== lua.LUA_TTABLE || lauxlib.luaL_getmetafield(L, abs, key('__tostring')) !== lua.LUA_TNIL) {
    if (lua.lua_type(L, abs) === lua.LUA_TTABLE) lua.lua_pop(L, 1);
    return repr(L, abs);
  }
  const out = renderTable(L, abs, 0, new Set());
  return out.length > kMaxChars ? `${out.slice(0, kMaxChars)}…` : out;
}

function renderTable(L: lua_State, idx: number, depth: number, seen: Set<unknown>): string {
  const id = lua.lua_topointer(L, idx);
  if (seen.has(id)) return '<cycle>';
  if (depth >= kMaxDepth) return '{…}';
  seen.add(id);
  lua.lua_checkstack(L, 6);
  const n = rawLen(L, idx);
  const items: string[] = [];
  for (let i = 1; i <= n; i++) {
    lua.lua_rawgeti(L, idx, i);
    items.push(renderValue(L, lua.lua_absindex(L, -1), depth, seen));
    lua.lua_pop(L, 1);
  }
  const named: [string, string][] = [];
  eachPair(L, idx, () => {
    if (lua.lua_isinteger(L, -2)) {
      const k = lua.lua_tointegerx(L, -2) as number;
      if (k >= 1 && k <= n) return;
    }
    named.push([renderKey(L), renderValue(L, lua.lua_absindex(L, -1), depth, seen)]);
  });
  named.sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
  seen.delete(id);
  const all = [...items, ...named.map(([k, v]) => `${k} = ${v}`)];
  return all.length === 0 ? '{}' : `{${all.join(', ')}}`;
}

function renderKey(L: lua_State): string {
  if (lua.lua_type(L, -2) === lua.LUA_TSTRING) {
    const name = getText(L, -2);
    return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : `[${quoteBytes(lua.lua_tolstring(L, -2)!)}]`;
  }
  return `[${repr(L, lua.lua_absindex(L, -2))}]`;
}

function renderValue(L: lua_State, idx: number, depth: number, seen: Set<unknown>): string {
  if (lua.lua_type(L, idx) === lua.LUA_TTABLE) return renderTable(L, idx, depth + 1, seen);
  return repr(L, idx, 80);
}
