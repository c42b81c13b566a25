// Guest file operations of a VM (seed 001 "Layer-1 ops"): read_file, write_file, push_file,
// stat, listdir, mkdir, unlink, rename, open_file, tail_file, fd_stream. open_file is shared
// with guest workers.
//
// stat's mtime_ns exceeds 2^53 (ns since 1970), so it comes back as a float (within ~256 ns)
// and, exactly, as the decimal string `mtime_ns_str`.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { lua, type lua_State } from 'fengari';
import { OPEN_MODE, type AgentOps } from '../protocol/agent.js';
import { R, type Args, type Reader } from './args.js';
import { FileClass, GuestFile } from './file.js';
import { agentCall, type AgentTarget, type VmHandle } from './guest.js';
import { openAgentStream, pushStream } from './stream.js';
import { int64ToBigInt, int64ToNumber, pushBytes, pushInt64, pushText, setField } from './values.js';

type StatReply = AgentOps['stat']['res'];

const kOpenModeSpec = {
  read: R.bool,
  write: R.bool,
  create: R.bool,
  truncate: R.bool,
  append: R.bool,
  exclusive: R.bool,
  perm: R.int(0, 0o7777),
};
const kModeKeys = Object.keys(kOpenModeSpec).join(', ');

export function pushStat(L: lua_State, st: StatReply): void {
  const ns = int64ToBigInt(st.mtime_ns);
  lua.lua_createtable(L, 0, 9);
  setField(L, 'size', () => pushInt64(L, st.size));
  setField(L, 'mtime', () => lua.lua_pushnumber(L, Number(ns) / 1e9));
  setField(L, 'mtime_ns', () => lua.lua_pushnumber(L, int64ToNumber(st.mtime_ns)));
  setField(L, 'mtime_ns_str', () => pushText(L, ns.toString()));
  setField(L, 'perm', () => lua.lua_pushinteger(L, st.perm));
  setField(L, 'entry_type', () => pushText(L, st.entry_type));
  setField(L, 'uid', () => pushInt64(L, st.uid));
  setField(L, 'gid', () => pushInt64(L, st.gid));
  setField(L, 'nlink', () => pushInt64(L, st.nlink));
}

export function pushEntries(L: lua_State, entries: AgentOps['listdir']['res']['entries']): void {
  lua.lua_createtable(L, entries.length, 0);
  entries.forEach((e, i) => {
    lua.lua_createtable(L, 0, 2);
    setField(L, 'name', () => pushText(L, e.name));
    setField(L, 'entry_type', () => pushText(L, e.entry_type));
    lua.lua_rawseti(L, -2, i + 1);
  });
}

/** `vm:open_file(path, mode)` and `worker:open_file(path, mode)`. */
export function openFileMethod(target: AgentTarget, a: Args): number {
  const p = a.string(1, 'path');
  const pointer = `pass a mode table with at least one of read, write or append set, e.g. {read = true} (keys: ${kModeKeys})`;
  if (a.isNil(2)) throw a.error(`argument #2 (mode) is missing: ${pointer}`);
  const mode = a.options(2, 'mode', kOpenModeSpec);
  if (!mode.read && !mode.write && !mode.append) throw a.error(`the mode table opens for nothing: ${pointer}`);
  // O_EXCL means "fail if it exists" only together with O_CREAT; alone it must not create.
  if (mode.exclusive && !mode.create) {
    throw a.error('exclusive = true needs create = true: pass {create = true, exclusive = true, ...} to create a file that must not exist yet');
  }
  let flags = 0;
  for (const bit of ['read', 'write', 'create', 'truncate', 'append', 'exclusive'] as const) {
    if (mode[bit]) flags |= OPEN_MODE[bit];
  }
  const data = mode.perm !== undefined ? { path: p, flags, perm: mode.perm } : { path: p, flags };
  const reply = agentCall(target, a.label, 'open_file', data, { context: p });
  const file = new GuestFile(target, reply.handle, p);
  a.rt.currentScope.add(file);
  a.rt.push(FileClass, file, a.L);
  return 1;
}

const readStart: Reader<string | number> = (a, idx, what) => {
  const t = lua.lua_type(a.L, idx);
  if (t === lua.LUA_TSTRING) return R.string(a, idx, what);
  if (t === lua.LUA_TNUMBER) return R.number(a, idx, what);
  throw a.error(`${what} must be "beginning", "end" or a byte offset, got ${a.got(idx)}`);
};

