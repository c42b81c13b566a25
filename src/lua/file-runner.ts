// One test file, start to end: a fresh Lua state with the Provium globals, the file's top-level
// chunk (loaded as `@<display path>`), its tests, and the file scope's teardown. Everything it
// learns goes out as FileReports; it never throws, and its `finally` sends the one `file_done`,
// carrying the errors outside any test (syntax, top level, teardown) with file:line.

import { FileReset } from './file-reset.js';
import { readFileSync } from 'node:fs';
import { lua } from 'fengari';
import type { FatalError, FileReport, FileTask } from '../protocol/task.js';
import { DryCaller } from './dry-caller.js';
import { failureHandler } from './debug-on-fail.js';
import { locationFromMessage } from './errors.js';
import { installJson } from './json.js';
import { installLegacyGlobals } from './legacy/globals.js';
import { Lab, LabClass } from './lab.js';
import type { Caller } from './rpc.js';
import { LuaRuntime } from './runtime.js';
import { installSandbox } from './sandbox.js';
import { ResourceScope } from './scope.js';
import { TestRunner } from './test-runner.js';
import { LabSnapshotClass, SnapshotClass } from './snapshot.js';
import { VmClass } from './vm.js';
import { key, typeName } from './values.js';

export type FileRunInput = Pick<FileTask, 'file' | 'displayPath' | 'roots' | 'selection' | 'retries' | 'listOnly' | 'fixture' | 'debug' | 'keepFailed'>;

/** A fresh Lua state with every global of a test file (the REPL starts from the same). */
export function createFileRuntime(
  task: Pick<FileRunInput, 'file' | 'displayPath' | 'roots' | 'selection' | 'retries'>,
  caller: Caller,
  report: (report: FileReport) => void,
): { rt: LuaRuntime; runner: TestRunner } {
  const rt = new LuaRuntime({ caller, file: task.file, displayPath: task.displayPath, roots: task.roots });
  installSandbox(rt);
  installJson(rt);
  installLegacyGlobals(rt);
  const runner = new TestRunner(rt, task, report);
  runner.install();
  rt.rootLab = new Lab(rt, 'provium', 'provium', null);
  rt.fileScope = new ResourceScope(rt, 'file');
  rt.currentScope = rt.fileScope;
  rt.push(LabClass, rt.rootLab);
  lua.lua_setglobal(rt.L, key('provium'));
  lua.lua_createtable(rt.L, 0, 0);
  rt.skipSentinelRef = rt.ref(-1);
  lua.lua_pop(rt.L, 1);
  return { rt, runner };
}

export function runFile(task: FileRunInput, caller: Caller, report: (report: FileReport) => void): void {
  const fatalErrors: FatalError[] = [];
  let rt: LuaRuntime | undefined;
  let reset: FileReset | undefined;
  try {
    // 1. The state and its globals.
    let runner: TestRunner;
    ({ rt, runner } = createFileRuntime(task, task.listOnly ? new DryCaller() : caller, report));
    if (task.debug || task.keepFailed) runner.onFailure = failureHandler(rt, task);

    // 2. The top-level chunk registers the tests (and may declare and boot file-scope VMs).
    let source: Uint8Array;
    try {
      source = new Uint8Array(readFileSync(task.file));
    } catch (err) {
      fatalErrors.push({ message: `cannot read ${task.displayPath}: ${(err as Error).message}` });
      return;
    }
    const syntaxError = rt.load(source, task.displayPath);
    if (syntaxError !== null) {
      fatalErrors.push({ message: syntaxError, ...withLocation(locationFromMessage(syntaxError)) });
      return;
    }
    const failure = rt.callProtected(0, task.fixture ? 1 : 0);
    if (task.fixture && !failure) {
      keepFixtureSnapshot(rt, runner, task.displayPath, fatalErrors);
      return;
    }
    // What registered before an error is still declared (listing shows it; a run reports it).
    runner.declare();
    if (failure) {
      const inFile = failure.message.startsWith(`${task.displayPath}:`);
      fatalErrors.push({
        message: inFile ? failure.message : `${failure.message}\n${failure.traceback}`,
        ...withLocation(failure.location ?? locationFromMessage(failure.message)),
      });
      return;
    }

    // 3. The tests, in declaration order.
    if (task.listOnly) return;
    if (rt.fileConfig.resetBetweenTests) {
      try {
        reset = FileReset.prepare(rt);
      } catch (err) {
        fatalErrors.push({ message: `${task.displayPath}: ${(err as Error).message}` });
        return;
      }
    }
    runner.runAll(reset);
  } catch (err) {
    fatalErrors.push({ message: `internal error while running ${task.displayPath}: ${(err as Error)?.stack ?? String(err)}` });
  } finally {
    // 4. File-scope teardown, however the file ended.
    reset?.dispose();
    if (rt?.fileScope) {
      rt.deadline.clear();
      let errors: string[];
      try {
        errors = rt.fileScope.close();
      } catch (err) {
        errors = [(err as Error).message];
      }
      if (errors.length > 0) fatalErrors.push({ message: `file teardown failed: ${errors.join('; ')}` });
    }
    // 5. The one end of the file, however it ended.
    report({ type: 'file_done', fatalErrors });
  }
}

/**
 * A fixture's builder: the chunk's one result must be a Snapshot (vm:snapshot()) or a LabSnapshot
 * (provium:snapshot()), which the broker keeps as the fixture; a fixture declares no tests.
 */
function keepFixtureSnapshot(rt: LuaRuntime, runner: TestRunner, displayPath: string, fatalErrors: FatalError[]): void {
  const vmSnap = rt.toObject(rt.L, -1, SnapshotClass);
  const labSnap = vmSnap ? undefined : rt.toObject(rt.L, -1, LabSnapshotClass);
  // A legacy fixture (fixtures/<name>.lua, seed 002) may return its VM instead of a snapshot.
  const vm = vmSnap || labSnap ? null : rt.toObject(rt.L, -1, VmClass);
  const got = typeName(rt.L, -1);
  lua.lua_pop(rt.L, 1);
  if (runner.tests.length > 0) {
    fatalErrors.push({ message: `${displayPath}: a fixture declares no tests (found test \`${runner.tests[0]!.name}\`); put tests in a *.test.lua file` });
    return;
  }
  const snap = vmSnap ?? labSnap;
  if (!snap && !vm) {
    fatalErrors.push({ message: `${displayPath}: a fixture must end with \`return vm:snapshot()\` or \`return provium:snapshot()\`; it returned ${got}` });
    return;
  }
  try {
    const snapPath = snap ? snap.path : rt.rpc.call('vm.snapshot', { vmId: vm!.vmId }).path;
    rt.rpc.call('fixture.built', { kind: labSnap ? 'lab' : 'vm', path: snapPath });
  } catch (err) {
    fatalErrors.push({ message: `${displayPath}: ${(err as Error).message}` });
  }
}

function withLocation(location: { file: string; line: number } | undefined): { location?: { file: string; line: number } } {
  return location ? { location } : {};
}
