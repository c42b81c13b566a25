// `provium doctor`: checks the environment a run needs, one line per check; every failure names
// its fix. Exit 0 when nothing failed, 2 otherwise (warnings do not fail). Unlike a run, which
// checks only the profiles its files use, doctor checks every profile, and the config of every
// kernel that is not the minimal image's.

import { access, constants, mkdir, open } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { loadConfig, type ProviumConfig } from '../config/config.js';
import { describeMissing, findKernelConfig, isElf, kernelOptionsFor, missingOptions, parseKernelConfig } from '../config/kernel-config.js';
import { stampPath, staleReason } from '../config/profile-build.js';
import { inspectProfileFiles } from '../config/profile-prepare.js';
import { kMinimalProfile, type DebianRoot, type MinimalImage, type Profile } from '../config/profiles.js';
import { paintFor, type OutputStream, colorsWanted } from '../report/screen.js';
import { ExitCode } from '../run/outcome.js';
import { defaultWorkerFile } from '../run/pool.js';
import { autoAccel } from '../vmm/accel.js';
import { qemuVersion } from '../vmm/host.js';
import { debianImageInfo } from '../vmm/debian-image.js';
import { imageInfo } from '../vmm/image.js';
import { agentBinaryPath, cacheDir, qemuBinary, scratchParent } from '../vmm/paths.js';
import { findExecutable, kQemuFix } from './wiring.js';

