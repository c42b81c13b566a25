// `provium list` (issue 4 item 1): the files and tests a run with the same flags would run, with
// their tags, after every filter and the shard. Test names come from the files themselves (the
// worker loads each file with `listOnly` and returns its tests without running them), so this
// uses the same pool and broker as a run, but no reports, events or state.

import type { Writable } from 'node:stream';
import { Barriers } from '../broker/barriers.js';
import { ResourcePool, sizePool } from '../broker/resources.js';
import { EventBus } from '../events/bus.js';
import { paintFor, streamScreen, type OutputStream } from '../report/screen.js';
import type { RunDeps, RunIO, RunOptions } from './controller.js';
import { hostResources } from './controller.js';
import { Dispatcher } from './dispatcher.js';
import { ExitCode, type FileOutcome } from './outcome.js';
import { planOptionsOf, planRun, taskRoots } from './plan.js';

export type ListOptions = Pick<
  RunOptions,
  'paths' | 'config' | 'filters' | 'since' | 'rerunFailed' | 'rerunStatePath' | 'selection' | 'shard' | 'timingsPath' | 'jobs' | 'timeoutMs' | 'verbosity' | 'json'
>;

function tagsOf(meta: Record<string, unknown>): string[] {
  const tags = meta['tags'];
  if (typeof tags === 'string') return [tags];
  return Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string') : [];
}

/**
 * Why a listed test would not run, or undefined when it would. A listed test is never run, so the
 * worker may report it `skipped` either way: only a reason (a `message`) means it would be skipped.
 */
function listedSkipReason(test: { status: string; message?: string }): string | undefined {
  return test.status === 'skipped' && test.message ? test.message : undefined;
}

export function formatListEntry(outcome: FileOutcome, verbose: boolean, colors: boolean): { text: string; toRun: number; skipped: number } {
  const p = paintFor(colors);
  const lines = [outcome.file.displayPath];
  let toRun = 0;
  let skipped = 0;
  if (outcome.result.chunkError || (outcome.status !== 'passed' && outcome.status !== 'skipped')) {
    const message = outcome.result.chunkError?.message ?? outcome.error ?? outcome.status;
    lines.push(`    ${p.red('error')}: ${message}`);
  }
  for (const test of outcome.result.tests) {
    const reason = listedSkipReason(test);
    const filtered = reason?.startsWith('filtered:') ?? false;
    if (filtered && !verbose) continue;
    const tags = tagsOf(test.meta);
    const tagText = tags.length ? p.dim(`  [${tags.join(', ')}]`) : '';
    const skip = reason ? p.yellow(`  (${reason})`) : '';
    lines.push(`    ${test.name}${tagText}${skip}`);
    if (!reason) toRun++;
    else if (!filtered) skipped++;
  }
  return { text: lines.join('\n') + '\n', toRun, skipped };
}

export async function listSuite(options: ListOptions, io: RunIO, deps: RunDeps): Promise<number> {
  const config = options.config;
  await deps.preflight?.(config);
  const screen = streamScreen(io.stdout, io.env);
  const warn = (message: string): void => {
    io.stderr.write(`provium: warning: ${message}\n`);
  };
  const plan = await planRun(planOptionsOf(options, io.cwd), warn);
  if (plan.kind === 'nothing') {
    io.stderr.write(`provium: ${plan.message}\n`);
    return plan.reason === 'no_files' ? ExitCode.usage : ExitCode.ok;
  }
  // Listing prints in path order, whatever the dispatch order.
  const files = [...plan.files].sort((a, b) => (a.displayPath < b.displayPath ? -1 : a.displayPath > b.displayPath ? 1 : 0));
  if (files.length === 0) return ExitCode.ok;

  const host = (deps.host ?? hostResources)();
  const sizing = sizePool({ memoryBytes: host.memoryBytes, cpus: host.cpus, cpuOvercommit: 1 });
  const threads = Math.max(1, Math.min(options.jobs ?? sizing.defaultJobs, files.length));
  const bus = new EventBus();
  const pool = new ResourcePool(sizing.total, bus);
  const barriers = new Barriers();
  const broker = deps.createBroker({ bus, profiles: config.profiles, unavailableProfiles: config.unavailableProfiles, pool, barriers, cacheDir: config.cacheDir });
  const workers = deps.createWorkerPool({ threads, workerFile: deps.workerFile });
  const outcomes = new Map<string, FileOutcome>();
  try {
    const dispatcher = new Dispatcher({
      files,
      slots: threads,
      broker,
      pool: workers,
      bus,
      barriers,
      timeoutMs: options.timeoutMs,
      failFast: false,
      task: { roots: (f) => taskRoots(config.roots, f), selection: options.selection, retries: 0, listOnly: true },
      onFileEnd: (outcome) => outcomes.set(outcome.file.file, outcome),
    });
    barriers.setScheduler(dispatcher);
    await dispatcher.run();
  } finally {
    await broker.close().catch(() => undefined);
    await workers.destroy().catch(() => undefined);
  }

  let tests = 0;
  let skipped = 0;
  let broken = 0;
  const sink: Writable & OutputStream = io.stdout;
  for (const file of files) {
    const outcome = outcomes.get(file.file);
    if (!outcome) continue;
    if (outcome.status !== 'passed' && outcome.status !== 'skipped') broken++;
    if (options.json) {
      sink.write(
        `${JSON.stringify({
          path: file.displayPath,
          error: outcome.result.chunkError?.message ?? outcome.error ?? null,
          tests: outcome.result.tests.map((t) => ({
            name: t.name,
            tags: tagsOf(t.meta),
            selected: !(listedSkipReason(t)?.startsWith('filtered:') ?? false),
            skip: listedSkipReason(t) ?? null,
            meta: t.meta,
          })),
        }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`,
      );
      continue;
    }
    const entry = formatListEntry(outcome, options.verbosity === 'verbose', screen.colors);
    tests += entry.toRun;
    skipped += entry.skipped;
    sink.write(entry.text);
  }
  if (!options.json) {
    const shard = options.shard ? ` (shard ${options.shard.index}/${options.shard.count})` : '';
    const skips = skipped ? `, ${skipped} skipped` : '';
    sink.write(`${files.length} file${files.length === 1 ? '' : 's'}, ${tests} test${tests === 1 ? '' : 's'} to run${skips}${shard}\n`);
  }
  return broken > 0 ? ExitCode.failed : ExitCode.ok;
}
