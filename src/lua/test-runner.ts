// test() registration and running (reference §1.1–1.3): selection, per-test scope labs, the
// deadline (meta.timeout, else provium.timeout), retries with flaky detection, console excerpts
// for failures, and the test reports (test_begin, test_retry, test_end) on the file's channel. Also
// the `todo` global (at file scope it skips the file; inside a test, that test) and `wait_until`.

import { lua } from 'fengari';
import type { MetaMap } from '../protocol/events.js';
import type { FileReport, FileTask, TestResult } from '../protocol/task.js';
import { R, type Args } from './args.js';
import { findFrame, locationFromMessage, LuaError } from './errors.js';
import { kWaitUntilDefaults, waitUntil } from './wait.js';
import { showSeconds } from './guest.js';
import type { FileReset } from './file-reset.js';
import { Lab, LabClass } from './lab.js';
import type { CallFailure, LuaRuntime } from './runtime.js';
import { ResourceScope } from './scope.js';
import { filterReason, isSlow, metaSkipReason } from './selection.js';
import { TestContext, TestContextClass, type TestDef } from './test-context.js';
import { eachPair, getText, key, toPlain } from './values.js';
import type { Vm } from './vm.js';

const kConsoleExcerptBytes = 4096;

interface Outcome {
  status: 'passed' | 'failed' | 'skipped';
  message?: string;
  failureLocation?: TestResult['location'];
  log: string[];
  durationMs: number;
  consoleExcerpt?: string;
}

/** A failed attempt, while its VMs are still up. */
export interface TestFailure {
  ctx: TestContext;
  message: string;
  scope: ResourceScope<Vm>;
  index: number;
  attempt: number;
}

export class TestRunner {
  readonly tests: TestDef[] = [];
  todoReason: string | null = null;

  private _declared = false;
  /** Runs when an attempt failed, before its scope closes (src/lua/debug-on-fail.ts). Must not throw. */
  onFailure: ((failure: TestFailure) => void) | undefined;

  constructor(
    readonly rt: LuaRuntime,
    readonly task: Pick<FileTask, 'displayPath' | 'selection' | 'retries'>,
    private readonly _report: (report: FileReport) => void,
  ) {}

  /** Installs `test`, `todo`, `wait_until`. */
  install(): void {
    const L = this.rt.L;
    lua.lua_pushcfunction(L, this.rt.fn('test', (a) => this._register(a)));
    lua.lua_setglobal(L, key('test'));
    lua.lua_pushcfunction(
      L,
      this.rt.fn('todo', (a) => {
        const reason = a.isNil(1) ? 'todo' : a.string(1, 'reason');
        const running = this.rt.currentTest;
        if (!running) {
          this.todoReason = reason;
          return 0;
        }
        // Inside a test (seed 002): that test is skipped, as t:skip(reason) would.
        running.skipReason = reason;
        this.rt.pushRef(this.rt.skipSentinelRef, a.L);
        return lua.lua_error(a.L);
      }),
    );
    lua.lua_setglobal(L, key('todo'));
    lua.lua_pushcfunction(L, this.rt.fn('wait_until', (a) => waitUntil(a, 1, kWaitUntilDefaults)));
    lua.lua_setglobal(L, key('wait_until'));
  }

