// One QEMU process: scratch directory, launch, QMP, console log, exit watch and teardown.
//
// QEMU must never outlive the harness. The process launcher (process-launcher.ts) starts it with
// PR_SET_PDEATHSIG SIGKILL and dies with the harness itself, so the kernel SIGKILLs QEMU even when
// Node is SIGKILLed. On a normal exit the `exit` hook below SIGKILLs whatever is left, and
// killAllQemu() is exported for other handlers (SIGINT in the CLI).

import { existsSync } from 'node:fs';
import { access, copyFile, open, rm, stat } from 'node:fs/promises';
import { constants as fsConstants, createReadStream, createWriteStream } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { prepareProfile, type PrepareOptions } from '../config/profile-prepare.js';
import { minimalProfile } from '../config/profiles.js';
import { kKvmProbeTimeoutMs, resolveAccelWith, type KvmProbeResult } from './accel-verdict.js';
import { agentHello } from './agent-hello.js';
import { debianRootBuilder } from './debian-image.js';
import { buildQemuArgs, type LaunchSpec } from './cmdline.js';
import { prepareGuestRam, type GuestRam } from './guest-ram.js';
import { launchProcess, type LaunchError } from './process-launcher.js';
import { hostTscKhz } from './host.js';
import { acquireFileLock } from './file-lock.js';
import { imageInfo } from './image.js';
import { cacheDir, noMallocTrimPath, qemuBinary } from './paths.js';
import { QmpClient } from './qmp.js';
import { ownedTempDir, removeOwnedSync } from './temp-dirs.js';
import { watchConsoleLog } from './console-log.js';

// The QEMU-layer surface the broker uses is importable from here (choosing the accelerator is
// accel.ts's, which depends on this file for its probe).
export type { LaunchSpec } from './cmdline.js';
export { saveSnapshot, restoreSnapshot, SnapshotError, consoleLogOf, snapshotFileBytes } from './snapshot.js';
export { ramImageOf } from './guest-ram.js';
export { QmpClient, QmpError, QmpConnectionError, QmpState, type QmpEvent } from './qmp.js';
export { ownedTempDir, isStaleOwner, sweepStaleOnce } from './temp-dirs.js';

/** From spawn to QMP ready. TCG start-up is ~50 ms; a loaded host with 8 boots is far slower. */
export const kLaunchTimeoutMs = 30_000;
/** stop(): how long QEMU gets to exit after `quit` before SIGKILL. */
export const kStopGraceMs = 3_000;
const kStderrTailBytes = 4096;
/** After a QMP failure during launch, how long to wait for QEMU's exit to explain it. */
const kExitGraceMs = 500;
const kConsoleTailBytes = 4096;
/** The console tail kept in memory once the scratch dir is gone, for a dead VM's failure report. */
const kConsoleKeptBytes = 64 * 1024;
const kScratchPrefix = 'provium-vm-';

export interface QemuExit {
  code: number | null;
  signal: string | null;
  stderrTail: string;
}

/** QEMU failed to start or died during launch; `stderrTail` is what it printed last. */
export class QemuLaunchError extends Error {
  override name = 'QemuLaunchError';
  constructor(message: string, readonly stderrTail: string) {
    super(stderrTail ? `${message}\n${stderrTail.trimEnd()}` : message);
  }
}

let preload: string | undefined | null = null;

/**
 * glibc's malloc asks for transparent huge pages for its heaps (glibc 2.35+; older ones ignore
 * it). QEMU's allocations while it starts and translates guest code otherwise fault in one 4 KiB
 * page at a time: this takes a fixture suite's page faults from ~10,000 to ~6,000 per file and
 * its CPU down ~7% (BENCHMARKS.md).
 */
const kMallocTunables = 'glibc.malloc.hugetlb=1';

/**
 * The environment QEMU runs with: the host's, with kMallocTunables before the host's own
 * GLIBC_TUNABLES (glibc keeps the last setting of a tunable, so the host's wins), and
 * no-malloc-trim.so preloaded (why: that file) when built; a checkout that was not built runs
 * QEMU without the preload.
 */
export function qemuEnv(): NodeJS.ProcessEnv {
  if (preload === null) preload = existsSync(noMallocTrimPath()) ? noMallocTrimPath() : undefined;
  const env: NodeJS.ProcessEnv = { ...process.env };
  const tunables = process.env['GLIBC_TUNABLES'];
  env['GLIBC_TUNABLES'] = tunables ? `${kMallocTunables}:${tunables}` : kMallocTunables;
  if (preload !== undefined) {
    const others = process.env['LD_PRELOAD'];
    env['LD_PRELOAD'] = others ? `${others} ${preload}` : preload;
  }
  return env;
}

