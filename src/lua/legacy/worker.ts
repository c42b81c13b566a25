// vm:spawn(opts?) of seed 002: a guest worker (worker.ts's GuestWorker, a process forked from the
// agent with its own pid and credentials) answering the legacy target methods besides the current
// worker ones. Its `kill()` is the legacy one: it ends the worker (close: TERM to its processes,
// then exit and reap), not the current worker:kill(sig) broadcast.
//
// {thread = true} is refused: the agent is one single-threaded poll loop whose allocator, request
// table and handles are not shared safely with a clone(CLONE_THREAD) thread.

import { R, type Args, type LuaClass } from '../args.js';
import type { VmHandle } from '../guest.js';
import { startWorker, WorkerClass, type GuestWorker } from '../worker.js';
import { kLegacyTargetMethods } from './target.js';

export const LegacyWorkerClass: LuaClass<GuestWorker> = {
  // Its own metatable name: one name per class (runtime.ts registers a metatable per name).
  typeName: 'LegacyWorker',
  selfName: 'worker',
  toString: WorkerClass.toString,
  methods: {
    ...WorkerClass.methods,
    ...kLegacyTargetMethods,
    kill(w) {
      w.close();
      return 0;
    },
  },
};

/** vm:spawn(opts?) → a worker; only `thread = false` (the default) is supported. */
export function legacySpawnMethod(vm: VmHandle, a: Args): number {
  const o = a.options(1, 'opts', { thread: R.bool });
  a.noMoreThan(1, `${a.label}(opts?)`);
  if (o.thread) {
    throw a.error(
      'threads are not supported: {thread = true} would run a clone(CLONE_THREAD) thread inside the single-threaded agent, which cannot share its state safely; use vm:spawn() (a separate guest process with its own pid and credentials)',
    );
  }
  a.rt.push(LegacyWorkerClass, startWorker(vm, a), a.L);
  return 1;
}