  private _register(a: Args): number {
    const L = a.L;
    if (this.rt.currentTest) throw a.error('test() cannot be called inside a test; declare tests at file scope');
    const name = a.string(1, 'name');
    if (name === '') throw a.error('argument #1 (name) must not be empty');
    let metaIdx: number | null = null;
    let fnIdx: number;
    if (a.type(2) === lua.LUA_TFUNCTION) fnIdx = a.idx(2);
    else if (a.type(2) === lua.LUA_TTABLE && a.type(3) === lua.LUA_TFUNCTION) {
      metaIdx = a.idx(2);
      fnIdx = a.idx(3);
    } else {
      throw a.error(`usage: test(name, fn) or test(name, meta, fn); got ${a.got(a.idx(2))} as argument #2`);
    }
    if (this.tests.some((t) => t.name === name)) throw new LuaError(`test: duplicate name \`${name}\` in this file`);
    // Meta: validate the keys the runner reads; everything else passes through to events.
    let timeoutMs: number | undefined;
    let tags: string[] = [];
    if (metaIdx !== null) {
      lua.lua_getfield(L, metaIdx, key('timeout'));
      if (lua.lua_type(L, -1) !== lua.LUA_TNIL) timeoutMs = R.duration(a, lua.lua_gettop(L), 'meta.timeout');
      lua.lua_pop(L, 1);
      lua.lua_getfield(L, metaIdx, key('tags'));
      const tt = lua.lua_type(L, -1);
      if (tt === lua.LUA_TSTRING) tags = [getText(L, -1)];
      else if (tt === lua.LUA_TTABLE) tags = R.array(R.string, 'string')(a, lua.lua_gettop(L), 'meta.tags');
      else if (tt !== lua.LUA_TNIL) throw a.error(`meta.tags must be a string or an array of strings, got ${a.got(-1)}`);
      lua.lua_pop(L, 1);
      eachPair(L, metaIdx, () => {
        if (lua.lua_type(L, -2) !== lua.LUA_TSTRING) throw a.error(`meta keys must be strings, got ${a.got(-2)}`);
      });
    } else {
      lua.lua_createtable(L, 0, 0);
      metaIdx = lua.lua_gettop(L);
    }
    const meta = toPlain(L, metaIdx) as MetaMap;
    const site = findFrame(L, (f) => f === this.rt.displayPath, 1) ?? { file: this.rt.displayPath, line: 0 };
    this.tests.push({
      name,
      fnRef: this.rt.ref(fnIdx, L),
      metaRef: this.rt.ref(metaIdx, L),
      meta: Array.isArray(meta) ? {} : meta,
      site,
      ...(timeoutMs !== undefined && timeoutMs > 0 ? { timeoutMs } : {}),
      metaSkip: metaSkipReason(meta.skip),
      slow: isSlow(meta.slow),
      tags,
    });
    this.rt.fileConfig.declaredTests = this.tests.length;
    return 0;
  }

  /** Why a test will not run (todo, meta.skip, filters), or null. */
  skipReason(def: TestDef): string | null {
    return this.todoReason ?? def.metaSkip ?? filterReason(def, this.task.selection);
  }

  /** Tells the main thread which tests the file has (once, after its top level ran). */
  declare(): void {
    if (this._declared) return;
    this._declared = true;
    this._send({
      type: 'tests_declared',
      tests: this.tests.map((def) => ({ name: def.name, meta: def.meta, location: def.site, skipReason: this.skipReason(def) })),
    });
  }

  /** Runs every test; with `reset`, a test that runs after another one did starts from the saved VMs. */
  runAll(reset?: FileReset): void {
    let dirty = false;
    this.tests.forEach((def, i) => {
      if (reset && dirty && this.skipReason(def) === null) {
        dirty = false;
        try {
          // Another test may need the saved VMs again after this one.
          reset.restore(this.tests.slice(i + 1).some((d) => this.skipReason(d) === null));
        } catch (err) {
          this._failedBeforeStart(def, (err as Error).message);
          return;
        }
      }
      const result = this._runTest(def, i + 1);
      if (result.status !== 'skipped') dirty = true;
    });
  }

  /** A test that could not start (its reset failed): it still begins and ends. */
  private _failedBeforeStart(def: TestDef, message: string): void {
    this._send({ type: 'test_begin', name: def.name });
    this._send({ type: 'test_end', test: { ...this._base(def), status: 'failed', message, log: [], durationMs: 0, attempts: 1, flaky: false } });
  }

  private _base(def: TestDef): Pick<TestResult, 'name' | 'meta' | 'location'> {
    return { name: def.name, meta: def.meta, location: def.site };
  }

  private _send(report: FileReport): void {
    try {
      this._report(report);
    } catch {
      // A closed port means the main thread gave up on this file; the test goes on regardless.
    }
  }

  private _runTest(def: TestDef, index: number): TestResult {
    const reason = this.skipReason(def);
    // Every test begins once and ends once, skipped ones included; a retry is announced by
    // test_retry, not by another begin.
    this._send({ type: 'test_begin', name: def.name });
    if (reason !== null) {
      const skipped: TestResult = { ...this._base(def), status: 'skipped', message: reason, log: [], durationMs: 0, attempts: 0, flaky: false };
      this._send({ type: 'test_end', test: skipped });
      return skipped;
    }
    const maxAttempts = 1 + Math.max(0, this.task.retries);
    let attempt = 0;
    let failedBefore = false;
    let outcome: Outcome;
    for (;;) {
      attempt++;
      outcome = this._attempt(def, index, attempt);
      if (outcome.status === 'failed' && attempt < maxAttempts) {
        this._send({ type: 'test_retry', name: def.name, attempt, reason: outcome.message ?? '' });
        failedBefore = true;
        continue;
      }
      break;
    }
    const result: TestResult = {
      ...this._base(def),
      status: outcome.status,
      ...(outcome.message !== undefined ? { message: outcome.message } : {}),
      ...(outcome.failureLocation ? { failureLocation: outcome.failureLocation } : {}),
      log: outcome.log,
      durationMs: outcome.durationMs,
      ...(outcome.consoleExcerpt ? { consoleExcerpt: outcome.consoleExcerpt } : {}),
      attempts: attempt,
      flaky: failedBefore && outcome.status === 'passed',
    };
    this._send({ type: 'test_end', test: result });
    return result;
  }

