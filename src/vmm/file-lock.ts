// A lock shared between processes: the lock is the existence of a file, created with O_EXCL and
// holding `<pid>\n<holder>\n<host name> <boot id>\n`. Waiters poll. A lock whose owner is gone
// is stale and taken over: its pid is dead, it was written during an earlier boot or on another
// machine (a CI cache restored elsewhere), or it has no pid and is older than kNoPidStaleMs (the
// owner died between creating and writing it).
//
// Breaking a stale lock is serialised through a second lock, `<path>.break`: two waiters that both
// saw the same stale file must not both delete "it", because the second delete would hit the lock
// the first one has just created. Only the holder of `.break` deletes, and it reads the lock again
// first.
//
// Because the lock is the file and not the pid, one process may hold it once: a second acquire
// from the same process (two worker sessions wanting one fixture) waits like anyone else.
//
// Pids only mean something on one machine: the directory must not be shared live between hosts
// or containers (a lock written under another host name is stale by definition).

import { hostname } from 'node:os';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface FileLockOptions {
  /** Who takes it (written into the lock file after the pid, shown to waiters), e.g. a test file's path. */
  holder: string;
  /** Called once, when the lock is held by someone else, with that holder's text and pid. */
  onWait?: (heldBy: { pid: number; holder: string }) => void;
  /** Give up after this long (default 10 min) with an error naming the lock path, the holder and the fix. */
  timeoutMs?: number;
  pollMs?: number;
}

/** What a lock file says about its owner. */
export interface FileLockOwner {
  /** NaN when the file holds no pid (yet). */
  pid: number;
  holder: string;
  /** True when the owner is gone and the lock may be taken over. */
  stale: boolean;
}

export class FileLockTimeoutError extends Error {
  override name = 'FileLockTimeoutError';
  constructor(
    readonly path: string,
    readonly heldBy: { pid: number; holder: string },
    readonly waitedMs: number,
  ) {
    super(`gave up after ${formatMs(waitedMs)} waiting for the lock ${path}, held by ${describeOwner(heldBy)} — ` +
      `wait for it to finish, stop it${Number.isFinite(heldBy.pid) ? ` (kill ${heldBy.pid})` : ''}, ` +
      `or remove ${path} if no such process is running`);
  }
}

const kDefaultTimeoutMs = 10 * 60_000;
const kDefaultPollMs = 100;
/** A lock file without a pid is being written (microseconds); this old, its writer died. */
const kNoPidStaleMs = 10_000;

/** Takes the lock at `path` (creating its directory), waiting while someone else holds it. */
export async function acquireFileLock(path: string, opts: FileLockOptions): Promise<() => Promise<void>> {
  const timeoutMs = opts.timeoutMs ?? kDefaultTimeoutMs;
  const pollMs = opts.pollMs ?? kDefaultPollMs;
  if (!(timeoutMs >= 0)) throw new TypeError(`acquireFileLock: timeoutMs must be a number >= 0, got ${timeoutMs}`);
  if (!(pollMs > 0)) throw new TypeError(`acquireFileLock: pollMs must be a number > 0, got ${pollMs}`);
  await mkdir(dirname(path), { recursive: true });
  const content = await lockContent(opts.holder);
  const started = Date.now();
  let told = false;
  let lastSeen: { pid: number; holder: string } = { pid: Number.NaN, holder: '' };
  for (;;) {
    // 1. Try to create it.
    if (await tryCreate(path, content)) return releaser(path);

    // 2. Held: by whom? A stale owner is cleared and we try again at once.
    const owner = await readFileLock(path);
    if (owner === undefined) continue; // released between our create and our read
    if (owner.stale) {
      if (await breakIfStale(path)) continue;
      // Someone else is breaking it: poll like any waiter.
    } else {
      lastSeen = { pid: owner.pid, holder: owner.holder };
    }

    // 3. Held by a live owner: tell the caller once (after the owner wrote its name), then poll.
    if (!told && !owner.stale && Number.isFinite(owner.pid)) {
      told = true;
      opts.onWait?.(lastSeen);
    }
    const waited = Date.now() - started;
    if (waited >= timeoutMs) throw new FileLockTimeoutError(path, lastSeen, waited);
    await sleep(Math.min(pollMs, timeoutMs - waited));
  }
}

