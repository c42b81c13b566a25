// --watch (reference §2.2, issue 14 item 5): run, then poll the files the run's test files
// depend on (watch-deps.ts) and re-run only the test files a change affects; a new test file runs
// too. Each iteration is a whole run (its own broker, workers and reports; --save-events is
// rewritten each time); an --events-socket is opened once and survives the iterations. Ctrl-C
// while idle ends the watch with the last run's exit code; during a run it interrupts that run
// and ends the watch (130).

import { attachSocketSink } from '../events/sinks.js';
import { EventBus } from '../events/bus.js';
import { runSuite, type RunDeps, type RunIO, type RunOptions } from './controller.js';
import { ExitCode } from './outcome.js';
import { planOptionsOf, planRun } from './plan.js';
import { fileDependencies, stampOf } from './watch-deps.js';

/** How often files are checked (the reference polls every 500 ms). */
const kPollMs = 500;
/** A change is acted on once the files were quiet this long (an editor writes in bursts). */
const kSettleMs = 200;

export interface WatchControl {
  pollMs?: number;
  /** Stops the watch (tests); SIGINT does the same. */
  signal?: AbortSignal;
}

export async function watchSuite(options: RunOptions, io: RunIO, makeDeps: () => RunDeps, control: WatchControl = {}): Promise<number> {
  const pollMs = control.pollMs ?? kPollMs;
  // 1. The socket outlives the iterations: each run's events are relayed to it.
  const relay = new EventBus();
  const socket = options.eventsSocket ? await attachSocketSink(relay, options.eventsSocket) : undefined;
  const base: RunOptions = { ...options, rerunFailed: false };
  delete base.eventsSocket;
  let stopped = control.signal?.aborted ?? false;
  let wake: (() => void) | undefined;
  const stop = (): void => {
    stopped = true;
    wake?.();
  };
  control.signal?.addEventListener('abort', stop);
  let code: number = ExitCode.ok;
  try {
    let paths = options.paths;
    for (;;) {
      // 2. One run of the affected files (all of them the first time).
      const deps = makeDeps();
      code = await runSuite({ ...base, paths }, io, { ...deps, onEvent: (event) => relay.publish(event) });
      if (code === ExitCode.interrupted || code === ExitCode.usage || stopped) return code;
      // 3. Wait for a change (Ctrl-C ends the watch here).
      process.on('SIGINT', stop);
      try {
        const changed = await nextChange(base, io, pollMs, kSettleMs, () => stopped, (w) => (wake = w));
        if (changed === null) return code;
        paths = changed;
      } finally {
        process.off('SIGINT', stop);
      }
    }
  } finally {
    control.signal?.removeEventListener('abort', stop);
    await socket?.close();
  }
}

/** The test files to run again once something they depend on changed (or appeared), or null when stopped. */
async function nextChange(
  options: RunOptions,
  io: RunIO,
  pollMs: number,
  settleMs: number,
  stopped: () => boolean,
  onWake: (wake: () => void) => void,
): Promise<string[] | null> {
  const sleep = (ms: number) => new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    onWake(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  // 1. What each planned file depends on, and how everything looks now.
  const plan = await planRun(planOptionsOf(options, io.cwd), () => {});
  const files = plan.kind === 'files' ? plan.files.map((f) => f.file) : [];
  const dependsOn = new Map<string, Set<string>>();
  for (const file of files) dependsOn.set(file, await fileDependencies(file, options.config.roots));
  const watched = new Set([...dependsOn.values()].flatMap((s) => [...s]));
  const stamps = new Map<string, string>();
  for (const file of watched) stamps.set(file, await stampOf(file));
  io.stderr.write(`provium: watching ${watched.size} file${watched.size === 1 ? '' : 's'} of ${files.length} test file${files.length === 1 ? '' : 's'} (Ctrl-C stops)\n`);

  // 2. Poll until something changed, then until it settled.
  for (;;) {
    await sleep(pollMs);
    if (stopped()) return null;
    const changed = await changedFiles(stamps);
    const fresh = await newTestFiles(options, io, files);
    if (changed.length === 0 && fresh.length === 0) continue;
    await sleep(settleMs);
    if (stopped()) return null;
    const all = [...new Set([...changed, ...(await changedFiles(stamps))])];
    const affected = files.filter((f) => all.some((c) => dependsOn.get(f)!.has(c)));
    const rerun = [...new Set([...affected, ...fresh, ...(await newTestFiles(options, io, files))])];
    if (rerun.length === 0) continue;
    io.stderr.write(`\nprovium: changed ${all.map((f) => displayOf(f, io.cwd)).join(', ') || 'new test files'}; running ${rerun.length} file${rerun.length === 1 ? '' : 's'}\n`);
    return rerun;
  }
}

/** Files whose stamp moved; the stamps are updated. */
async function changedFiles(stamps: Map<string, string>): Promise<string[]> {
  const changed: string[] = [];
  for (const [file, before] of stamps) {
    const now = await stampOf(file);
    if (now === before) continue;
    stamps.set(file, now);
    changed.push(file);
  }
  return changed;
}

async function newTestFiles(options: RunOptions, io: RunIO, known: string[]): Promise<string[]> {
  const plan = await planRun(planOptionsOf(options, io.cwd), () => {});
  if (plan.kind !== 'files') return [];
  const seen = new Set(known);
  return plan.files.map((f) => f.file).filter((f) => !seen.has(f));
}

function displayOf(file: string, cwd: string): string {
  return file.startsWith(`${cwd}/`) ? file.slice(cwd.length + 1) : file;
}
