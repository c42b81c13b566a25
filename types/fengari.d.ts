// The part of fengari 0.1.5 (Lua 5.3 in JS) that src/lua uses. fengari mirrors the C API: Lua
// strings are Uint8Array byte strings, integers are 32-bit, and `lua_tointegerx` /
// `lua_tonumberx` return `false` instead of using an out-parameter.

declare module 'fengari' {
  /** An opaque Lua thread. */
  export interface lua_State {
    readonly __fengariState: unique symbol;
  }
  export type LuaString = Uint8Array;
  export type StringLike = LuaString | string;
  export type lua_CFunction = (L: lua_State) => number;
  export type lua_Hook = (L: lua_State, ar: lua_Debug) => void;

  export class lua_Debug {
    event: number;
    name: LuaString | null;
    namewhat: LuaString;
    what: LuaString;
    source: LuaString;
    currentline: number;
    linedefined: number;
    lastlinedefined: number;
    short_src: LuaString;
    istailcall: boolean;
  }

  export interface LuaApi {
    LUA_OK: number;
    LUA_YIELD: number;
    LUA_ERRRUN: number;
    LUA_ERRSYNTAX: number;
    LUA_ERRMEM: number;
    LUA_ERRERR: number;
    LUA_MULTRET: number;
    LUA_REGISTRYINDEX: number;
    LUA_RIDX_GLOBALS: number;
    LUA_TNONE: number;
    LUA_TNIL: number;
    LUA_TBOOLEAN: number;
    LUA_TLIGHTUSERDATA: number;
    LUA_TNUMBER: number;
    LUA_TSTRING: number;
    LUA_TTABLE: number;
    LUA_TFUNCTION: number;
    LUA_TUSERDATA: number;
    LUA_TTHREAD: number;
    LUA_MASKCOUNT: number;
    LUA_OPEQ: number;
    lua_Debug: typeof lua_Debug;

    lua_absindex(L: lua_State, idx: number): number;
    lua_atnativeerror(L: lua_State, f: lua_CFunction): lua_CFunction | null;
    lua_call(L: lua_State, nargs: number, nresults: number): void;
    lua_checkstack(L: lua_State, n: number): boolean;
    lua_compare(L: lua_State, a: number, b: number, op: number): boolean;
    lua_concat(L: lua_State, n: number): void;
    lua_createtable(L: lua_State, narr: number, nrec: number): void;
    lua_error(L: lua_State): never;
    lua_getfield(L: lua_State, idx: number, k: StringLike): number;
    lua_getglobal(L: lua_State, name: StringLike): number;
    lua_getinfo(L: lua_State, what: StringLike, ar: lua_Debug): boolean;
    /** Pushes local `n` of the frame `ar` and returns its name, or null (nothing pushed). */
    lua_getlocal(L: lua_State, ar: lua_Debug | null, n: number): LuaString | null;
    lua_getupvalue(L: lua_State, funcindex: number, n: number): LuaString | null;
    lua_getmetatable(L: lua_State, idx: number): boolean;
    lua_getstack(L: lua_State, level: number, ar: lua_Debug): boolean;
    lua_gettop(L: lua_State): number;
    lua_insert(L: lua_State, idx: number): void;
    lua_isinteger(L: lua_State, idx: number): boolean;
    lua_isnoneornil(L: lua_State, idx: number): boolean;
    lua_newtable(L: lua_State): void;
    lua_newuserdata(L: lua_State, size: number): Record<string, unknown>;
    lua_next(L: lua_State, idx: number): boolean;
    lua_pcall(L: lua_State, nargs: number, nresults: number, msgh: number): number;
    lua_pop(L: lua_State, n: number): void;
    lua_pushboolean(L: lua_State, b: boolean): void;
    lua_pushcfunction(L: lua_State, f: lua_CFunction): void;
    lua_pushcclosure(L: lua_State, f: lua_CFunction, n: number): void;
    lua_pushinteger(L: lua_State, n: number): void;
    lua_pushliteral(L: lua_State, s: string): void;
    lua_pushlstring(L: lua_State, s: StringLike, len: number): void;
    lua_pushnil(L: lua_State): void;
    lua_pushnumber(L: lua_State, n: number): void;
    lua_pushstring(L: lua_State, s: StringLike): void;
    lua_pushvalue(L: lua_State, idx: number): void;
    lua_rawequal(L: lua_State, a: number, b: number): boolean;
    lua_rawget(L: lua_State, idx: number): number;
    lua_rawgeti(L: lua_State, idx: number, n: number): number;
    lua_rawlen(L: lua_State, idx: number): number;
    lua_rawset(L: lua_State, idx: number): void;
    lua_rawseti(L: lua_State, idx: number, n: number): void;
    lua_remove(L: lua_State, idx: number): void;
    lua_setfield(L: lua_State, idx: number, k: StringLike): void;
    lua_setglobal(L: lua_State, name: StringLike): void;
    lua_sethook(L: lua_State, f: lua_Hook | null, mask: number, count: number): void;
    lua_setmetatable(L: lua_State, idx: number): void;
    lua_setupvalue(L: lua_State, funcindex: number, n: number): LuaString | null;
    lua_settop(L: lua_State, idx: number): void;
    lua_toboolean(L: lua_State, idx: number): boolean;
    lua_tointegerx(L: lua_State, idx: number): number | false;
    lua_tojsstring(L: lua_State, idx: number): string | null;
    lua_tolstring(L: lua_State, idx: number): LuaString | null;
    lua_tonumberx(L: lua_State, idx: number): number | false;
    lua_topointer(L: lua_State, idx: number): object | null;
    lua_touserdata(L: lua_State, idx: number): unknown;
    lua_type(L: lua_State, idx: number): number;
    lua_typename(L: lua_State, t: number): LuaString;
    lua_upvalueindex(i: number): number;
  }

