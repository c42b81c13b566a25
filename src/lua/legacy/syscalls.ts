// The legacy syscall and ioctl shapes of seed 002, as thin mappings onto the agent's `syscall` and
// `ioctl` ops (which already place buffers in guest memory and patch their addresses in):
//
//   vm:syscall(nr, a1..a6)                         → ret
//   vm:syscall_buf(nr, slot, data, a1..)           → ret            (args[slot] = &data)
//   vm:syscall_bufs(nr, {[slot] = data}, a1..)     → ret, out...    (outputs in slot order)
//   vm:syscall_ptr(nr, bufs, ptrs, a1..)           → ret, out..., ptr_out...
//   vm:ioctl(fd, cmd, data?)                       → ret, out_data (nil without data)
//   vm:ioctl_buf(fd, cmd, struct, specs)           → ret, struct_out, out...
//
// Slots are 0-based argument positions; the positional arguments fill every slot, a buffer's slot
// holding a placeholder the address replaces. A pointer spec of syscall_ptr writes the address of
// a new buffer (`data`, zero-padded to `data_len`) at `ptr_offset` of the slot buffer `buf_idx`;
// ioctl_buf's specs (`ptr_offset`, `buf_len`, `data`) do the same inside the struct. Pointer
// buffers come back only when their spec says `output = true`, in spec order. `ret` is libc's:
// -1 on failure (the errno is in the current API's table form).

import { lua } from 'fengari';
import type { AgentOps } from '../../protocol/agent.js';
import { R, readOptions, type Args, type Options, type Reader, type Spec } from '../args.js';
import { agentCall, type AgentTarget } from '../guest.js';
import { parseSyscall } from '../layer0.js';
import { eachPair, pushBytes, pushInt64, wireInt64 } from '../values.js';

type SyscallReq = AgentOps['syscall']['req'];
type Int64 = SyscallReq['args'][number];

const kMaxArgs = 6;
const kAddressBytes = 8;
/** The most bytes one pointer buffer may have (the agent's frames are 64 MiB). */
const kMaxBufferBytes = 16 * 1024 * 1024;

/** Positional syscall arguments from user argument `from` on, padded with 0 to cover `minCount`. */
function readArgs(a: Args, from: number, minCount: number): Int64[] {
  const count = Math.max(0, a.count() - from + 1);
  if (count > kMaxArgs) throw a.error(`takes at most ${kMaxArgs} syscall arguments after the buffers, got ${count}`);
  const args: Int64[] = [];
  for (let i = 0; i < count; i++) args.push(wireInt64(a.read(from + i, `a${i + 1}`, R.int64('signed'))));
  while (args.length < minCount) args.push(0);
  return args;
}

/** `{[slot] = data, ...}`: slots 0..5 → their buffers, in slot order. */
function readSlotBuffers(a: Args, n: number, name: string): { slot: number; data: Uint8Array }[] {
  const L = a.L;
  const idx = a.table(n, name);
  const out: { slot: number; data: Uint8Array }[] = [];
  eachPair(L, idx, () => {
    const slot = lua.lua_isinteger(L, -2) ? (lua.lua_tointegerx(L, -2) as number) : -1;
    if (slot < 0 || slot >= kMaxArgs) {
      throw a.error(`argument #${n} (${name}) maps argument slots 0 to ${kMaxArgs - 1} to strings; got key ${a.got(-2) === 'integer' ? slot : a.got(-2)}`);
    }
    out.push({ slot, data: R.bytes(a, lua.lua_absindex(L, -1), `${name}[${slot}]`) });
  });
  return out.sort((x, y) => x.slot - y.slot);
}

function call(target: AgentTarget, a: Args, req: SyscallReq): AgentOps['syscall']['res'] {
  return agentCall(target, a.label, 'syscall', req, { context: `syscall ${req.nr}` });
}

function nr(a: Args): Int64 {
  return wireInt64(a.read(1, 'nr', R.int64('signed')));
}

/** Pushes `ret` and the buffers at `indices` of out_bufs; returns the count. */
function pushResults(a: Args, ret: Int64, bufs: Uint8Array[], indices: number[]): number {
  lua.lua_checkstack(a.L, indices.length + 1);
  pushInt64(a.L, ret);
  for (const i of indices) pushBytes(a.L, bufs[i] ?? new Uint8Array(0));
  return indices.length + 1;
}

/** A pointer buffer: `data` zero-padded to `len` (which defaults to #data). */
function pointerBuffer(a: Args, what: string, data: Uint8Array | undefined, len: number | undefined, lenName: string): Uint8Array {
  const size = len ?? data?.length;
  if (size === undefined) throw a.error(`${what}: give \`${lenName}\` (bytes to allocate) or \`data\` (the bytes to pass)`);
  if (data && data.length > size) throw a.error(`${what}: \`data\` has ${data.length} bytes, more than ${lenName} = ${size}`);
  const buf = new Uint8Array(size);
  if (data) buf.set(data);
  return buf;
}

/** syscall_ptr's pointer specs and ioctl_buf's buffer specs. */
const kPtrSpec = { buf_idx: R.int(0, kMaxArgs - 1), ptr_offset: R.int(0), data_len: R.int(0, kMaxBufferBytes), output: R.bool, data: R.bytes };
const kBufSpec = { ptr_offset: R.int(0), buf_len: R.int(0, kMaxBufferBytes), output: R.bool, data: R.bytes };

function specReader<S extends Spec>(spec: S): Reader<Options<S>> {
  return (a, idx, what) => readOptions(a, idx, what, spec);
}

