// A profile's `build` (reference §3.2, issue 11): `sh -c <command>` in the profile's directory,
// `{out}` created first. Unlike the reference it is skipped while nothing it depends on changed:
// a stamp in <cache>/build-stamps records the command, its directory, `{out}` and the stamps of
// the `build_inputs` files (content for small files, size and mtime for big ones). Without
// build_inputs, the command and `{out}` existing are the whole stamp. A failed build leaves no
// stamp, so the next use runs it again.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import fg from 'fast-glob';
import { ProfileError, type ProfileBuild } from './profiles.js';

const kStampVersion = 1;
/** Files up to this size are stamped by content, bigger ones by size and mtime. */
const kContentStampMaxBytes = 1024 * 1024;
/** Lines of a failed build's output kept for its error. */
const kTailLines = 20;
const kTailLineMaxChars = 400;

/** Takes a cross-process lock at `path` (src/vmm/file-lock.ts, injected); resolves to its release. */
export type BuildLock = (path: string, holder: string) => Promise<() => Promise<void>>;

export interface BuildOptions {
  /** Stamps live in `<cacheDir>/build-stamps`; the build also sees it as PROVIUM_CACHE_DIR. */
  cacheDir: string;
  /** Run even when the stamp is current (--rebuild, `provium prepare`). */
  rebuild?: boolean;
  /** One line of the build's output or of what we decided, already prefixed with the profile. */
  log: (line: string) => void;
  /** Serialises two runs building the same `{out}`; none in unit tests. */
  lock?: BuildLock;
  /** The build's environment (default process.env), plus PROVIUM_PROFILE, PROVIUM_BUILD_OUT. */
  env?: NodeJS.ProcessEnv;
}

export type BuildOutcome =
  | { ran: true; ms: number; why: string }
  | { ran: false; why: string };

/** A build that exited non-zero (or could not start): exit 2, naming all of it. */
export class ProfileBuildError extends ProfileError {
  override name = 'ProfileBuildError';
  constructor(
    readonly profile: string,
    readonly command: string,
    readonly cwd: string,
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly tail: string[],
  ) {
    const how = exitCode !== null ? `exit code ${exitCode}` : signal ? `killed by ${signal}` : 'could not start';
    const output = tail.length ? `\n  last output:\n${tail.map((l) => `    ${l}`).join('\n')}` : '\n  (no output)';
    super(
      `profile \`${profile}\`: \`build\` failed (${how}): ${command}\n  in ${cwd}${output}\n` +
        '  fix the build, or run the command by hand in that directory to see all of its output',
    );
  }
}

interface Stamp {
  version: number;
  command: string;
  cwd: string;
  out: string;
  /** Relative path → stamp; null without build_inputs. */
  inputs: Record<string, string> | null;
  /** Patterns that matched nothing (a typo shows up in the log). */
  unmatched: string[];
  builtAt: string;
}

/** `<cache>/build-stamps/<owner>-<hash of out>.json`: one stamp per output directory. */
export function stampPath(cacheDir: string, build: ProfileBuild): string {
  const outHash = createHash('sha256').update(build.out).digest('hex').slice(0, 12);
  return join(cacheDir, 'build-stamps', `${build.owner}-${outHash}.json`);
}

/** Runs the build unless its stamp is current (or `rebuild`), under the lock when one is given. */
export async function runProfileBuild(build: ProfileBuild, opts: BuildOptions): Promise<BuildOutcome> {
  const log = (line: string): void => opts.log(`[${build.owner}] ${line}`);
  const file = stampPath(opts.cacheDir, build);
  const release = opts.lock ? await opts.lock(`${file}.lock`, `build of profile \`${build.owner}\``) : undefined;
  try {
    // 1. Current? Checked under the lock: another run may have just built it.
    const why = opts.rebuild ? 'forced by --rebuild or `provium prepare`' : await staleReason(build, file);
    if (why === undefined) {
      log(`build is current (inputs unchanged); skipped: ${build.command}`);
      return { ran: false, why: 'current' };
    }

    // 2. Run it: a stale stamp must not survive a failed or interrupted build.
    await rm(file, { force: true });
    await mkdir(build.out, { recursive: true });
    log(`building (${why}): ${build.command}`);
    const started = performance.now();
    await runCommand(build, opts, log);
    const ms = performance.now() - started;

    // 3. Stamp what it was built from, as it is now (a build may touch its own inputs).
    const inputs = await inputStamps(build);
    const stamp: Stamp = {
      version: kStampVersion,
      command: build.command,
      cwd: build.cwd,
      out: build.out,
      inputs: inputs?.files ?? null,
      unmatched: inputs?.unmatched ?? [],
      builtAt: new Date().toISOString(),
    };
    await mkdir(join(opts.cacheDir, 'build-stamps'), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(stamp, null, 2) + '\n');
    await rename(tmp, file);
    log(`built in ${(ms / 1000).toFixed(1)}s`);
    if (stamp.unmatched.length) log(`warning: build_inputs ${stamp.unmatched.map((p) => JSON.stringify(p)).join(', ')} matched no file in ${build.cwd}`);
    return { ran: true, ms, why };
  } finally {
    await release?.();
  }
}

