// Dispatch (DESIGN §2, §6; STYLE "src/run imitates Dispatcher/JobDispatcher"). The Dispatcher
// owns the queue and the worker slots; `_runFile` is one job: one broker session, one piscina
// task, one ending. Every file ends exactly once, through `_finish`, however it ends: the worker
// returned, the file timed out (the worker is terminated and replaced by piscina), the worker
// crashed (piscina replaces it), or the run was interrupted. "Stopped" is checked again after
// every await.

import { setImmediate as nextTurn } from 'node:timers/promises';
import type { MessagePort } from 'node:worker_threads';
import type { Barriers } from '../broker/barriers.js';
import type { EventBus } from '../events/bus.js';
import type { AnyEvent } from '../protocol/events.js';
import { FileLedger } from './ledger.js';
import { statusOf, isFailure, type FileOutcome, type PlannedFile } from './outcome.js';
import type { FileResult, FileTask, TestSelection } from '../protocol/task.js';

/** What the dispatcher needs of the broker (src/broker/broker.ts implements it). */
export interface SessionBroker {
  openSession(file: { path: string; displayPath: string }): { sessionId: number; port: MessagePort; signalBuffer: SharedArrayBuffer };
  closeSession(sessionId: number): Promise<void>;
  consoleExcerpts?(sessionId: number): Promise<string>;
  close(): Promise<void>;
}

/** What the dispatcher needs of piscina. */
export interface WorkerPool {
  run(task: FileTask, options: { transferList: MessagePort[]; signal: AbortSignal }): Promise<FileResult>;
  destroy(): Promise<void>;
}

export interface DispatcherOptions {
  /** In dispatch order. */
  files: PlannedFile[];
  slots: number;
  broker: SessionBroker;
  pool: WorkerPool;
  bus: EventBus;
  barriers?: Barriers;
  /** Per-file wall-clock limit; 0 disables. */
  timeoutMs: number;
  failFast: boolean;
  task: { roots: (file: PlannedFile) => string[]; selection: TestSelection; retries: number; listOnly: boolean };
  /** Called once per file that ran (including interrupted ones), in completion order. */
  onFileEnd: (outcome: FileOutcome) => void;
}

/** Why a task's AbortSignal fired. */
class StopReason {
  constructor(
    readonly kind: 'timeout' | 'interrupt',
    readonly message: string,
  ) {}
}

type RunnerState = 'idle' | 'running' | 'stopping' | 'done';

export class Dispatcher {
  private readonly _queue: PlannedFile[];
  /** Files running now, by slot. */
  private readonly _running = new Map<number, { file: PlannedFile; abort: AbortController; ledger: FileLedger }>();
  /** Routes bus events to the ledger of their file (by display path and by absolute path). */
  private readonly _ledgers = new Map<string, FileLedger>();
  private _state: RunnerState = 'idle';
  private _failFastStopped = false;
  private _interrupted = false;
  private _unsubscribe: (() => void) | undefined;

  constructor(private readonly _opts: DispatcherOptions) {
    this._queue = [..._opts.files];
  }

  get slots(): number {
    return this._opts.slots;
  }

  /** Files never started because the run stopped (fail-fast, interrupt). */
  get notStarted(): number {
    return this._state === 'running' ? 0 : this._queue.length;
  }

  /** Files the dispatcher will still start. */
  queued(): number {
    return this._state === 'stopping' || this._state === 'done' ? 0 : this._queue.length;
  }

  get running(): number {
    return this._running.size;
  }

  get failFastStopped(): boolean {
    return this._failFastStopped;
  }

  get interrupted(): boolean {
    return this._interrupted;
  }

  /** The test each slot is running, for the progress display. */
  currentTest(slot: number): string | undefined {
    return this._running.get(slot)?.ledger.currentTest;
  }