export const kLegacySyscallMethods: Record<string, (target: AgentTarget, a: Args) => number> = {
  syscall(target, a) {
    const r = call(target, a, parseSyscall(a, true));
    pushInt64(a.L, r.ret);
    return 1;
  },
  syscall_buf(target, a) {
    const slot = a.read(2, 'buf_arg_index', R.int(0, kMaxArgs - 1));
    const data = a.bytes(3, 'buf_data');
    const r = call(target, a, { nr: nr(a), args: readArgs(a, 4, slot + 1), bufs: [data], ptrs: [[slot, 0]], nested: [] });
    pushInt64(a.L, r.ret);
    return 1;
  },
  syscall_bufs(target, a) {
    const bufs = readSlotBuffers(a, 2, 'bufs');
    const minCount = bufs.length ? bufs[bufs.length - 1]!.slot + 1 : 0;
    const req: SyscallReq = {
      nr: nr(a),
      args: readArgs(a, 3, minCount),
      bufs: bufs.map((b) => b.data),
      ptrs: bufs.map((b, i): [number, number] => [b.slot, i]),
      nested: [],
    };
    const r = call(target, a, req);
    return pushResults(a, r.ret, r.out_bufs ?? [], bufs.map((_, i) => i));
  },
  syscall_ptr(target, a) {
    const bufs = readSlotBuffers(a, 2, 'bufs');
    const specs = a.read(3, 'ptrs', R.array(specReader(kPtrSpec), 'pointer spec'));
    const ptrBufs: Uint8Array[] = [];
    const nested: [number, number, number][] = [];
    const outputs: number[] = [];
    specs.forEach((o, i) => {
      const what = `ptrs[${i + 1}]`;
      if (o.buf_idx === undefined || o.ptr_offset === undefined) throw a.error(`${what}: \`buf_idx\` (the slot of the buffer to patch) and \`ptr_offset\` are required`);
      const parent = bufs.findIndex((b) => b.slot === o.buf_idx);
      if (parent < 0) throw a.error(`${what}.buf_idx = ${o.buf_idx}, but bufs has no buffer at slot ${o.buf_idx} (slots: ${bufs.map((b) => b.slot).join(', ') || 'none'})`);
      if (o.ptr_offset + kAddressBytes > bufs[parent]!.data.length) {
        throw a.error(`${what}.ptr_offset = ${o.ptr_offset}: the 8-byte address must fit inside bufs[${o.buf_idx}] (${bufs[parent]!.data.length} bytes)`);
      }
      const child = bufs.length + ptrBufs.length;
      ptrBufs.push(pointerBuffer(a, what, o.data, o.data_len, 'data_len'));
      nested.push([parent, child, o.ptr_offset]);
      if (o.output) outputs.push(child);
    });
    const minCount = bufs.length ? bufs[bufs.length - 1]!.slot + 1 : 0;
    const req: SyscallReq = {
      nr: nr(a),
      args: readArgs(a, 4, minCount),
      bufs: [...bufs.map((b) => b.data), ...ptrBufs],
      ptrs: bufs.map((b, i): [number, number] => [b.slot, i]),
      nested,
    };
    const r = call(target, a, req);
    return pushResults(a, r.ret, r.out_bufs ?? [], [...bufs.map((_, i) => i), ...outputs]);
  },
  ioctl(target, a) {
    const fd = a.read(1, 'fd', R.int64('signed'));
    const cmd = a.read(2, 'cmd', R.int64('unsigned'));
    const data = a.isNil(3) ? undefined : a.bytes(3, 'data');
    a.noMoreThan(3, `${a.label}(fd, cmd, data?)`);
    const req = { fd: wireInt64(fd), cmd: wireInt64(cmd), bufs: [], ptr_offsets: [], ...(data ? { data } : {}) };
    const r = agentCall(target, a.label, 'ioctl', req, { context: `ioctl 0x${cmd.toString(16)}` });
    pushInt64(a.L, r.ret);
    if (r.out_data) pushBytes(a.L, r.out_data);
    else lua.lua_pushnil(a.L);
    return 2;
  },
  ioctl_buf(target, a) {
    const fd = a.read(1, 'fd', R.int64('signed'));
    const cmd = a.read(2, 'cmd', R.int64('unsigned'));
    const struct = a.bytes(3, 'struct_data');
    const specs = a.read(4, 'specs', R.array(specReader(kBufSpec), 'buffer spec'));
    const bufs: Uint8Array[] = [];
    const offsets: number[] = [];
    const outputs: number[] = [];
    specs.forEach((o, i) => {
      const what = `specs[${i + 1}]`;
      if (o.ptr_offset === undefined) throw a.error(`${what}: \`ptr_offset\` (where in struct_data the address goes) is required`);
      if (o.ptr_offset + kAddressBytes > struct.length) {
        throw a.error(`${what}.ptr_offset = ${o.ptr_offset}: the 8-byte address must fit inside struct_data (${struct.length} bytes)`);
      }
      bufs.push(pointerBuffer(a, what, o.data, o.buf_len, 'buf_len'));
      offsets.push(o.ptr_offset);
      if (o.output) outputs.push(i);
    });
    const req = { fd: wireInt64(fd), cmd: wireInt64(cmd), data: struct, bufs, ptr_offsets: offsets };
    const r = agentCall(target, a.label, 'ioctl', req, { context: `ioctl 0x${cmd.toString(16)}` });
    lua.lua_checkstack(a.L, outputs.length + 2);
    pushInt64(a.L, r.ret);
    pushBytes(a.L, r.out_data ?? struct);
    for (const i of outputs) pushBytes(a.L, r.out_bufs?.[i] ?? new Uint8Array(0));
    return outputs.length + 2;
  },
};
