// `provium image build [--force]`: builds the built-in `minimal` profile's guest image into the
// cache (src/vmm/image.ts decides staleness; an up-to-date image returns in milliseconds).

import type { Writable } from 'node:stream';
import { buildImage, ImageBuildError } from '../vmm/image.js';
import { formatDuration } from '../report/screen.js';
import { ExitCode } from '../run/outcome.js';

export async function imageBuildCommand(opts: { force: boolean; quiet: boolean }, io: { stdout: Writable; stderr: Writable }): Promise<number> {
  const started = performance.now();
  try {
    const image = await buildImage({ force: opts.force, log: (line) => { if (!opts.quiet) io.stderr.write(`${line}\n`); } });
    const took = formatDuration(performance.now() - started);
    io.stdout.write(
      image.rebuilt
        ? `image minimal: built in ${took}: kernel ${image.kernelRelease}, busybox ${image.busyboxVersion} → ${image.dir}\n`
        : `image minimal: up to date (${image.dir})\n`,
    );
    return ExitCode.ok;
  } catch (err) {
    const message = err instanceof ImageBuildError ? err.message : `image build failed: ${(err as Error).message}`;
    io.stderr.write(`provium image build: ${message}\n`);
    return ExitCode.usage;
  }
}