  /** One run of a test body in a fresh scope. */
  private _attempt(def: TestDef, index: number, attempt: number): Outcome {
    const rt = this.rt;
    const L = rt.L;
    const started = performance.now();
    // 1. A scope lab for the body; `provium` points at it until the test ends.
    const scope = new ResourceScope<Vm>(rt, `test \`${def.name}\``);
    const lab = new Lab(rt, rt.rootLab.name, `${rt.rootLab.path}/test-${index}-${attempt}`, rt.rootLab);
    const ctx = new TestContext(def, attempt);
    rt.currentScope = scope;
    rt.currentTest = ctx;
    rt.push(LabClass, lab);
    lua.lua_setglobal(L, key('provium'));
    // 2. The deadline, for the hook and for every blocking call.
    const timeoutMs = def.timeoutMs ?? rt.fileConfig.timeoutMs;
    if (timeoutMs !== undefined) rt.deadline.set(timeoutMs, `test timed out after ${showSeconds(timeoutMs)}`);
    else rt.deadline.expired = false;
    // 3. Run.
    rt.pushRef(def.fnRef);
    rt.push(TestContextClass, ctx);
    const failure = rt.callProtected(1, 0);
    const timedOut = rt.deadline.expired;
    rt.deadline.clear();
    rt.deadline.expired = false;
    if (timedOut) rt.resetHook();
    // 4. Judge.
    let outcome = judge(rt, ctx, failure, timedOut, timeoutMs);
    // 5. Console excerpt before the VMs go away (and --debug-on-fail / --keep-failed), then teardown.
    if (outcome.status === 'failed') outcome.consoleExcerpt = consoleExcerpt(rt, [...scope.excerptVms(), ...rt.fileScope.excerptVms()]);
    if (outcome.status === 'failed') this.onFailure?.({ ctx, message: outcome.message ?? 'failed', scope, index, attempt });
    const teardownErrors = scope.close();
    if (teardownErrors.length > 0 && outcome.status === 'passed') {
      outcome = { status: 'failed', message: `test teardown failed: ${teardownErrors.join('; ')}`, log: [], durationMs: 0 };
    }
    rt.push(LabClass, rt.rootLab);
    lua.lua_setglobal(L, key('provium'));
    rt.currentScope = rt.fileScope;
    rt.currentTest = null;
    return { ...outcome, log: ctx.log.lines(), durationMs: performance.now() - started };
  }
}

function judge(rt: LuaRuntime, ctx: TestContext, failure: CallFailure | null, timedOut: boolean, timeoutMs: number | undefined): Outcome {
  const base = { log: ctx.log.lines(), durationMs: 0 };
  if (timedOut) {
    const message = failure && failure.message.includes('test timed out') ? failure.message : `test timed out after ${showSeconds(timeoutMs ?? 0)}`;
    return { ...base, status: 'failed', message, failureLocation: failure?.location ?? locationFromMessage(message) };
  }
  if (failure && !failure.isSkip) {
    const inTestFile = failure.message.startsWith(`${rt.displayPath}:`);
    const message = inTestFile || ctx.failures.includes(failure.message) ? failure.message : `${failure.message}\n${failure.traceback}`;
    return { ...base, status: 'failed', message, failureLocation: failure.location ?? locationFromMessage(failure.message) };
  }
  if (ctx.failures.length > 0) {
    const message = ctx.failures[0]!;
    return { ...base, status: 'failed', message, failureLocation: locationFromMessage(message) };
  }
  if (failure?.isSkip || ctx.skipReason !== null) return { ...base, status: 'skipped', message: ctx.skipReason ?? 'skipped (t:skip)' };
  return { ...base, status: 'passed' };
}

function consoleExcerpt(rt: LuaRuntime, vms: { vmId: number; label: string }[]): string {
  const parts: string[] = [];
  for (const vm of vms) {
    try {
      const { text } = rt.rpc.call('vm.console_tail', { vmId: vm.vmId, maxBytes: kConsoleExcerptBytes });
      if (text.trim() !== '') parts.push(vms.length > 1 ? `--- console of ${vm.label} ---\n${text}` : text);
    } catch {
      // The excerpt is a courtesy; a VM that cannot give one does not change the verdict.
    }
  }
  return parts.join('\n');
}