type Level = 'ok' | 'warn' | 'fail';
export interface Check {
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
  let config: ProviumConfig | undefined;
  try {
    config = await loadConfig({ ...(opts.configPath !== undefined ? { path: opts.configPath } : {}), cwd: opts.cwd, findMinimalImage: imageInfo });
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

  // 6. Every profile: the files it names and its kernel's config (a run checks only what it uses).
  if (config) checks.push(...(await profileChecks(config, image)));

  // 7. The accelerator (probes KVM once per host with a real boot when it can; cached after).
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

  // 8. Writable cache and scratch directories.
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

/**
 * One line per profile (what it names, whether its build is current) and, for a kernel that is
 * not the minimal image's, one for its config: each missing option named, with why it is needed.
 */
export async function profileChecks(config: ProviumConfig, minimal: MinimalImage | undefined): Promise<Check[]> {
  const checks: Check[] = [];
  const names = [...new Set([...Object.keys(config.profiles), ...Object.keys(config.unavailableProfiles)])].sort();
  const kernelsChecked = new Set<string>();
  for (const name of names) {
    const unavailable = config.unavailableProfiles[name];
    if (unavailable !== undefined) {
      // The image line already says what the built-in needs.
      if (name !== kMinimalProfile) checks.push({ level: 'fail', what: 'profile', detail: unavailable });
      continue;
    }
    const profile = config.profiles[name]!;
    const source = profile.firstUse?.source ?? 'provium.toml';

    // 1. The build: current, or why it will run.
    const build = profile.firstUse?.build;
    const stale = build ? await staleReason(build, stampPath(config.cacheDir, build)) : undefined;
    const buildNote = build ? (stale === undefined ? '; build current' : `; build will run (${stale})`) : '';

    // 2. The files: under {out} and not built yet is a warning (the build makes them).
    const files = await inspectProfileFiles(profile);
    for (const p of files.problems) {
      const unbuilt = p.fromBuild && stale !== undefined;
      checks.push({
        level: unbuilt ? 'warn' : 'fail',
        what: 'profile',
        detail: `${name}: ${p.key} ${p.path} ${p.problem}${unbuilt ? ' (its build has not made it yet)' : ''}`,
        fix: p.fromBuild ? `run \`provium prepare ${name}\`; if it is still missing, make the build write it` : `fix \`${p.key.replace(/\[.*$/, '')}\` in ${source}`,
      });
    }
    if (files.problems.length === 0) {
      const kernel = `${files.kernel}${files.kernelFrom === 'root' ? ' (found in root)' : ''}`;
      const userland = minimal && profile.initrd === minimal.initrd && files.kernel !== minimal.kernel && !profile.debian ? ' on the minimal userland' : '';
      checks.push({ level: 'ok', what: 'profile', detail: `${name}: kernel ${kernel}${userland}${buildNote}` });
    }

    // 3. A Debian root: built, or what building it needs.
    if (profile.debian) checks.push(await debianRootCheck(name, profile.debian));

    // 4. A kernel of the user's own: the options the agent and the userland need.
    if (!files.kernel || files.kernel === minimal?.kernel) continue;
    const minimalUserland = minimal !== undefined && profile.initrd === minimal.initrd;
    const key = `${files.kernel}\0${minimalUserland}\0${profile.machine}`;
    if (kernelsChecked.has(key)) continue;
    kernelsChecked.add(key);
    checks.push(...(await kernelConfigChecks(name, profile, files.kernel, minimalUserland)));
  }
  return checks;
}

/** A Debian profile's root: built (its size), or whether this machine can build it at first use. */
async function debianRootCheck(name: string, root: DebianRoot): Promise<Check> {
  const built = await debianImageInfo(root);
  const what = 'profile';
  if (built) return { level: 'ok', what, detail: `${name}: Debian root built (${(built.bytes / 1048576).toFixed(0)} MiB, ${Object.keys(built.packages).length} packages): ${built.image}` };
  const missing = [];
  for (const [tool, pkg] of [['mmdebstrap', 'mmdebstrap'], ['mksquashfs', 'squashfs-tools']] as const) {
    if (!(await findExecutable(tool))) missing.push(pkg);
  }
  if (missing.length > 0) {
    return { level: 'fail', what, detail: `${name}: its Debian root is not built, and ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not installed to build it`, fix: `apt-get install -y ${missing.join(' ')} (or run scripts/setup.sh)` };
  }
  return { level: 'warn', what, detail: `${name}: Debian root not built yet (${root.suite}: ${root.packages.join(' ')}); its first use builds it (about a minute)`, fix: `\`provium image build ${name}\` builds it now` };
}

/** The kernel config check of one profile's kernel: `fail` for a missing required option, `warn` for a feature. */
export async function kernelConfigChecks(name: string, profile: Profile, kernel: string, minimalUserland: boolean): Promise<Check[]> {
  let found;
  let pvh = false;
  try {
    found = await findKernelConfig(kernel, profile.root !== undefined ? { root: profile.root } : {});
    const head = Buffer.alloc(4);
    const fh = await open(kernel, 'r');
    try { await fh.read(head, 0, 4, 0); } finally { await fh.close(); }
    pvh = isElf(head);
  } catch (err) {
    return [{ level: 'warn', what: 'kernel', detail: `${name}: cannot read ${kernel}: ${(err as Error).message}` }];
  }
  if (!found) {
    return [{
      level: 'warn',
      what: 'kernel',
      detail: `${name}: no config found for ${kernel}, so its options are not checked`,
      fix: 'put its config beside it as config-<release> (or `config`), or build it with CONFIG_IKCONFIG=y',
    }];
  }
  const options = kernelOptionsFor({ pvh, minimalUserland, machine: profile.machine });
  const missing = missingOptions(parseKernelConfig(found.text), options, { minimalUserland });
  const required = missing.filter((m) => m.option.level === 'required');
  const features = missing.filter((m) => m.option.level === 'feature');
  const checks: Check[] = [];
  const fix = `rebuild the kernel with these =y${minimalUserland ? ' (the minimal userland carries no modules for it)' : ''}; see the README, "Bring your own kernel"`;
  if (required.length) checks.push({ level: 'fail', what: 'kernel', detail: `${name}: ${kernel} (config ${found.from}) lacks ${required.map(describeMissing).join(', ')}`, fix });
  if (features.length) checks.push({ level: 'warn', what: 'kernel', detail: `${name}: ${kernel} (config ${found.from}) lacks ${features.map(describeMissing).join(', ')}`, fix });
  if (!missing.length) checks.push({ level: 'ok', what: 'kernel', detail: `${name}: ${kernel} has every option Provium needs (config ${found.from})` });
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
