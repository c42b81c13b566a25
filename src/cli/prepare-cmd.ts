// `provium prepare [PROFILE...]`: runs the `build` of every profile (or of those named) now,
// whether or not its inputs changed, and checks the files each profile names, so that a CI job
// can build once before the test run (which then finds the build stamps current and skips them).
// One line per profile on stdout; build output goes to stderr, prefixed with the profile. Exit 0
// when every profile is ready, 2 otherwise.

import type { Writable } from 'node:stream';
import type { ProviumConfig } from '../config/config.js';
import { prepareProfile } from '../config/profile-prepare.js';
import { ProfileError } from '../config/profiles.js';
import { UsageError } from '../run/errors.js';
import { ExitCode } from '../run/outcome.js';
import { FileLockTimeoutError } from '../vmm/file-lock.js';
import { buildOptionsFor } from './wiring.js';

export async function prepareCommand(names: string[], config: ProviumConfig, io: { stdout: Writable; stderr: Writable }): Promise<number> {
  // 1. Which profiles: those named (each must exist), else all of them.
  const known = [...new Set([...Object.keys(config.profiles), ...Object.keys(config.unavailableProfiles)])].sort();
  for (const name of names) {
    if (!known.includes(name)) {
      throw new UsageError(`prepare: unknown profile \`${name}\`; known profiles: ${known.join(', ') || '(none)'}${config.path ? ` (from ${config.path})` : ''}`);
    }
  }
  const selected = names.length > 0 ? [...new Set(names)] : known;

  // 2. Each in turn; a failure is reported and the others still run.
  const opts = buildOptionsFor(config, { rebuild: true, stderr: io.stderr });
  let failed = 0;
  for (const name of selected) {
    const unavailable = config.unavailableProfiles[name];
    if (unavailable !== undefined) {
      // Unnamed, an unusable built-in is only a note: the project may not use it.
      if (names.length > 0) {
        failed++;
        io.stderr.write(`provium: ${unavailable}\n`);
      } else {
        io.stdout.write(`skipped  ${name}: ${unavailable}\n`);
      }
      continue;
    }
    const profile = config.profiles[name]!;
    try {
      const done = await prepareProfile(profile, opts);
      const build = done.build ? (done.build.ran ? `built in ${(done.build.ms / 1000).toFixed(1)}s` : 'build current') : 'no build';
      io.stdout.write(`ready    ${name}: ${build}; kernel ${done.kernel}\n`);
    } catch (err) {
      if (!(err instanceof ProfileError) && !(err instanceof FileLockTimeoutError)) throw err;
      failed++;
      io.stderr.write(`provium: ${err.message}\n`);
      io.stdout.write(`FAILED   ${name}\n`);
    }
  }
  if (failed > 0) io.stdout.write(`\n${failed} profile${failed === 1 ? '' : 's'} not ready\n`);
  return failed > 0 ? ExitCode.usage : ExitCode.ok;
}