/** Every QEMU this process launched and has not seen exit: for killAllQemu(). */
const live = new Set<QemuVm>();
let exitHookInstalled = false;

/**
 * At exit, or a forced kill: synchronously SIGKILLs every live QEMU this process launched, and
 * removes everything it owns in the temp dirs (removeOwnedSync): scratch dirs and RAM files of
 * QEMUs running, exited but not stopped yet, or still launching (a QEMU started mid-launch dies
 * with the launcher), and whatever else a cut-short teardown left.
 */
export function killAllQemu(): void {
  for (const vm of live) {
    try { process.kill(vm.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  live.clear();
  removeOwnedSync();
}

export class QemuVm {
  state: 'running' | 'exited' = 'running';
  readonly agentSocketPath: string;
  readonly consoleSocketPath: string;
  private _name: string | undefined;
  readonly consoleLogPath: string;
  readonly qmpSocketPath: string;
  readonly stderrPath: string;
  readonly exited: Promise<QemuExit>;
  /** Wall time from launch() to QMP ready, in ms. */
  launchMs = 0;
  private _qmp: QmpClient | undefined;
  private _stopping: Promise<void> | undefined;
  /** The console's last bytes, read just before stop() removed the scratch dir. */
  private _keptConsole: string | undefined;
  private _consoleCap: { stop(): void } | undefined;

  private constructor(
    readonly spec: LaunchSpec,
    readonly accel: 'kvm' | 'tcg',
    readonly scratchDir: string,
    readonly pid: number,
    readonly argv: string[],
    /** The file behind guest RAM (guest-ram.ts); a shared one is this VM's and goes with it. */
    readonly ram: GuestRam | undefined,
    exit: Promise<QemuExit>,
  ) {
    this.agentSocketPath = join(scratchDir, 'agent.sock');
    this.consoleSocketPath = join(scratchDir, 'console.sock');
    this.consoleLogPath = join(scratchDir, 'console.log');
    this.qmpSocketPath = join(scratchDir, 'qmp.sock');
    this.stderrPath = join(scratchDir, 'qemu.stderr');
    this.exited = exit.then(async (e) => {
      this.state = 'exited';
      this._consoleCap?.stop();
      live.delete(this);
      this._qmp?.close();
      if (ram?.shared) await rm(ram.path, { force: true }).catch(() => undefined);
      return e;
    });
  }

  get name(): string {
    return this._name ?? this.spec.name;
  }

  /** A warm spare handed to a VM takes that VM's name in messages. */
  rename(name: string): void {
    this._name = name;
  }

  get qmp(): QmpClient {
    if (!this._qmp) throw new Error(`VM ${this.name}: QMP is not connected yet`);
    return this._qmp;
  }

  /** Resolves once QEMU runs and QMP is negotiated; rejects (with QEMU's stderr) if it exits first. */
  static async launch(spec: LaunchSpec): Promise<QemuVm> {
    const started = performance.now();
    const where = `VM ${spec.name} (profile ${spec.profile.name})`;

    // 1. Inputs that must exist: the kernel, the initrd parts. Checked here (boot time), not at load.
    //    A profile's first use (its build, root's kernel, cmdline_file) normally happens before
    //    dispatch (src/cli/wiring.ts); a launch nothing prepared for (a fixture command, a profile
    //    named at run time) does it here, once per process.
    if (spec.profile.firstUse) {
      try {
        await prepareProfile(spec.profile, launchBuildOptions());
      } catch (err) {
        throw new Error(`${where}: ${(err as Error).message}`);
      }
    }
    await mustExist(spec.profile.kernel, `${where}: kernel`);
    const initrdParts: string[] = [];
    if (spec.profile.initrd) initrdParts.push(await mustExist(spec.profile.initrd, `${where}: initrd`));
    if (spec.profile.injectAgent) initrdParts.push(await agentOverlayPath(where));
    if (spec.extraInitrd) initrdParts.push(await mustExist(spec.extraInitrd, `${where}: extra initrd`));

    const accel = spec.accel ?? (await resolveAccelWith(spec.profile.accel, probeKvm));
    const tscKhz = spec.profile.machine === 'microvm' ? await hostTscKhz() : undefined;

    // 2. Private scratch dir, marked with our pid so a later run can sweep it if we die without
    //    cleaning up (SIGKILL); the first launch sweeps what dead runs left (temp-dirs.ts).
    const scratch = await ownedTempDir(kScratchPrefix);
    // From here on, an exit removes the scratch dir and the RAM file, whatever the launch got to.
    installExitHook();
    let server: Server | undefined;
    let ram: GuestRam | undefined;
    let spawned = false;
    try {
      const guestRam = await prepareGuestRam(spec);
      ram = guestRam.ram;
      const initrdPath = initrdParts.length <= 1 ? initrdParts[0] : await concatInitrds(initrdParts, join(scratch, 'initrd.img'));
      const paths = {
        qmpSocketPath: join(scratch, 'qmp.sock'),
        agentSocketPath: join(scratch, 'agent.sock'),
        consoleSocketPath: join(scratch, 'console.sock'),
        consoleLogPath: join(scratch, 'console.log'),
      };
      const args = buildQemuArgs(spec, { accel, initrdPath, tscKhz, ram, ...paths });
      // A restored guest's log begins with the boot it was saved from; a missing one is no error.
      if (spec.consoleReplay !== undefined) await copyFile(spec.consoleReplay, paths.consoleLogPath).catch(() => undefined);

      // 3. Listen for QEMU's QMP connection before it starts.
      server = createServer();
      const accepted = new Promise<Socket>((resolve) => server!.once('connection', resolve));
      await new Promise<void>((resolve, reject) => {
        server!.once('error', reject);
        server!.listen(paths.qmpSocketPath, () => { server!.off('error', reject); resolve(); });
      });

      // 4. Start it (process-launcher.ts: without forking this process; it dies with us). QEMU's
      //    stdout is unused (no stdio chardevs).
      const stderrPath = join(scratch, 'qemu.stderr');
      const bin = qemuBinary();
      const argv = [...guestRam.fillFirst, bin, ...args];
      const launched = await launchProcess(argv, { env: qemuEnv(), stderrPath }).catch((err: LaunchError) => {
        const hint = err.code === 'ENOENT' ? ' — install it with `apt-get install qemu-system-x86` or set PROVIUM_QEMU' : '';
        throw new QemuLaunchError(`${where}: could not start ${bin}${hint}`, err.message);
      });
      const exit: Promise<QemuExit> = launched.exit.then(async (e) => ({ ...e, stderrTail: await tailFile(stderrPath, kStderrTailBytes) }));
      const vm = new QemuVm(spec, accel, scratch, launched.pid, argv, ram, exit);
      spawned = true;
      live.add(vm);
      // A chatty guest must not fill the temp dir: the log keeps its boot and its last MiBs.
      if (vm.state === 'running') vm._consoleCap = watchConsoleLog(paths.consoleLogPath);
      installExitHook();

      // 5. QMP, or QEMU's exit, or the launch timeout: whichever comes first.
      let timer: NodeJS.Timeout | undefined;
      try {
        vm._qmp = await Promise.race([
          accepted.then((sock) => QmpClient.accept(sock, `${spec.name}/qmp`)),
          vm.exited.then((e) => {
            throw new QemuLaunchError(`${where}: QEMU exited during launch (${e.signal ?? `code ${e.code}`})`, e.stderrTail);
          }),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new QemuLaunchError(`${where}: QEMU did not connect to QMP within ${kLaunchTimeoutMs} ms`, '')), kLaunchTimeoutMs);
          }),
        ]);
      } catch (err) {
        // A QMP failure is usually QEMU dying: report its exit and stderr rather than a socket error.
        const died = err instanceof QemuLaunchError
          ? undefined
          : await Promise.race([vm.exited, new Promise<undefined>((r) => setTimeout(r, kExitGraceMs, undefined))]);
        vm.kill();
        await vm.exited;
        if (died) throw new QemuLaunchError(`${where}: QEMU exited during launch (${died.signal ?? `code ${died.code}`})`, died.stderrTail);
        throw err;
      } finally {
        clearTimeout(timer);
      }
      // QEMU may have died between the handshake and here; the exited hook closes QMP then.
      if (vm.state === 'exited') vm._qmp.close();
      vm.launchMs = performance.now() - started;
      return vm;
    } catch (err) {
      await rm(scratch, { recursive: true, force: true });
      // Once QEMU was spawned, its exit removes the RAM file.
      if (ram?.shared && !spawned) await rm(ram.path, { force: true });
      throw err;
    } finally {
      server?.close();
    }
  }

  /**
   * The last `maxBytes` of the serial console log (4 KiB by default). After stop() it comes from
   * memory, so a VM that died (and was stopped) still shows its console when its failure is told.
   */
  consoleTail(maxBytes = kConsoleTailBytes): Promise<string> {
    if (this._keptConsole !== undefined) return Promise.resolve(this._keptConsole.slice(-maxBytes));
    return tailFile(this.consoleLogPath, maxBytes);
  }

  /** The last `maxBytes` of what QEMU printed (its error reports). */
  stderrTail(maxBytes = kStderrTailBytes): Promise<string> {
    return tailFile(this.stderrPath, maxBytes);
  }

  /** Idempotent: QMP `quit`, SIGKILL after `graceMs`, then removes the scratch dir. */
  stop(opts: { graceMs?: number } = {}): Promise<void> {
    this._stopping ??= this._stop(opts.graceMs ?? kStopGraceMs);
    return this._stopping;
  }

  /** SIGKILL now. The `exited` promise settles when the process is reaped. */
  kill(): void {
    if (this.state === 'exited') return;
    try { process.kill(this.pid, 'SIGKILL'); } catch { /* already gone */ }
  }

  private async _stop(graceMs: number): Promise<void> {
    if (this.state === 'running') {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs); });
      // `quit` may get no reply (QEMU exits first): either way we wait for the exit.
      this._qmp?.execute('quit', undefined, { timeoutMs: graceMs }).catch(() => {});
      await Promise.race([this.exited, grace]);
      clearTimeout(timer);
      this.kill();
      await this.exited;
    }
    this._keptConsole = await tailFile(this.consoleLogPath, kConsoleKeptBytes);
    await rm(this.scratchDir, { recursive: true, force: true });
  }
}

