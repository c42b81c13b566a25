// Layer-0 ops (seed 001, reference §1.6): syscall, ioctl, read_mem, passed straight to the agent.
//
// 64-bit arguments (syscall args, ioctl cmd, addresses) may be Lua integers, integral floats
// (exact to 2^53) or decimal/hex strings ("0xC0104B00", "-1", "18446744073709551615"); a literal
// like 0xC0104B00 is a float, and a negative 32-bit integer ioctl cmd (what bitwise operators give,
// `3 << 30`) is read as its unsigned 32-bit value. Buffer indices are 1-based in Lua and 0-based on the wire;
// `ptrs[i]` is a 0-based argument slot (seed 001).

import { lua, type lua_State } from 'fengari';
import type { AgentOps } from '../protocol/agent.js';
import type { RpcArgs } from '../protocol/rpc.js';
import { R, readOptions, type Args } from './args.js';
import { GuestOpError } from './errors.js';
import { agentCall, showSeconds, translateRpcError, type AgentTarget } from './guest.js';
import type { LuaClass } from './args.js';
import { pushBytes, pushInt64, setField, wireInt64 } from './values.js';

type SyscallReq = AgentOps['syscall']['req'];
const kMaxArgs = 6;
const kAddressBytes = 8;

const kSyscallSpec = {
  args: R.array(R.int64('signed'), 'integer'),
  bufs: R.array(R.bytes, 'string'),
  ptrs: R.array(R.int(0, kMaxArgs - 1), 'argument slot'),
  nested: R.array(R.array(R.int(0), 'integer'), '{parent, child, offset} triple'),
  /** The agent interrupts the call then and answers ETIMEDOUT (the call runs on a thread of its own). */
  timeout: R.duration,
};

/** Reads `nr, a1..a6` or `nr, {args, bufs, ptrs, nested}` starting at user argument 1. */
export function parseSyscall(a: Args, allowTable: boolean): SyscallReq {
  const nr = a.read(1, 'nr', R.int64('signed'));
  if (a.type(2) === lua.LUA_TTABLE) {
    if (!allowTable) throw a.error('only the integer form (nr, a1, ..., a6) can be batched; call vm:syscall() for the table form');
    a.noMoreThan(2, `${a.label}(nr, {args = {...}, bufs = {...}, ptrs = {...}, nested = {...}})`);
    const o = readOptions(a, a.idx(2), 'argument #2 (spec)', kSyscallSpec);
    const args = o.args ?? [];
    const bufs = o.bufs ?? [];
    if (args.length > kMaxArgs) throw a.error(`at most ${kMaxArgs} args, got ${args.length}`);
    const ptrs = o.ptrs ?? [];
    if (ptrs.length > bufs.length) throw a.error(`ptrs has ${ptrs.length} entries but there are only ${bufs.length} bufs (ptrs[i] is the argument slot of bufs[i])`);
    const nested = (o.nested ?? []).map((triple, i): [number, number, number] => {
      if (triple.length !== 3) throw a.error(`nested[${i + 1}] must be {parent, child, offset}, got ${triple.length} numbers`);
      const [parent, child, offset] = triple as [number, number, number];
      for (const [name, v] of [['parent', parent], ['child', child]] as const) {
        if (v < 1 || v > bufs.length) throw a.error(`nested[${i + 1}].${name} must be a buffer index between 1 and ${bufs.length}, got ${v}`);
      }
      if (offset + kAddressBytes > bufs[parent - 1]!.length) {
        throw a.error(`nested[${i + 1}]: offset ${offset} + 8 passes the end of bufs[${parent}] (${bufs[parent - 1]!.length} bytes)`);
      }
      return [parent - 1, child - 1, offset];
    });
    return {
      nr: wireInt64(nr),
      args: args.map(wireInt64),
      bufs,
      ptrs: ptrs.map((slot, i): [number, number] => [slot, i]),
      nested,
      ...(o.timeout !== undefined ? { timeout_ms: Math.ceil(o.timeout) } : {}),
    };
  }
  const count = a.count();
  if (count - 1 > kMaxArgs) throw a.error(`takes at most ${kMaxArgs} arguments after nr, got ${count - 1}; pass buffers with the table form`);
  const args: (number | bigint)[] = [];
  for (let i = 2; i <= count; i++) {
    if (a.type(i) === lua.LUA_TSTRING) {
      // A non-numeric string here is almost always a buffer meant for the table form.
      const s = a.string(i, `a${i - 1}`);
      if (!/^\s*[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)\s*$/.test(s)) {
        throw a.error(`argument #${i} (a${i - 1}) is a string that is not an integer; pass buffers with the table form {args = {...}, bufs = {...}, ptrs = {...}}`);
      }
    }
    args.push(wireInt64(a.read(i, `a${i - 1}`, R.int64('signed'))));
  }
  return { nr: wireInt64(nr), args, bufs: [], ptrs: [], nested: [] };
}

export function pushSyscallResult(L: lua_State, r: AgentOps['syscall']['res']): void {
  lua.lua_createtable(L, 0, 4);
  setField(L, 'ret', () => pushInt64(L, r.ret));
  setField(L, 'result', () => pushInt64(L, r.ret));
  setField(L, 'errno', () => lua.lua_pushinteger(L, r.errno));
  setField(L, 'out_bufs', () => pushBufs(L, r.out_bufs ?? []));
}

function pushBufs(L: lua_State, bufs: Uint8Array[]): void {
  lua.lua_createtable(L, bufs.length, 0);
  bufs.forEach((b, i) => {
    pushBytes(L, b);
    lua.lua_rawseti(L, -2, i + 1);
  });
}

