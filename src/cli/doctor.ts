// `provium doctor`: checks the environment a run needs, one line per check; every failure names
// its fix. Exit 0 when nothing failed, 2 otherwise (warnings do not fail).

import { access, constants, mkdir } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { loadConfig } from '../config/config.js';
import { paintFor, type OutputStream, colorsWanted } from '../report/screen.js';
import { ExitCode } from '../run/outcome.js';
import { defaultWorkerFile } from '../run/pool.js';
import { autoAccel } from '../vmm/accel.js';
import { qemuVersion } from '../vmm/host.js';
import { imageInfo } from '../vmm/image.js';
import { agentBinaryPath, cacheDir, qemuBinary, scratchParent } from '../vmm/paths.js';
import { findExecutable, kQemuFix } from './wiring.js';

type Level = 'ok' | 'warn' | 'fail';
interface Check {
  level: Level;
  what: string;
  detail: string;
  fix?: string;
}

async function writable(dir: string): Promise<string | undefined> {
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, constants.W_OK);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export async function runChecks(opts: { configPath?: string; cwd: string; reprobe: boolean }): Promise<Check[]> {
  const checks: Check[] = [];

  // 1. Node.
  const major = Number(process.versions.node.split('.')[0]);
  checks.push(
    major >= 20
      ? { level: 'ok', what: 'node', detail: `v${process.versions.node}` }
      : { level: 'fail', what: 'node', detail: `v${process.versions.node} is too old`, fix: 'install Node.js 20 or newer' },
  );

  // 2. The build: the worker thread entry.
  const worker = defaultWorkerFile();
  checks.push(
    (await exists(worker))
      ? { level: 'ok', what: 'build', detail: worker }
      : { level: 'fail', what: 'build', detail: `${worker} is missing`, fix: 'run `npm run build`' },
  );

  // 3. QEMU.
  const qemu = qemuBinary();
  const qemuPath = await findExecutable(qemu);
  if (!qemuPath) {
    checks.push({ level: 'fail', what: 'qemu', detail: `${qemu} not found`, fix: kQemuFix });
  } else {
    checks.push({ level: 'ok', what: 'qemu', detail: `${qemuPath}: ${await qemuVersion()}` });
  }

  // 4. The configuration.
  try {
    const config = await loadConfig({ ...(opts.configPath !== undefined ? { path: opts.configPath } : {}), cwd: opts.cwd, findMinimalImage: imageInfo });
    const names = Object.keys(config.profiles);
    checks.push({
      level: 'ok',
      what: 'config',
      detail: `${config.path ?? 'no provium.toml (defaults)'}; profiles: ${names.length ? names.join(', ') : '(none)'}`,
    });
  } catch (err) {
    checks.push({ level: 'fail', what: 'config', detail: (err as Error).message, fix: 'fix the file at the position named' });
  }

  // 5. The guest image of `minimal`.
  const image = await imageInfo().catch(() => undefined);
  if (image) {
    checks.push({ level: 'ok', what: 'image', detail: `minimal: kernel ${image.kernelRelease}, built ${image.builtAt} (${image.dir})` });
  } else {
    const agent = agentBinaryPath();
    const haveAgent = await exists(agent);
    checks.push({
      level: 'fail',
      what: 'image',
      detail: 'the minimal guest image is not built',
      fix: haveAgent ? 'run `provium image build`' : 'run `npm run setup` (builds the agent with musl-gcc, then the image)',
    });
  }

  // 6. The accelerator (probes KVM once per host with a real boot when it can; cached after).
  if (qemuPath && image) {
    try {
      const verdict = await autoAccel({ reprobe: opts.reprobe });
      checks.push({
        level: verdict.accel === 'kvm' ? 'ok' : 'warn',
        what: 'accel',
        detail: `${verdict.accel}: ${verdict.reason}${verdict.cached ? ' (cached; --reprobe to test again)' : ''}`,
        ...(verdict.accel === 'tcg' ? { fix: 'TCG works, only slower; for KVM give this user read/write access to a working /dev/kvm' } : {}),
      });
    } catch (err) {
      checks.push({ level: 'warn', what: 'accel', detail: `could not decide: ${(err as Error).message}` });
    }
  } else {
    checks.push({ level: 'warn', what: 'accel', detail: 'not probed (needs qemu and the image)' });
  }

  // 7. Writable cache and scratch directories.
  for (const [what, dir] of [['cache', cacheDir()], ['scratch', scratchParent()]] as const) {
    const problem = await writable(dir);
    checks.push(
      problem === undefined
        ? { level: 'ok', what, detail: dir }
        : { level: 'fail', what, detail: `${dir}: ${problem}`, fix: what === 'cache' ? 'set PROVIUM_CACHE_DIR to a writable directory' : 'set PROVIUM_RUNTIME_DIR to a writable directory' },
    );
  }
  // Unix socket paths are limited to 107 bytes; the scratch dir holds qemu's sockets.
  if (scratchParent().length > 60) {
    checks.push({ level: 'warn', what: 'scratch', detail: `${scratchParent()} is long; socket paths may exceed 107 bytes`, fix: 'set PROVIUM_RUNTIME_DIR to a short path such as /tmp' });
  }
  return checks;
}

export async function doctorCommand(
  opts: { configPath?: string; cwd: string; reprobe: boolean },
  io: { stdout: Writable & OutputStream; env: NodeJS.ProcessEnv },
): Promise<number> {
  const p = paintFor(colorsWanted(io.stdout.isTTY === true, io.env));
  const checks = await runChecks(opts);
  const tag = { ok: p.green('ok  '), warn: p.yellow('warn'), fail: p.red('FAIL') };
  for (const check of checks) {
    io.stdout.write(`${tag[check.level]}  ${check.what.padEnd(7)} ${check.detail}\n`);
    if (check.fix && check.level !== 'ok') io.stdout.write(`            fix: ${check.fix}\n`);
  }
  const failed = checks.filter((c) => c.level === 'fail').length;
  io.stdout.write(failed ? `\n${failed} check${failed === 1 ? '' : 's'} failed\n` : '\nall checks passed\n');
  return failed ? ExitCode.usage : ExitCode.ok;
}