/**
 * The KVM probe behind `accel = "auto"` (accel-verdict.ts decides and caches): boots the minimal
 * image with KVM and waits, at most kKvmProbeTimeoutMs, for the agent to answer its hello.
 */
export async function probeKvm(): Promise<KvmProbeResult> {
  const image = await imageInfo();
  if (!image) {
    return { outcome: 'skipped', reason: 'the minimal image is not built, so KVM was not probed (run `provium image build`)' };
  }
  const profile = minimalProfile(image);
  let vm: QemuVm;
  try {
    vm = await QemuVm.launch({ name: 'kvm-probe', profile, memoryBytes: profile.memoryBytes, cpus: 1, accel: 'kvm', hotplugSlots: 0 });
  } catch (err) {
    const tail = (err as { stderrTail?: string }).stderrTail;
    const message = firstLine((err as Error).message);
    return { outcome: 'failed', reason: tail ? `${message}: ${lastLine(tail)}` : message };
  }
  try {
    const exited = vm.exited.then((e) => `QEMU exited (${e.signal ?? `code ${e.code}`}): ${lastLine(e.stderrTail)}`);
    const hello = agentHello(vm.agentSocketPath, kKvmProbeTimeoutMs).then(() => undefined, (e: Error) => e.message);
    const reason = await Promise.race([hello, exited]);
    return reason === undefined ? { outcome: 'ok' } : { outcome: 'failed', reason };
  } finally {
    await vm.stop({ graceMs: 500 });
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}

function lastLine(s: string): string {
  return s.trim().split('\n').pop()?.trim() ?? '';
}

/** A build started by a launch: output on stderr, the same cross-process lock as the CLI's. */
function launchBuildOptions(): PrepareOptions {
  return {
    cacheDir: cacheDir(),
    log: (line) => void process.stderr.write(`${line}\n`),
    lock: (path, holder) => acquireFileLock(path, { holder, timeoutMs: 60 * 60_000 }),
    debianRoot: debianRootBuilder((line) => void process.stderr.write(`${line}\n`)),
  };
}

/** The agent overlay cpio for profiles with inject_agent: $PROVIUM_OVERLAY or the built image's. */
export async function agentOverlayPath(where: string): Promise<string> {
  const explicit = process.env['PROVIUM_OVERLAY'];
  if (explicit) return mustExist(explicit, `${where}: agent overlay (PROVIUM_OVERLAY)`);
  const image = await imageInfo();
  if (!image) throw new Error(`${where}: inject_agent needs the agent overlay, which is built with the image — run \`provium image build\``);
  return image.agentOverlay;
}

async function mustExist(path: string, what: string): Promise<string> {
  try {
    await access(path, fsConstants.R_OK);
    return path;
  } catch (e) {
    throw new Error(`${what} ${path} is not readable (${(e as NodeJS.ErrnoException).code}) — check the path in provium.toml`);
  }
}

/**
 * initrd parts concatenated: the kernel unpacks each cpio (compressed or not) in turn, later
 * files winning. Each part starts 4-byte aligned, which uncompressed cpio requires.
 */
async function concatInitrds(parts: string[], dest: string): Promise<string> {
  const outFile = createWriteStream(dest, { mode: 0o600 });
  let written = 0;
  for (const part of parts) {
    const pad = (4 - (written % 4)) % 4;
    if (pad) { outFile.write(Buffer.alloc(pad)); written += pad; }
    await pipeline(createReadStream(part), outFile, { end: false });
    written += (await stat(part)).size;
  }
  await new Promise<void>((resolve, reject) => outFile.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return dest;
}

/** The last `maxBytes` of a file as text ('' when it is missing). */
export async function tailFile(path: string, maxBytes: number): Promise<string> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    return buf.toString('utf8');
  } finally {
    await fh.close();
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killAllQemu);
}
