// Dispatch (DESIGN §2, §6; STYLE "src/run imitates Dispatcher/JobDispatcher"). The Dispatcher
// owns the queue and the worker slots; `_runFile` is one job: one broker session, one piscina
// task, one FileJob that owns the file's results, one ending. Every file ends exactly once,
// through `_finish`, however it ends: the worker acknowledged the task, the file timed out (the
// worker is terminated and replaced by piscina), the worker crashed (piscina replaces it), or the
// run was interrupted. "Stopped" is checked again after every await.

import type { MessagePort } from 'node:worker_threads';
import type { Broker } from '../broker/broker.js';
import type { EventBus } from '../events/bus.js';
import type { ReplChannel } from '../protocol/repl.js';
import type { FileAck, FileTask, TestSelection } from '../protocol/task.js';
import { FileJob, type FileEnding } from './file-job.js';
import { statusOf, isFailure, type FileOutcome, type PlannedFile } from './outcome.js';
import type { Reporter } from './reporter.js';

/** What the dispatcher needs of the broker: its public session interface (src/broker/broker.ts). */
export type SessionBroker = Pick<Broker, 'openSession' | 'drainSession' | 'closeSession' | 'setScheduler' | 'scheduleChanged' | 'close' | 'seed'> &
  Partial<Pick<Broker, 'consoleExcerpts' | 'poolState' | 'setFixtureBuilder' | 'reserve' | 'dispatched' | 'prewarm' | 'waitingBarriers'>>;

/** What the dispatcher needs of piscina. */
export interface WorkerPool {
  run(task: FileTask, options: { transferList: MessagePort[]; signal: AbortSignal }): Promise<FileAck>;
  destroy(): Promise<void>;
}

export interface DispatcherOptions {
  /** In dispatch order. */
  files: PlannedFile[];
  slots: number;
  broker: SessionBroker;
  pool: WorkerPool;
  bus: EventBus;
  /** Receives every file's and test's begin and end, from the file's FileJob. */
  reporter: Reporter;
  /** Per-file wall-clock limit; 0 disables. */
  timeoutMs: number;
  failFast: boolean;
  task: {
    roots: (file: PlannedFile) => string[];
    selection: TestSelection;
    retries: number;
    listOnly: boolean;
    /** --debug-on-fail: a REPL channel for the file's worker (given its session's signal buffer); closed when the file ends. */
    debugChannel?: (sessionSignal: SharedArrayBuffer) => { channel: ReplChannel; close(): void };
    /** --keep-failed DIR. */
    keepFailed?: string;
  };
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
  private readonly _running = new Map<number, { file: PlannedFile; abort: AbortController }>();
  private _state: RunnerState = 'idle';
  private _failFastStopped = false;
  private _interrupted = false;

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

