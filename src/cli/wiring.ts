// The real dependencies of a run: the broker, the piscina pool, the environment checks, the
// builds and checks of the profiles the run uses, and the accelerator verdict. Unit tests hand
// the controller stand-ins instead.

import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join, relative } from 'node:path';
import { Broker } from '../broker/broker.js';
import { loadConfig, type ProviumConfig } from '../config/config.js';
import { ProfileBuildError } from '../config/profile-build.js';
import { DebianRootError, prepareProfile, type PrepareOptions } from '../config/profile-prepare.js';
import { profilesUsedBy } from '../config/profile-use.js';
import { kMinimalProfile, ProfileError } from '../config/profiles.js';
import { createReporters } from '../report/outputs.js';
import type { RunDeps, RunOptions } from '../run/controller.js';
import { UsageError } from '../run/errors.js';
import { planOptionsOf, planRun, taskRoots } from '../run/plan.js';
import { checkWorkerFile, createWorkerPool, defaultWorkerFile } from '../run/pool.js';
import { autoAccel } from '../vmm/accel.js';
import { debianRootBuilder } from '../vmm/debian-image.js';
import { acquireFileLock, FileLockTimeoutError } from '../vmm/file-lock.js';
import { imageForRun, imageInfo } from '../vmm/image.js';
import { qemuBinary } from '../vmm/paths.js';
import { killAllQemu } from '../vmm/qemu.js';

/** An executable by name on PATH (or a path), without spawning it. */
export async function findExecutable(name: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const candidates = name.includes('/') ? [name] : (env['PATH'] ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return isAbsolute(candidate) ? candidate : join(process.cwd(), candidate);
    } catch {
      // Next.
    }
  }
  return undefined;
}

/** A second run waits this long for another run's build of the same profile. */
const kBuildLockWaitMs = 60 * 60_000;

export const kQemuFix = 'install it with `apt-get install -y qemu-system-x86` (or `npm run setup`), or point PROVIUM_QEMU at a qemu-system-x86_64 binary';

/** What a run needs before it starts; each failure names its fix (exit 2). */
export async function preflight(config: ProviumConfig, opts: { skipEnvironment: boolean }): Promise<void> {
  await checkWorkerFile(defaultWorkerFile());
  if (opts.skipEnvironment) return;
  const qemu = qemuBinary();
  if (!(await findExecutable(qemu))) throw new UsageError(`${qemu} not found; ${kQemuFix}`);
  // Without the minimal image and without profiles of their own, no test can boot anything.
  const missing = config.unavailableProfiles['minimal'];
  if (missing && Object.keys(config.profiles).length === 0) throw new UsageError(missing);
  // Profiles' files are checked when they are first used (prepareUsedProfiles), not here: a
  // broken profile that no selected test uses must not block the run.
}

/** What a run's preflight needs to build and check the profiles its files use. */
export interface RunPrepare {
  /** The run's options: its plan says which files will run. */
  options: RunOptions;
  cwd: string;
  /** --rebuild: run every used profile's build even when its inputs did not change. */
  rebuild: boolean;
  /** Build output, one prefixed line at a time. */
  stderr: { write(chunk: string): unknown };
}

/** Build options wired to the real world: the cross-process lock of src/vmm, output on `stderr`. */
export function buildOptionsFor(config: ProviumConfig, opts: { rebuild: boolean; stderr: { write(chunk: string): unknown } }): PrepareOptions {
  return {
    cacheDir: config.cacheDir,
    rebuild: opts.rebuild,
    log: (line) => void opts.stderr.write(`${line}\n`),
    lock: (path, holder) =>
      acquireFileLock(path, {
        holder,
        onWait: (heldBy) => void opts.stderr.write(`provium: waiting for another ${holder} (pid ${heldBy.pid})\n`),
        timeoutMs: kBuildLockWaitMs,
      }),
    debianRoot: debianRootBuilder((line) => void opts.stderr.write(`provium: ${line}\n`)),
  };
}

/**
 * Before dispatch: runs the builds of the profiles the selected files use and checks their files
 * (reference §3.2, issue 11). The literal profile names of the files (and of the fixtures and
 * helpers they use) decide; a computed name anywhere brings in every profile, whose problems are
 * then warnings (that profile may never be booted) unless a file names it literally. A failed
 * build always ends the run: exit 2, naming the profile, the command and its output.
 */