/** Why the build must run, or undefined when its stamp is current. */
export async function staleReason(build: ProfileBuild, file: string): Promise<string | undefined> {
  let stamp: Stamp;
  try {
    stamp = JSON.parse(await readFile(file, 'utf8')) as Stamp;
  } catch {
    return 'no successful build recorded';
  }
  if (stamp.version !== kStampVersion) return 'stamp from another Provium version';
  if (stamp.command !== build.command) return 'the command changed';
  if (stamp.cwd !== build.cwd) return 'its directory changed';
  if (stamp.out !== build.out) return '{out} changed';
  const out = await stat(build.out).catch(() => undefined);
  if (!out?.isDirectory()) return `{out} ${build.out} is missing`;
  const now = await inputStamps(build);
  if ((now === undefined) !== (stamp.inputs === null)) return 'build_inputs changed';
  if (now && stamp.inputs) {
    const before = stamp.inputs;
    const changed = Object.keys(now.files).filter((f) => before[f] !== now.files[f]);
    const gone = Object.keys(before).filter((f) => !(f in now.files));
    const all = [...changed, ...gone];
    if (all.length) return `input${all.length === 1 ? '' : 's'} changed: ${all.slice(0, 5).join(', ')}${all.length > 5 ? `, … (${all.length})` : ''}`;
  }
  return undefined;
}

/** The stamps of the build_inputs files, or undefined when the build declares none. */
async function inputStamps(build: ProfileBuild): Promise<{ files: Record<string, string>; unmatched: string[] } | undefined> {
  if (!build.inputs) return undefined;
  // {out} inside the profile's directory is the build's output, never its input.
  const outRel = relative(build.cwd, build.out);
  const ignore = outRel && !outRel.startsWith('..') && !isAbsolute(outRel) ? [`${outRel}/**`] : [];
  const files: Record<string, string> = {};
  const unmatched: string[] = [];
  for (const pattern of build.inputs) {
    const matches = await fg(pattern, { cwd: build.cwd, dot: true, onlyFiles: true, followSymbolicLinks: true, ignore, suppressErrors: true });
    if (matches.length === 0) unmatched.push(pattern);
    for (const rel of matches) files[rel] ??= await fileStamp(join(build.cwd, rel));
  }
  // Sorted keys: the same inputs give the same stamp, whatever order the globs found them in.
  return { files: Object.fromEntries(Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1))), unmatched };
}

async function fileStamp(file: string): Promise<string> {
  try {
    const st = await stat(file, { bigint: true });
    if (st.size <= BigInt(kContentStampMaxBytes)) {
      return `sha256:${createHash('sha256').update(await readFile(file)).digest('hex').slice(0, 32)}`;
    }
    return `size:${st.size}:mtime_ns:${st.mtimeNs}`;
  } catch {
    return 'unreadable';
  }
}

/** `sh -c command` in the profile's directory, output line by line to `log`; throws on failure. */
function runCommand(build: ProfileBuild, opts: BuildOptions, log: (line: string) => void): Promise<void> {
  const tail: string[] = [];
  const keep = (line: string): void => {
    tail.push(line.length > kTailLineMaxChars ? `${line.slice(0, kTailLineMaxChars)}…` : line);
    if (tail.length > kTailLines) tail.shift();
    log(line);
  };
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', build.command], {
      cwd: build.cwd,
      env: { ...(opts.env ?? process.env), PROVIUM_PROFILE: build.owner, PROVIUM_BUILD_OUT: build.out, PROVIUM_CACHE_DIR: opts.cacheDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const flushers = [child.stdout, child.stderr].map((stream) => {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop()!;
        for (const line of lines) keep(line.replace(/\r$/, ''));
      });
      return () => {
        if (partial) keep(partial);
        partial = '';
      };
    });
    child.once('error', (err) => {
      keep(`${(err as NodeJS.ErrnoException).code === 'ENOENT' ? `cannot start sh in ${build.cwd}` : 'cannot start the build'}: ${err.message}`);
      reject(new ProfileBuildError(build.owner, build.command, build.cwd, null, null, tail));
    });
    child.once('close', (code, signal) => {
      for (const flush of flushers) flush();
      if (code === 0) resolve();
      else reject(new ProfileBuildError(build.owner, build.command, build.cwd, code, signal, tail));
    });
  });
}