/** Resolves `tail_file`'s `start`: "end" (default), "beginning"/"start", an offset, or N bytes before EOF. */
function tailStart(vm: VmHandle, a: Args, p: string): 'beginning' | 'end' | number {
  const { start } = a.options(2, 'opts', { start: readStart });
  if (start === undefined || start === 'end') return 'end';
  if (start === 'beginning' || start === 'start') return 'beginning';
  if (typeof start === 'string') throw a.error(`option \`start\` must be "beginning", "end" or a byte offset, got ${JSON.stringify(start)}`);
  const n = Math.trunc(start);
  if (n >= 0) return n;
  // N bytes before EOF: stat now and resolve to an absolute offset.
  const size = int64ToNumber(agentCall(vm, a.label, 'stat', { path: p }, { context: p }).size);
  return Math.max(0, size + n);
}

/** `read_file(path)` of a VM or a legacy worker. */
export function readFileMethod(target: AgentTarget, a: Args): number {
  const p = a.string(1, 'path');
  pushBytes(a.L, agentCall(target, a.label, 'read_file', { path: p }, { context: p }).data);
  return 1;
}

/** `write_file(path, data)` of a VM or a legacy worker. */
export function writeFileMethod(target: AgentTarget, a: Args): number {
  const p = a.string(1, 'path');
  const data = a.bytes(2, 'data');
  agentCall(target, a.label, 'write_file', { path: p, data }, { context: p });
  return 0;
}

export const kVmFileMethods: Record<string, (vm: VmHandle, a: Args) => number> = {
  read_file: readFileMethod,
  write_file: writeFileMethod,
  push_file(vm, a) {
    const hostPath = a.string(1, 'host_path');
    const guestPath = a.string(2, 'guest_path');
    // auto_dep matters to fixture cache keys only; it is accepted and has no effect here.
    const { perm } = a.options(3, 'opts', { auto_dep: R.bool, perm: R.int(0, 0o7777) });
    // Relative to the directory of the file that made the call (a helper module or the test).
    const caller = a.rt.sourceAt(a.L, 1);
    const base = caller && caller !== a.rt.displayPath ? path.dirname(path.resolve(caller)) : path.dirname(a.rt.file);
    const resolved = path.resolve(base, hostPath);
    let data: Uint8Array;
    try {
      data = new Uint8Array(readFileSync(resolved));
    } catch (err) {
      throw a.error(`cannot read host file ${resolved}: ${(err as Error).message}`);
    }
    agentCall(vm, a.label, 'write_file', perm === undefined ? { path: guestPath, data } : { path: guestPath, data, perm }, { context: guestPath });
    return 0;
  },
  stat(vm, a) {
    const p = a.string(1, 'path');
    const o = a.options(2, 'opts', { follow: R.bool });
    pushStat(a.L, agentCall(vm, a.label, 'stat', o.follow === undefined ? { path: p } : { path: p, follow: o.follow }, { context: p }));
    return 1;
  },
  listdir(vm, a) {
    const p = a.string(1, 'path');
    pushEntries(a.L, agentCall(vm, a.label, 'listdir', { path: p }, { context: p }).entries);
    return 1;
  },
  mkdir(vm, a) {
    const p = a.string(1, 'path');
    const o = a.options(2, 'opts', { parents: R.bool, perm: R.int(0, 0o7777) });
    agentCall(vm, a.label, 'mkdir', { path: p, ...o }, { context: p });
    return 0;
  },
  unlink(vm, a) {
    const p = a.string(1, 'path');
    agentCall(vm, a.label, 'unlink', { path: p }, { context: p });
    return 0;
  },
  rename(vm, a) {
    const from = a.string(1, 'from');
    const to = a.string(2, 'to');
    agentCall(vm, a.label, 'rename', { from, to }, { context: `${from} -> ${to}` });
    return 0;
  },
  open_file: openFileMethod,
  tail_file(vm, a) {
    const p = a.string(1, 'path');
    const start = tailStart(vm, a, p);
    pushStream(a, openAgentStream(vm, a, 'tail_file', { path: p, start }, 'tail_file', p));
    return 1;
  },
  fd_stream(vm, a) {
    const file = a.rt.toObject(a.L, a.idx(1), FileClass);
    let handle: number;
    let detail: string;
    if (file) {
      file.check(a.label);
      handle = file.handle;
      detail = file.path;
    } else {
      handle = a.read(1, 'fd_or_file', R.int(0, 2 ** 31 - 1));
      detail = `fd ${handle}`;
    }
    pushStream(a, openAgentStream(file ? file.target : vm, a, 'fd_stream', { handle }, 'fd_stream', detail));
    return 1;
  },
};
