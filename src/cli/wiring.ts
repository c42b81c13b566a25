// The real dependencies of a run: the broker, the piscina pool, the environment checks and the
// accelerator verdict. Unit tests hand the controller stand-ins instead.

import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { Broker } from '../broker/broker.js';
import type { ProviumConfig } from '../config/config.js';
import { createReporters } from '../report/outputs.js';
import type { RunDeps } from '../run/controller.js';
import { UsageError } from '../run/errors.js';
import { checkWorkerFile, createWorkerPool, defaultWorkerFile } from '../run/pool.js';
import { autoAccel } from '../vmm/accel.js';
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
  // A profile whose kernel or initrd is missing would fail every boot: say so before the run.
  const unreadable: string[] = [];
  for (const profile of Object.values(config.profiles)) {
    for (const [what, file] of [['kernel', profile.kernel], ['initrd', profile.initrd]] as const) {
      if (file === undefined) continue;
      try {
        await access(file, constants.R_OK);
      } catch {
        unreadable.push(`profile \`${profile.name}\`: ${what} ${file} is missing or unreadable`);
      }
    }
  }
  if (unreadable.length > 0) {
    const where = config.path ? `fix the paths in ${config.path}` : 'fix the profile paths';
    throw new UsageError(`${unreadable.join('\n')}\n${where} (relative paths are resolved against its directory)`);
  }
}

export function realDeps(opts: { skipPreflight: boolean }): RunDeps {
  return {
    createBroker: (brokerOpts) => new Broker(brokerOpts),
    createWorkerPool,
    createReporters,
    workerFile: defaultWorkerFile(),
    preflight: (config) => preflight(config, { skipEnvironment: opts.skipPreflight }),
    accel: async () => {
      const verdict = await autoAccel();
      return verdict.accel;
    },
    forceKill: () => killAllQemu(),
  };
}
