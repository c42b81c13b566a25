// A stand-in for workers/file-worker.ts in the runner's unit tests: it reads directives from the
// "test file" instead of running Lua, and reports the file on the session port the way the real
// worker does (tests_declared, test_begin/test_end, file_done from a finally). Directives:
//   -- fake: pass NAME | fail NAME MESSAGE | skip NAME REASON | flaky NAME
//   -- fake: sleep MS | hang | exit CODE | throw MESSAGE | chunk_error MESSAGE
//   -- fake: declare NAME                    (declared, never run: not run when the file ends first)
//   -- fake: log TEXT                        (a t:log line of the next test)
//   -- fake: barrier NAME COUNT TIMEOUT_MS   (lab.barrier over the real RPC; the test passes or fails)
//   -- fake: tagged NAME TAG                 (a test with meta.tags = {TAG}, subject to the selection)

import { readFileSync } from 'node:fs';
import { SyncCaller, sleepSync } from '../../src/lua/sync-call.js';
import type { DeclaredTest, FatalError, FileAck, FileTask, TestResult } from '../../src/protocol/task.js';

export default function runFile(task: FileTask): FileAck {
  const caller = new SyncCaller(task.port, task.signalBuffer);
  const fatalErrors: FatalError[] = [];
  const path = task.displayPath;
  const lines = readFileSync(task.file, 'utf8').split('\n');

  // Tests the directives name, declared up front as the real worker does after the top level.
  const declared: DeclaredTest[] = [];
  for (const line of lines) {
    const m = /^-- fake: (pass|fail|skip|flaky|tagged|declare|hang|exit)\s*(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === 'hang' || m[1] === 'exit') {
      declared.push({ name: m[1] === 'hang' ? 'hangs' : 'exits', meta: {}, location: { file: path, line: 1 }, skipReason: null });
      continue;
    }
    const words = m[2]!.split(' ');
    const name = m[1] === 'pass' || m[1] === 'flaky' || m[1] === 'declare' ? m[2]! : words[0]!;
    const tag = m[1] === 'tagged' ? words[1]! : undefined;
    declared.push({
      name,
      meta: tag ? { tags: [tag] } : {},
      location: { file: path, line: 1 },
      skipReason: tag !== undefined && excludedBy(task, tag) ? 'filtered: tag' : null,
    });
  }
  caller.report({ type: 'tests_declared', tests: declared });

  let pendingLog: string[] = [];
  const record = (name: string, status: TestResult['status'], message?: string, extra: Partial<TestResult> = {}): void => {
    const meta = extra.meta ?? {};
    const t: TestResult = { name, status, log: pendingLog, durationMs: 1, meta, attempts: 1, flaky: false, ...extra };
    pendingLog = [];
    if (message !== undefined) t.message = message;
    caller.report({ type: 'test_begin', name });
    caller.report({ type: 'test_end', test: t });
  };

  try {
  for (const line of lines) {
    const m = /^-- fake: (\w+)\s*(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, op, rest] = m as unknown as [string, string, string];
    const args = rest.split(' ');
    switch (op) {
      case 'declare':
        break;
      case 'log':
        pendingLog.push(rest);
        break;
      case 'pass':
        record(rest, 'passed');
        break;
      case 'fail':
        record(args[0]!, 'failed', args.slice(1).join(' '), { location: { file: path, line: 2 }, failureLocation: { file: path, line: 3 } });
        break;
      case 'skip':
        record(args[0]!, 'skipped', args.slice(1).join(' '));
        break;
      case 'flaky':
        record(rest, 'passed', undefined, { flaky: true, attempts: 2 });
        break;
      case 'tagged': {
        const meta = { tags: [args[1]!] };
        if (excludedBy(task, args[1]!)) record(args[0]!, 'skipped', 'filtered: tag', { meta });
        else record(args[0]!, 'passed', undefined, { meta });
        break;
      }
      case 'sleep':
        sleepSync(Number(rest));
        break;
      case 'hang': {
        caller.report({ type: 'test_begin', name: 'hangs' });
        for (;;) {
          // A Lua loop that never yields: only terminating the thread stops it.
        }
      }
      case 'exit':
        caller.report({ type: 'test_begin', name: 'exits' });
        process.exit(Number(rest));
        break;
      case 'throw':
        throw new Error(rest);
      case 'chunk_error':
        fatalErrors.push({ message: rest, location: { file: path, line: 1 } });
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
  } finally {
    caller.report({ type: 'file_done', fatalErrors });
  }
  return { file: task.file };
}

function excludedBy(task: FileTask, tag: string): boolean {
  return task.selection.noTags.includes(tag) || (task.selection.tags.length > 0 && !task.selection.tags.includes(tag));
}
