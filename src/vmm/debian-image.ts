// The root image of a Debian profile (`debian = { packages = [...] }`): built by
// profiles/debian/build.sh (mmdebstrap + mksquashfs) into `<cache>/images/debian-<key>/`, where
// the key is the suite, the variant, the sorted package list, the mirror, the architecture and
// the script. The agent is not in the key: it copies itself into the root at boot, so an agent
// change rebuilds nothing here. A second use of the same list finds the image and builds nothing.

import { createHash } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DebianRoot } from '../config/profiles.js';
import { acquireFileLock, FileLockTimeoutError } from './file-lock.js';
import { installStaging, stagingFor } from './staged-dir.js';
import { hashFile } from './file-hash.js';
import { downloadsDir, imageDir, profileScript } from './paths.js';

const kManifestVersion = 1;
const kArch = 'amd64';
const kImageFile = 'root.sqfs';
/** mmdebstrap downloads and unpacks for about a minute; a second builder waits that long and more. */
const kLockWaitMs = 30 * 60_000;
const kTailLines = 15;

export interface DebianImage {
  dir: string;
  /** The squashfs the guest mounts read-only under its overlay. */
  image: string;
  key: string;
  /** name → version, as dpkg in the image reports them. */
  packages: Record<string, string>;
  bytes: number;
  builtAt: string;
  /** True when this call built it. */
  rebuilt: boolean;
}

interface Manifest {
  manifestVersion: number;
  key: string;
  root: DebianRoot;
  arch: string;
  packages: Record<string, string>;
  bytes: number;
  builtAt: string;
  buildMs: number;
}

/** A failed build: the message names the profile, Debian's own error and the fix. */
export class DebianImageError extends Error {
  override name = 'DebianImageError';
}

export interface BuildDebianImageOptions {
  /** The profile it is built for, for messages. */
  profile: string;
  force?: boolean;
  log?: (line: string) => void;
}

/** PrepareOptions.debianRoot (src/config/profile-prepare.ts): the image path, built when missing. */
export function debianRootBuilder(log: (line: string) => void): (profile: { name: string }, root: DebianRoot) => Promise<string> {
  return async (profile, root) => (await buildDebianImage(root, { profile: profile.name, log })).image;
}

/** The content key of a root: everything the image's bytes depend on. */
export async function debianImageKey(root: DebianRoot): Promise<string> {
  const script = await hashFile(profileScript('debian'));
  const inputs = { suite: root.suite, variant: root.variant, packages: [...root.packages].sort(), mirror: root.mirror ?? '', arch: kArch, script };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 20);
}

/** The built image of `root`, or undefined when it is not built (nothing is built here). */
export async function debianImageInfo(root: DebianRoot): Promise<DebianImage | undefined> {
  const key = await debianImageKey(root);
  const dir = imageDir(`debian-${key}`);
  const manifest = await readManifest(dir, key);
  return manifest ? toImage(dir, manifest, false) : undefined;
}

/** Builds the image of `root` unless it is built (or `force`); one builder at a time per key. */
export async function buildDebianImage(root: DebianRoot, opts: BuildDebianImageOptions): Promise<DebianImage> {
  const log = opts.log ?? (() => {});
  const key = await debianImageKey(root);
  const dir = imageDir(`debian-${key}`);
  if (!opts.force) {
    const manifest = await readManifest(dir, key);
    if (manifest) return toImage(dir, manifest, false);
  }
  const release = await lock(`${dir}.lock`, opts.profile, log);
  try {
    if (!opts.force) {
      const manifest = await readManifest(dir, key);
      if (manifest) return toImage(dir, manifest, false);
    }
    return await runBuild(root, key, dir, opts.profile, log);
  } finally {
    await release();
  }
}

