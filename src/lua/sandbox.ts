// What a test file may not do on the host, and where `require` looks. The refused functions raise
// a clear error (the worker keeps running); `require("x.y")` resolves `<dir>/x/y.lua` and
// `<dir>/x/y/init.lua` for each test root, then the test file's own directory, and loads modules
// as `@<path relative to the cwd>` so their errors read like the test file's.

import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { lua, type lua_State } from 'fengari';
import { kLogCapNote, kLogEndLines } from '../protocol/test-log.js';
import { LuaError } from './errors.js';
import type { LuaRuntime } from './runtime.js';
import { getText, key, pushText } from './values.js';

/** Why each refused function is refused, and what to use instead. */
const kRefused: Record<string, string> = {
  'os.exit': 'end the test with t:fail() or error()',
  'os.execute': 'run commands in the guest with vm:run()',
  'os.remove': 'remove guest files with vm:unlink()',
  'os.rename': 'rename guest files with vm:rename()',
  'os.tmpname': 'create guest files with vm:write_file()',
  'debug.sethook': 'the harness uses the hook to enforce test timeouts',
  'package.loadlib': 'native modules cannot be loaded',
};

export function installSandbox(rt: LuaRuntime): void {
  const L = rt.L;
  // 1. Refused functions.
  for (const [qualified, why] of Object.entries(kRefused)) {
    const [lib, name] = qualified.split('.') as [string, string];
    lua.lua_getglobal(L, key(lib));
    lua.lua_pushcfunction(L, rt.fn(qualified, () => {
      throw new LuaError(`${qualified} is not available in a test file: ${why}`);
    }));
    lua.lua_setfield(L, -2, key(name));
    lua.lua_pop(L, 1);
  }
  // 2. `io`: any field raises, naming it.
  lua.lua_createtable(L, 0, 0);
  lua.lua_createtable(L, 0, 1);
  lua.lua_pushcfunction(L, (L1) => {
    const name = lua.lua_type(L1, 2) === lua.LUA_TSTRING ? getText(L1, 2) : '?';
    return rt.protect(L1, `io.${name}`, () => {
      throw new LuaError(
        `io.${name} is not available in a test file: host files are off limits; use vm:read_file()/vm:write_file() for guest files`,
      );
    });
  });
  lua.lua_setfield(L, -2, key('__index'));
  lua.lua_setmetatable(L, -2);
  lua.lua_setglobal(L, key('io'));
  // 3. print goes to the running test's log (it would garble the progress display on stdout),
  //    which caps it; at file scope it goes to stderr, capped per file the same way.
  let fileScopeLines = 0;
  lua.lua_pushcfunction(L, (L1) => {
    const n = lua.lua_gettop(L1);
    const parts: string[] = [];
    for (let i = 1; i <= n; i++) parts.push(rt.safeToString(i, L1));
    const line = parts.join('\t');
    if (rt.currentTest) rt.currentTest.log.push(line);
    else if (fileScopeLines++ < kLogEndLines) process.stderr.write(`${rt.displayPath}: ${line}\n`);
    else if (fileScopeLines === kLogEndLines + 1) {
      process.stderr.write(`${rt.displayPath}: ${kLogCapNote} print at file scope shows its first ${kLogEndLines} lines; the rest is dropped]\n`);
    }
    return 0;
  });
  lua.lua_setglobal(L, key('print'));
  installRequire(rt);
  installLoadfile(rt);
}

/** Directories `require` searches, in order. */
export function moduleDirs(rt: LuaRuntime): string[] {
  const dirs = [...rt.roots.map((r) => path.resolve(r)), path.dirname(rt.file)];
  return [...new Set(dirs)];
}

