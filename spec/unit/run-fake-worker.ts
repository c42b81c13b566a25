// A stand-in for workers/file-worker.ts in the runner's unit tests: it reads directives from the
// "test file" instead of running Lua, emits the test events through the session port the way
// the real worker does, and returns a FileResult. Directives, one per line:
//   -- fake: pass NAME | fail NAME MESSAGE | skip NAME REASON | flaky NAME
//   -- fake: sleep MS | hang | exit CODE | throw MESSAGE | chunk_error MESSAGE
//   -- fake: barrier NAME COUNT TIMEOUT_MS   (lab.barrier over the real RPC; the test passes or fails)
//   -- fake: tagged NAME TAG                 (a test with meta.tags = {TAG}, subject to the selection)

import { readFileSync } from 'node:fs';
import { SyncCaller, sleepSync } from '../../src/lua/sync-call.js';
import type { FileResult, FileTask, TestResult } from '../../src/protocol/task.js';

export default function runFile(task: FileTask): FileResult {
  const caller = new SyncCaller(task.port, task.signalBuffer);
  const started = Date.now();
  const tests: TestResult[] = [];
  const result: FileResult = { file: task.file, displayPath: task.displayPath, tests, durationMs: 0 };
  const path = task.displayPath;
  const lines = readFileSync(task.file, 'utf8').split('\n');

  const record = (name: string, status: TestResult['status'], message?: string, extra: Partial<TestResult> = {}): void => {
    const meta = extra.meta ?? {};
    const t: TestResult = { name, status, log: [], durationMs: 1, meta, attempts: 1, flaky: false, ...extra };
    if (message !== undefined) t.message = message;
    if (task.listOnly) {
      // Listed, not run: a test is "passed" (would run) unless the selection skips it.
      tests.push({ ...t, status: status === 'skipped' ? 'skipped' : 'passed' });
      return;
    }
    caller.emit({ kind: 'test_started', payload: { path, name, meta, attempt: 1 } });
    if (status === 'passed') caller.emit({ kind: 'test_passed', payload: { path, name, duration_ns: 1e6, meta, attempt: t.attempts } });
    else if (status === 'failed') caller.emit({ kind: 'test_failed', payload: { path, name, duration_ns: 1e6, reason: message ?? '', console_excerpt: '', meta, attempt: 1 } });
    else caller.emit({ kind: 'test_skipped', payload: { path, name, reason: message ?? '', meta } });
    tests.push(t);
  };

  for (const line of lines) {
    const m = /^-- fake: (\w+)\s*(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, op, rest] = m as unknown as [string, string, string];
    const args = rest.split(' ');
    switch (op) {
      case 'pass':
        record(rest, 'passed');
        break;
      case 'fail':
        record(args[0]!, 'failed', args.slice(1).join(' '), { location: { file: path, line: 3 } });
        break;
      case 'skip':
        record(args[0]!, 'skipped', args.slice(1).join(' '));
        break;
      case 'flaky':
        record(rest, 'passed', undefined, { flaky: true, attempts: 2 });
        break;
      case 'tagged': {
        const meta = { tags: [args[1]!] };
        const excluded = task.selection.noTags.includes(args[1]!) || (task.selection.tags.length > 0 && !task.selection.tags.includes(args[1]!));
        if (excluded) record(args[0]!, 'skipped', 'filtered: tag', { meta });
        else record(args[0]!, 'passed', undefined, { meta });
        break;
      }
      case 'sleep':
        sleepSync(Number(rest));
        break;
      case 'hang': {
        caller.emit({ kind: 'test_started', payload: { path, name: 'hangs', meta: {}, attempt: 1 } });
        for (;;) {
          // A Lua loop that never yields: only terminating the thread stops it.
        }
      }
      case 'exit':
        caller.emit({ kind: 'test_started', payload: { path, name: 'exits', meta: {}, attempt: 1 } });
        process.exit(Number(rest));
        break;
      case 'throw':
        throw new Error(rest);
      case 'chunk_error':
        result.chunkError = { message: rest, location: { file: path, line: 1 } };
        break;
      case 'barrier': {
        const [name, count, timeoutMs] = args;
        try {
          caller.call('lab.barrier', { name: name!, count: Number(count), timeoutMs: Number(timeoutMs) });
          record(`barrier ${name}`, 'passed');
        } catch (err) {
          record(`barrier ${name}`, 'failed', (err as Error).message);
        }
        break;
      }
      default:
        throw new Error(`fake worker: unknown directive ${op}`);
    }
  }
  result.durationMs = Date.now() - started;
  return result;
}
