// The piscina worker entry of `provium repl`: a Lua state built exactly as a test file's (the
// same globals, the same broker session RPC), a setup chunk that binds `vm`, then the REPL until
// EOF. The file scope's VMs are torn down before the task settles; the main thread then closes
// the session, so nothing is left running however the REPL ended.

import { createFileRuntime } from '../src/lua/file-runner.js';
import { ReplLoop, replInterrupted } from '../src/lua/repl.js';
import type { LuaRuntime } from '../src/lua/runtime.js';
import { SyncCaller } from '../src/lua/sync-call.js';
import type { ReplTask } from '../src/protocol/repl.js';

export default async function runReplTask(task: ReplTask): Promise<{ ok: boolean }> {
  const caller = new SyncCaller(task.port, task.signalBuffer);
  caller.interrupted = replInterrupted(task.repl);
  let rt: LuaRuntime | undefined;
  let repl: ReplLoop | undefined;
  let ok = true;
  try {
    const selection = { includeSlow: true, tags: [], noTags: [], tagMeta: [], noTagMeta: [] };
    ({ rt } = createFileRuntime({ ...task, selection, retries: 0 }, caller, () => {}));
    repl = new ReplLoop(rt, task.repl);
    repl.makeEnv();
    if (task.banner !== '') repl.write(task.banner, 'stderr');
    const setupError = task.setup === '' ? null : repl.runSetup(task.setup);
    if (setupError !== null) {
      ok = false;
      repl.write(`provium repl: ${setupError}\n`, 'stderr');
    } else {
      repl.run();
    }
  } catch (err) {
    ok = false;
    repl?.write(`provium repl: internal error: ${(err as Error)?.stack ?? String(err)}\n`, 'stderr');
  } finally {
    const errors = rt?.fileScope?.close() ?? [];
    if (errors.length > 0) repl?.write(`provium repl: teardown: ${errors.join('; ')}\n`, 'stderr');
    task.repl.port.postMessage({ type: 'end' });
  }
  return { ok };
}