async function runBuild(root: DebianRoot, key: string, dir: string, profile: string, log: (line: string) => void): Promise<DebianImage> {
  const staging = await stagingFor(dir);
  const started = Date.now();
  log(`building the Debian root of profile \`${profile}\` (${root.suite}, ${root.packages.length} packages; about a minute)`);
  try {
    const args = ['build', '--out', staging, '--suite', root.suite, '--variant', root.variant,
      '--apt-cache', join(downloadsDir(), `debian-${root.suite}-${kArch}`), '--packages', root.packages.join(' ')];
    if (root.mirror) args.push('--mirror', root.mirror);
    const { execa } = await import('execa');
    const child = execa('bash', [profileScript('debian'), ...args], { reject: false, all: true, stdin: 'ignore' });
    const tail: string[] = [];
    let partial = '';
    child.all?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim()) continue;
        tail.push(line);
        if (tail.length > kTailLines) tail.shift();
        log(line);
      }
    });
    const result = await child;
    if (result.exitCode !== 0) throw buildError(profile, root, result.exitCode ?? result.signal ?? 'unknown', tail);

    const packages = parsePackages(await readFile(join(staging, 'packages'), 'utf8'));
    const bytes = (await stat(join(staging, kImageFile))).size;
    const manifest: Manifest = {
      manifestVersion: kManifestVersion, key, root, arch: kArch, packages, bytes,
      builtAt: new Date().toISOString(), buildMs: Date.now() - started,
    };
    await writeFile(join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    await installStaging(staging, dir);
    log(`Debian root of \`${profile}\` built in ${((Date.now() - started) / 1000).toFixed(1)}s: ${(bytes / 1048576).toFixed(0)} MiB, ${Object.keys(packages).length} packages`);
    return toImage(dir, manifest, true);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Debian's own words first: apt's `E:` lines, else the script's, else the last lines. */
function buildError(profile: string, root: DebianRoot, how: string | number, tail: string[]): DebianImageError {
  const apt = tail.filter((l) => /^E: /.test(l));
  const ours = tail.filter((l) => l.startsWith('build.sh:'));
  const detail = (apt.length ? apt : ours.length ? ours : tail.slice(-5)).map((l) => `  ${l}`).join('\n');
  const unknown = apt.map((l) => /Unable to locate package (\S+)/.exec(l)?.[1]).filter((p): p is string => p !== undefined);
  const fix = unknown.length
    ? `Debian ${root.suite} has no package ${unknown.map((p) => `\`${p}\``).join(', ')}: fix debian.packages of profile \`${profile}\` (search with \`apt-cache search\`)`
    : `check the network and the mirror (${root.mirror ?? 'http://deb.debian.org/debian'}), then run \`provium image build ${profile}\``;
  return new DebianImageError(`profile \`${profile}\`: building its Debian root failed (exit ${how}):\n${detail}\n  ${fix}`);
}

function parsePackages(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

async function readManifest(dir: string, key: string): Promise<Manifest | undefined> {
  try {
    const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    if (m.manifestVersion !== kManifestVersion || m.key !== key) return undefined;
    // A truncated or missing image is not built.
    const st = await stat(join(dir, kImageFile));
    return st.size === m.bytes ? m : undefined;
  } catch {
    return undefined;
  }
}

function toImage(dir: string, m: Manifest, rebuilt: boolean): DebianImage {
  return { dir, image: join(dir, kImageFile), key: m.key, packages: m.packages, bytes: m.bytes, builtAt: m.builtAt, rebuilt };
}

async function lock(path: string, profile: string, log: (line: string) => void): Promise<() => Promise<void>> {
  try {
    return await acquireFileLock(path, {
      holder: `Debian root build of profile \`${profile}\``,
      onWait: (heldBy) => log(`waiting for another build of the same Debian root (pid ${heldBy.pid})`),
      timeoutMs: kLockWaitMs,
    });
  } catch (e) {
    if (!(e instanceof FileLockTimeoutError)) throw e;
    throw new DebianImageError(`profile \`${profile}\`: waited ${kLockWaitMs / 60_000} min for another build of its Debian root (pid ${e.heldBy.pid}, lock ${path}) — stop it or remove the lock`, { cause: e });
  }
}
