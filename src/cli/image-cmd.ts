// `provium image build [PROFILE...] [--force]`: builds the built-in `minimal` profile's guest image
// into the cache (src/vmm/image.ts decides staleness; an up-to-date image returns in
// milliseconds), then the Debian root of each profile named (src/vmm/debian-image.ts), so that CI
// can build ahead and cache the directory.

import type { Writable } from 'node:stream';
import type { ProviumConfig } from '../config/config.js';
import { formatDuration } from '../report/screen.js';
import { ExitCode } from '../run/outcome.js';
import { buildDebianImage, DebianImageError } from '../vmm/debian-image.js';
import { buildImage, ImageBuildError } from '../vmm/image.js';

export interface ImageBuildOptions {
  force: boolean;
  quiet: boolean;
  /** Debian profiles whose root to build after `minimal`. */
  profiles?: string[];
  /** Loads the config (after `minimal` is built: a Debian profile needs its image to resolve). */
  config?: (() => Promise<ProviumConfig>) | undefined;
}

export async function imageBuildCommand(opts: ImageBuildOptions, io: { stdout: Writable; stderr: Writable }): Promise<number> {
  const log = (line: string): void => { if (!opts.quiet) io.stderr.write(`${line}\n`); };
  const started = performance.now();
  try {
    // With profiles named, --force is for their roots: minimal is built only when stale.
    const image = await buildImage({ force: opts.force && !opts.profiles?.length, log });
    const took = formatDuration(performance.now() - started);
    io.stdout.write(
      image.rebuilt
        ? `image minimal: built in ${took}: kernel ${image.kernelRelease}, busybox ${image.busyboxVersion} → ${image.dir}\n`
        : `image minimal: up to date (${image.dir})\n`,
    );
  } catch (err) {
    const message = err instanceof ImageBuildError ? err.message : `image build failed: ${(err as Error).message}`;
    io.stderr.write(`provium image build: ${message}\n`);
    return ExitCode.usage;
  }
  if (!opts.profiles?.length || !opts.config) return ExitCode.ok;

  // Debian roots, each in turn; a failure is reported and the others still build.
  const config = await opts.config();
  let failed = 0;
  for (const name of opts.profiles) {
    const profile = config.profiles[name];
    if (!profile?.debian) {
      failed++;
      const debian = Object.values(config.profiles).filter((p) => p.debian).map((p) => p.name).sort();
      io.stderr.write(profile
        ? `provium image build: profile \`${name}\` has no Debian root (no \`debian\` key); \`provium prepare ${name}\` runs its build\n`
        : `provium image build: unknown profile \`${name}\`${config.unavailableProfiles[name] ? `: ${config.unavailableProfiles[name]}` : ''}; Debian profiles: ${debian.join(', ') || '(none)'}\n`);
      continue;
    }
    const at = performance.now();
    try {
      const root = await buildDebianImage(profile.debian, { profile: name, force: opts.force, log });
      const took = formatDuration(performance.now() - at);
      const size = `${(root.bytes / 1048576).toFixed(0)} MiB, ${Object.keys(root.packages).length} packages`;
      io.stdout.write(root.rebuilt ? `image ${name}: built in ${took}: ${size} → ${root.dir}\n` : `image ${name}: up to date (${root.dir})\n`);
    } catch (err) {
      if (!(err instanceof DebianImageError)) throw err;
      failed++;
      io.stderr.write(`provium image build: ${err.message}\n`);
    }
  }
  return failed > 0 ? ExitCode.usage : ExitCode.ok;
}
