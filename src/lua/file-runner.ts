// One test file, start to end: a fresh Lua state with the Provium globals, the file's top-level
// chunk (loaded as `@<display path>`), its tests, and the file scope's teardown. Whatever happens
// the result comes back (never a throw): top-level errors become `chunkError` with file:line.

import { FileReset } from './file-reset.js';
import { readFileSync } from 'node:fs';
import { lua } from 'fengari';
import type { FileResult, FileTask } from '../protocol/task.js';
import { DryCaller } from './dry-caller.js';
import { locationFromMessage } from './errors.js';
import { installJson } from './json.js';
import { Lab, LabClass } from './lab.js';
import type { Caller } from './rpc.js';
import { LuaRuntime } from './runtime.js';
import { installSandbox } from './sandbox.js';
import { ResourceScope } from './scope.js';
import { TestRunner } from './test-runner.js';
import { key } from './values.js';

export type FileRunInput = Pick<FileTask, 'file' | 'displayPath' | 'roots' | 'selection' | 'retries' | 'listOnly'>;

export function runFile(task: FileRunInput, caller: Caller): FileResult {
  const started = performance.now();
  const result: FileResult = { file: task.file, displayPath: task.displayPath, tests: [], durationMs: 0 };
  let rt: LuaRuntime | undefined;
  let reset: FileReset | undefined;
  try {
    // 1. The state and its globals.
    rt = new LuaRuntime({
      caller: task.listOnly ? new DryCaller() : caller,
      file: task.file,
      displayPath: task.displayPath,
      roots: task.roots,
    });
    installSandbox(rt);
    installJson(rt);
    const runner = new TestRunner(rt, task);
    runner.install();
    rt.rootLab = new Lab(rt, 'provium', 'provium', null);
    rt.fileScope = new ResourceScope(rt, 'file');
    rt.currentScope = rt.fileScope;
    rt.push(LabClass, rt.rootLab);
    lua.lua_setglobal(rt.L, key('provium'));
    lua.lua_createtable(rt.L, 0, 0);
    rt.skipSentinelRef = rt.ref(-1);
    lua.lua_pop(rt.L, 1);

    // 2. The top-level chunk registers the tests (and may declare and boot file-scope VMs).
    let source: Uint8Array;
    try {
      source = new Uint8Array(readFileSync(task.file));
    } catch (err) {
      result.chunkError = { message: `cannot read ${task.displayPath}: ${(err as Error).message}` };
      return result;
    }
    const syntaxError = rt.load(source, task.displayPath);
    if (syntaxError !== null) {
      result.chunkError = { message: syntaxError, ...withLocation(locationFromMessage(syntaxError)) };
      return result;
    }
    const failure = rt.callProtected(0, 0);
    if (failure) {
      const inFile = failure.message.startsWith(`${task.displayPath}:`);
      result.chunkError = {
        message: inFile ? failure.message : `${failure.message}\n${failure.traceback}`,
        ...withLocation(failure.location ?? locationFromMessage(failure.message)),
      };
      if (task.listOnly) result.tests = runner.list();
      return result;
    }

    // 3. The tests, in declaration order.
    if (task.listOnly) {
      result.tests = runner.list();
      return result;
    }
    if (!rt.fileConfig.resetBetweenTests) {
      result.tests = runner.runAll();
      return result;
    }
    try {
      reset = FileReset.prepare(rt);
    } catch (err) {
      result.chunkError = { message: `${task.displayPath}: ${(err as Error).message}` };
      return result;
    }
    result.tests = runner.runAll(reset);
    return result;
  } catch (err) {
    result.chunkError = { message: `internal error while running ${task.displayPath}: ${(err as Error)?.stack ?? String(err)}` };
    return result;
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
      if (errors.length > 0 && !result.chunkError) result.chunkError = { message: `file teardown failed: ${errors.join('; ')}` };
    }
    result.durationMs = performance.now() - started;
  }
}

function withLocation(location: { file: string; line: number } | undefined): { location?: { file: string; line: number } } {
  return location ? { location } : {};
}
