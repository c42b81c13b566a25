// The piscina pool that runs test files: one thread per slot (-j), one task per file. The worker
// module is given per task rather than to the pool: piscina preloads a pool-level filename while a
// thread boots, and a thread that fails to boot makes piscina stop starting threads (queued tasks
// would then wait forever). Per task, a broken worker module fails each file with its error.

import { access } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { FileResult, FileTask } from '../protocol/task.js';
import type { WorkerPool } from './dispatcher.js';
import { UsageError } from './errors.js';

/** dist/workers/file-worker.js, next to this module's compiled form (dist/src/run/pool.js). */
export function defaultWorkerFile(): string {
  return fileURLToPath(new URL('../../workers/file-worker.js', import.meta.url));
}

export async function checkWorkerFile(workerFile: string): Promise<void> {
  try {
    await access(workerFile);
  } catch {
    throw new UsageError(`the test worker ${workerFile} is missing; build it with \`npm run build\``);
  }
}

export function createWorkerPool(opts: { threads: number; workerFile: string }): WorkerPool {
  const piscina = new Piscina<FileTask, FileResult>({
    minThreads: opts.threads,
    maxThreads: opts.threads,
    // Threads live for the run; the pool is destroyed at its end.
    idleTimeout: 60_000,
    // Only -j files are ever in flight: the dispatcher keeps the queue.
    maxQueue: opts.threads * 2,
  });
  return {
    run: (task, options) => piscina.run(task, { filename: opts.workerFile, transferList: options.transferList, signal: options.signal }),
    destroy: () => piscina.destroy(),
  };
}
