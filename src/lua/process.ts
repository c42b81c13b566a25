// Process (seed 003, reference §1.8): a guest process started by run_async. The agent does not
// kill it; the test does (kill/wait/close), or the scope does at its end: TERM, then up to 2 s,
// then the agent's own KILL on the wait timeout.

import { lua } from 'fengari';
import type { Captured, ExitInfo } from '../protocol/agent.js';
import { R, type Args, type LuaClass } from './args.js';
import { GuestOpError, LuaError } from './errors.js';
import { agentCall, type AgentTarget, type VmHandle } from './guest.js';
import { pushRunResult } from './run-result.js';
import type { ScopedResource } from './scope.js';
import { kCommonSignalNames, signalByName } from './signals.js';
import { openAgentStream, pushStream } from './stream.js';
import { pushText } from './values.js';

/** How long close() lets a process handle SIGTERM before the agent kills it. */
const kCloseGraceMs = 2000;
/** The agent's answer to a kill of a process that already exited. */
const kESRCH = 3;

export class Process implements ScopedResource {
  readonly resourceKind = 'process' as const;
  /** Set once waited: the agent slot is gone and later calls use this. */
  private _result: (ExitInfo & Captured) | null = null;
  private _stdinClosed = false;
  private _forgotten = false;

  constructor(
    readonly target: AgentTarget,
    readonly handle: number,
    public pid: number,
    /** `` `sleep 10` `` */
    readonly display: string,
  ) {}

  get vm(): VmHandle {
    return this.target.vm;
  }

  isClosed(): boolean {
    return this._result !== null || this._forgotten;
  }

  forget(): void {
    this._forgotten = true;
  }

  describe(): string {
    return `process ${this.display} (pid ${this.pid})`;
  }

  close(): void {
    if (this.isClosed()) return;
    if (!usable(this.target)) {
      // Its worker is gone (joined or closed), and with it the handle.
      this.forget();
      return;
    }
    try {
      agentCall(this.target, 'proc:close', 'kill', { handle: this.handle, signal: 15 });
    } catch {
      // It may have exited on its own; the wait below tells.
    }
    this._result = agentCall(this.target, 'proc:close', 'wait', { handle: this.handle, timeout_ms: kCloseGraceMs }, { boundMs: kCloseGraceMs });
  }

  wait(fn: string, timeoutMs: number | undefined): ExitInfo & Captured {
    if (this._result) return this._result;
    if (this._forgotten) throw new LuaError(`${fn}: ${this.describe()} was closed with its scope`);
    const data = timeoutMs === undefined ? { handle: this.handle } : { handle: this.handle, timeout_ms: Math.ceil(timeoutMs) };
    this._result = agentCall(this.target, fn, 'wait', data, { boundMs: timeoutMs, context: this.display });
    return this._result;
  }

  /** Its state now, without waiting: `running`, or how it ended. */
  status(fn: string): ExitInfo {
    return this._result ?? agentCall(this.target, fn, 'proc_status', { handle: this.handle }, { context: this.display });
  }

  /** False when there was nothing to signal (waited for, or already exited: ESRCH). */
  kill(fn: string, signal: number): boolean {
    if (this.isClosed()) return false;
    try {
      agentCall(this.target, fn, 'kill', { handle: this.handle, signal }, { context: this.display });
    } catch (err) {
      if (err instanceof GuestOpError && err.errno === kESRCH) return false;
      throw err;
    }
    return true;
  }

  get waited(): boolean {
    return this._result !== null;
  }

  get result(): (ExitInfo & Captured) | null {
    return this._result;
  }

  get stdinClosed(): boolean {
    return this._stdinClosed;
  }

  markStdinClosed(): void {
    this._stdinClosed = true;
  }
}

/** Whether ops can still reach the target (a joined worker cannot). */
export function usable(target: AgentTarget): boolean {
  try {
    target.ensureUsable('');
    return true;
  } catch {
    return false;
  }
}

