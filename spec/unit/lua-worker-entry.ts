// Test-only worker entry: receives one FileTask, runs it through the real piscina entry, posts
// the FileResult back. The fake broker (lua-fake-broker.ts) answers on the task's port.

import { parentPort } from 'node:worker_threads';
import runFileTask from '../../workers/file-worker.js';
import type { FileTask } from '../../src/protocol/task.js';

parentPort!.once('message', (task: FileTask) => {
  void runFileTask(task).then((result) => parentPort!.postMessage(result));
});
