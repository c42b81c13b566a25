// `provium repl [PROFILE] [--name NAME] [--fixture PATH] [--restore DIR] [--no-boot]` (reference
// §2.1, issue 14 item 1): a Lua prompt with the whole test API. It runs the way a test file does:
// one broker session and one worker thread (workers/repl-worker.ts) with the test globals, fed
// lines from stdin by the main thread (src/run/repl-host.ts). A setup chunk binds `vm`: booted
// from PROFILE (from its boot snapshot when there is one), restored from a fixture, or from a
// `--keep-failed` snapshot. EOF (Ctrl-D) ends it; the session's teardown leaves no QEMU behind.

import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { Broker, sizePool } from '../broker/broker.js';
import type { ProviumConfig } from '../config/config.js';
import { EventBus } from '../events/bus.js';
import type { ReplTask } from '../protocol/repl.js';
import { hostResources } from '../run/controller.js';
import { displayPathOf } from '../run/discovery.js';
import { UsageError } from '../run/errors.js';
import { fixtureBuilder } from '../run/fixture-builds.js';
import { ExitCode } from '../run/outcome.js';
import { checkWorkerFile, createWorkerPool, defaultWorkerFile } from '../run/pool.js';
import { ReplHost, type ReplTerminal } from '../run/repl-host.js';
import { luaQuote, pickProfile } from './profile-pick.js';
import { preflight } from './wiring.js';

export interface ReplFlags {
  name?: string;
  fixture?: string;
  restore?: string;
  /** commander's --no-boot: false. */
  boot?: boolean;
}

/** dist/workers/repl-worker.js, beside the file worker. */
export function replWorkerFile(): string {
  return fileURLToPath(new URL('../../workers/repl-worker.js', import.meta.url));
}

const kEmptySelection = { includeSlow: true, tags: [], noTags: [], tagMeta: [], noTagMeta: [] };

/** The Lua that binds `vm` before the first prompt, and the line that says what it is. */
export function replSetup(profile: string | undefined, flags: ReplFlags, cwd: string): { setup: string; about: string } {
  const name = flags.name ?? 'repl';
  if (flags.restore !== undefined) {
    const dir = resolve(cwd, flags.restore);
    return {
      setup: `provium:restore(${luaQuote(dir)})\nlocal names = provium:vm_names()\nfor _, n in ipairs(names) do if n:match("^[%a_][%w_]*$") then _ENV[n] = provium:vm(n) end end\nvm = names[1] and provium:vm(names[1])`,
      about: `the VMs of ${dir} (\`vm\` is the first; each also by its name)`,
    };
  }
  if (flags.fixture !== undefined) {
    return { setup: `vm = provium:vm_fixture(${luaQuote(flags.fixture)}, ${luaQuote(name)})`, about: `\`vm\` is ${name}, restored from the fixture ${flags.fixture}` };
  }
  if (flags.boot === false) return { setup: '', about: 'no VM booted (--no-boot): make one with provium:vm(name, profile):boot()' };
  const p = profile ?? 'minimal';
  return { setup: `vm = provium:vm(${luaQuote(name)}, ${luaQuote(p)}):boot()`, about: `\`vm\` is ${name} (profile ${p})` };
}

export async function replCommand(profileArg: string | undefined, flags: ReplFlags, config: ProviumConfig, io: ReplTerminal & { cwd: string; env: NodeJS.ProcessEnv }): Promise<number> {
  if ([flags.fixture, flags.restore].filter((f) => f !== undefined).length > 1) {
    throw new UsageError('repl: --fixture and --restore both say where `vm` comes from; give one');
  }
  // 1. What the worker needs: the worker module, QEMU, the profile built.
  await preflight(config, { skipEnvironment: false });
  await checkWorkerFile(replWorkerFile());
  if (flags.fixture === undefined && flags.restore === undefined && flags.boot !== false) {
    await pickProfile(config, profileArg ?? 'minimal', 'repl', io.stderr);
  }
  const { setup, about } = replSetup(profileArg, flags, io.cwd);

  // 2. A broker and one session, as a run has for a file.
  const host = hostResources();
  const bus = new EventBus();
  const broker = new Broker({
    bus,
    profiles: config.profiles,
    unavailableProfiles: config.unavailableProfiles,
    resources: sizePool({ ...host, cpuOvercommit: 4 }).total,
    cacheDir: config.cacheDir,
    cacheMaxBytes: config.cacheMaxSizeBytes,
    roots: config.roots,
    displayPathOf: (file) => displayPathOf(file, io.cwd),
    warmPool: false,
  });
  broker.setFixtureBuilder(
    fixtureBuilder({ broker, createWorkerPool, workerFile: defaultWorkerFile(), roots: config.roots, selection: kEmptySelection, timeoutMs: 0 }),
  );
  const file = join(io.cwd, 'repl');
  const session = broker.openSession({ path: file, displayPath: 'repl' }, () => {});
  const pool = new Piscina<ReplTask, { ok: boolean }>({ minThreads: 1, maxThreads: 1 });
  const repl = new ReplHost(io, { historyFile: join(config.cacheDir, 'repl_history') });
  const conversation = repl.open(session.signalBuffer);
  // Without a terminal Ctrl-C arrives as SIGINT: it interrupts the running chunk, as on a TTY.
  const onSignal = (): void => repl.interrupt();
  process.on('SIGINT', onSignal);

  // 3. The REPL until EOF, then everything down, however it ended.
  let ok = false;
  try {
    const task: ReplTask = {
      file,
      displayPath: 'repl',
      roots: config.roots,
      port: session.port,
      signalBuffer: session.signalBuffer,
      repl: conversation.channel,
      setup,
      banner: `provium repl: Lua with the test API; ${about}. Ctrl-C interrupts, Ctrl-D exits.\n`,
    };
    const result = await pool.run(task, { filename: replWorkerFile(), transferList: [session.port, conversation.channel.port] });
    ok = result.ok;
  } catch (err) {
    io.stderr.write(`provium repl: the worker stopped: ${(err as Error).message}\n`);
  } finally {
    process.off('SIGINT', onSignal);
    conversation.close();
    repl.close();
    broker.drainSession(session.sessionId);
    await broker.closeSession(session.sessionId).catch((err: Error) => io.stderr.write(`provium repl: teardown: ${err.message}\n`));
    await pool.destroy().catch(() => undefined);
    await broker.close();
  }
  return ok ? ExitCode.ok : ExitCode.failed;
}
