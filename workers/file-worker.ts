// The piscina worker entry: one task = one test file in a fresh Lua state. Bindings block on the
// task's MessagePort (SyncCaller), so the work is synchronous inside; the function is async only
// because piscina expects a promise. The file's results go out as reports on that port, ending
// with exactly one `file_done`; what piscina gets back is only an acknowledgement.

import { runFile } from '../src/lua/file-runner.js';
import { replInterrupted } from '../src/lua/repl.js';
import { SyncCaller } from '../src/lua/sync-call.js';
import type { FileAck, FileTask } from '../src/protocol/task.js';

export default async function runFileTask(task: FileTask): Promise<FileAck> {
  const caller = new SyncCaller(task.port, task.signalBuffer);
  // --debug-on-fail: Ctrl-C in the REPL abandons the call it waits in.
  if (task.debug) caller.interrupted = replInterrupted(task.debug);
  let done = false;
  const report: Parameters<typeof runFile>[2] = (r) => {
    if (r.type === 'file_done') done = true;
    caller.report(r);
  };
  try {
    runFile(task, caller, report);
  } catch (err) {
    // runFile ends every file itself; this is the last line of defence.
    if (!done) report({ type: 'file_done', fatalErrors: [{ message: `worker error: ${(err as Error)?.stack ?? String(err)}` }] });
  }
  return { file: task.file };
}