  /** Runs every file (or until stopped). Never rejects. */
  async run(): Promise<void> {
    if (this._state !== 'idle') throw new Error('Dispatcher.run() called twice');
    this._state = 'running';
    this._unsubscribe = this._opts.bus.subscribe((event) => this._route(event));
    try {
      const slots = Math.max(1, Math.min(this._opts.slots, this._queue.length));
      await Promise.all(Array.from({ length: slots }, (_v, slot) => this._slotLoop(slot)));
    } finally {
      this._state = 'done';
      this._unsubscribe?.();
      this._opts.barriers?.scheduleChanged();
    }
  }

  /**
   * Stops dispatching. `interrupt` also aborts the running files (Ctrl-C); `fail-fast` lets them
   * finish. Idempotent; an interrupt after a fail-fast still aborts.
   */
  stop(kind: 'interrupt' | 'fail-fast'): void {
    if (kind === 'fail-fast') this._failFastStopped = true;
    if (kind === 'interrupt') {
      this._interrupted = true;
      for (const { abort } of this._running.values()) {
        if (!abort.signal.aborted) abort.abort(new StopReason('interrupt', 'the run was interrupted'));
      }
    }
    if (this._state === 'running') this._state = 'stopping';
    // The barriers' "queued" count just dropped to zero.
    this._opts.barriers?.scheduleChanged();
  }

  private _stopped(): boolean {
    return this._state !== 'running';
  }

  private async _slotLoop(slot: number): Promise<void> {
    while (!this._stopped()) {
      const file = this._queue.shift();
      if (!file) return;
      try {
        await this._runFile(file, slot);
      } catch (err) {
        // A bug in the runner itself: say so, and keep the other files going.
        process.stderr.write(`provium: internal error while running ${file.displayPath}: ${(err as Error)?.stack ?? String(err)}\n`);
        this._running.delete(slot);
      }
    }
  }

  private _route(event: AnyEvent): void {
    const payload = event.payload as { path?: unknown };
    if (typeof payload.path !== 'string') return;
    this._ledgers.get(payload.path)?.observe(event);
  }

  /** One job. Never throws: every path ends in `_finish`. */
  private async _runFile(file: PlannedFile, slot: number): Promise<void> {
    const { bus, broker, pool } = this._opts;
    const started = performance.now();
    const ledger = new FileLedger(file.displayPath);
    const abort = new AbortController();

    // 1. Open the session and announce it: to the barriers (what runs), then the bus. Both
    //    happen in the same synchronous step as the dequeue, so the barriers never see a file
    //    that is neither queued nor running.
    let session: ReturnType<SessionBroker['openSession']>;
    try {
      session = broker.openSession({ path: file.file, displayPath: file.displayPath });
    } catch (err) {
      this._finish(file, slot, started, ledger, {
        kind: 'crashed',
        message: `could not open a broker session: ${(err as Error).message}`,
        workerLost: false,
      });
      return;
    }
    this._opts.barriers?.sessionStarted(session.sessionId, file.displayPath);
    this._ledgers.set(file.displayPath, ledger);
    this._ledgers.set(file.file, ledger);
    this._running.set(slot, { file, abort, ledger });
    bus.emit('file_dispatched', { path: file.displayPath, reservation: file.declaredClaim ?? { memory_bytes: 0, cpus: 0 }, worker: slot });

    // 2. The per-file timeout aborts the task; piscina rejects at once and terminates the worker.
    const timer =
      this._opts.timeoutMs > 0
        ? setTimeout(() => {
            abort.abort(new StopReason('timeout', `file timed out after ${formatSeconds(this._opts.timeoutMs)} (--timeout); its worker was replaced`));
          }, this._opts.timeoutMs)
        : undefined;
    // An interrupt that came between the dequeue and here.
    if (this._interrupted) abort.abort(new StopReason('interrupt', 'the run was interrupted'));

    // 3. Run the task.
    const task: FileTask = {
      file: file.file,
      displayPath: file.displayPath,
      roots: this._opts.task.roots(file),
      selection: this._opts.task.selection,
      retries: this._opts.task.retries,
      listOnly: this._opts.task.listOnly,
      port: session.port,
      signalBuffer: session.signalBuffer,
    };
    let ending: Ending;
    try {
      const result = await pool.run(task, { transferList: [session.port], signal: abort.signal });
      ending = isFileResult(result)
        ? { kind: 'result', result }
        : { kind: 'crashed', message: `the worker returned no file result (got ${typeof result})`, workerLost: false };
    } catch (err) {
      const reason = abort.signal.reason;
      if (abort.signal.aborted && reason instanceof StopReason) {
        ending = { kind: reason.kind === 'timeout' ? 'timed_out' : 'interrupted', message: reason.message, workerLost: true };
      } else {
        ending = { kind: 'crashed', message: crashMessage(err), workerLost: true };
      }
    } finally {
      if (timer) clearTimeout(timer);
    }

    // 4. Let events the worker posted before it returned arrive (their port is not ordered with
    //    piscina's), and collect the console tails while the VMs still exist.
    await nextTurn();
    await nextTurn();
    let consoleExcerpt = '';
    if (ending.kind === 'timed_out' || ending.kind === 'crashed') {
      consoleExcerpt = await broker.consoleExcerpts?.(session.sessionId).catch(() => '') ?? '';
    }

    // 5. Tear the session down (VMs, streams, claims, barrier waits), however the file ended.
    try {
      await broker.closeSession(session.sessionId);
    } catch (err) {
      process.emitWarning(`closing the session of ${file.displayPath} failed: ${(err as Error).message}`);
    }
    this._opts.barriers?.sessionEnded(session.sessionId);
    this._running.delete(slot);
    this._finish(file, slot, started, ledger, ending, consoleExcerpt);
  }

