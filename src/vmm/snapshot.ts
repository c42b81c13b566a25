// Snapshots as QEMU migration streams over unix sockets (DESIGN §4).
//
// Save: raise max-bandwidth (the default 128 MiB/s makes a save take 0.5 s), `stop`, `migrate`
// to a socket we listen on, write the stream to the file. Done means both: QEMU reported the
// migration `completed` and the file has every byte QEMU sent (no `exec:cat` flush race).
// Restore: QEMU was started with `-incoming defer`; `migrate-incoming` makes it listen on a
// socket in its scratch dir, we stream the file in, wait for `completed`, then `cont`.
// Guest RAM in a shared file (guest-ram.ts) is not in the stream (`x-ignore-shared`): a save copies
// it to `<file>.ram` while the guest is stopped, and a restore launched QEMU on a copy of that.
//
// A stream that carries RAM is copied by a `cat` child holding the socket as stdin/stdout, not by
// Node: piping 65 MB through the event loop halves QEMU's migration speed (measured: a save takes
// 110-170 ms through a Node pipeline, 50-75 ms through cat). Device state alone (a few hundred KB,
// RAM in its image) goes through Node: a spawn costs the busy main thread more than that.

import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { connect, createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { copySparse, ramImageOf, type GuestRam } from './guest-ram.js';
import type { QmpClient, QmpEvent } from './qmp.js';

/** Upper bound for one save or restore of a guest of a few hundred MiB. */

/** The console log saved beside a snapshot: a restore replays it, so the guest's boot log is there. */
export function consoleLogOf(snapshotFile: string): string {
  return `${snapshotFile}.console`;
}

export const kSnapshotTimeoutMs = 60_000;
/** Bytes per second: effectively unlimited (QEMU caps the parameter at SIZE_MAX/1000). */
const kMaxBandwidth = 2 ** 40;
/** After a failed migration, how long to wait for QEMU's own explanation on stderr. */
const kStderrWaitMs = 300;
/** Fallback status poll, in case an event is missed. */
const kStatusPollMs = 100;

/**
 * What a snapshot needs of a QEMU process. qemu.ts's QemuVm is one; it re-exports this file, so
 * naming QemuVm here would make the two files import each other.
 */
export interface SnapshotVm {
  readonly name: string;
  readonly qmp: QmpClient;
  readonly scratchDir: string;
  readonly spec: { readonly incomingSnapshot?: boolean; readonly ramImage?: string };
  readonly ram: GuestRam | undefined;
  readonly state: 'running' | 'exited';
  readonly exited: Promise<{ code: number | null; signal: string | null; stderrTail: string }>;
  stderrTail(maxBytes?: number): Promise<string>;
}

/** VMs whose migration capabilities and parameters are already set. */
const configured = new WeakSet<SnapshotVm>();

export class SnapshotError extends Error {
  override name = 'SnapshotError';
}

interface MigrationInfo {
  status?: string;
  'error-desc'?: string;
}

/**
 * Saves the VM's state to `file`. The VM is left paused unless `resume` (default: resume when it
 * was running before the save).
 */
export async function saveSnapshot(vm: SnapshotVm, file: string, opts: { resume?: boolean } = {}): Promise<{ bytes: number; ms: number }> {
  const started = performance.now();
  const where = `VM ${vm.name}: snapshot to ${file}`;
  mustRun(vm, where);
  const qmp = vm.qmp;
  const status = await qmp.execute<{ running: boolean; status: string }>('query-status');
  const resume = opts.resume ?? status.running;
  // Guest RAM in a shared file: the stream carries device state only, and the file is copied beside it.
  const ramInFile = vm.ram?.shared === true;
  // The file first: a path we cannot write must fail before the guest is paused.
  const out = await open(file, 'w', 0o600).catch((e: NodeJS.ErrnoException) => {
    throw new SnapshotError(`${where}: cannot create the file (${e.code})`);
  });
  const sockPath = join(vm.scratchDir, `save-${Date.now()}.sock`);
  const server = createServer();
  try {
    // 1. Parameters and capabilities (once per QEMU), then pause the guest. A VM still paused
    //    after an earlier save (`postmigrate`) cannot migrate again until it has run.
    if (!configured.has(vm)) {
      await qmp.execute('migrate-set-capabilities', { capabilities: migrationCapabilities(ramInFile) });
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': kMaxBandwidth });
      configured.add(vm);
    }
    if (status.status === 'postmigrate') await qmp.execute('cont');
    if (status.running || status.status === 'postmigrate') await qmp.execute('stop');

    // 2. Listen, let QEMU connect, and copy its stream to the file.
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sockPath, () => { server.off('error', reject); resolve(); });
    });
    const copied = new Promise<void>((resolve, reject) => {
      server.once('connection', (sock: Socket) => {
        server.close();
        (ramInFile ? pipeline(sock, createWriteStream('', { fd: out.fd, autoClose: false })) : catSocketToFd(sock, out.fd)).then(resolve, reject);
      });
    });
    copied.catch(() => {});
    const migrating = qmp.execute('migrate', { uri: `unix:${sockPath}` });
    const done = migrationDone(vm, where, migrating);
    // Whoever fails first is reported; the others must not become unhandled rejections.
    done.catch(() => {});
    await migrating;
    await withTimeout(Promise.all([done, copied]), kSnapshotTimeoutMs, `${where}: not complete within ${kSnapshotTimeoutMs} ms`);
    // 3. The guest is stopped: its RAM file is this instant's RAM. Without one, RAM was in the
    //    stream, and an image left by an earlier snapshot at this path must not be restored with it.
    if (ramInFile) await copySparse(vm.ram!.path, ramImageOf(file));
    else await rm(ramImageOf(file), { force: true });
  } catch (err) {
    // Leave the VM as it was: no migration in flight, running if it ran, no partial file.
    await qmp.execute('migrate_cancel').catch(() => {});
    if (resume) await qmp.execute('cont').catch(() => {});
    await Promise.all([rm(file, { force: true }), rm(ramImageOf(file), { force: true })]);
    const message = (err as Error).message;
    if (isNoSpace(err)) {
      throw new SnapshotError(`${where}: no space left on the filesystem of ${dirname(file)} — free space there or write the snapshot elsewhere (${message})`);
    }
    throw err instanceof SnapshotError ? err : new SnapshotError(`${where} failed: ${message}`);
  } finally {
    server.close();
    await out.close();
    await rm(sockPath, { force: true });
  }

  // 4. A migrated-away source is in `postmigrate`; `cont` runs it again.
  if (resume) await qmp.execute('cont');
  return { bytes: await snapshotFileBytes(file), ms: performance.now() - started };
}

