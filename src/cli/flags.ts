// The run-mode flags (reference §2.2 plus issue 4): declared once, shared by the default command
// and `list`, and turned into validated RunOptions. Every bad value is a UsageError naming the
// flag, the value and what would be accepted (exit 2).

import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import type { ProviumConfig } from '../config/config.js';
import { parseDuration, parseSize, UnitError } from '../config/units.js';
import { rerunStatePath } from '../run/rerun.js';
import type { RunOptions } from '../run/controller.js';
import { UsageError } from '../run/errors.js';
import { buildSelection } from '../run/filters.js';
import { parseShard, shardFromEnv } from '../run/shard.js';

/** Raw commander values. */
export interface RawFlags {
  config?: string;
  filter?: string[];
  tag?: string[];
  noTag?: string[];
  tagMeta?: string[];
  noTagMeta?: string[];
  includeSlow?: boolean;
  since?: string;
  rerunFailed?: boolean;
  shard?: string;
  timings?: string;
  saveTimings?: string;
  jobs?: string;
  mem?: string;
  cpus?: string;
  cpuOvercommit?: string;
  timeout?: string;
  retries?: string;
  seed?: string;
  failFast?: boolean;
  /** commander's --no-warm-pool: false. */
  warmPool?: boolean;
  verbose?: boolean;
  quiet?: boolean;
  json?: boolean;
  junit?: string;
  html?: string;
  progress?: boolean;
  saveEvents?: string;
  eventsStdout?: boolean;
  eventsSocket?: string;
  preflight?: boolean;
  rebuild?: boolean;
  debugOnFail?: boolean;
  keepFailed?: string;
  watch?: boolean;
  coverage?: boolean;
  coverageBy?: string;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** `--no-x <value>` is a value option here, not commander's negation of `--x`. */
function valueOption(flags: string, description: string): Option {
  const option = new Option(flags, description).argParser(collect);
  option.negate = false;
  return option;
}

export function addSelectionFlags(cmd: Command): Command {
  return cmd
    .option('--config <path>', 'the config file (default ./provium.toml)')
    .addOption(new Option('--filter <text>', 'only files whose path contains TEXT (repeatable: any)').argParser(collect))
    .addOption(new Option('--tag <tag>', 'only tests tagged TAG (repeatable: any)').argParser(collect))
    .addOption(valueOption('--no-tag <tag>', 'skip tests tagged TAG (repeatable; wins over --tag)'))
    .addOption(new Option('--tag-meta <key=value>', 'only tests whose meta KEY is or contains VALUE (same key: any; different keys: all)').argParser(collect))
    .addOption(valueOption('--no-tag-meta <key=value>', 'skip tests whose meta KEY is or contains VALUE'))
    .option('--include-slow', 'run tests marked meta.slow')
    .option('--since <file>', 'only files modified after FILE was')
    .option('--rerun-failed', "only the files that failed in the last run")
    .option('--shard <i/n|auto>', 'run shard i of n (1-based), balanced by recorded durations when there are any; `auto` reads PROVIUM_SHARD=i/n or the CI\'s parallel job (GitLab, Buildkite, CircleCI)')
    .option('--timings <file>', 'timing record to balance shards and order files by (default: one per project in the cache)')
    .option('--save-timings <file>', "also write this run's updated timing record to FILE, even when sharded (merge shards with `provium timings merge`)")
    .option('-j, --jobs <n>', 'files run at once (default: what the resource pool allows)')
    .option('--timeout <duration>', 'per-file wall-clock limit, e.g. 300, "90s", "10m"; 0 disables', '300')
    .option('-v, --verbose', 'also list passed and skipped tests')
    .option('-q, --quiet', 'only failures and the summary')
    .option('--json', 'one JSON object per file on stdout');
}

export function addRunFlags(cmd: Command): Command {
  return addSelectionFlags(cmd)
    .option('--mem <size>', 'memory budget of the resource pool, e.g. "16G" (default 80% of RAM)')
    .option('--cpus <n>', 'cpus of the resource pool (default: online cpus)')
    .option('--cpu-overcommit <factor>', 'the pool admits round(cpus × factor) vCPUs, 0.5–8 (idle guests use little CPU)', '4')
    .option('--retries <n>', 'rerun a failed test up to N times; a later pass is reported flaky', '0')
    .option('--seed <n>', 'the seed of every random fault decision (network drops, jitter); a run prints its seed, and the same seed replays it')
    .option('--fail-fast', 'stop starting files after the first failure')
    .option('--no-warm-pool', 'restore every VM when it boots instead of keeping restored spares running ahead')
    .option('--junit <file>', 'write a JUnit XML report to FILE')
    .option('--html <dir>', 'write a self-contained HTML report (summary, failures, timeline) to DIR/index.html')
    .option('--no-progress', 'plain lines even on an interactive terminal')
    .option('--save-events <file>', 'write the event stream (msgpack frames) to FILE')
    .option('--events-stdout', 'write the event stream to stdout (human output moves to stderr)')
    .option('--events-socket <path>', 'serve the event stream on a unix socket')
    .option('--no-preflight', 'skip the environment checks')
    .option('--rebuild', "run the `build` of every profile the run uses, even when its inputs did not change")
    .option('--debug-on-fail', 'when a test fails, open a REPL in its scope with its VMs still up (Ctrl-D continues the run); implies -j 1, no --timeout')
    .option('--keep-failed <dir>', "save each failed test's console logs, dmesg, process list and a snapshot of its VMs under DIR (restore: provium repl --restore DIR/…/snapshot)")
    .option('--watch', 'run, then re-run the files affected by each change (test files, fixtures, required modules, pushed host files) until Ctrl-C')
    .option('--coverage', 'after the summary, the test outcomes by meta key `spec`, as `provium coverage` prints them')
    .option('--coverage-by <key>', 'the meta key --coverage groups by (implies --coverage)');
}

function integer(flag: string, value: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} ${JSON.stringify(value)}: expected a whole number from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ' up'}`);
  }
  return n;
}

function unit<T>(flag: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof UnitError) throw new UsageError(err.message.replace(/^[^:]*:/, `${flag}:`));
    throw err;
  }
}

export function toRunOptions(paths: string[], raw: RawFlags, config: ProviumConfig, env: NodeJS.ProcessEnv, cwd: string): RunOptions {
  if (raw.verbose && raw.quiet) throw new UsageError('-v/--verbose and -q/--quiet cannot be used together; pick one');
  if (raw.json && raw.eventsStdout) {
    throw new UsageError('--json and --events-stdout both want stdout; use --save-events FILE or --events-socket PATH for the events');
  }
  const overcommit = Number(raw.cpuOvercommit ?? '4');
  if (!Number.isFinite(overcommit) || overcommit <= 0) {
    throw new UsageError(`--cpu-overcommit ${JSON.stringify(raw.cpuOvercommit)}: expected a number from 0.5 to 8, e.g. 1.5`);
  }
  const memoryBytes = raw.mem === undefined ? undefined : unit('--mem', () => parseSize(raw.mem, '--mem'));
  if (memoryBytes !== undefined && memoryBytes < 64 * 1024 * 1024) {
    throw new UsageError(`--mem ${raw.mem}: the pool needs at least 64M to boot anything; e.g. --mem 4G`);
  }
  const options: RunOptions = {
    paths,
    config,
    filters: raw.filter ?? [],
    rerunFailed: raw.rerunFailed === true,
    rerunStatePath: rerunStatePath(env, config.cacheDir, config.baseDir),
    selection: buildSelection({
      includeSlow: raw.includeSlow === true,
      tags: raw.tag ?? [],
      noTags: raw.noTag ?? [],
      tagMeta: raw.tagMeta ?? [],
      noTagMeta: raw.noTagMeta ?? [],
    }),
    shard: raw.shard === undefined ? null : raw.shard.trim() === 'auto' ? shardFromEnv(env) : parseShard(raw.shard),
    cpuOvercommit: Math.min(8, Math.max(0.5, overcommit)),
    timeoutMs: unit('--timeout', () => parseDuration(raw.timeout ?? '300', '--timeout')),
    retries: integer('--retries', raw.retries ?? '0', 0, 100)!,
    failFast: raw.failFast === true,
    warmPool: raw.warmPool !== false,
    verbosity: raw.verbose ? 'verbose' : raw.quiet ? 'quiet' : 'normal',
    json: raw.json === true,
    progress: raw.progress !== false,
    eventsStdout: raw.eventsStdout === true,
  };
  // Paths are relative to the invocation's directory.
  const at = (p: string): string => resolve(cwd, p);
  if (raw.since !== undefined) options.since = raw.since;
  if (raw.timings !== undefined) options.timingsPath = at(raw.timings);
  if (raw.saveTimings !== undefined) options.saveTimingsPath = at(raw.saveTimings);
  const jobs = integer('-j/--jobs', raw.jobs, 1, 1024);
  if (jobs !== undefined) options.jobs = jobs;
  if (memoryBytes !== undefined) options.memoryBytes = memoryBytes;
  const cpus = integer('--cpus', raw.cpus, 1, 4096);
  if (cpus !== undefined) options.cpus = cpus;
  if (raw.junit !== undefined) options.junitPath = at(raw.junit);
  if (raw.html !== undefined) options.htmlDir = at(raw.html);
  if (raw.saveEvents !== undefined) options.saveEvents = at(raw.saveEvents);
  if (raw.eventsSocket !== undefined) options.eventsSocket = at(raw.eventsSocket);
  if (raw.debugOnFail) {
    if (jobs !== undefined && jobs !== 1) throw new UsageError(`--debug-on-fail stops the run at a failed test's REPL: it needs -j 1, got -j ${jobs}`);
    // One file at a time, and no clock on a file while someone is typing in it.
    options.jobs = 1;
    options.timeoutMs = 0;
    options.progress = false;
    options.debugOnFail = true;
  }
  if (raw.keepFailed !== undefined) options.keepFailedDir = at(raw.keepFailed);
  if (raw.coverage || raw.coverageBy !== undefined) options.coverageBy = raw.coverageBy ?? 'spec';
  if (raw.seed !== undefined) {
    if (!/^\d{1,20}$/.test(raw.seed) || BigInt(raw.seed) >= 2n ** 64n) {
      throw new UsageError(`--seed ${JSON.stringify(raw.seed)}: expected a whole number from 0 to ${2n ** 64n - 1n} (a run prints its seed in its header)`);
    }
    options.seed = BigInt(raw.seed);
  }
  return options;
}
