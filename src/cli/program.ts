// The command line (reference §2.1, issue 2 item 6, issue 4): `provium [paths] [flags]` runs
// tests; `list`, `image build`, `events FILE` and `doctor` are subcommands. Exit codes: 0 all
// passed, 1 a failure, 2 bad usage/config/environment (the message names the fix), 130 Ctrl-C.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Command, CommanderError } from 'commander';
import { ConfigError, loadConfig, type ProviumConfig } from '../config/config.js';
import { listSuite } from './list.js';
import { runSuite, type RunDeps, type RunIO } from '../run/controller.js';
import { UsageError } from '../run/errors.js';
import { watchSuite } from '../run/watch.js';
import { ExitCode } from '../run/outcome.js';
import { ReportWriteError } from '../run/reporter.js';
import { imageInfo } from '../vmm/image.js';
import { repoRoot } from '../vmm/paths.js';
import { doctorCommand } from './doctor.js';
import { eventsCommand } from './events-cmd.js';
import { fixtureCommand, type FixtureAction } from './fixture-cmd.js';
import { timingsMergeCommand } from './timings-cmd.js';
import { mergeCommand } from './merge-cmd.js';
import { unknownCommandError } from './suggest.js';
import { addRunFlags, addSelectionFlags, toRunOptions, type RawFlags } from './flags.js';
import { imageBuildCommand } from './image-cmd.js';
import { prepareCommand } from './prepare-cmd.js';
import { realDeps, type RunPrepare } from './wiring.js';
import { addInteractiveCommands } from './interactive-cmds.js';

export interface CliIO extends RunIO {
  stdin: Readable;
}

/** Lets unit tests replace the broker and the worker pool. */
export type DepsFactory = (opts: { skipPreflight: boolean; prepare?: RunPrepare }) => RunDeps;

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Known error kinds print as one line and exit 2; anything else is a bug: stack and exit 2. */
function reportError(err: unknown, io: CliIO): number {
  if (err instanceof UsageError || err instanceof ConfigError || err instanceof ReportWriteError) {
    io.stderr.write(`provium: ${err.message}\n`);
    return ExitCode.usage;
  }
  const e = err as Error;
  io.stderr.write(`provium: internal error: ${e?.stack ?? String(err)}\n`);
  return ExitCode.usage;
}

