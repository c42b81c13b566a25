// The guest image of the built-in profile `minimal`: decides whether it is stale, runs
// profiles/minimal/build.sh when it is, and describes the result. The shell work (apt-get
// download, dpkg-deb, depmod, cpio) lives in the script; this file owns staleness, locking and
// the manifest.
//
// Staleness inputs: the agent binary's sha256, the build script's sha256, and the package
// versions apt would pick (kernel, busybox-static). Resolving versions costs ≈0.7 s of apt-cache,
// so it only runs when the apt lists changed since the last build (their names, sizes and mtimes
// are folded into `aptListsStamp`): an up-to-date check takes a few milliseconds.
//
// Corruption: the manifest records each output's size, mtime and sha256. A size that differs is
// corrupt at once; an mtime that differs costs one hash of that file (a copy that kept the bytes
// is fine, and its new mtime is recorded). A run builds a missing or corrupt image itself
// (imageForRun), under the same lock as `provium image build`.

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { acquireFileLock, FileLockTimeoutError } from './file-lock.js';
import { hashFile } from './file-hash.js';
import { installStaging, stagingFor } from './staged-dir.js';
import { agentBinaryPath, downloadsDir, imageDir, profileScript } from './paths.js';

const kProfile = 'minimal';
const kManifestVersion = 1;
const kAptListsDir = '/var/lib/apt/lists';
/** How long a second builder waits for the first before giving up. */
const kLockWaitMs = 15 * 60_000;
const kLockPollMs = 250;
const kOutputs = ['vmlinux', 'vmlinuz', 'initrd.cpio.gz', 'agent-overlay.cpio.gz'] as const;

export interface BuiltImage {
  profile: string;
  dir: string;
  /** Uncompressed PVH vmlinux: what `-kernel` gets. */
  kernel: string;
  /** The compressed bzImage as Debian ships it (for SeaBIOS boots or other tools). */
  kernelCompressed: string;
  initrd: string;
  /** cpio.gz holding only /sbin/provium-agent, appended for profiles with inject_agent. */
  agentOverlay: string;
  kernelRelease: string;
  kernelPackage: string;
  kernelVersion: string;
  busyboxVersion: string;
  /** Module paths relative to /lib/modules/<release>/, in load order. */
  modules: string[];
  agentSha256: string;
  builtAt: string;
  /** True when this call built it; false when the cached image was current. */
  rebuilt: boolean;
}

interface Manifest {
  manifestVersion: number;
  profile: string;
  kernelRelease: string;
  kernelPackage: string;
  kernelVersion: string;
  busyboxVersion: string;
  modules: string[];
  inputs: {
    agentSha256: string;
    scriptSha256: string;
    kernelDebSha256: string;
    busyboxDebSha256: string;
    aptListsStamp: string;
  };
  /** Sizes of the outputs: a truncated or missing output makes the image stale. */
  outputBytes: Record<string, number>;
  /** Each output's mtime and sha256 when it was built (absent in manifests of older builds). */
  outputStamps?: Record<string, OutputStamp>;
  builtAt: string;
}

interface OutputStamp {
  mtimeMs: number;
  sha256: string;
}

interface Versions {
  kernelPackage: string;
  kernelVersion: string;
  busyboxVersion: string;
}

export interface BuildImageOptions {
  force?: boolean;
  log?: (line: string) => void;
  /** Agent binary to bake in; default agentBinaryPath(). */
  agentPath?: string;
}

export class ImageBuildError extends Error {
  override name = 'ImageBuildError';
}

/** The built image if the manifest and every output are present and intact; no staleness check. */
export async function imageInfo(): Promise<BuiltImage | undefined> {
  const found = await findImage();
  return 'image' in found ? found.image : undefined;
}

/**
 * For a run: the image, built first when it is missing or corrupt (one line says which and names
 * the file). A stale image is used as it is: `provium image build` rebuilds that. Two runs on one
 * fresh cache build it once: the second waits on the build lock, then finds it built.
 */
export async function imageForRun(log: (line: string) => void): Promise<BuiltImage> {
  const found = await findImage();
  if ('image' in found) return found.image;
  // A corrupt one is named by buildImage's own check.
  if ('missing' in found) log(`the guest image \`${kProfile}\` is not built (${imageDir(kProfile)}); building it (about 30 s, once per cache)`);
  return buildImage({ log });
}

type FoundImage = { image: BuiltImage } | { missing: true } | { corrupt: string };

async function findImage(): Promise<FoundImage> {
  const dir = imageDir(kProfile);
  const manifest = await readManifest(dir);
  if (!manifest) return { missing: true };
  const problem = await outputProblem(dir, manifest);
  return problem === undefined ? { image: toBuiltImage(dir, manifest, false) } : { corrupt: problem };
}