/**
 * Loads `file` into a VM launched with `incomingSnapshot` (same machine, memory and devices as
 * the one saved), then resumes it. The caller reconnects to the agent afterwards and resyncs.
 */
export async function restoreSnapshot(vm: SnapshotVm, file: string): Promise<void> {
  const where = `VM ${vm.name}: restore from ${file}`;
  mustRun(vm, where);
  if (!vm.spec.incomingSnapshot) throw new SnapshotError(`${where}: the VM was not launched with incomingSnapshot`);
  await stat(file).catch((e: NodeJS.ErrnoException) => {
    throw new SnapshotError(`${where}: cannot read the snapshot (${e.code})`);
  });
  const qmp = vm.qmp;
  // A stream saved beside a RAM image holds no RAM; QEMU was launched on a copy of the image.
  const ramInFile = vm.spec.ramImage !== undefined;
  await qmp.execute('migrate-set-capabilities', { capabilities: migrationCapabilities(ramInFile) });

  // 1. QEMU listens; we connect and stream the file in.
  const sockPath = join(vm.scratchDir, `restore-${Date.now()}.sock`);
  try {
    const migrating = qmp.execute('migrate-incoming', { uri: `unix:${sockPath}` });
    const done = migrationDone(vm, where, migrating);
    // Whoever fails first is reported; the others must not become unhandled rejections.
    done.catch(() => {});
    await migrating;
    const sent = new Promise<void>((resolve, reject) => {
      const sock = connect(sockPath);
      sock.once('error', reject);
      sock.once('connect', () => {
        // QEMU closes its end as soon as it has the whole stream or hits an error; the
        // migration status tells which, so the copy's own outcome is not what gets reported.
        const send = ramInFile ? pipeline(createReadStream(file), sock) : catFileToSocket(file, sock);
        send.then(resolve, () => resolve());
      });
    });
    sent.catch(() => {});
    await withTimeout(Promise.all([done, sent]), kSnapshotTimeoutMs, `${where}: not complete within ${kSnapshotTimeoutMs} ms`);
  } catch (err) {
    throw err instanceof SnapshotError ? err : new SnapshotError(`${where} failed: ${(err as Error).message}`);
  } finally {
    await rm(sockPath, { force: true });
  }

  // 2. The guest was stopped when saved, so it comes up paused.
  await qmp.execute('cont');
}

/** A write that failed for want of space (cat and cp report it in words, Node with a code). */
export function isNoSpace(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.code === 'ENOSPC' || e?.code === 'EDQUOT' || /No space left on device|Disk quota exceeded/.test(String(e?.message));
}