/** Reads a signal argument: nil → SIGTERM, a number, or a name (`term`, `SIGKILL`, `usr1`). */
export function readSignal(a: Args, n: number): number {
  const t = a.type(n);
  if (a.isNil(n)) return 15;
  if (t === lua.LUA_TNUMBER) return a.read(n, 'sig', R.int(1, 64));
  if (t === lua.LUA_TSTRING) {
    const name = a.string(n, 'sig');
    const sig = signalByName(name);
    if (sig === undefined || sig < 1 || sig > 64) {
      throw new LuaError(`${a.label}: unknown signal name \`${name}\`; use a number or one of ${kCommonSignalNames} (sig prefix optional)`);
    }
    return sig;
  }
  throw a.error(`argument #${n} (sig) must be a signal name or number, got ${a.got(a.idx(n))}`);
}

function killMethod(p: Process, a: Args): number {
  const sig = readSignal(a, 1);
  lua.lua_pushboolean(a.L, p.kill(a.label, sig));
  return 1;
}

function streamMethod(which: 'stdout' | 'stderr') {
  return (p: Process, a: Args): number => {
    if (p.waited) throw a.error(`${p.describe()} has already been waited for; its output is in the RunResult`);
    const stream = openAgentStream(p.target, a, 'proc_stream', { handle: p.handle, which }, `proc_${which}_stream`, p.display);
    pushStream(a, stream);
    return 1;
  };
}

export const ProcessClass: LuaClass<Process> = {
  typeName: 'Process',
  selfName: 'proc',
  toString: (p) => `process(${p.display} pid=${p.pid} handle=${p.handle}${p.waited ? ' exited' : ''})`,
  methods: {
    wait(p, a) {
      let timeoutMs: number | undefined;
      if (!a.isNil(1)) {
        timeoutMs = a.read(1, 'timeout', R.duration);
        if (timeoutMs === 0) {
          throw a.error('a timeout of 0 would kill the process at once; poll with proc:status() instead, or call proc:wait() to wait without a limit');
        }
      }
      const result = p.wait(a.label, timeoutMs);
      pushRunResult(a.rt, a.L, result, p.display);
      return 1;
    },
    kill: killMethod,
    signal: killMethod,
    pid(p, a) {
      if (!p.isClosed()) p.pid = agentCall(p.target, a.label, 'get_pid', { handle: p.handle }, { context: p.display }).pid;
      lua.lua_pushinteger(a.L, p.pid);
      return 1;
    },
    handle(p, a) {
      lua.lua_pushinteger(a.L, p.handle);
      return 1;
    },
    status(p, a) {
      const info = p.status(a.label);
      pushText(a.L, info.status);
      if (info.status === 'running') return 1;
      lua.lua_pushinteger(a.L, info.status === 'exited' ? info.code : info.status === 'signalled' ? -1 : -2);
      if (info.status === 'signalled') lua.lua_pushinteger(a.L, info.signal);
      else lua.lua_pushnil(a.L);
      return 3;
    },
    stdin_write(p, a) {
      const data = a.bytes(1, 'data');
      if (p.stdinClosed) throw a.error(`stdin of ${p.describe()} is closed (proc:close_stdin() was called)`);
      if (p.isClosed()) throw a.error(`${p.describe()} has exited`);
      const reply = agentCall(p.target, a.label, 'stdin_write', { handle: p.handle, data }, { context: p.display });
      lua.lua_pushinteger(a.L, reply.written);
      return 1;
    },
    close_stdin(p, a) {
      if (!p.stdinClosed && !p.isClosed()) agentCall(p.target, a.label, 'stdin_close', { handle: p.handle }, { context: p.display });
      p.markStdinClosed();
      return 0;
    },
    stdout_stream: streamMethod('stdout'),
    stderr_stream: streamMethod('stderr'),
    close(p) {
      p.close();
      return 0;
    },
  },
};
