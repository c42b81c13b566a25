// The run controller: from parsed options to an exit code (reference §2.7, issue 4). Steps:
//   1. outputs (human stream, progress or plain, JSON, JUnit, event sinks) and the plan;
//   2. run_started and file_discovered for every file, before any dispatch;
//   3. resource pool, barriers, broker and piscina; dispatch;
//   4. reports, rerun state, timing record, run_finished; tear everything down, however the run
//      ended (Ctrl-C included: what finished is reported, then exit 130).

import { randomBytes } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import { availableParallelism, totalmem } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { sizePool, type BrokerOptions } from '../broker/broker.js';
import type { ProviumConfig } from '../config/config.js';
import { EventBus } from '../events/bus.js';
import { attachFileSink, attachSocketSink, attachStreamSink, type EventSinkHandle } from '../events/sinks.js';
import { EVENTS_PROTOCOL_VERSION, type AnyEvent } from '../protocol/events.js';
import type { TestSelection } from '../protocol/task.js';
import { Dispatcher, type SessionBroker, type WorkerPool } from './dispatcher.js';
import { fixtureBuilder } from './fixture-builds.js';
import { displayPathOf } from './discovery.js';
import { ExitCode, isFailure, summarize, type FileOutcome, type RunSummary } from './outcome.js';
import { planOptionsOf, planRun, scanStatics, taskRoots } from './plan.js';
import { ReportWriteError, type RunOutputs } from './reporter.js';
import { ReplHost } from './repl-host.js';
import { readRerunState, writeRerunState } from './rerun.js';
import type { ShardSpec } from './shard.js';
import { mergeTimings, writeTimings } from './timings.js';

/** The verbosity of the human text output. */
export type Verbosity = 'quiet' | 'normal' | 'verbose';

/** A stream human output may go to (a TTY or not). */
export interface OutputStream {
  write(chunk: string): boolean;
  isTTY?: boolean;
  columns?: number;
}

export interface RunOptions {
  paths: string[];
  config: ProviumConfig;
  filters: string[];
  since?: string;
  rerunFailed: boolean;
  rerunStatePath: string;
  selection: TestSelection;
  shard: ShardSpec | null;
  timingsPath?: string;
  /** Also write this run's updated timing record here, sharded or not (CI carries it between jobs). */
  saveTimingsPath?: string;
  /** -j; default: what the resource pool allows. */
  jobs?: number;
  memoryBytes?: number;
  cpus?: number;
  cpuOvercommit: number;
  /** Per file; 0 disables. */
  timeoutMs: number;
  /** The seed of random fault decisions (--seed); drawn at random when absent. */
  seed?: bigint;
  retries: number;
  failFast: boolean;
  /** Keep restored spares running for the next boots (--no-warm-pool: false). */
  warmPool?: boolean;
  verbosity: Verbosity;
  json: boolean;
  junitPath?: string;
  /** false with --no-progress. */
  progress: boolean;
  /** --html DIR: a self-contained index.html with the summary, failures and timeline. */
  htmlDir?: string;
  saveEvents?: string;
  eventsStdout: boolean;
  eventsSocket?: string;
  /** --debug-on-fail: a failed test opens a REPL on this terminal, its VMs still up (one file at a time). */
  debugOnFail?: boolean;
  /** --keep-failed DIR: each failed test's consoles, dmesg, processes and a snapshot of its VMs. */
  keepFailedDir?: string;
  /** --coverage: the outcomes by this meta key, after the summary. */
  coverageBy?: string;
}