export function syscallMethod(target: AgentTarget, a: Args): number {
  const req = parseSyscall(a, true);
  pushSyscallResult(a.L, agentCall(target, a.label, 'syscall', req, { context: `syscall ${req.nr}`, boundMs: req.timeout_ms }));
  return 1;
}

/** A syscall in flight (syscall_async): `await(timeout?)` gives syscall()'s table once it returned. */
export class PendingSyscall {
  result: AgentOps['syscall']['res'] | undefined;
  constructor(
    readonly target: AgentTarget,
    readonly callId: number,
    readonly display: string,
  ) {}
}

export const PendingSyscallClass: LuaClass<PendingSyscall> = {
  typeName: 'PendingSyscall',
  selfName: 'call',
  toString: (c) => `pending(${c.display}${c.result ? ' done' : ''})`,
  methods: {
    await(c, a) {
      const timeoutMs = a.isNil(1) ? undefined : a.read(1, 'timeout', R.duration);
      if (!c.result) {
        c.target.ensureUsable(a.label);
        let reply;
        try {
          reply = a.rt.rpc.call('agent.await', timeoutMs === undefined ? { callId: c.callId } : { callId: c.callId, timeoutMs }, timeoutMs);
        } catch (err) {
          throw translateRpcError(c.target.vm, err, a.label, c.display);
        }
        if (!reply.done) {
          throw a.error(`${c.display} on ${c.target.label} did not return within ${showSeconds(timeoutMs!)}; it is still in flight: call await() again, or give syscall_async a timeout`);
        }
        c.result = reply.result as AgentOps['syscall']['res'];
      }
      pushSyscallResult(a.L, c.result);
      return 1;
    },
  },
};

/** syscall_async(nr, ...): as syscall(), without waiting; returns a PendingSyscall. */
export function syscallAsyncMethod(target: AgentTarget, a: Args): number {
  const req = parseSyscall(a, true);
  target.ensureUsable(a.label);
  const args: RpcArgs<'agent.start'> = { vmId: target.vm.vmId, op: 'syscall', data: req };
  if (target.workerId !== undefined) args.worker = target.workerId;
  const bound = a.rt.rpc.brokerBound(req.timeout_ms);
  // Its own bound only: the test's remaining time must not cut a call meant to outlive this line.
  if (req.timeout_ms !== undefined && bound !== undefined) args.timeoutMs = bound;
  let reply;
  try {
    reply = a.rt.rpc.call('agent.start', args);
  } catch (err) {
    throw translateRpcError(target.vm, err, a.label, `syscall ${req.nr}`);
  }
  a.rt.push(PendingSyscallClass, new PendingSyscall(target, reply.callId, `syscall ${req.nr}`), a.L);
  return 1;
}

export function ioctlMethod(target: AgentTarget, a: Args): number {
  const fd = a.read(1, 'fd', R.int64('signed'));
  const cmd = a.read(2, 'cmd', R.int64('unsigned'));
  const data = a.isNil(3) ? undefined : a.bytes(3, 'data');
  const o = a.options(4, 'opts', { bufs: R.array(R.bytes, 'string'), ptr_offsets: R.array(R.int(0), 'offset'), timeout: R.duration });
  const bufs = o.bufs ?? [];
  const offsets = o.ptr_offsets ?? [];
  if (offsets.length !== bufs.length) throw a.error(`opts.ptr_offsets has ${offsets.length} entries for ${bufs.length} bufs (one offset into data per buffer)`);
  offsets.forEach((off, i) => {
    if (!data || off + kAddressBytes > data.length) {
      throw a.error(`ptr_offsets[${i + 1}] = ${off}: the 8-byte address must fit inside data (${data?.length ?? 0} bytes)`);
    }
  });
  const timeoutMs = o.timeout === undefined ? undefined : Math.ceil(o.timeout);
  const req = { fd: wireInt64(fd), cmd: wireInt64(cmd), bufs, ptr_offsets: offsets, ...(data ? { data } : {}), ...(timeoutMs !== undefined ? { timeout_ms: timeoutMs } : {}) };
  const r = agentCall(target, a.label, 'ioctl', req, { context: `ioctl 0x${cmd.toString(16)}`, boundMs: timeoutMs });
  const L = a.L;
  lua.lua_createtable(L, 0, 5);
  setField(L, 'ret', () => pushInt64(L, r.ret));
  setField(L, 'result', () => pushInt64(L, r.ret));
  setField(L, 'errno', () => lua.lua_pushinteger(L, r.errno));
  if (r.out_data) setField(L, 'out_data', () => pushBytes(L, r.out_data!));
  setField(L, 'out_bufs', () => pushBufs(L, r.out_bufs ?? []));
  return 1;
}

/** read_mem(addr, len) → bytes, or nil, errno when the agent cannot read there. */
export function readMemMethod(target: AgentTarget, a: Args): number {
  const addr = a.read(1, 'addr', R.int64('unsigned'));
  const len = a.read(2, 'len', R.int(0, 16 * 1024 * 1024));
  try {
    pushBytes(a.L, agentCall(target, a.label, 'read_mem', { addr: wireInt64(addr), len }, { context: `0x${addr.toString(16)}` }).data);
    return 1;
  } catch (err) {
    if (!(err instanceof GuestOpError)) throw err;
    lua.lua_pushnil(a.L);
    lua.lua_pushinteger(a.L, err.errno ?? 0);
    return 2;
  }
}
