// What happens at a failed test while its VMs are still up (issue 14 item 3), called by the test
// runner before the test's scope closes:
//   --keep-failed DIR: per failed test, each live VM's console log, dmesg and process list, the
//     failure message, and one lab snapshot of all of them (`provium repl --restore <that dir>`);
//   --debug-on-fail: a REPL in the test's scope: its `t`, its VMs (`vm` when the test names none),
//     and the locals and upvalues of the test file's frames at the moment of the error.

import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { lua, to_jsstring, type lua_State } from 'fengari';
import type { FileTask } from '../protocol/task.js';
import { ReplLoop } from './repl.js';
import type { LuaRuntime } from './runtime.js';
import { TestContextClass } from './test-context.js';
import type { TestFailure } from './test-runner.js';
import { textBytes } from './values.js';
import { VmClass, type Vm } from './vm.js';

/** Each artifact command's own limit: a wedged guest must not hold the run. */
const kCommandTimeoutMs = 15_000;

export function failureHandler(rt: LuaRuntime, task: Pick<FileTask, 'displayPath' | 'debug' | 'keepFailed'>): (failure: TestFailure) => void {
  const locals = task.debug ? new CapturedLocals(rt) : undefined;
  return (failure) => {
    const vms = liveVms(rt, failure);
    if (task.keepFailed) {
      try {
        const dir = keepFailed(rt, task.keepFailed, task.displayPath, failure, vms);
        failure.ctx.log.push(`--keep-failed: ${dir} (restore with \`provium repl --restore ${path.join(dir, 'snapshot')}\`)`);
      } catch (err) {
        failure.ctx.log.push(`--keep-failed: could not save the artifacts: ${(err as Error).message}`);
      }
    }
    if (task.debug && locals) {
      try {
        debugRepl(rt, task, failure, vms, locals);
      } finally {
        locals.clear();
      }
    }
  };
}

/** The test's VMs that are up, then the file's. */
function liveVms(rt: LuaRuntime, failure: TestFailure): Vm[] {
  return [...failure.scope.liveVms(), ...rt.fileScope.liveVms()];
}

/** A path component from any text: `spec/a.test.lua` → `spec_a.test.lua`. */
export function slug(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 120) || '_';
}