  /** Runs every file (or until stopped). Never rejects. */
  async run(): Promise<void> {
    if (this._state !== 'idle') throw new Error('Dispatcher.run() called twice');
    this._state = 'running';
    try {
      const slots = Math.max(1, Math.min(this._opts.slots, this._queue.length));
      await Promise.all(Array.from({ length: slots }, (_v, slot) => this._slotLoop(slot)));
    } finally {
      this._state = 'done';
      this._opts.broker.scheduleChanged();
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
    this._opts.broker.scheduleChanged();
  }

  private _stopped(): boolean {
    return this._state !== 'running';
  }

  private async _slotLoop(slot: number): Promise<void> {
    while (!this._stopped()) {
      const file = this._next();
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

  /**
   * The next file: the queue's order (slowest first), except that a file naming a barrier that
   * running files wait at goes first. Otherwise those files could wait for their whole timeout
   * while the other party sits at the end of the queue behind every slower file.
   */
  private _next(): PlannedFile | undefined {
    const waiting = this._opts.broker.waitingBarriers?.() ?? [];
    if (waiting.length > 0) {
      const i = this._queue.findIndex((f) => f.barriers?.some((b) => waiting.includes(b)));
      if (i > 0) return this._queue.splice(i, 1)[0];
    }
    return this._queue.shift();
  }

  /** One job. Never throws: every path ends in `_finish`. */
  private async _runFile(file: PlannedFile, slot: number): Promise<void> {
    const { broker, pool } = this._opts;
    const started = performance.now();
    const job = new FileJob(file, slot, this._opts.bus, this._opts.reporter);
    const abort = new AbortController();

    // 1. Open the session (the broker announces it to the barriers in this same synchronous step
    //    as the dequeue, so they never see a file that is neither queued nor running); its port
    //    is the file's one result channel, read by the job.
    let session: ReturnType<SessionBroker['openSession']>;
    try {
      session = broker.openSession({ path: file.file, displayPath: file.displayPath }, (report) => job.onReport(report));
    } catch (err) {
      this._finish(job, started, { kind: 'crashed', message: `could not open a broker session: ${(err as Error).message}` }, false);
      return;
    }
    this._running.set(slot, { file, abort });
    // The file's literal lab:claim is reserved before dispatch (file_blocked while it waits), so
    // file_dispatched carries it; one that can never fit is left to the file's lab:claim to report.
    const claim = file.declaredClaim;
    let reservation = { memory_bytes: 0, cpus: 0 };
    if (claim && (claim.memory_bytes > 0 || claim.cpus > 0) && broker.reserve) {
      try {
        await broker.reserve(session.sessionId, claim, abort.signal);
        reservation = { ...claim };
      } catch {
        // Cancelled (interrupt) or never fits: dispatch without it; the checks below see an interrupt.
      }
    }
    if (this._interrupted && !abort.signal.aborted) abort.abort(new StopReason('interrupt', 'the run was interrupted'));
    broker.dispatched?.(session.sessionId);
    job.begin(reservation);

    // 2. The per-file timeout aborts the task; piscina rejects at once and terminates the worker.
    const timer =
      this._opts.timeoutMs > 0
        ? setTimeout(() => {
            abort.abort(new StopReason('timeout', `file timed out after ${formatSeconds(this._opts.timeoutMs)} (--timeout); its worker was replaced`));
          }, this._opts.timeoutMs)
        : undefined;
    // An interrupt that came between the dequeue and here.
    if (this._interrupted) abort.abort(new StopReason('interrupt', 'the run was interrupted'));

    // 3. Run the task. Its result is only an acknowledgement: the file's results are the reports.
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
    const debug = this._opts.task.debugChannel?.(session.signalBuffer);
    if (debug) task.debug = debug.channel;
    if (this._opts.task.keepFailed !== undefined) task.keepFailed = this._opts.task.keepFailed;
    let ending: FileEnding;
    let workerLost = false;
    try {
      await pool.run(task, { transferList: debug ? [session.port, debug.channel.port] : [session.port], signal: abort.signal });
      ending = { kind: 'acknowledged' };
    } catch (err) {
      workerLost = true;
      const reason = abort.signal.reason;
      if (abort.signal.aborted && reason instanceof StopReason) {
        ending = { kind: reason.kind === 'timeout' ? 'timed_out' : 'interrupted', message: reason.message };
      } else {
        ending = { kind: 'crashed', message: crashMessage(err) };
      }
    } finally {
      if (timer) clearTimeout(timer);
      debug?.close();
    }

    // 4. Everything the worker posted before its task settled is in the port's queue: take it
    //    now (the port is not ordered with piscina's), then the console tails while the VMs
    //    still exist.
    broker.drainSession(session.sessionId);
    let consoleExcerpt = '';
    if (ending.kind === 'timed_out' || ending.kind === 'crashed') {
      consoleExcerpt = (await broker.consoleExcerpts?.(session.sessionId).catch(() => '')) ?? '';
    }

    // 5. Tear the session down (VMs, streams, claims, barrier waits), however the file ended.
    try {
      await broker.closeSession(session.sessionId);
    } catch (err) {
      process.emitWarning(`closing the session of ${file.displayPath} failed: ${(err as Error).message}`);
    }
    this._running.delete(slot);
    this._finish(job, started, ending, workerLost, consoleExcerpt);
  }

  /** The one way a file ends: its job closes its tests, file_completed, the callback, fail-fast. */
  private _finish(job: FileJob, started: number, ending: FileEnding, workerLost: boolean, consoleExcerpt = ''): void {
    const { bus } = this._opts;
    const file = job.file;
    const durationMs = performance.now() - started;
    const result = job.finish(ending, durationMs, consoleExcerpt);
    const status = ending.kind === 'acknowledged' ? statusOf(result) : ending.kind;
    const outcome: FileOutcome = { file, status, result, durationMs, worker: job.slot };
    if (ending.kind !== 'acknowledged') outcome.error = ending.message;
    bus.emit('file_completed', {
      path: file.displayPath,
      status,
      duration_ns: Math.round(durationMs * 1e6),
      fatal_errors: result.fatalErrors.map((e) => ({ message: e.message, location: e.location ?? null })),
    });
    if (ending.kind !== 'acknowledged' && workerLost) {
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

function crashMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // piscina: "worker exited with code: 1" (process.exit, a fatal error in the thread).
  if (/worker exited/i.test(message)) return `the worker exited unexpectedly (${message}); it was replaced`;
  return `the worker crashed: ${message}`;
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(1)}s`;
}
