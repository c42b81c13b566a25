// Starting the processes behind a VM (QEMU, and the RAM copy riding on its spawn) without forking
// this process.
//
// Why: Node forks to spawn, and a fork of a process this large (a broker, workers, a V8 heap)
// costs its main thread 20-30 ms, plus page faults on its own heap afterwards: a restore-heavy
// suite spawns one QEMU per file. process-launcher.c, a small process started once, forks instead
// (BENCHMARKS.md). `npm run build` builds it beside the compiled TypeScript.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import { processLauncherPath } from './paths.js';

export interface LaunchedExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Launched {
  pid: number;
  /** Settles when the process has exited and been reaped. */
  exit: Promise<LaunchedExit>;
}

export interface LaunchOptions {
  env: NodeJS.ProcessEnv;
  /** Where the process's stderr is appended (stdin and stdout are /dev/null). */
  stderrPath: string;
}

/** The process could not be started; `message` names the program and the errno (ENOENT, EACCES, …). */
export class LaunchError extends Error {
  override name = 'LaunchError';
  /** The errno's name when the exec (or fork) failed: ENOENT, EACCES, … */
  constructor(message: string, readonly code?: string) {
    super(message);
  }
}

/**
 * Starts `argv` with stdin and stdout on /dev/null and stderr appended to `stderrPath`; it is
 * SIGKILLed if this process dies. Resolves once the program runs (its exec succeeded).
 */
export async function launchProcess(argv: string[], opts: LaunchOptions): Promise<Launched> {
  if (argv.length === 0) throw new LaunchError('launchProcess: an empty argv');
  const l = runningLauncher();
  if (!l) throw new LaunchError(`spawn ${argv[0]}: ${processLauncherPath()} is missing: build it with \`npm run build\``);
  return l.launch(argv, opts);
}

/**
 * Starts the launcher now, if it is not running (the broker does, as it is made): its own start
 * is then off the first boot's path, and the fork that starts it is of a Node process that has
 * not grown yet.
 */
export function startProcessLauncher(): void {
  runningLauncher();
}

/** The launcher, started if it is not running; undefined when it is not built. */
function runningLauncher(): Launcher | undefined {
  if (launcher && !launcher.dead) return launcher;
  const path = processLauncherPath();
  launcher = existsSync(path) ? new Launcher(path) : undefined;
  return launcher;
}

let launcher: Launcher | undefined;

/**
 * Ends the launcher once this process is done with VMs (the CLI, before it exits): it exits at
 * the end of its stdin, and is reaped here, so that the CPU time of the processes it reaped counts
 * in this process's children's (time(1), the bench). Anything it still runs dies with it.
 */
export async function closeProcessLauncher(): Promise<void> {
  const l = launcher;
  launcher = undefined;
  if (l) await l.close();
}

/** MAX_REQUEST and MAX_STRINGS of process-launcher.c: Linux's own limit on argv and environment is larger (ARG_MAX). */
const kMaxRequestBytes = 1 << 20;
const kMaxRequestStrings = 4096;
/** How long the launcher gets to exit after its stdin ends before it is killed. */
const kCloseTimeoutMs = 2000;

type Pending = { resolve: (l: Launched) => void; reject: (e: Error) => void; program: string };

/** The one process-launcher of this process, and the requests and processes it has under way. */
class Launcher {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly exits = new Map<number, (e: LaunchedExit) => void>();
  private buffered = '';
  dead = false;

  constructor(path: string) {
    this.child = spawn(path, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child.on('error', (err) => this.died(`could not start ${path}: ${err.message}`));
    this.child.on('exit', (code, signal) => this.died(`${path} exited (${signal ?? `code ${code}`})`));
    this.child.stdin!.on('error', () => undefined); // its exit says more
    this.child.stdout!.setEncoding('latin1').on('data', (chunk: string) => this.read(chunk));
    this.idle();
  }

  launch(argv: string[], opts: LaunchOptions): Promise<Launched> {
    const id = String(this.nextId++);
    const env = Object.entries(opts.env).filter((e): e is [string, string] => e[1] !== undefined).map(([k, v]) => `${k}=${v}`);
    const strings = [id, opts.stderrPath, String(argv.length), ...argv, String(env.length), ...env];
    const payload = Buffer.from(`${strings.join('\0')}\0`);
    // The launcher ends on a request over its limits, and takes every process it runs with it.
    if (payload.length > kMaxRequestBytes || strings.length > kMaxRequestStrings) {
      const size = `${payload.length} bytes in ${strings.length} strings; the limits are ${kMaxRequestBytes} and ${kMaxRequestStrings}`;
      return Promise.reject(new LaunchError(`spawn ${argv[0]} E2BIG (its argv and environment are ${size})`, 'E2BIG'));
    }
    const header = Buffer.alloc(4);
    header.writeUInt32LE(payload.length);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, program: argv[0]! });
      this.busy();
      this.child.stdin!.write(Buffer.concat([header, payload]));
    });
  }

  private read(chunk: string): void {
    this.buffered += chunk;
    for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
      const [kind, a, b, c] = this.buffered.slice(0, nl).split(' ');
      this.buffered = this.buffered.slice(nl + 1);
      if (kind === 'S' || kind === 'F') {
        const p = this.pending.get(a!);
        if (!p) continue;
        this.pending.delete(a!);
        if (kind === 'S') {
          const pid = Number(b);
          p.resolve({ pid, exit: new Promise((resolve) => this.exits.set(pid, resolve)) });
        } else {
          // `ENOENT (no such file or directory)`, as Node words a failed spawn of its own.
          const errno = Number(b);
          const known = getSystemErrorMap().get(-errno);
          p.reject(new LaunchError(`spawn ${p.program} ${known ? `${known[0]} (${known[1]})` : `errno ${errno}`}`, known?.[0]));
        }
      } else if (kind === 'X') {
        const pid = Number(a);
        const resolve = this.exits.get(pid);
        if (!resolve) continue; // a child whose exec failed: its F line said so
        this.exits.delete(pid);
        const signo = Number(c);
        resolve({ code: signo ? null : Number(b), signal: signo ? signalName(signo) : null });
      }
    }
    if (this.pending.size === 0 && this.exits.size === 0) this.idle();
  }

  close(): Promise<void> {
    if (this.dead) return Promise.resolve();
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), kCloseTimeoutMs);
    return gone.finally(() => clearTimeout(timer));
  }

  /**
   * While a start is under way or a started process runs, the launcher keeps Node alive, as a
   * child process of Node's own would; an idle one must not.
   */
  private busy(): void {
    this.child.ref();
    (this.child.stdout as unknown as { ref(): void }).ref();
  }

  private idle(): void {
    this.child.unref();
    (this.child.stdout as unknown as { unref(): void }).unref();
    (this.child.stdin as unknown as { unref?(): void }).unref?.();
  }

  /** Its children died with it (pdeathsig): every request and process under way ends here. */
  private died(why: string): void {
    if (this.dead) return;
    this.dead = true;
    for (const p of this.pending.values()) p.reject(new LaunchError(`spawn ${p.program}: the process launcher died: ${why}`));
    this.pending.clear();
    for (const resolve of this.exits.values()) resolve({ code: null, signal: 'SIGKILL' });
    this.exits.clear();
  }
}

function signalName(signo: number): NodeJS.Signals {
  return (Object.entries(osConstants.signals).find(([, n]) => n === signo)?.[0] ?? 'SIGKILL') as NodeJS.Signals;
}