function keepFailed(rt: LuaRuntime, root: string, displayPath: string, failure: TestFailure, vms: Vm[]): string {
  const name = failure.attempt > 1 ? `${failure.ctx.def.name} (attempt ${failure.attempt})` : failure.ctx.def.name;
  const dir = path.join(root, slug(displayPath), slug(name));
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'failure.txt'), `${displayPath} › ${failure.ctx.def.name}\n${failure.message}\n`);
  const problems: string[] = [];
  for (const vm of vms) {
    const base = path.join(dir, slug(vm.name));
    const attempt = (what: string, fn: () => Uint8Array | string): void => {
      try {
        writeFileSync(`${base}.${what}`, fn());
      } catch (err) {
        problems.push(`${vm.label} ${what}: ${(err as Error).message}`);
      }
    };
    attempt('console.log', () => rt.rpc.call('vm.console_log', { vmId: vm.vmId }).data);
    attempt('dmesg.txt', () => guestOutput(rt, vm, 'dmesg'));
    attempt('ps.txt', () => guestOutput(rt, vm, 'ps -ef 2>/dev/null || ps'));
  }
  if (vms.length > 0) {
    try {
      const bridges = [...failure.scope.bridges, ...rt.fileScope.bridges].filter((b) => !b.closed);
      const reply = rt.rpc.call('lab.snapshot', { lab: 'provium', dir: path.join(dir, 'snapshot'), vmIds: vms.map((vm) => vm.vmId), bridgeIds: bridges.map((b) => b.bridgeId) });
      reply.vms.forEach((view, i) => vms[i]!.apply(view));
    } catch (err) {
      problems.push(`snapshot: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) writeFileSync(path.join(dir, 'problems.txt'), `${problems.join('\n')}\n`);
  return dir;
}

/** A shell command's stdout and stderr in the guest. */
function guestOutput(rt: LuaRuntime, vm: Vm, command: string): Uint8Array {
  const { result } = rt.rpc.call('agent.call', {
    vmId: vm.vmId,
    op: 'exec',
    data: { argv: ['/bin/sh', '-c', `${command} 2>&1`], env: {}, env_clear: false, stdin: new Uint8Array(0), timeout_ms: kCommandTimeoutMs },
    timeoutMs: kCommandTimeoutMs + 5_000,
  });
  return (result as { stdout?: Uint8Array }).stdout ?? new Uint8Array(0);
}

function debugRepl(rt: LuaRuntime, task: Pick<FileTask, 'displayPath' | 'debug'>, failure: TestFailure, vms: Vm[], locals: CapturedLocals): void {
  const repl = new ReplLoop(rt, task.debug!);
  const bindings = new Map<string, (L: lua_State) => void>();
  // The test's VMs under their own names (names that are valid identifiers), `vm` for the first.
  for (const vm of [...vms].reverse()) {
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(vm.name)) bindings.set(vm.name, (L) => rt.push(VmClass, vm, L));
  }
  if (vms[0]) bindings.set('vm', (L) => rt.push(VmClass, vms[0]!, L));
  bindings.set('t', (L) => rt.push(TestContextClass, failure.ctx, L));
  // The locals where the error happened win: they are what the test called things.
  for (const [name, ref] of locals.entries()) bindings.set(name, (L) => rt.pushRef(ref, L));
  repl.makeEnv(bindings);
  const names = [...bindings.keys()].filter((n) => n !== 'print').sort();
  repl.write(
    `\n--debug-on-fail: ${task.displayPath} › ${failure.ctx.def.name} failed:\n${indent(failure.message)}\n` +
      `Its VMs are still up (${vms.map((vm) => vm.name).join(', ') || 'none'}). In scope: ${names.join(', ')}.\n` +
      'Lua here runs with the test API; Ctrl-C interrupts a call, Ctrl-D continues the run.\n',
  );
  repl.run();
}

function indent(text: string): string {
  return text.split('\n').map((l) => `  ${l}`).join('\n');
}

/**
 * The locals and upvalues of the test file's frames when an error is raised inside a test
 * (innermost first wins), kept as registry refs until the REPL is over.
 */
class CapturedLocals {
  private _refs = new Map<string, number>();

  constructor(private readonly _rt: LuaRuntime) {
    _rt.onError = (L) => {
      if (_rt.currentTest) this._capture(L);
    };
  }

  entries(): [string, number][] {
    return [...this._refs.entries()];
  }

  clear(): void {
    for (const ref of this._refs.values()) this._rt.unref(ref);
    this._refs = new Map();
  }

  private _capture(L: lua_State): void {
    this.clear();
    const source = textBytes(`@${this._rt.displayPath}`);
    const ar = new lua.lua_Debug();
    for (let level = 0; lua.lua_getstack(L, level, ar); level++) {
      lua.lua_getinfo(L, 'Sf', ar);
      const fn = lua.lua_gettop(L);
      if (sameBytes(ar.source, source)) {
        for (let n = 1; ; n++) {
          const name = lua.lua_getlocal(L, ar, n);
          if (name === null) break;
          this._keep(L, to_jsstring(name));
        }
        for (let n = 1; ; n++) {
          const name = lua.lua_getupvalue(L, fn, n);
          if (name === null) break;
          this._keep(L, to_jsstring(name));
        }
      }
      lua.lua_settop(L, fn - 1);
    }
  }

  /** Takes the value on top of the stack (pops it). */
  private _keep(L: lua_State, name: string): void {
    if (name.startsWith('(') || name === '_ENV' || this._refs.has(name)) {
      lua.lua_pop(L, 1);
      return;
    }
    this._refs.set(name, this._rt.ref(-1, L));
    lua.lua_pop(L, 1);
  }
}

function sameBytes(a: Uint8Array | null | undefined, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