export async function runCli(argv: string[], io: CliIO, makeDeps: DepsFactory = realDeps): Promise<number> {
  let exitCode: number = ExitCode.ok;
  const program = new Command('provium');
  program
    .description('Integration tests in Lua against real QEMU guests.\nRuns every *.test.lua under PATHS (default: the [provium] roots, else the current directory).')
    .version(version(), '--version')
    .argument('[paths...]', 'test files or directories')
    .showHelpAfterError('(run `provium --help` for the flags)')
    // `provium list --tag x`: the flags after a subcommand are the subcommand's.
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    });
  // `provium --config X list`: a flag before the subcommand belongs to the program; the
  // subcommands fall back to it.
  const withGlobal = <T extends { config?: string }>(raw: T): T => ({ ...raw, config: raw.config ?? (program.opts() as RawFlags).config });
  addRunFlags(program).action(async (paths: string[], raw: RawFlags) => {
    // `provium lsit`: a word that is no path and no test file is a mistyped command.
    const mistyped = await unknownCommandError(paths[0], program.commands.map((c) => c.name()), io.cwd);
    if (mistyped) throw mistyped;
    const config = await loadRunConfig(raw, io);
    const options = toRunOptions(paths, raw, config, io.env, io.cwd);
    const prepare: RunPrepare = { options, cwd: io.cwd, rebuild: raw.rebuild === true, stderr: io.stderr };
    const deps = () => makeDeps({ skipPreflight: raw.preflight === false, prepare });
    exitCode = raw.watch ? await watchSuite(options, io, deps) : await runSuite(options, io, deps());
  });

  addSelectionFlags(
    program
      .command('list')
      .description('print the files and tests a run with the same flags would run, with their tags')
      .argument('[paths...]', 'test files or directories'),
  )
    .option('--fixtures', 'list the fixtures under the roots and their cache state instead of the tests')
    .action(async (paths: string[], listed: RawFlags & { fixtures?: boolean }) => {
      const raw = withGlobal(listed);
      const config = await loadRunConfig(raw, io);
      if (raw.fixtures) {
        exitCode = await fixtureCommand('list', undefined, config, io);
        return;
      }
      const options = toRunOptions(paths, { ...raw, progress: false, preflight: false }, config, io.env, io.cwd);
      exitCode = await listSuite(options, io, makeDeps({ skipPreflight: true }));
    });

  const fixture = program.command('fixture').description('fixtures (*.fixture.lua under the roots) and their cache');
  const fixtureAction = (action: FixtureAction, description: string, withTarget: boolean) => {
    const cmd = fixture.command(action).description(description).option('--config <path>', 'the config file (default ./provium.toml)');
    if (withTarget) cmd.argument('<fixture>', 'a fixture ref (db/fixtures/warm) or its *.fixture.lua path');
    cmd.action(async (...args: unknown[]) => {
      const target = withTarget ? (args[0] as string) : undefined;
      const raw = withGlobal((withTarget ? args[1] : args[0]) as { config?: string });
      exitCode = await fixtureCommand(action, target, await loadRunConfig(raw as RawFlags, io), io);
    });
  };
  fixtureAction('list', 'every fixture, cached or not, with its size and key', false);
  fixtureAction('stale', 'the fixtures the next use would build, and what changed', false);
  fixtureAction('build', 'build a fixture now unless its cache entry is current', true);
  fixtureAction('rebuild', 'build a fixture again, replacing its cache entry', true);
  fixtureAction('clean', 'empty the fixture cache', false);

  const image = program.command('image').description('guest images');
  image
    .command('build')
    .description('build the `minimal` image, and the Debian root of each profile named, into the cache (no-op when up to date)')
    .argument('[profiles...]', 'Debian profiles (`debian = {...}`) whose root to build as well')
    .option('--force', 'rebuild even when up to date (with profiles named: their roots only)')
    .option('-q, --quiet', 'no build log')
    .option('--config <path>', 'the config file naming the profiles (default ./provium.toml)')
    .action(async (names: string[], raw: { force?: boolean; quiet?: boolean; config?: string }) => {
      const config = names.length > 0 ? () => loadRunConfig(raw as RawFlags, io) : undefined;
      exitCode = await imageBuildCommand({ force: raw.force === true, quiet: raw.quiet === true, profiles: names, config }, io);
    });

  program
    .command('timings')
    .description('timing records')
    .command('merge')
    .description('combine the --save-timings files of a sharded run into one record (per file, the newest entry)')
    .argument('<out>', 'the record to write')
    .argument('<inputs...>', 'records written with --save-timings')
    .action(async (out: string, inputs: string[]) => {
      exitCode = await timingsMergeCommand(out, inputs, io);
    });

  program
    .command('events')
    .description('decode a saved event stream (msgpack frames) into JSON lines; FILE `-` reads stdin')
    .argument('<file>', 'a file written by --save-events, or -')
    .action(async (file: string) => {
      exitCode = await eventsCommand(file, io);
    });

  program
    .command('prepare')
    .description("run each profile's `build` now (every profile, or those named) and check the files it names; for CI, before the run")
    .argument('[profiles...]', 'profile names (default: every profile)')
    .option('--config <path>', 'the config file (default ./provium.toml)')
    .action(async (names: string[], raw: { config?: string }) => {
      exitCode = await prepareCommand(names, await loadRunConfig(withGlobal(raw) as RawFlags, io), io);
    });

  program
    .command('doctor')
    .description('check the environment (qemu, the guest image, the accelerator, the build); each failure names its fix')
    .option('--config <path>', 'the config file to check (default ./provium.toml)')
    .option('--reprobe', 'probe KVM again instead of using the cached verdict')
    .action(async (raw: { config?: string; reprobe?: boolean }) => {
      const config = withGlobal(raw).config;
      exitCode = await doctorCommand({ ...(config !== undefined ? { configPath: config } : {}), cwd: io.cwd, reprobe: raw.reprobe === true }, io);
    });

  program
    .command('merge')
    .description('combine the --save-events files of a sharded run into one JUnit file, JSON summary, timing record and HTML report in OUT_DIR')
    .argument('<out-dir>', 'where junit.xml, results.json, timings.json and index.html go')
    .argument('<events...>', 'the event stream each shard saved with --save-events')
    .option('--timings <file>', 'fold the shards\' durations into this timing record (default: durations of this run only)')
    .action(async (outDir: string, inputs: string[], raw: { timings?: string }) => {
      exitCode = await mergeCommand(outDir, inputs, raw.timings !== undefined ? { timings: raw.timings } : {}, io);
    });

  addInteractiveCommands(program, io, (raw) => loadRunConfig(withGlobal(raw) as RawFlags, io), (code) => (exitCode = code));

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; every parse error (already printed) is a usage error.
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help' ? ExitCode.ok : ExitCode.usage;
    }
    return reportError(err, io);
  }
  return exitCode;
}

async function loadRunConfig(raw: RawFlags, io: CliIO): Promise<ProviumConfig> {
  return loadConfig({ ...(raw.config !== undefined ? { path: raw.config } : {}), cwd: io.cwd, findMinimalImage: imageInfo });
}
