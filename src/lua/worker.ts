// Worker (seed 000, reference §1.9): a separate agent process in the guest, forked from the main
// agent, with its own pid, handles and credentials. Ops carry the `worker` routing field; joins go
// to the main agent. join() tells the worker to exit, then reaps it; close() first sends TERM to
// everything the worker spawned. Both are idempotent.

import { lua } from 'fengari';
import type { ExitInfo } from '../protocol/agent.js';
import { R, type Args, type BindingRuntime, type LuaClass } from './args.js';
import { LuaError } from './errors.js';
import { runAsyncMethod, runMethod } from './exec.js';
import { openFileMethod } from './files.js';
import { agentCall, type AgentTarget, type VmHandle } from './guest.js';
import { ioctlMethod, readMemMethod, syscallAsyncMethod, syscallMethod } from './layer0.js';
import { readSignal } from './process.js';
import { pushRunResult } from './run-result.js';
import type { ScopedResource } from './scope.js';

/** How long close() lets a worker exit before the main agent kills it. */
const kCloseGraceMs = 2000;

export class GuestWorker implements ScopedResource, AgentTarget {
  readonly resourceKind = 'worker' as const;
  readonly label: string;
  private _exit: ExitInfo | null = null;
  private _forgotten = false;

  constructor(
    readonly vm: VmHandle,
    readonly workerId: number,
    readonly pid: number,
  ) {
    this.label = `worker ${workerId} of ${vm.label}`;
  }

  get rt(): BindingRuntime {
    return this.vm.rt;
  }

  ensureUsable(fn: string): void {
    this.vm.ensureUsable(fn);
    if (this._exit) throw new LuaError(`${fn}: ${this.label} has been joined`);
    if (this._forgotten) throw new LuaError(`${fn}: ${this.label} was closed with its scope`);
  }

  isClosed(): boolean {
    return this._exit !== null || this._forgotten;
  }

  forget(): void {
    this._forgotten = true;
  }

  describe(): string {
    return this.label;
  }

  /** Asks the worker to exit (it has nothing in flight: worker calls block) and reaps it. */
  join(fn: string, timeoutMs?: number): ExitInfo {
    if (this._exit) return this._exit;
    this.ensureUsable(fn);
    try {
      // With a timeout the whole join is bounded, this request included.
      agentCall(this, fn, 'exit', {}, timeoutMs === undefined ? {} : { boundMs: 0 });
    } catch {
      // Already gone: the join below reports how it ended.
    }
    const data = timeoutMs === undefined ? { worker: this.workerId } : { worker: this.workerId, timeout_ms: Math.ceil(timeoutMs) };
    this._exit = agentCall(this.vm, fn, 'worker_join', data, { boundMs: timeoutMs, context: this.label });
    return this._exit;
  }

  /**
   * Bounded at every step: a worker that stopped answering must not hang its scope's teardown.
   * The join's timeout makes the main agent SIGKILL a worker that has not exited by then.
   */
  close(): void {
    if (this.isClosed()) return;
    try {
      agentCall(this, 'worker:close', 'kill_all', { signal: 15 }, { boundMs: 0 });
    } catch {
      // Nothing to signal, or the worker is gone; join tells.
    }
    this.join('worker:close', kCloseGraceMs);
  }
}

export const WorkerClass: LuaClass<GuestWorker> = {
  typeName: 'Worker',
  selfName: 'worker',
  toString: (w) => `worker(${w.workerId} of vm ${w.vm.name} pid=${w.pid}${w.isClosed() ? ' joined' : ''})`,
  methods: {
    run: runMethod,
    run_async: runAsyncMethod,
    open_file: openFileMethod,
    syscall: syscallMethod,
    syscall_async: syscallAsyncMethod,
    ioctl: ioctlMethod,
    read_mem: readMemMethod,
    kill(w, a) {
      const signal = readSignal(a, 1);
      const reply = agentCall(w, a.label, 'kill_all', { signal });
      lua.lua_pushinteger(a.L, reply.killed);
      return 1;
    },
    join(w, a) {
      const timeoutMs = a.isNil(1) ? undefined : a.read(1, 'timeout', R.duration);
      pushRunResult(a.rt, a.L, w.join(a.label, timeoutMs), w.label);
      return 1;
    },
    handle(w, a) {
      lua.lua_pushinteger(a.L, w.workerId);
      return 1;
    },
    pid(w, a) {
      lua.lua_pushinteger(a.L, w.pid);
      return 1;
    },
    close(w) {
      w.close();
      return 0;
    },
  },
};

/** Forks a worker from the agent, owned by the current scope (vm:spawn_worker, the legacy vm:spawn). */
export function startWorker(vm: VmHandle, a: Args): GuestWorker {
  const reply = agentCall(vm, a.label, 'spawn_worker', {});
  const worker = new GuestWorker(vm, reply.worker, reply.pid);
  a.rt.currentScope.add(worker);
  return worker;
}

/** vm:spawn_worker(opts?) */
export function spawnWorkerMethod(vm: VmHandle, a: Args): number {
  const o = a.options(1, 'opts', { thread: R.bool });
  if (o.thread) throw a.error('{thread = true} is not yet supported: workers are separate guest processes; drop the option');
  a.rt.push(WorkerClass, startWorker(vm, a), a.L);
  return 1;
}
