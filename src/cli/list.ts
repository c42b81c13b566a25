// `provium list` (issue 4 item 1): the files and tests a run with the same flags would run, with
// their tags, after every filter and the shard. Test names come from the files themselves: the
// worker loads each file with `listOnly` and reports the tests it declares without running them.
// Nothing boots, so no broker is built: each file's port is a bare channel its listing reads.

import type { Writable } from 'node:stream';
import { sizePool } from '../broker/broker.js';
import { RpcChannel, type RpcHandlers } from '../broker/rpc-server.js';
import type { DeclaredTest, FatalError, FileReport, FileTask } from '../protocol/task.js';
import { paintFor, streamScreen, type OutputStream } from '../report/screen.js';
import type { RunDeps, RunIO, RunOptions } from '../run/controller.js';
import { hostResources } from '../run/controller.js';
import { ExitCode, type PlannedFile } from '../run/outcome.js';
import { planOptionsOf, planRun, taskRoots } from '../run/plan.js';

export type ListOptions = Pick<
  RunOptions,
  'paths' | 'config' | 'filters' | 'since' | 'rerunFailed' | 'rerunStatePath' | 'selection' | 'shard' | 'timingsPath' | 'jobs' | 'timeoutMs' | 'verbosity' | 'json'
>;

/** One file as listed: its declared tests, or why it could not be listed. */
export interface FileListing {
  file: PlannedFile;
  tests: DeclaredTest[];
  errors: string[];
}

function tagsOf(meta: Record<string, unknown>): string[] {
  const tags = meta['tags'];
  if (typeof tags === 'string') return [tags];
  return Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string') : [];
}

export function formatListEntry(listing: FileListing, verbose: boolean, colors: boolean): { text: string; toRun: number; skipped: number } {
  const p = paintFor(colors);
  const lines = [listing.file.displayPath];
  let toRun = 0;
  let skipped = 0;
  for (const message of listing.errors) lines.push(`    ${p.red('error')}: ${message}`);
  for (const test of listing.tests) {
    const reason = test.skipReason ?? undefined;
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
  const workers = deps.createWorkerPool({ threads, workerFile: deps.workerFile });
  const listings = new Map<string, FileListing>();
  try {
    const queue = [...files];
    const next = async (): Promise<void> => {
      for (let file = queue.shift(); file; file = queue.shift()) {
        listings.set(file.file, await listFile(file, options, workers, taskRoots(config.roots, file)));
      }
    };
    await Promise.all(Array.from({ length: threads }, next));
  } finally {
    await workers.destroy().catch(() => undefined);
  }

  let tests = 0;
  let skipped = 0;
  let broken = 0;
  const sink: Writable & OutputStream = io.stdout;
  for (const file of files) {
    const listing = listings.get(file.file);
    if (!listing) continue;
    if (listing.errors.length > 0) broken++;
    if (options.json) {
      sink.write(
        `${JSON.stringify({
          path: file.displayPath,
          error: listing.errors[0] ?? null,
          tests: listing.tests.map((t) => ({
            name: t.name,
            tags: tagsOf(t.meta),
            selected: !(t.skipReason?.startsWith('filtered:') ?? false),
            skip: t.skipReason,
            meta: t.meta,
          })),
        }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`,
      );
      continue;
    }
    const entry = formatListEntry(listing, options.verbosity === 'verbose', screen.colors);
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

/** Runs one file's top level in a worker and collects what it declares. Never throws. */
async function listFile(file: PlannedFile, options: ListOptions, workers: ReturnType<RunDeps['createWorkerPool']>, roots: string[]): Promise<FileListing> {
  const listing: FileListing = { file, tests: [], errors: [] };
  let fatalErrors: FatalError[] | undefined;
  // The file's reports come over the same channel a run uses; it serves no calls (nothing boots).
  const channel = new RpcChannel({} as RpcHandlers, (report: FileReport) => {
    if (report.type === 'tests_declared') listing.tests = report.tests;
    else if (report.type === 'file_done') fatalErrors = report.fatalErrors;
  });
  const task: FileTask = {
    file: file.file,
    displayPath: file.displayPath,
    roots,
    selection: options.selection,
    retries: 0,
    listOnly: true,
    port: channel.workerPort,
    signalBuffer: channel.signalBuffer,
  };
  const signal = options.timeoutMs > 0 ? AbortSignal.timeout(options.timeoutMs) : new AbortController().signal;
  try {
    await workers.run(task, { transferList: [channel.workerPort], signal });
  } catch (err) {
    listing.errors.push(signal.aborted ? `listing timed out after ${options.timeoutMs} ms` : `the worker crashed: ${(err as Error).message}`);
  }
  // The worker posted its reports before its task settled: closing delivers what is queued.
  channel.close();
  listing.errors.push(...(fatalErrors ?? []).map((e) => e.message));
  return listing;
}