/** The owner of the lock at `path`, or undefined when nobody holds it. */
export async function readFileLock(path: string): Promise<FileLockOwner | undefined> {
  let text: string;
  let mtimeMs: number;
  try {
    // Read and stat one open file: a path-based stat could describe a newer lock than the text.
    const fh = await open(path, 'r');
    try {
      [text, mtimeMs] = await Promise.all([fh.readFile('utf8'), fh.stat().then((s) => s.mtimeMs)]);
    } finally {
      await fh.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw lockIoError(path, 'read', e);
  }
  const [pidLine = '', holder = '', machine = ''] = text.split('\n');
  const pid = /^\d+$/.test(pidLine.trim()) ? Number(pidLine.trim()) : Number.NaN;
  let stale: boolean;
  if (!Number.isFinite(pid) || pid <= 0) {
    stale = Date.now() - mtimeMs > kNoPidStaleMs;
  } else {
    stale = (machine !== '' && machine !== await thisMachine()) || !isProcessAlive(pid);
  }
  return { pid, holder, stale };
}

/** Removes the lock at `path` when its owner is gone; true when it did (or nobody held it). */
export async function removeStaleFileLock(path: string): Promise<boolean> {
  const owner = await readFileLock(path);
  if (owner === undefined) return true;
  if (!owner.stale) return false;
  return breakIfStale(path);
}

/** Who holds a lock, for messages: "pid 123 (spec/db.lua)". */
export function describeOwner(owner: { pid: number; holder: string }): string {
  const pid = Number.isFinite(owner.pid) ? `pid ${owner.pid}` : 'a process that has not written its pid yet';
  return owner.holder ? `${pid} (${owner.holder})` : pid;
}

/** Creates `path` exclusively with `content`; false when it exists. */
async function tryCreate(path: string, content: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw lockIoError(path, 'create', e);
  }
  try {
    await fh.writeFile(content);
    await fh.close();
  } catch (e) {
    // A lock without our pid would read as "being written" to others for 10 s: take it back.
    await fh.close().catch(() => undefined);
    await rm(path, { force: true });
    throw lockIoError(path, 'write', e);
  }
  return true;
}

/** Deletes the lock at `path` if it is still stale, holding `<path>.break` meanwhile. */
async function breakIfStale(path: string): Promise<boolean> {
  const breakPath = `${path}.break`;
  if (!(await tryCreate(breakPath, await lockContent(`breaking the stale lock ${path}`)))) {
    // Another waiter is breaking it (the caller polls again), or died doing so: clear that.
    const breaker = await readFileLock(breakPath);
    if (breaker?.stale) await rm(breakPath, { force: true });
    return false;
  }
  try {
    // Under `.break` nobody else deletes the lock, so a stale file read now is still the one we delete.
    const owner = await readFileLock(path);
    if (owner === undefined) return true;
    if (!owner.stale) return false;
    await rm(path, { force: true });
    return true;
  } finally {
    await rm(breakPath, { force: true });
  }
}

function releaser(path: string): () => Promise<void> {
  let released = false;
  return async () => {
    // Idempotent: a `finally` and an error path may both release.
    if (released) return;
    released = true;
    await rm(path, { force: true });
  };
}

async function lockContent(holder: string): Promise<string> {
  return `${process.pid}\n${holder.replace(/\n/g, ' ')}\n${await thisMachine()}\n`;
}

let machineId: Promise<string> | undefined;

/** Host name and boot id: a pid means nothing on another machine or after a reboot. */
function thisMachine(): Promise<string> {
  machineId ??= readFile('/proc/sys/kernel/random/boot_id', 'utf8')
    .then((id) => id.trim(), () => 'no-boot-id')
    .then((id) => `${hostname()} ${id}`);
  return machineId;
}

/** Whether process `pid` exists (on this machine). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockIoError(path: string, what: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  return new Error(`cannot ${what} the lock file ${path}: ${err.code ?? ''} ${err.message} — ` +
    `check that ${dirname(path)} exists, is writable and has free space`, { cause: e });
}

function formatMs(ms: number): string {
  return ms >= 60_000 ? `${(ms / 60_000).toFixed(1)} min` : `${(ms / 1000).toFixed(1)} s`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