/** Builds the `minimal` image when an input changed (or `force`), else returns the cached one. */
export async function buildImage(opts: BuildImageOptions = {}): Promise<BuiltImage> {
  const log = opts.log ?? (() => {});
  const agentPath = opts.agentPath ?? agentBinaryPath();
  const dir = imageDir(kProfile);

  // 1. Fast path: nothing changed.
  if (!opts.force) {
    const fresh = await checkFresh(dir, agentPath, log);
    if (fresh) return fresh;
  }

  // 2. Serialize builders (two CLI runs, or setup.sh racing a test run), then check again:
  //    the other builder may have just produced what we need.
  const release = await lockImage(`${dir}.lock`, log);
  try {
    if (!opts.force) {
      const fresh = await checkFresh(dir, agentPath, () => {});
      if (fresh) return fresh;
    }
    return await runBuild(dir, agentPath, log);
  } finally {
    await release();
  }
}

async function checkFresh(dir: string, agentPath: string, log: (line: string) => void): Promise<BuiltImage | undefined> {
  const manifest = await readManifest(dir);
  if (!manifest) return undefined;
  const problem = await outputProblem(dir, manifest);
  if (problem !== undefined) {
    log(`the guest image \`${kProfile}\` is corrupt: ${problem}; rebuilding it`);
    return undefined;
  }
  const [agentSha, scriptSha, stamp] = await Promise.all([
    hashFile(agentPath).catch(() => undefined),
    hashFile(profileScript(kProfile)),
    aptListsStamp(),
  ]);
  if (agentSha === undefined) throw missingAgent(agentPath);
  if (agentSha !== manifest.inputs.agentSha256) {
    log('agent binary changed; rebuilding the image');
    return undefined;
  }
  if (scriptSha !== manifest.inputs.scriptSha256) {
    log('profiles/minimal/build.sh changed; rebuilding the image');
    return undefined;
  }
  if (stamp !== manifest.inputs.aptListsStamp) {
    // The lists changed (apt-get update): only a new package version makes the image stale.
    const v = await resolveVersions();
    if (v.kernelPackage !== manifest.kernelPackage || v.kernelVersion !== manifest.kernelVersion ||
        v.busyboxVersion !== manifest.busyboxVersion) {
      log(`package versions changed (kernel ${manifest.kernelPackage} ${manifest.kernelVersion} -> ` +
          `${v.kernelPackage} ${v.kernelVersion}, busybox ${manifest.busyboxVersion} -> ${v.busyboxVersion}); rebuilding`);
      return undefined;
    }
    manifest.inputs.aptListsStamp = stamp;
    await writeManifest(dir, manifest);
  }
  return toBuiltImage(dir, manifest, false);
}

async function runBuild(dir: string, agentPath: string, log: (line: string) => void): Promise<BuiltImage> {
  // 1. Inputs: the agent must exist before anything is downloaded.
  const agentSha = await hashFile(agentPath).catch(() => undefined);
  if (agentSha === undefined) throw missingAgent(agentPath);
  const script = profileScript(kProfile);
  const [scriptSha, stamp, versions] = await Promise.all([hashFile(script), aptListsStamp(), resolveVersions()]);

  // 2. Build into a staging dir next to the final one, so a failed build leaves the old image.
  const staging = await stagingFor(dir);
  await mkdir(staging, { recursive: true });
  const started = Date.now();
  log(`building image \`${kProfile}\` (${versions.kernelPackage} ${versions.kernelVersion}, agent ${agentSha.slice(0, 12)})`);
  try {
    const { execa } = await import('execa');
    const child = execa('bash', [script, 'build', '--out', staging, '--agent', agentPath, '--downloads', downloadsDir(),
      '--kernel-pkg', versions.kernelPackage, '--kernel-version', versions.kernelVersion,
      '--busybox-version', versions.busyboxVersion], { reject: false, all: true, stdin: 'ignore' });
    const lines: string[] = [];
    child.all?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim()) { lines.push(line); log(line); }
      }
    });
    const result = await child;
    if (result.exitCode !== 0) {
      const reason = lines.filter((l) => l.startsWith('build.sh:')).pop() ?? lines.slice(-5).join('\n');
      throw new ImageBuildError(`image build failed (${script} exited with ${result.exitCode ?? result.signal}): ${reason}`);
    }

    // 3. Manifest from the script's build-info plus our inputs.
    const info = parseKeyValues(await readFile(join(staging, 'build-info'), 'utf8'));
    const outputBytes: Record<string, number> = {};
    const outputStamps: Record<string, OutputStamp> = {};
    for (const name of kOutputs) {
      const st = await stat(join(staging, name));
      outputBytes[name] = st.size;
      outputStamps[name] = { mtimeMs: st.mtimeMs, sha256: await hashFile(join(staging, name)) };
    }
    const manifest: Manifest = {
      manifestVersion: kManifestVersion,
      profile: kProfile,
      kernelRelease: need(info, 'kernel_release'),
      kernelPackage: need(info, 'kernel_pkg'),
      kernelVersion: need(info, 'kernel_version'),
      busyboxVersion: need(info, 'busybox_version'),
      modules: need(info, 'modules').split(',').filter(Boolean),
      inputs: {
        agentSha256: agentSha,
        scriptSha256: scriptSha,
        kernelDebSha256: need(info, 'kernel_deb_sha256'),
        busyboxDebSha256: need(info, 'busybox_deb_sha256'),
        aptListsStamp: stamp,
      },
      outputBytes,
      outputStamps,
      builtAt: new Date().toISOString(),
    };
    await writeManifest(staging, manifest);

    // 4. Swap: old -> trash, staging -> final. VMs already running have read their kernel.
    await installStaging(staging, dir);
    log(`image \`${kProfile}\` built in ${((Date.now() - started) / 1000).toFixed(1)}s: ${dir}`);
    return toBuiltImage(dir, manifest, true);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function resolveVersions(): Promise<Versions> {
  const { execa } = await import('execa');
  const r = await execa('bash', [profileScript(kProfile), 'resolve'], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) {
    throw new ImageBuildError(r.stderr.trim() || `resolving package versions failed (exit ${r.exitCode}) — run \`apt-get update\` as root`);
  }
  const kv = parseKeyValues(r.stdout);
  return { kernelPackage: need(kv, 'kernel_pkg'), kernelVersion: need(kv, 'kernel_version'), busyboxVersion: need(kv, 'busybox_version') };
}