export async function prepareUsedProfiles(config: ProviumConfig, prep: RunPrepare): Promise<void> {
  // 1. The files that will run, exactly as the run plans them (quietly: the run warns itself).
  const use = await usedProfiles(config, prep);
  if (!use) return;
  const literal = new Set(use.names);
  const names = use.dynamicIn.length > 0
    ? [...new Set([...use.names, ...Object.keys(config.profiles).sort()])]
    : use.names;

  // 2. Prepare each; a build failure stops at once, file problems are collected.
  const opts = buildOptionsFor(config, prep);
  const problems: string[] = [];
  for (const name of names) {
    const unavailable = config.unavailableProfiles[name];
    if (unavailable !== undefined) {
      if (literal.has(name)) problems.push(unavailable);
      continue;
    }
    const profile = config.profiles[name];
    // An unknown name fails its vm:create with the list of known profiles.
    if (!profile) continue;
    try {
      await prepareProfile(profile, opts);
    } catch (err) {
      if (err instanceof ProfileBuildError || err instanceof DebianRootError) throw new UsageError(err.message);
      if (err instanceof FileLockTimeoutError) throw new UsageError(`profile \`${name}\`: ${err.message}`);
      if (!(err instanceof ProfileError)) throw err;
      if (literal.has(name)) problems.push(err.message);
      else prep.stderr.write(`provium: warning: ${err.message.replace(/\n/g, '\n  ')}\n  (a computed profile name in ${use.dynamicIn.map((f) => relative(prep.cwd, f) || f).join(', ')} may use it; its boots would fail)\n`);
    }
  }
  if (problems.length > 0) throw new UsageError(problems.join('\n'));
}

type ProfileUse = Awaited<ReturnType<typeof profilesUsedBy>>;
/** Per run: a fresh machine's run asks before and after building the image, for the same files. */
const profileUseOf = new WeakMap<RunPrepare, Promise<ProfileUse | undefined>>();

/** The profile names the run's files use (statically), or undefined when no file will run. */
function usedProfiles(config: ProviumConfig, prep: RunPrepare): Promise<ProfileUse | undefined> {
  let use = profileUseOf.get(prep);
  if (!use) {
    use = (async () => {
      const plan = await planRun(planOptionsOf(prep.options, prep.cwd), () => {});
      if (plan.kind !== 'files' || plan.files.length === 0) return undefined;
      return profilesUsedBy(plan.files.map((f) => ({ file: f.file, roots: taskRoots(config.roots, f) })));
    })();
    profileUseOf.set(prep, use);
  }
  return use;
}

/**
 * A fresh machine's first run: when the cache has no `minimal` image (or a corrupt one) and a
 * selected file uses a profile that lacks it, the image is built (once, under the build lock: a
 * second run waits) and the config loaded again with it. A run that boots nothing builds nothing.
 */
export async function buildImageIfUsed(config: ProviumConfig, prep: RunPrepare): Promise<void> {
  if (config.unavailableProfiles[kMinimalProfile] === undefined) return;
  const use = await usedProfiles(config, prep);
  if (!use || !(use.dynamicIn.length > 0 || use.names.some((n) => config.unavailableProfiles[n] !== undefined))) return;
  try {
    await imageForRun((line) => void prep.stderr.write(`provium: ${line}\n`));
  } catch (err) {
    // The profiles stay unavailable, and prepareUsedProfiles names them with their fix.
    prep.stderr.write(`provium: warning: ${(err as Error).message}\n`);
    return;
  }
  Object.assign(config, await loadConfig({ ...(config.path !== null ? { path: config.path } : {}), cwd: prep.cwd, findMinimalImage: imageInfo }));
}

export function realDeps(opts: { skipPreflight: boolean; prepare?: RunPrepare }): RunDeps {
  return {
    createBroker: (brokerOpts) => new Broker(brokerOpts),
    createWorkerPool,
    createReporters,
    workerFile: defaultWorkerFile(),
    preflight: async (config) => {
      if (opts.prepare) await buildImageIfUsed(config, opts.prepare);
      await preflight(config, { skipEnvironment: opts.skipPreflight });
      // Builds are not environment checks: --no-preflight still builds what the run boots.
      if (opts.prepare) await prepareUsedProfiles(config, opts.prepare);
    },
    accel: async () => {
      const verdict = await autoAccel();
      return verdict.accel;
    },
    forceKill: () => killAllQemu(),
  };
}
