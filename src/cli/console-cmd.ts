// `provium console PROFILE [--mem SIZE] [--cpus N] [--cmdline TEXT] [--print-command] [-- QEMU_ARGS]`
// (reference §2.1, issue 14 item 2): boots the profile with its serial console on the terminal
// (`-serial mon:stdio`: Ctrl-A X quits, Ctrl-A C is QEMU's monitor), no QMP and no host agent.
// The QEMU command line is the one src/vmm/cmdline.ts builds for tests, so what you see is what
// a test boots. On the built-in userland a small /init gives a shell on ttyS0 (busybox sh; `exit`
// powers off). With --print-command the line is printed instead, runnable by hand: the initrd it
// names is kept in the cache, keyed by its parts.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { buildFilesCpio } from '../broker/boot-files.js';
import type { ProviumConfig } from '../config/config.js';
import { parseSize, UnitError } from '../config/units.js';
import type { Profile } from '../config/profiles.js';
import { UsageError } from '../run/errors.js';
import { ExitCode } from '../run/outcome.js';
import { resolveAccel } from '../vmm/accel.js';
import { buildQemuArgs, type LaunchSpec } from '../vmm/cmdline.js';
import { hostTscKhz } from '../vmm/host.js';
import { imageInfo } from '../vmm/image.js';
import { qemuBinary } from '../vmm/paths.js';
import { agentOverlayPath } from '../vmm/qemu.js';
import { pickProfile } from './profile-pick.js';
import { findExecutable } from './wiring.js';

export interface ConsoleFlags {
  mem?: string;
  cpus?: string;
  cmdline?: string;
  printCommand?: boolean;
}

/** PID 1 on the built-in userland: what the agent's standalone mode sets up, then a shell. */
export const kConsoleInit = `#!/bin/sh
# provium console: a shell on the serial console; the agent runs beside it, unconnected.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
release=$(uname -r)
while read -r m; do [ -n "$m" ] && insmod "/lib/modules/$release/$m" 2>/dev/null; done </lib/modules/provium.load
ip link set lo up 2>/dev/null
hostname provium
echo "provium console: busybox sh on ttyS0; 'exit' powers off, Ctrl-A X quits QEMU"
setsid -c /bin/sh -l </dev/ttyS0 >/dev/ttyS0 2>&1
poweroff -f
`;

export async function consoleCommand(
  profileName: string,
  qemuArgs: string[],
  flags: ConsoleFlags,
  config: ProviumConfig,
  io: { stdout: Writable; stderr: Writable },
): Promise<number> {
  // 1. The profile and the machine's size.
  const profile = await pickProfile(config, profileName, 'console', io.stderr);
  let memoryBytes = profile.memoryBytes;
  if (flags.mem !== undefined) {
    try {
      memoryBytes = parseSize(flags.mem, '--mem');
    } catch (err) {
      if (err instanceof UnitError) throw new UsageError(`console: ${err.message}; e.g. --mem 512M`);
      throw err;
    }
  }
  const cpus = flags.cpus === undefined ? profile.cpus : Number(flags.cpus);
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw new UsageError(`console: --cpus ${JSON.stringify(flags.cpus)}: expected a whole number from 1 to 64`);

  // 2. QEMU's argv, as a test's boot has it, with the console on the terminal.
  const spec: LaunchSpec = {
    name: `console-${profile.name}`,
    profile,
    memoryBytes,
    cpus,
    interactiveConsole: true,
    extraQemuArgs: qemuArgs,
    ...(flags.cmdline !== undefined ? { cmdlineAppend: flags.cmdline } : {}),
  };
  const accel = await resolveAccel(profile.accel);
  const tscKhz = profile.machine === 'microvm' ? await hostTscKhz() : undefined;
  const initrdPath = await consoleInitrd(profile, config.cacheDir);
  const args = buildQemuArgs(spec, { accel, initrdPath, tscKhz, qmpSocketPath: '', agentSocketPath: '', consoleSocketPath: '', consoleLogPath: '' });
  const argv = [qemuBinary(), ...args];
  if (flags.printCommand) {
    io.stdout.write(`${argv.map(shellQuote).join(' ')}\n`);
    return ExitCode.ok;
  }

  // 3. QEMU owns the terminal until it exits, so it is spawned here, not by the process
  // launcher; it dies with us (setpriv's pdeathsig).
  const setpriv = await findExecutable('setpriv', { PATH: `${process.env['PATH'] ?? ''}:/usr/bin:/bin` });
  const full = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...argv] : argv;
  const ignore = (): void => {};
  process.on('SIGINT', ignore);
  try {
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn(full[0]!, full.slice(1), { stdio: 'inherit' });
      child.on('error', (err) => reject(new UsageError(`console: cannot start ${argv[0]}: ${err.message}`)));
      child.on('exit', (c, signal) => resolve(signal ? 128 : (c ?? 1)));
    });
    return code === 0 ? ExitCode.ok : ExitCode.failed;
  } finally {
    process.off('SIGINT', ignore);
  }
}

/**
 * The initrd QEMU gets: the profile's, its agent overlay when injected, and on the built-in
 * userland the console's /init; one file in the cache when there is more than one part.
 */
async function consoleInitrd(profile: Profile, cacheDir: string): Promise<string | undefined> {
  const parts: string[] = [];
  if (profile.initrd) parts.push(profile.initrd);
  if (profile.injectAgent) parts.push(await agentOverlayPath(`profile ${profile.name}`));
  const image = await imageInfo();
  const builtinUserland = image !== undefined && profile.initrd === image.initrd && profile.rootImage === undefined;
  const extra = builtinUserland ? buildFilesCpio([{ path: '/init', content: Buffer.from(kConsoleInit), mode: 0o755 }]) : undefined;
  if (parts.length <= 1 && !extra) return parts[0];
  // 1. The key: each part's path, size and mtime, and the extra archive's bytes.
  const hash = createHash('sha256');
  for (const part of parts) {
    const st = await stat(part);
    hash.update(`${part}\0${st.size}\0${st.mtimeMs}\n`);
  }
  if (extra) hash.update(extra);
  const dir = path.join(cacheDir, 'console');
  const dest = path.join(dir, `initrd-${hash.digest('hex').slice(0, 20)}.img`);
  if (await stat(dest).then(() => true, () => false)) return dest;
  // 2. Concatenated, each part 4-byte aligned (the kernel unpacks them in turn); written aside and renamed.
  const chunks: Buffer[] = [];
  let size = 0;
  for (const data of [...(await Promise.all(parts.map((p) => readFile(p)))), ...(extra ? [extra] : [])]) {
    const pad = (4 - (size % 4)) % 4;
    if (pad) chunks.push(Buffer.alloc(pad));
    chunks.push(data);
    size += pad + data.length;
  }
  await mkdir(dir, { recursive: true });
  await writeFile(`${dest}.tmp`, Buffer.concat(chunks));
  await rename(`${dest}.tmp`, dest);
  return dest;
}

/** POSIX shell quoting: bare when safe, else single-quoted. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