function installRequire(rt: LuaRuntime): void {
  const L = rt.L;
  const dirs = moduleDirs(rt);
  lua.lua_getglobal(L, key('package'));
  // package.path documents the search for users who print it; the searcher below does the work.
  pushText(L, dirs.flatMap((d) => [`${d}/?.lua`, `${d}/?/init.lua`]).join(';'));
  lua.lua_setfield(L, -2, key('path'));
  pushText(L, '');
  lua.lua_setfield(L, -2, key('cpath'));
  // searchers = { preload (kept), roots }: fengari's file and JS-module searchers are dropped.
  lua.lua_getfield(L, -1, key('searchers'));
  const searchers = lua.lua_gettop(L);
  lua.lua_createtable(L, 2, 0);
  lua.lua_rawgeti(L, searchers, 1);
  lua.lua_rawseti(L, -2, 1);
  lua.lua_pushcfunction(L, (L1) => {
    const name = lua.lua_type(L1, 1) === lua.LUA_TSTRING ? getText(L1, 1) : '';
    const rel = name.replace(/\./g, '/');
    const tried: string[] = [];
    for (const dir of dirs) {
      for (const candidate of [path.join(dir, `${rel}.lua`), path.join(dir, rel, 'init.lua')]) {
        tried.push(candidate);
        if (!isFile(candidate)) continue;
        const shown = path.relative(process.cwd(), candidate) || candidate;
        const error = rt.load(new Uint8Array(readFileSync(candidate)), shown.startsWith('..') ? candidate : shown, L1);
        if (error !== null) {
          return rt.protect(L1, 'require', () => {
            throw new LuaError(`error loading module '${name}' from file '${shown}':\n\t${error}`);
          });
        }
        pushText(L1, candidate);
        return 2;
      }
    }
    pushText(L1, tried.map((t) => `\n\tno file '${t}'`).join(''));
    return 1;
  });
  lua.lua_rawseti(L, -2, 2);
  lua.lua_setfield(L, -3, key('searchers'));
  lua.lua_pop(L, 2);
}

/**
 * `loadfile(name, mode?, env?)` and `dofile(name)` read Lua files from the test roots and the test
 * file's directory, as `require` does, never from anywhere else on the host: `name` is relative to
 * those directories (tried in order), or an absolute path inside one of them.
 */
function installLoadfile(rt: LuaRuntime): void {
  const L = rt.L;
  const dirs = moduleDirs(rt);
  // Loads the chunk and leaves it on the stack, or returns the error message.
  const loadFrom = (L1: lua_State, fn: string): string | null => {
    if (lua.lua_type(L1, 1) !== lua.LUA_TSTRING) {
      return `${fn} needs a file name (a path under a test root: ${dirs.join(', ')}); reading stdin is not available in a test file`;
    }
    const name = getText(L1, 1);
    const inDirs = (p: string): boolean => dirs.some((d) => p === d || p.startsWith(`${d}${path.sep}`));
    const candidates = path.isAbsolute(name) ? [path.normalize(name)] : dirs.map((d) => path.resolve(d, name));
    const allowed = candidates.filter(inDirs);
    const found = allowed.find(isFile);
    if (!found) {
      if (allowed.length === 0) return `${fn}: ${name} is outside the test roots (${dirs.join(', ')}): a test file loads Lua files from the roots only; move it under a root`;
      return `${fn}: cannot open ${name} (looked in ${allowed.join(', ')})`;
    }
    const shown = path.relative(process.cwd(), found) || found;
    return rt.load(new Uint8Array(readFileSync(found)), shown.startsWith('..') ? found : shown, L1);
  };
  lua.lua_pushcfunction(L, (L1) => {
    const nargs = lua.lua_gettop(L1);
    const error = loadFrom(L1, 'loadfile');
    if (error !== null) {
      lua.lua_pushnil(L1);
      pushText(L1, error);
      return 2;
    }
    // An env argument becomes the chunk's _ENV, as in Lua.
    if (nargs >= 3) {
      lua.lua_pushvalue(L1, 3);
      lua.lua_setupvalue(L1, -2, 1);
    }
    return 1;
  });
  lua.lua_setglobal(L, key('loadfile'));
  lua.lua_pushcfunction(L, (L1) => {
    lua.lua_settop(L1, 1);
    const error = loadFrom(L1, 'dofile');
    if (error !== null) return rt.protect(L1, 'dofile', () => { throw new LuaError(error); });
    lua.lua_call(L1, 0, lua.LUA_MULTRET);
    return lua.lua_gettop(L1) - 1;
  });
  lua.lua_setglobal(L, key('dofile'));
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}
