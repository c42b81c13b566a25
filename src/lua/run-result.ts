// RunResult (seed 000/001, reference §1.7): what vm:run, worker:run and proc:wait return. A plain
// table (so it prints, iterates and json-encodes naturally) with `ok` and `assert_ok` methods in a
// shared metatable. exit_code is the code when exited, -1 when signalled, -2 when timed out.

import { lua, type lua_State } from 'fengari';
import type { Captured, ExitInfo } from '../protocol/agent.js';
import { LuaError } from './errors.js';
import type { BindingRuntime } from './args.js';
import { signalName } from './signals.js';
import { bytesText, getBytes, getText, key, pushBytes, pushText, setField } from './values.js';

/** The most output assert_ok quotes per stream. */
const kQuoteBytes = 2048;

const metatableRef = new WeakMap<BindingRuntime, number>();

export function exitCodeOf(info: ExitInfo): number {
  if (info.status === 'signalled') return -1;
  if (info.status === 'timed_out') return -2;
  return info.code;
}

/** Pushes a RunResult table. `cmd` describes the command for assert_ok's message. */
export function pushRunResult(rt: BindingRuntime, L: lua_State, info: ExitInfo & Partial<Captured>, cmd: string): void {
  lua.lua_createtable(L, 0, 10);
  setField(L, 'exit_code', () => lua.lua_pushinteger(L, exitCodeOf(info)));
  setField(L, 'status', () => pushText(L, info.status));
  setField(L, 'stdout', () => pushBytes(L, info.stdout ?? new Uint8Array(0)));
  setField(L, 'stderr', () => pushBytes(L, info.stderr ?? new Uint8Array(0)));
  setField(L, 'timed_out', () => lua.lua_pushboolean(L, info.status === 'timed_out'));
  if (info.status === 'signalled') setField(L, 'signal', () => lua.lua_pushinteger(L, info.signal));
  setField(L, 'stdout_truncated', () => lua.lua_pushboolean(L, info.stdout_truncated ?? false));
  setField(L, 'stderr_truncated', () => lua.lua_pushboolean(L, info.stderr_truncated ?? false));
  setField(L, 'cmd', () => pushText(L, cmd));
  pushMetatable(rt, L);
  lua.lua_setmetatable(L, -2);
}

function pushMetatable(rt: BindingRuntime, L: lua_State): void {
  const existing = metatableRef.get(rt);
  if (existing !== undefined) {
    rt.pushRef(existing, L);
    return;
  }
  lua.lua_createtable(L, 0, 3);
  pushText(L, 'RunResult');
  lua.lua_setfield(L, -2, key('__name'));
  lua.lua_createtable(L, 0, 2);
  lua.lua_pushcfunction(
    L,
    rt.fn('result:ok', (a) => {
      a.table(1, 'self');
      lua.lua_pushboolean(a.L, isOk(a.L, a.idx(1)));
      return 1;
    }),
  );
  lua.lua_setfield(L, -2, key('ok'));
  lua.lua_pushcfunction(
    L,
    rt.fn('result:assert_ok', (a) => {
      const idx = a.table(1, 'self');
      if (!isOk(a.L, idx)) throw new LuaError(failureMessage(a.L, idx));
      lua.lua_pushvalue(a.L, idx);
      return 1;
    }),
  );
  lua.lua_setfield(L, -2, key('assert_ok'));
  lua.lua_setfield(L, -2, key('__index'));
  lua.lua_pushcfunction(L, (L1) => {
    const status = field(L1, 1, 'status');
    pushText(L1, `RunResult(${status} exit_code=${field(L1, 1, 'exit_code')})`);
    return 1;
  });
  lua.lua_setfield(L, -2, key('__tostring'));
  metatableRef.set(rt, rt.ref(-1, L));
}

function field(L: lua_State, idx: number, name: string): string {
  lua.lua_getfield(L, idx, key(name));
  const s = lua.lua_type(L, -1) === lua.LUA_TNIL ? 'nil' : getText(L, -1);
  lua.lua_pop(L, 1);
  return s;
}

function isOk(L: lua_State, idx: number): boolean {
  lua.lua_getfield(L, idx, key('status'));
  const exited = getText(L, -1) === 'exited';
  lua.lua_getfield(L, idx, key('exit_code'));
  const zero = lua.lua_tointegerx(L, -1) === 0;
  lua.lua_pop(L, 2);
  return exited && zero;
}

function failureMessage(L: lua_State, idx: number): string {
  const status = field(L, idx, 'status');
  const cmd = field(L, idx, 'cmd');
  const how = describeExit(status, field(L, idx, 'exit_code'), Number(field(L, idx, 'signal')));
  return `command ${cmd === 'nil' ? '' : cmd + ' '}failed: ${how} (status=${status})\nstdout: ${quoteTail(L, idx, 'stdout')}\nstderr: ${quoteTail(L, idx, 'stderr')}`;
}

/** How a command ended, for messages: `exited with code 3`, `killed by signal 9 (SIGKILL)`. */
export function describeExit(status: string, exitCode: number | string, signal: number): string {
  if (status === 'signalled') return `killed by signal ${signal} (${signalName(signal)})`;
  if (status === 'timed_out') return 'timed out (exit_code -2)';
  return `exited with code ${exitCode}`;
}

function quoteTail(L: lua_State, idx: number, name: string): string {
  lua.lua_getfield(L, idx, key(name));
  const bytes = lua.lua_type(L, -1) === lua.LUA_TSTRING ? getBytes(L, -1) : new Uint8Array(0);
  lua.lua_pop(L, 1);
  if (bytes.length === 0) return '(empty)';
  const cut = bytes.length > kQuoteBytes;
  const text = bytesText(cut ? bytes.subarray(bytes.length - kQuoteBytes) : bytes);
  return `${cut ? `…(last ${kQuoteBytes} of ${bytes.length} bytes) ` : ''}${JSON.stringify(text)}`;
}