export interface RunIO {
  /** Read only by a --debug-on-fail REPL (default process.stdin). */
  stdin?: Readable & { isTTY?: boolean };
  stdout: Writable & OutputStream;
  stderr: Writable & OutputStream;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

export interface RunDeps {
  createBroker(opts: BrokerOptions): SessionBroker;
  createWorkerPool(opts: { threads: number; workerFile: string }): WorkerPool;
  /** The progress display and the text, JSON and JUnit reporters (src/report/outputs.ts). */
  createReporters(options: RunOptions, io: RunIO): RunOutputs;
  workerFile: string;
  /** Environment checks before anything starts; throws a UsageError naming the fix. */
  preflight?(config: ProviumConfig): Promise<void>;
  /** The accelerator verdict for run_started and the header. */
  accel?(): Promise<string>;
  /** Host memory and cpus for the pool defaults. */
  host?(): { memoryBytes: number; cpus: number };
  /** Install SIGINT/SIGTERM handlers (false in unit tests, which call `interrupt` instead). */
  handleSignals?: boolean;
  /** Called on a second Ctrl-C, before the process exits at once. */
  forceKill?(): void;
  /** Receives the controller's interrupt function (tests use it to simulate Ctrl-C). */
  onStart?(control: { interrupt(): void }): void;
  /** Sees every event of the run (--watch relays them to an --events-socket that outlives the run). */
  onEvent?(event: AnyEvent): void;
}

const kPoolStateIntervalMs = 1000;
const kFallbackMemoryBytes = 8 * 1024 ** 3;
/** After a second Ctrl-C: how long the reports may take before the process exits without them. */
const kForcedReportsMs = 5000;

export function hostResources(): { memoryBytes: number; cpus: number } {
  const mem = totalmem();
  const cpus = availableParallelism();
  return { memoryBytes: mem > 0 ? Math.floor(mem * 0.8) : kFallbackMemoryBytes, cpus: cpus > 0 ? cpus : 8 };
}

async function attachSinks(options: RunOptions, bus: EventBus, io: RunIO): Promise<EventSinkHandle[]> {
  const sinks: EventSinkHandle[] = [];
  try {
    const saveEvents = options.saveEvents;
    if (saveEvents) sinks.push(await attachFileSink(bus, saveEvents).catch((err: unknown) => Promise.reject(new ReportWriteError('--save-events', saveEvents, err))));
    if (options.eventsStdout) sinks.push(attachStreamSink(bus, io.stdout, '--events-stdout'));
    if (options.eventsSocket) sinks.push(await attachSocketSink(bus, options.eventsSocket));
  } catch (err) {
    await Promise.all(sinks.map((s) => s.close()));
    throw err;
  }
  return sinks;
}

export async function runSuite(options: RunOptions, io: RunIO, deps: RunDeps): Promise<number> {
  const startedAt = Date.now();
  const wallStart = performance.now();
  const config = options.config;

  // 1. Preflight, outputs and the plan.
  await deps.preflight?.(config);
  const out = deps.createReporters(options, io);
  await out.checkPaths?.();
  const plan = await planRun(planOptionsOf(options, io.cwd), out.warn);
  if (plan.kind === 'nothing') {
    out.nothing(plan.reason, plan.message);
    // No files where the user pointed is a usage problem; nothing to rerun or all filtered is not.
    return plan.reason === 'no_files' ? ExitCode.usage : ExitCode.ok;
  }
  // An empty shard still reports (a JSON summary, a JUnit file, run_started/run_finished for
  // `provium merge`): CI steps that expect them must not break, and the merge must see the shard.
  if (plan.files.length === 0) {
    out.write(`provium: shard ${options.shard!.index}/${options.shard!.count} has no files (${plan.selected} files in ${options.shard!.count} shards)\n`);
  }
  const files = plan.files;
  for (const f of files) {
    const recorded = plan.timings?.files[f.key]?.duration_ms;
    if (recorded !== undefined) f.recordedMs = recorded;
  }
  const seed = options.seed ?? randomBytes(8).readBigUInt64BE();

  // 2. Resources and workers.
  const host = (deps.host ?? hostResources)();
  const sizing = sizePool({
    memoryBytes: options.memoryBytes ?? host.memoryBytes,
    cpus: options.cpus ?? host.cpus,
    cpuOvercommit: options.cpuOvercommit,
  });
  const jobs = Math.max(1, options.jobs ?? sizing.defaultJobs);
  const threads = Math.max(1, Math.min(jobs, files.length));

  const bus = new EventBus();
  const sinks = await attachSinks(options, bus, io);
  bus.subscribe((event) => out.reporter.onEvent(event));
  if (deps.onEvent) bus.subscribe(deps.onEvent);
  // --debug-on-fail: the REPL host owns the terminal while a failed test's REPL is open.
  const repl = options.debugOnFail ? new ReplHost({ ...io, stdin: io.stdin ?? process.stdin }) : undefined;
  let broker: SessionBroker | undefined;
  let workers: WorkerPool | undefined;
  let dispatcher: Dispatcher | undefined;
  let poolTimer: NodeJS.Timeout | undefined;
  const outcomes: FileOutcome[] = [];
  let signalCount = 0;
  let failFastNoticed = false;
  // The reports of the files that finished, written once: when the run ends, or at once on a
  // second Ctrl-C, which does not wait for the teardown.
  let reports: Promise<{ summary: RunSummary; unwritten: string[] }> | undefined;
  const writeReports = (): Promise<{ summary: RunSummary; unwritten: string[] }> => {
    reports ??= (async () => {
      const interrupted = signalCount > 0;
      const summary = summarize(outcomes, {
        plannedFiles: files.length,
        wallMs: performance.now() - wallStart,
        interrupted,
        failFastStopped: dispatcher?.failFastStopped ?? false,
      });
      bus.emit('run_finished', {
        passed: summary.passed,
        failed: summary.failed,
        skipped: summary.skipped,
        flaky: summary.flaky,
        not_run: summary.notRun,
        files: summary.files,
        duration_ns: Math.round(summary.wallMs * 1e6),
        interrupted,
      });
      const unwritten = await out.reporter.end(summary);
      await saveState(options, plan.timings, plan.timingsPath, outcomes, out.warn);
      await Promise.all(sinks.map((s) => s.close()));
      // A report that could not be written fails the run: CI must never trust a missing file.
      for (const sink of sinks) {
        const failure = sink.failure();
        if (failure) unwritten.push(failure);
      }
      return { summary, unwritten };
    })();
    return reports;
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    // Without a terminal, Ctrl-C in an open --debug-on-fail REPL interrupts its chunk, not the run.
    if (signal === 'SIGINT' && repl?.active) {
      repl.interrupt();
      return;
    }
    signalCount++;
    if (signalCount > 1) {
      // Kill at once, but CI still gets the reports of the files that finished (a third signal,
      // or reports that cannot be written within kForcedReportsMs, exits without them).
      deps.forceKill?.();
      const exit = (): never => process.exit(ExitCode.interrupted);
      if (signalCount > 2) exit();
      io.stderr.write(`\nprovium: ${signal} again: killing everything now; writing the reports of the finished files\n`);
      setTimeout(exit, kForcedReportsMs);
      void writeReports().then(exit, exit);
      return;
    }
    out.reporter.onInterrupt();
    out.write(`\nprovium: interrupted (${signal}): stopping the running files and tearing down; press Ctrl-C again to kill at once\n`);
    dispatcher?.stop('interrupt');
  };
  if (deps.handleSignals !== false) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  const removeSignalHandlers = (): void => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };

  let finished = false;
  try {
    broker = deps.createBroker({
      bus,
      profiles: config.profiles,
      unavailableProfiles: config.unavailableProfiles,
      resources: sizing.total,
      cacheDir: config.cacheDir,
      cacheMaxBytes: config.cacheMaxSizeBytes,
      roots: config.roots,
      displayPathOf: (file) => displayPathOf(file, io.cwd),
      warmPool: options.warmPool ?? true,
      seed,
      warn: out.warn,
    });
    broker.setFixtureBuilder?.(
      fixtureBuilder({ broker, createWorkerPool: deps.createWorkerPool, workerFile: deps.workerFile, roots: config.roots, selection: options.selection, timeoutMs: options.timeoutMs }),
    );
    workers = deps.createWorkerPool({ threads, workerFile: deps.workerFile });
    dispatcher = new Dispatcher({
      files,
      slots: threads,
      broker,
      pool: workers,
      bus,
      reporter: out.reporter,
      timeoutMs: options.timeoutMs,
      failFast: options.failFast,
      task: {
        roots: (f) => taskRoots(config.roots, f),
        selection: options.selection,
        retries: options.retries,
        listOnly: false,
        ...(repl ? { debugChannel: (sessionSignal: SharedArrayBuffer) => repl.open(sessionSignal) } : {}),
        ...(options.keepFailedDir !== undefined ? { keepFailed: options.keepFailedDir } : {}),
      },
      onFileEnd: (outcome) => {
        outcomes.push(outcome);
        out.reporter.onFileEnd(outcome);
        if (options.failFast && !failFastNoticed && isFailure(outcome.status) && dispatcher?.failFastStopped && !dispatcher.interrupted) {
          failFastNoticed = true;
          const left = dispatcher.notStarted;
          if (left > 0) out.reporter.onNotice(`--fail-fast: ${outcome.file.displayPath} failed; not starting the ${left} remaining file${left === 1 ? '' : 's'}`);
        }
      },
    });
    broker.setScheduler(dispatcher);
    deps.onStart?.({ interrupt: () => onSignal('SIGINT') });

    // 3. Announce: run_started, then every file before any dispatch (reference §4.6).
    const accel = deps.accel ? await deps.accel().catch(() => 'unknown') : 'auto';
    const estimatedMs = plan.timings
      ? files.reduce((sum, f) => sum + (plan.timings!.files[f.key]?.duration_ms ?? 0), 0)
      : null;
    bus.emit('run_started', {
      version: EVENTS_PROTOCOL_VERSION,
      files: files.length,
      workers: threads,
      shard: options.shard ? { index: options.shard.index, count: options.shard.count } : null,
      accel,
      seed: seed.toString(),
    });
    const statics = await Promise.all(files.map((f) => scanStatics(f.file)));
    files.forEach((f, i) => {
      const { fixtureRefs, declaredClaim, barriers } = statics[i]!;
      f.declaredClaim = declaredClaim;
      f.barriers = barriers;
      bus.emit('file_discovered', { path: f.displayPath, fixture_refs: fixtureRefs, declared_claim: declaredClaim, key: f.key });
    });
    out.reporter.onBegin({
      files,
      selectedFiles: plan.selected,
      workers: threads,
      shard: options.shard,
      shardMethod: plan.shardMethod,
      startedAt,
      accel,
      estimatedMs,
      seed: seed.toString(),
    });

    // 4. Dispatch, with the pool state once a second.
    poolTimer = setInterval(() => {
      const state = broker?.poolState?.();
      if (state) bus.emit('pool_state', { ...state, running_files: dispatcher!.running, queued_files: dispatcher!.queued() });
    }, kPoolStateIntervalMs);
    poolTimer.unref();
    // The warm pool starts on the boots the files name, most named first (DESIGN §4).
    await broker.prewarm?.(byUse(statics.map((s) => s.profiles)));
    if (signalCount === 0 && files.length > 0) await dispatcher.run();
    finished = true;
  } finally {
    if (poolTimer) clearInterval(poolTimer);
    // 5. Teardown, whatever happened above: every VM, then the threads.
    await broker?.close().catch((err: Error) => out.warn(`broker teardown: ${err.message}`));
    await workers?.destroy().catch(() => undefined);
    repl?.close();
    // An error is on its way out: still release the event outputs (a socket would linger).
    if (!finished) {
      removeSignalHandlers();
      out.reporter.onInterrupt();
      await Promise.all(sinks.map((s) => s.close()));
    }
  }

