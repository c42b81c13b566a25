// Where things live on the host: the cache (images, downloads, accel verdicts), the repository
// (profile scripts, the agent binary), the QEMU binary, and per-VM scratch directories.

import { constants as fsConstants, existsSync, readFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../config/cache-dir.js';

// The cache directory is config's (provium.toml may name it); it is re-exported here because
// every other host path in this file lives under it.
export { cacheDir };

/** `<cache>/images/<profile>`: the built image of a built-in profile. */
export function imageDir(profile: string): string {
  return join(cacheDir(), 'images', profile);
}

/** `<cache>/downloads`: .deb files kept between image builds. */
export function downloadsDir(): string {
  return join(cacheDir(), 'downloads');
}

/** `<cache>/accel.json`: the per-host KVM verdicts. */
export function accelCachePath(): string {
  return join(cacheDir(), 'accel.json');
}

let repoRootMemo: string | undefined;

/**
 * The Provium checkout or installed package: the nearest ancestor of this module holding a
 * package.json named "provium". Works from `src/vmm` and from the compiled `dist/src/vmm`.
 */
export function repoRoot(): string {
  if (repoRootMemo) return repoRootMemo;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'provium') {
          repoRootMemo = dir;
          return dir;
        }
      } catch {
        // Not ours or unreadable: keep walking up.
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find Provium's package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The build script of a built-in profile. */
export function profileScript(profile: string): string {
  return join(repoRoot(), 'profiles', profile, 'build.sh');
}

/** The guest agent binary: `$PROVIUM_AGENT_BIN`, else `agent/build/provium-agent` in the checkout. */
export function agentBinaryPath(): string {
  const explicit = process.env['PROVIUM_AGENT_BIN'];
  return explicit ? resolve(explicit) : join(repoRoot(), 'agent', 'build', 'provium-agent');
}

/** The library preloaded into QEMU (src/vmm/no-malloc-trim.c, built by `npm run build`). */
export function noMallocTrimPath(): string {
  return join(repoRoot(), 'dist', 'no-malloc-trim.so');
}

/** The process launcher (process-launcher.c), built by `npm run build`. */
export function processLauncherPath(): string {
  return join(repoRoot(), 'dist', 'process-launcher');
}

/** The QEMU binary: `$PROVIUM_QEMU`, else `qemu-system-x86_64` from PATH. */
export function qemuBinary(): string {
  return process.env['PROVIUM_QEMU'] || 'qemu-system-x86_64';
}

/** The QEMU binary's path, a bare name resolved through PATH: cache keys follow the binary that really runs. */
export async function qemuBinaryPath(binary = qemuBinary()): Promise<string> {
  if (binary.includes('/')) return binary;
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    const candidate = join(dir || '.', binary);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return binary;
}

/**
 * Parent of the per-VM scratch directories. Unix socket paths are limited to 107 bytes, so this
 * stays short: `$PROVIUM_RUNTIME_DIR`, else the OS temp dir.
 */
export function scratchParent(): string {
  return process.env['PROVIUM_RUNTIME_DIR'] || tmpdir();
}
