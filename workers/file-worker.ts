// The piscina worker entry: one task = one test file in a fresh Lua state. Bindings block on the
// task's MessagePort (SyncCaller), so the work is synchronous inside; the function is async only
// because piscina expects a promise. It never throws: every failure is in the FileResult.

import { SyncCaller } from '../src/lua/sync-call.js';
import { runFile } from '../src/lua/file-runner.js';
import type { FileResult, FileTask } from '../src/protocol/task.js';

export default async function runFileTask(task: FileTask): Promise<FileResult> {
  try {
    return runFile(task, new SyncCaller(task.port, task.signalBuffer));
  } catch (err) {
    // runFile catches everything it can; this is the last line of defence.
    return {
      file: task.file,
      displayPath: task.displayPath,
      chunkError: { message: `worker error: ${(err as Error)?.stack ?? String(err)}` },
      tests: [],
      durationMs: 0,
    };
  }
}
