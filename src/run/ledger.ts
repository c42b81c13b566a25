// The test events of one running file, as seen on the bus. The worker emits them; the runner
// needs them for three things the worker cannot do itself:
//   1. when the worker dies or times out, the test it was running must still get its terminal
//      event (exactly one per test, reference §4.6) and the report must show what had finished;
//   2. events travel on the session port and the result on piscina's port, which are not
//      ordered with each other: any event lost when the session closes is filled in from the
//      result, so every test still gets one `test_started` and one terminal event;
//   3. the progress display wants the current test of each worker.

import type { EventBus } from '../events/bus.js';
import type { AnyEvent, MetaMap } from '../protocol/events.js';
import type { FileResult, TestResult } from '../protocol/task.js';

interface Seen {
  name: string;
  meta: MetaMap;
  started: boolean;
  /** Of the latest test_started (retries start a test again). */
  attempt: number;
  /** The terminal event, once seen. */
  terminal?: TestResult;
  startedAtMs: number;
}

export class FileLedger {
  private readonly _tests = new Map<string, Seen>();
  /** The test that started and has not ended (a file runs its tests one at a time). */
  private _current: string | undefined;

  constructor(readonly path: string) {}

  get currentTest(): string | undefined {
    return this._current;
  }

  /** Feed one bus event that belongs to this file. */
  observe(event: AnyEvent): void {
    switch (event.kind) {
      case 'test_started': {
        const seen = this._seen(event.payload.name, event.payload.meta);
        seen.started = true;
        seen.attempt = event.payload.attempt ?? 1;
        seen.terminal = undefined;
        seen.startedAtMs = event.ts / 1e6;
        this._current = event.payload.name;
        return;
      }
      case 'test_passed':
      case 'test_failed':
      case 'test_skipped': {
        const p = event.payload;
        const seen = this._seen(p.name, p.meta);
        const status = event.kind === 'test_passed' ? 'passed' : event.kind === 'test_failed' ? 'failed' : 'skipped';
        const result: TestResult = {
          name: p.name,
          status,
          log: [],
          durationMs: 'duration_ns' in p ? p.duration_ns / 1e6 : 0,
          meta: p.meta,
          attempts: 'attempt' in p ? p.attempt : 1,
          flaky: false,
        };
        if (event.kind === 'test_failed') {
          result.message = event.payload.reason;
          if (event.payload.console_excerpt) result.consoleExcerpt = event.payload.console_excerpt;
        } else if (event.kind === 'test_skipped') {
          result.message = event.payload.reason;
        }
        seen.terminal = result;
        if (this._current === p.name) this._current = undefined;
        return;
      }
      case 'test_flaky': {
        const seen = this._tests.get(event.payload.name);
        if (seen?.terminal) seen.terminal.flaky = true;
        return;
      }
      default:
        return;
    }
  }

  /**
   * The worker died or timed out: fail the test it was in (emitting its terminal event) and
   * rebuild a result from what finished. `reason` says what happened to the file.
   */
  abandon(bus: EventBus, reason: string, consoleExcerpt: string, durationMs: number): FileResult {
    const tests: TestResult[] = [];
    for (const seen of this._tests.values()) {
      if (seen.terminal) {
        tests.push(seen.terminal);
        continue;
      }
      if (!seen.started) continue;
      const elapsedMs = Math.max(0, performance.timeOrigin + performance.now() - seen.startedAtMs);
      bus.emit('test_failed', {
        path: this.path,
        name: seen.name,
        duration_ns: Math.round(elapsedMs * 1e6),
        reason,
        console_excerpt: consoleExcerpt,
        meta: seen.meta,
        attempt: seen.attempt,
      });
      tests.push({
        name: seen.name,
        status: 'failed',
        message: reason,
        log: [],
        durationMs: elapsedMs,
        meta: seen.meta,
        consoleExcerpt,
        attempts: seen.attempt,
        flaky: false,
      });
    }
    this._current = undefined;
    const result: FileResult = { file: this.path, displayPath: this.path, tests, durationMs };
    // Outside any test (file-scope code): the file itself carries the reason.
    if (!tests.some((t) => t.status === 'failed')) result.chunkError = { message: reason };
    return result;
  }

  /** Emits whatever the bus missed for the tests of a returned result (see 2. above). */
  reconcile(bus: EventBus, result: FileResult): void {
    for (const test of result.tests) {
      const seen = this._tests.get(test.name);
      if (seen?.terminal) continue;
      if (!seen?.started) bus.emit('test_started', { path: this.path, name: test.name, meta: test.meta, attempt: 1 });
      const duration_ns = Math.round(test.durationMs * 1e6);
      if (test.status === 'passed') {
        bus.emit('test_passed', { path: this.path, name: test.name, duration_ns, meta: test.meta, attempt: test.attempts });
      } else if (test.status === 'failed') {
        bus.emit('test_failed', {
          path: this.path,
          name: test.name,
          duration_ns,
          reason: test.message ?? 'failed',
          console_excerpt: test.consoleExcerpt ?? '',
          meta: test.meta,
          attempt: test.attempts,
        });
      } else {
        bus.emit('test_skipped', { path: this.path, name: test.name, reason: test.message ?? 'skipped', meta: test.meta });
      }
    }
  }

  private _seen(name: string, meta: MetaMap): Seen {
    let seen = this._tests.get(name);
    if (!seen) {
      seen = { name, meta, started: false, attempt: 1, startedAtMs: 0 };
      this._tests.set(name, seen);
    }
    return seen;
  }
}