  export interface LauxApi {
    LUA_LOADED_TABLE: LuaString;
    luaL_checkstack(L: lua_State, n: number, msg: string | null): void;
    luaL_getmetafield(L: lua_State, obj: number, e: StringLike): number;
    luaL_getsubtable(L: lua_State, idx: number, fname: StringLike): boolean;
    luaL_len(L: lua_State, idx: number): number;
    luaL_loadbufferx(L: lua_State, buff: LuaString, size: number, name: StringLike, mode: StringLike | null): number;
    luaL_newmetatable(L: lua_State, tname: StringLike): boolean;
    luaL_newstate(): lua_State;
    luaL_ref(L: lua_State, t: number): number;
    luaL_requiref(L: lua_State, modname: StringLike, openf: lua_CFunction, glb: boolean | number): void;
    luaL_setmetatable(L: lua_State, tname: StringLike): void;
    luaL_testudata(L: lua_State, idx: number, tname: StringLike): unknown;
    luaL_tolstring(L: lua_State, idx: number): LuaString;
    luaL_traceback(L: lua_State, L1: lua_State, msg: StringLike | null, level: number): void;
    luaL_unref(L: lua_State, t: number, ref: number): void;
  }

  export interface LualibApi {
    luaopen_base: lua_CFunction;
    luaopen_coroutine: lua_CFunction;
    luaopen_debug: lua_CFunction;
    luaopen_math: lua_CFunction;
    luaopen_os: lua_CFunction;
    luaopen_package: lua_CFunction;
    luaopen_string: lua_CFunction;
    luaopen_table: lua_CFunction;
    luaopen_utf8: lua_CFunction;
  }

  export const lua: LuaApi;
  export const lauxlib: LauxApi;
  export const lualib: LualibApi;
  export function to_luastring(s: string, cache?: boolean): LuaString;
  export function to_jsstring(s: LuaString, from?: number, to?: number, replacement_char?: boolean): string;
}
