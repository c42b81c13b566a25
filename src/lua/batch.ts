// vm:batch(fn) (seed 000/001): `fn(b)` records ops on a batcher, then they go to the agent as one
// `batch` op (one round trip). The result is an array of {ok = value} or {err = message, errno = n}
// in op order; one failure does not stop the rest.

import { lua } from 'fengari';
import type { AgentOps, BatchOp, BatchResult } from '../protocol/agent.js';
import { R, type Args, type LuaClass } from './args.js';
import { LuaError } from './errors.js';
import { parseExec } from './exec.js';
import { pushEntries, pushStat } from './files.js';
import { agentCall, type VmHandle } from './guest.js';
import { parseSyscall, pushSyscallResult } from './layer0.js';
import { pushRunResult } from './run-result.js';
import { pushBytes, pushText, setField } from './values.js';

export class Batcher {
  readonly ops: BatchOp[] = [];
  /** For RunResult messages, per op. */
  readonly displays: string[] = [];
  /** Sum of exec timeouts, or Infinity when an exec has none. */
  boundMs = 0;
  sent = false;

  constructor(readonly vm: VmHandle) {}

  add(fn: string, op: BatchOp, display = ''): void {
    if (this.sent) throw new LuaError(`${fn}: this batch was already sent; record ops inside the vm:batch function`);
    this.ops.push(op);
    this.displays.push(display);
  }
}

export const BatcherClass: LuaClass<Batcher> = {
  typeName: 'Batch',
  selfName: 'b',
  toString: (b) => `batch(${b.vm.name}, ${b.ops.length} ops${b.sent ? ', sent' : ''})`,
  methods: {
    run(b, a) {
      const req = parseExec(a, 1, 'run');
      b.boundMs += req.timeoutMs ?? Infinity;
      const data = req.timeoutMs !== undefined ? { ...req.spec, timeout_ms: req.timeoutMs } : req.spec;
      b.add(a.label, { kind: 'exec', data }, req.display);
      return 0;
    },
    read_file(b, a) {
      b.add(a.label, { kind: 'read_file', data: { path: a.string(1, 'path') } });
      return 0;
    },
    write_file(b, a) {
      b.add(a.label, { kind: 'write_file', data: { path: a.string(1, 'path'), data: a.bytes(2, 'data') } });
      return 0;
    },
    stat(b, a) {
      b.add(a.label, { kind: 'stat', data: { path: a.string(1, 'path') } });
      return 0;
    },
    listdir(b, a) {
      b.add(a.label, { kind: 'listdir', data: { path: a.string(1, 'path') } });
      return 0;
    },
    mkdir(b, a) {
      const path = a.string(1, 'path');
      const o = a.options(2, 'opts', { parents: R.bool, perm: R.int(0, 0o7777) });
      b.add(a.label, { kind: 'mkdir', data: { path, ...o } });
      return 0;
    },
    unlink(b, a) {
      b.add(a.label, { kind: 'unlink', data: { path: a.string(1, 'path') } });
      return 0;
    },
    rename(b, a) {
      b.add(a.label, { kind: 'rename', data: { from: a.string(1, 'from'), to: a.string(2, 'to') } });
      return 0;
    },
    syscall(b, a) {
      b.add(a.label, { kind: 'syscall', data: parseSyscall(a, false) });
      return 0;
    },
  },
};

/** vm:batch(fn) */
export function batchMethod(vm: VmHandle, a: Args): number {
  const fnIdx = a.read(1, 'fn', R.function);
  const batcher = new Batcher(vm);
  // 1. Record: fn(b). Its errors propagate as they are.
  lua.lua_pushvalue(a.L, fnIdx);
  a.rt.push(BatcherClass, batcher, a.L);
  lua.lua_call(a.L, 1, 0);
  batcher.sent = true;
  // 2. One round trip.
  const results: BatchResult[] =
    batcher.ops.length === 0 ? [] : agentCall(vm, a.label, 'batch', { ops: batcher.ops }, { boundMs: batcher.boundMs }).results;
  // 3. Results in op order.
  const L = a.L;
  lua.lua_createtable(L, results.length, 0);
  results.forEach((r, i) => {
    lua.lua_createtable(L, 0, 2);
    if ('err' in r) {
      setField(L, 'err', () => pushText(L, r.err.message));
      setField(L, 'errno', () => lua.lua_pushinteger(L, r.err.errno));
    } else {
      const op = batcher.ops[i]!;
      const ok = r.ok as never;
      switch (op.kind) {
        case 'exec':
          setField(L, 'ok', () => pushRunResult(a.rt, L, ok as AgentOps['exec']['res'], batcher.displays[i]!));
          break;
        case 'read_file':
          setField(L, 'ok', () => pushBytes(L, (ok as AgentOps['read_file']['res']).data));
          break;
        case 'stat':
          setField(L, 'ok', () => pushStat(L, ok as AgentOps['stat']['res']));
          break;
        case 'listdir':
          setField(L, 'ok', () => pushEntries(L, (ok as AgentOps['listdir']['res']).entries));
          break;
        case 'syscall':
          setField(L, 'ok', () => pushSyscallResult(L, ok as AgentOps['syscall']['res']));
          break;
        default:
          break; // write_file, mkdir, unlink, rename: {ok = nil}
      }
    }
    lua.lua_rawseti(L, -2, i + 1);
  });
  return 1;
}
