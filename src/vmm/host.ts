// Facts about the host that the QEMU command line and the accel cache depend on.

import { readFile, stat } from 'node:fs/promises';
import { release } from 'node:os';
import { fileStamp } from './file-hash.js';
import { qemuBinary, qemuBinaryPath } from './paths.js';

let tscMemo: Promise<number | undefined> | undefined;
let qemuVersionMemo: Promise<string> | undefined;

/**
 * The host TSC frequency in kHz, which microvm guests need exactly (`tsc_early_khz`): under TCG
 * the guest TSC is the host's, and a wrong value drifts the guest clock. Sources in order: the
 * kernel log ("tsc: Refined TSC clocksource calibration: 2596.118 MHz", then "tsc: Detected …"),
 * then /proc/cpuinfo "cpu MHz" (what the kernel reports as cpu_khz, equal to tsc_khz on VMs and
 * constant-TSC parts without APERF/MPERF). undefined when none is readable.
 */
export function hostTscKhz(): Promise<number | undefined> {
  tscMemo ??= (async () => {
    const { execa } = await import('execa');
    const fromLog = await execa('dmesg', [], { reject: false, stdin: 'ignore' })
      .then((r) => (r.exitCode === 0 ? r.stdout : ''))
      .catch(() => '');
    for (const re of [/tsc: Refined TSC clocksource calibration: ([0-9.]+) MHz/, /tsc: Detected ([0-9.]+) MHz/]) {
      const m = re.exec(fromLog);
      if (m) return mhzToKhz(m[1]!);
    }
    const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
    const m = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo);
    return m ? mhzToKhz(m[1]!) : undefined;
  })();
  return tscMemo;
}

/** "2596.138" -> 2596138, without floating-point rounding surprises. */
export function mhzToKhz(mhz: string): number {
  const [int, frac = ''] = mhz.split('.');
  return Number(int) * 1000 + Number((frac + '000').slice(0, 3));
}

/** `qemu-system-x86_64 --version`'s first line, e.g. "QEMU emulator version 7.2.22 (…)". */
export function qemuVersion(): Promise<string> {
  qemuVersionMemo ??= import('execa')
    .then(({ execa }) => execa(qemuBinary(), ['--version'], { reject: false, stdin: 'ignore' }))
    .then((r) => (r.exitCode === 0 ? r.stdout.split('\n')[0]!.trim() : `unknown (${r.shortMessage})`));
  return qemuVersionMemo;
}

/** The CPU model name from /proc/cpuinfo. */
export async function cpuModel(): Promise<string> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  return /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
}

/**
 * The key under which an accel verdict is cached: what makes KVM work or not on a host. QEMU is
 * named by its binary's path and stamp: an upgrade replaces the file, and no `--version` process
 * is spawned on every run.
 */
export async function hostKey(): Promise<string> {
  const qemu = await qemuBinaryPath();
  const st = await stat(qemu, { bigint: true }).catch(() => undefined);
  return `${release()} | ${qemu} ${st ? fileStamp(st) : 'missing'} | ${await cpuModel()}`;
}