  // 6. Reports for what finished, the rerun state, the timing record. The signal handlers stay
  //    until they are written: a second Ctrl-C now must not kill the process before them.
  const { summary, unwritten } = await writeReports();
  removeSignalHandlers();
  if (unwritten.length > 0) {
    for (const message of unwritten) io.stderr.write(`provium: ${message}\n`);
    return ExitCode.usage;
  }
  return summary.exitCode;
}


async function saveState(
  options: RunOptions,
  timings: Parameters<typeof mergeTimings>[0],
  timingsPath: string,
  outcomes: FileOutcome[],
  warn: (message: string) => void,
): Promise<void> {
  // The rerun state (canonical paths): the previous failures, minus the files this run finished
  // without failing, plus the files that failed now. Files this run did not finish (another
  // subset, another shard, interrupted) keep what was recorded for them.
  const finished = outcomes.filter((o) => o.status !== 'interrupted');
  if (finished.length > 0) {
    const canonical = async (f: string): Promise<string> => realpath(f).catch(() => f);
    const ran = new Set(await Promise.all(finished.map((o) => canonical(o.file.file))));
    const failed = await Promise.all(finished.filter((o) => isFailure(o.status)).map((o) => canonical(o.file.file)));
    const previous = (await readRerunState(options.rerunStatePath, warn)) ?? [];
    const next = [...previous.filter((f) => !ran.has(f)), ...failed];
    await writeRerunState(options.rerunStatePath, next).catch((err: Error) => warn(`rerun state ${options.rerunStatePath}: ${err.message}`));
  }
  // The timing record: files that ran to an end that says how long they take. A sharded run
  // never rewrites the record it split by: the other shards of the same run (in parallel, or
  // later on this machine) must see the record this shard saw, or the split would differ and
  // files would run twice or never. Unsharded runs keep it current.
  const durations = new Map<string, number>();
  for (const o of outcomes) {
    if (o.status === 'passed' || o.status === 'failed' || o.status === 'skipped' || o.status === 'timed_out') {
      durations.set(o.file.key, o.durationMs);
    }
  }
  if (durations.size === 0) return;
  const updated = mergeTimings(timings, durations);
  // --save-timings is a separate file, so writing it never changes what other shards split by;
  // `provium timings merge` combines the shards' files afterwards.
  if (options.saveTimingsPath) {
    const out = options.saveTimingsPath;
    await writeTimings(out, updated).catch((err: Error) => warn(`--save-timings ${out}: ${err.message}`));
  }
  if (options.shard) return;
  await writeTimings(timingsPath, updated).catch((err: Error) => warn(`timing record ${timingsPath}: ${err.message}`));
}

/** Names by how many lists hold them, most first (ties in first-seen order). */
function byUse(lists: string[][]): string[] {
  const counts = new Map<string, number>();
  for (const list of lists) for (const name of new Set(list)) counts.set(name, (counts.get(name) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([name]) => name);
}