/** `events`, and `x-ignore-shared` when guest RAM is a shared file saved beside the stream. */
function migrationCapabilities(ignoreSharedRam: boolean): { capability: string; state: boolean }[] {
  return [{ capability: 'events', state: true }, { capability: 'x-ignore-shared', state: ignoreSharedRam }];
}

/** A snapshot's bytes on disk: its stream, plus its RAM image's data (the image is sparse). */
export async function snapshotFileBytes(file: string): Promise<number> {
  const [st, ram] = await Promise.all([stat(file), stat(ramImageOf(file)).catch(() => undefined)]);
  return st.size + (ram ? ram.blocks * 512 : 0);
}

/**
 * Resolves on migration `completed`, rejects on `failed`/`cancelled` with QEMU's reason. Events
 * drive it; a status poll covers a missed event. The poll starts only once `started` resolves
 * (the migrate command returned): before that, query-migrate reports the previous migration.
 */
function migrationDone(vm: SnapshotVm, where: string, started: Promise<unknown>): Promise<void> {
  const qmp = vm.qmp;
  return new Promise<void>((resolve, reject) => {
    let finished = false;
    let poll: NodeJS.Timeout | undefined;
    const finish = async (status: string) => {
      if (finished) return;
      if (status === 'completed') {
        finished = true;
        cleanup();
        resolve();
      } else if (status === 'failed' || status === 'cancelled') {
        finished = true;
        cleanup();
        const info = await qmp.execute<MigrationInfo>('query-migrate').catch(() => ({} as MigrationInfo));
        // A failed incoming migration makes QEMU print why and exit: give it a moment.
        const printed = await Promise.race([vm.exited.then(() => undefined), sleep(kStderrWaitMs)]).then(() => vm.stderrTail(1024));
        // QEMU explains a failed load over a few lines, the cause first ("Size mismatch: pc.ram …").
        const why = [info['error-desc'], ...lastLines(printed, 3)].filter(Boolean).join('; ');
        reject(new SnapshotError(`${where}: migration ${status}${why ? `: ${why}` : ''}`));
      }
    };
    const onEvent = (ev: QmpEvent) => {
      if (ev.event === 'MIGRATION') void finish(String(ev.data?.['status']));
    };
    const onClose = () => {
      if (finished) return;
      finished = true;
      cleanup();
      void vm.exited.then((e) => reject(new SnapshotError(`${where}: QEMU exited (${e.signal ?? `code ${e.code}`}): ${lastLine(e.stderrTail)}`)));
    };
    const cleanup = () => {
      clearInterval(poll);
      qmp.off('event', onEvent);
      qmp.off('close', onClose);
    };
    qmp.on('event', onEvent);
    qmp.on('close', onClose);
    started.then(() => {
      if (finished) return;
      poll = setInterval(() => {
        qmp.execute<MigrationInfo>('query-migrate').then((i) => { if (i.status) void finish(i.status); }, () => {});
      }, kStatusPollMs);
    }, (err: Error) => {
      if (finished) return;
      finished = true;
      cleanup();
      reject(err);
    });
  });
}

/** `cat` with the socket as stdin and `fd` as stdout; resolves when it exits 0 (EOF from QEMU). */
function catSocketToFd(sock: Socket, fd: number): Promise<void> {
  return runCat(spawn('cat', [], { stdio: [sock, fd, 'pipe'] }), sock);
}

/** `cat FILE` with the socket as stdout; resolves when it exits 0 (the whole file sent). */
function catFileToSocket(file: string, sock: Socket): Promise<void> {
  return runCat(spawn('cat', [file], { stdio: ['ignore', sock, 'pipe'] }), sock);
}

/**
 * Node's handle on the socket is closed as soon as cat has its copy, so cat is the socket's only
 * holder and the other side sees EOF exactly when cat is done.
 */
function runCat(child: ChildProcess, sock: Socket): Promise<void> {
  sock.destroy();
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.once('error', (e) => reject(new Error(`cat: ${e.message}`)));
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`cat exited with ${code ?? signal}: ${stderr.trim()}`));
    });
  });
}

function lastLine(s: string): string {
  return s.trim().split('\n').pop()?.trim() ?? '';
}

function lastLines(s: string, n: number): string[] {
  return s.trim().split('\n').slice(-n).map((l) => l.replace(/^qemu-system-\w+: /, '').trim()).filter(Boolean);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function mustRun(vm: SnapshotVm, where: string): void {
  if (vm.state !== 'running') throw new SnapshotError(`${where}: QEMU is not running`);
}

async function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new SnapshotError(message)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}