/** Names, sizes and mtimes of apt's package lists: changes whenever `apt-get update` changes them. */
async function aptListsStamp(): Promise<string> {
  const hash = createHash('sha256');
  let names: string[] = [];
  try {
    names = (await readdir(kAptListsDir)).filter((n) => n.includes('_Packages')).sort();
  } catch {
    // No apt lists at all: the stamp is the empty hash; resolve() will explain what to do.
  }
  for (const name of names) {
    const st = await stat(join(kAptListsDir, name)).catch(() => undefined);
    if (st) hash.update(`${name}\0${st.size}\0${st.mtimeMs}\n`);
  }
  return hash.digest('hex');
}

/** What is wrong with the outputs (missing, truncated, other bytes), or undefined when they are intact. */
async function outputProblem(dir: string, manifest: Manifest): Promise<string | undefined> {
  let restamped = false;
  for (const name of kOutputs) {
    const file = join(dir, name);
    const st = await stat(file).catch(() => undefined);
    if (!st) return `${file} is missing`;
    if (st.size !== manifest.outputBytes[name]) return `${file} has ${st.size} bytes, the manifest says ${manifest.outputBytes[name]}`;
    const stamp = manifest.outputStamps?.[name];
    if (!stamp || stamp.mtimeMs === st.mtimeMs) continue;
    // Written since the build: the same bytes (a copy) are fine, other bytes are corruption.
    const sha = await hashFile(file);
    if (sha !== stamp.sha256) return `${file} does not have the bytes it was built with (sha256 ${sha.slice(0, 12)}…, the manifest says ${stamp.sha256.slice(0, 12)}…)`;
    stamp.mtimeMs = st.mtimeMs;
    restamped = true;
  }
  if (restamped) await writeManifest(dir, manifest).catch(() => undefined);
  return undefined;
}

async function readManifest(dir: string): Promise<Manifest | undefined> {
  try {
    const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    return m.manifestVersion === kManifestVersion && m.profile === kProfile ? m : undefined;
  } catch {
    return undefined;
  }
}

async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  const tmp = join(dir, `.manifest.json.${process.pid}`);
  await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n');
  await rename(tmp, join(dir, 'manifest.json'));
}

function toBuiltImage(dir: string, m: Manifest, rebuilt: boolean): BuiltImage {
  return {
    profile: m.profile,
    dir,
    kernel: join(dir, 'vmlinux'),
    kernelCompressed: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initrd.cpio.gz'),
    agentOverlay: join(dir, 'agent-overlay.cpio.gz'),
    kernelRelease: m.kernelRelease,
    kernelPackage: m.kernelPackage,
    kernelVersion: m.kernelVersion,
    busyboxVersion: m.busyboxVersion,
    modules: m.modules,
    agentSha256: m.inputs.agentSha256,
    builtAt: m.builtAt,
    rebuilt,
  };
}

function parseKeyValues(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return out;
}

function need(kv: Map<string, string>, key: string): string {
  const v = kv.get(key);
  if (v === undefined || v === '') throw new ImageBuildError(`image build: ${profileScript(kProfile)} did not report \`${key}\` — the script and image.ts disagree; report this`);
  return v;
}

function missingAgent(path: string): ImageBuildError {
  return new ImageBuildError(`the guest agent binary ${path} does not exist — build it with \`make -C agent\` (or \`npm run build\`), or point PROVIUM_AGENT_BIN at one`);
}

/** The build lock of the image (src/vmm/file-lock.ts); a timeout keeps this module's error class. */
async function lockImage(path: string, log: (line: string) => void): Promise<() => Promise<void>> {
  try {
    return await acquireFileLock(path, {
      holder: `image build of \`${kProfile}\``,
      onWait: (heldBy) => log(`waiting for another image build (pid ${heldBy.pid})`),
      timeoutMs: kLockWaitMs,
      pollMs: kLockPollMs,
    });
  } catch (e) {
    if (!(e instanceof FileLockTimeoutError)) throw e;
    throw new ImageBuildError(`waited ${kLockWaitMs / 60_000} min for another image build (pid ${e.heldBy.pid}, ` +
      `lock ${path}) — stop it or remove the lock`, { cause: e });
  }
}
