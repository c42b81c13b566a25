// A profile's first use (its first boot in a run, or `provium prepare`): run its `build` when it
// is stale, find the kernel in its `root`, read its `cmdline_file`, and check that every file it
// names is there. Done once per profile per process; the result is applied to the Profile object
// itself, because the broker, the boot-snapshot key and QEMU's command line all read that object.
// Paths are not checked at load: a broken profile no selected test uses must not block a run.

import { constants } from 'node:fs';
import { access, lstat, readdir, readFile, readlink, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { runProfileBuild, type BuildOptions, type BuildOutcome } from './profile-build.js';
import { composeCmdline, ProfileError, type DebianRoot, type Profile, type ProfileBuild } from './profiles.js';

export interface PrepareOptions extends BuildOptions {
  /**
   * Builds (or finds) a Debian profile's root image and returns its path. Injected (src/vmm's
   * debian-image.ts), so that config does not depend on vmm; without it a Debian profile fails.
   */
  debianRoot?: (profile: Profile, root: DebianRoot) => Promise<string>;
}

/** A Debian root that could not be built: the run stops with exit 2, like a failed `build`. */
export class DebianRootError extends ProfileError {
  override name = 'DebianRootError';
}

export interface PreparedProfile {
  /** What the build did; undefined when the profile has none. */
  build?: BuildOutcome;
  kernel: string;
  cmdline: string;
}

/** One thing a profile names that is not usable. */
export interface ProfileFileProblem {
  /** The key that names it: kernel, initrd, root, cmdline_file, disks[1].image. */
  key: string;
  path: string;
  problem: string;
  /** The path is under the build's `{out}`: the build is what should make it. */
  fromBuild: boolean;
}

export interface ProfileFiles {
  /** The kernel to boot (`kernel`, or the one found in `root`), when there is one. */
  kernel?: string;
  /** How the kernel was found, for messages: "kernel" or "root". */
  kernelFrom?: 'kernel' | 'root';
  /** The full command line, cmdline_file first. */
  cmdline: string;
  problems: ProfileFileProblem[];
}

const prepared = new WeakMap<Profile, Promise<PreparedProfile>>();
/** A build shared by a profile and those that extend it runs once. */
const builds = new WeakMap<ProfileBuild, Promise<BuildOutcome>>();

/**
 * Builds (when stale, or `rebuild`), resolves and checks a profile, once per process: a second
 * call, from preflight or from a launch, gets the first one's result or error.
 */
export function prepareProfile(profile: Profile, opts: PrepareOptions): Promise<PreparedProfile> {
  let done = prepared.get(profile);
  if (!done) {
    done = prepareNow(profile, opts);
    prepared.set(profile, done);
  }
  return done;
}

async function prepareNow(profile: Profile, opts: PrepareOptions): Promise<PreparedProfile> {
  const first = profile.firstUse;
  // The untouched built-in has nothing to do: its image was checked when it was found.
  if (!first) return { kernel: profile.kernel, cmdline: profile.cmdline };

  // 1. The build: a failure is a ProfileBuildError, which names the command and its output.
  let build: BuildOutcome | undefined;
  if (first.build) {
    let running = builds.get(first.build);
    if (!running) {
      running = runProfileBuild(first.build, opts);
      builds.set(first.build, running);
    }
    build = await running;
  }

  // 2. A Debian root: built once per package list, then found in the cache.
  if (profile.debian) {
    if (!opts.debianRoot) throw new DebianRootError(`profile \`${profile.name}\`: its Debian root cannot be built from here — run \`provium image build ${profile.name}\` first`);
    try {
      profile.rootImage = await opts.debianRoot(profile, profile.debian);
    } catch (err) {
      throw new DebianRootError((err as Error).message, { cause: err });
    }
  }

  // 3. Files; every problem at once, each with its fix.
  const files = await inspectProfileFiles(profile);
  if (files.problems.length > 0) throw new ProfileError(describeProblems(profile, files.problems));

  // 4. Applied in place: everything that boots this profile reads these two fields.
  profile.kernel = files.kernel!;
  profile.cmdline = files.cmdline;
  return build ? { build, kernel: profile.kernel, cmdline: profile.cmdline } : { kernel: profile.kernel, cmdline: profile.cmdline };
}

/** What a profile names, checked without building or changing anything (also `provium doctor`). */
export async function inspectProfileFiles(profile: Profile): Promise<ProfileFiles> {
  const first = profile.firstUse;
  const out = first?.build?.out;
  const problems: ProfileFileProblem[] = [];
  const problem = (key: string, path: string, what: string): void => {
    problems.push({ key, path, problem: what, fromBuild: out !== undefined && isInside(path, out) });
  };
  const result: ProfileFiles = { cmdline: profile.cmdline, problems };

  // 1. The kernel: `kernel`, else the single one in `root`.
  if (profile.kernel !== '') {
    const why = await unreadableFile(profile.kernel);
    if (why) problem('kernel', profile.kernel, why);
    else Object.assign(result, { kernel: profile.kernel, kernelFrom: 'kernel' });
  } else if (profile.root !== undefined) {
    const found = await findRootKernel(profile.root);
    if ('problem' in found) problem('root', profile.root, found.problem);
    else Object.assign(result, { kernel: found.kernel, kernelFrom: 'root' });
  }
  if (profile.root !== undefined && profile.kernel !== '') {
    const st = await stat(profile.root).catch(() => undefined);
    if (!st?.isDirectory()) problem('root', profile.root, st ? 'is not a directory' : 'does not exist');
  }

  // 2. The initrd and the disk images.
  if (profile.initrd !== undefined) {
    const why = await unreadableFile(profile.initrd);
    if (why) problem('initrd', profile.initrd, why);
  }
  for (const [i, disk] of (profile.disks ?? []).entries()) {
    if (disk.image === undefined) continue;
    const why = await unreadableFile(disk.image);
    if (why) problem(`disks[${i + 1}].image`, disk.image, why);
  }

  // 3. cmdline_file: its whitespace collapsed, the inline cmdline after it (so inline wins).
  if (first?.cmdlineFile !== undefined) {
    let text: string | undefined;
    try {
      text = await readFile(first.cmdlineFile, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problem('cmdline_file', first.cmdlineFile, code === 'ENOENT' ? 'does not exist' : code === 'EISDIR' ? 'is a directory' : `cannot be read (${code})`);
    }
    if (text !== undefined) {
      const joined = `${text.split(/\s+/).filter(Boolean).join(' ')} ${first.inlineCmdline}`.trim();
      try {
        result.cmdline = composeCmdline(`profile \`${profile.name}\``, `\`cmdline_file\` ${first.cmdlineFile}`, joined, first.agentRdinit);
      } catch (err) {
        if (!(err instanceof ProfileError)) throw err;
        problem('cmdline_file', first.cmdlineFile, err.message.replace(/^profile `[^`]+`: /, ''));
      }
    }
  }
  return result;
}

/**
 * The kernel of a root filesystem: the single `usr/lib/modules/<rel>/vmlinuz-<rel>`, or
 * `boot/vmlinuz-<rel>` for a release that has none there. None, or two releases, is a problem.
 */
export async function findRootKernel(root: string): Promise<{ kernel: string; release: string } | { problem: string }> {
  const st = await stat(root).catch(() => undefined);
  if (!st) return { problem: 'does not exist' };
  if (!st.isDirectory()) return { problem: 'is not a directory' };
  const byRelease = new Map<string, string>();
  // 1. The modules tree: where the kernel lives beside its modules.
  const modules = join(root, 'usr/lib/modules');
  for (const release of await readdir(modules).catch(() => [] as string[])) {
    const file = join(modules, release, `vmlinuz-${release}`);
    if (await isFileInRoot(root, file)) byRelease.set(release, file);
  }
  // 2. /boot, for releases the modules tree does not have (a copy of the same kernel is not a second one).
  for (const name of await readdir(join(root, 'boot')).catch(() => [] as string[])) {
    const release = /^vmlinuz-(.+)$/.exec(name)?.[1];
    if (!release || byRelease.has(release)) continue;
    const file = join(root, 'boot', name);
    if (await isFileInRoot(root, file)) byRelease.set(release, file);
  }
  const found = [...byRelease.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  if (found.length === 0) {
    return { problem: 'holds no kernel: expected one usr/lib/modules/<release>/vmlinuz-<release> (or boot/vmlinuz-<release>); install one into the root, or set `kernel`' };
  }
  if (found.length > 1) {
    const list = found.map(([, file]) => relative(root, file)).join(', ');
    return { problem: `holds ${found.length} kernels (${list}); keep one, or set \`kernel\` to the one to boot` };
  }
  return { kernel: found[0]![1], release: found[0]![0] };
}

/** A regular file, following a symlink the way the guest would: an absolute target is inside the root. */
async function isFileInRoot(root: string, file: string): Promise<boolean> {
  let path = file;
  for (let hops = 0; hops < 8; hops++) {
    const st = await lstat(path).catch(() => undefined);
    if (!st) return false;
    if (!st.isSymbolicLink()) return st.isFile();
    const target = await readlink(path);
    path = isAbsolute(target) ? join(root, target) : resolve(dirname(path), target);
  }
  return false;
}

/** Why `path` cannot be read as a file, or undefined when it can. */
async function unreadableFile(path: string): Promise<string | undefined> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => e);
  if (st instanceof Error) return st.code === 'ENOENT' ? 'does not exist' : `cannot be read (${st.code})`;
  if (!st.isFile()) return st.isDirectory() ? 'is a directory, not a file' : 'is not a regular file';
  return access(path, constants.R_OK).then(() => undefined, (e: NodeJS.ErrnoException) => `is not readable (${e.code})`);
}

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** Every problem of a profile as one message: a line per problem, then how to fix them. */
export function describeProblems(profile: Profile, problems: ProfileFileProblem[]): string {
  const first = profile.firstUse;
  const lines = problems.map((p) =>
    `profile \`${profile.name}\`: ${p.key} ${p.path} ${p.problem}${p.fromBuild ? ` (under {out}: the build \`${first?.build?.command}\` should make it)` : ''}`);
  const fix = problems.every((p) => p.fromBuild)
    ? 'make the build write these files, or fix the paths'
    : `fix the paths in ${first?.source ?? 'provium.toml'} (relative paths start at ${first?.dir ?? 'its directory'})`;
  return `${lines.join('\n')}\n${fix}`;
}