  /** The one way a file ends: status, missing events, file_completed, the callback, fail-fast. */
  private _finish(file: PlannedFile, slot: number, started: number, ledger: FileLedger, ending: Ending, consoleExcerpt = ''): void {
    const { bus } = this._opts;
    const durationMs = performance.now() - started;
    let outcome: FileOutcome;
    if (ending.kind === 'result') {
      const result = ending.result;
      ledger.reconcile(bus, result);
      outcome = { file, status: statusOf(result), result, durationMs, worker: slot };
    } else if (ending.kind === 'interrupted') {
      const result = ledger.abandon(bus, ending.message, '', durationMs);
      outcome = { file, status: 'interrupted', result, durationMs, worker: slot, error: ending.message };
    } else {
      const result = ledger.abandon(bus, ending.message, consoleExcerpt, durationMs);
      outcome = { file, status: ending.kind, result, durationMs, worker: slot, error: ending.message };
    }
    this._ledgers.delete(file.displayPath);
    this._ledgers.delete(file.file);
    bus.emit('file_completed', { path: file.displayPath, status: outcome.status, duration_ns: Math.round(durationMs * 1e6) });
    if (ending.kind !== 'result' && ending.workerLost) {
      bus.emit('worker_replaced', { path: file.displayPath, reason: ending.message });
    }
    // Stop first, so the callback already sees the run as stopped (and what is left to start).
    if (this._opts.failFast && isFailure(outcome.status) && !this._failFastStopped) this.stop('fail-fast');
    try {
      this._opts.onFileEnd(outcome);
    } catch (err) {
      process.emitWarning(`reporting ${file.displayPath} failed: ${(err as Error).message}`);
    }
  }
}

type Ending =
  | { kind: 'result'; result: FileResult }
  /** `workerLost`: piscina terminated (or lost) the worker thread and starts a fresh one. */
  | { kind: 'timed_out' | 'crashed' | 'interrupted'; message: string; workerLost: boolean };

function isFileResult(value: unknown): value is FileResult {
  const r = value as FileResult | null;
  return typeof r === 'object' && r !== null && Array.isArray(r.tests) && r.tests.every((t) => typeof t?.name === 'string' && typeof t.status === 'string');
}

function crashMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // piscina: "worker exited with code: 1" (process.exit, a fatal error in the thread).
  if (/worker exited/i.test(message)) return `the worker exited unexpectedly (${message}); it was replaced`;
  return `the worker crashed: ${message}`;
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(1)}s`;
}
