// A user's kernel and what it must be built with (issue 11 part 4): the options the agent and the
// minimal userland need, found in the kernel's config. The config is `config-<release>` (or
// `config`, `.config`) next to the kernel, the root's boot/config-<release>, or the copy a kernel
// built with CONFIG_IKCONFIG carries (`IKCFG_ST`, gzip data, `IKCFG_ED`, as
// scripts/extract-ikconfig finds it), inside a bzImage's compressed payload when need be.
//
// Why these options: the agent runs from the initramfs as rdinit, mounts devtmpfs, proc, sysfs and
// tmpfs, talks over a virtio-serial port on virtio-pci, and the minimal image loads
// virtio_pci virtio_console virtio_blk virtio_net virtio-rng qemu_fw_cfg button evdev as modules
// of *its* kernel (profiles/minimal/build.sh): under another kernel those modules do not load, so
// what they provide must be built in (=y).

import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { gunzipSync, constants as zlibConstants } from 'node:zlib';
import type { MachineType } from './profiles.js';

export interface KernelOption {
  name: string;
  /** What breaks without it. */
  why: string;
  /** `required`: no boot or no agent without it; `feature`: one part of the API stops working. */
  level: 'required' | 'feature';
  /** Needed before any module can load (the initramfs, the console): `=m` never does. */
  builtinOnly?: boolean;
}

export interface KernelOptionContext {
  /** The kernel is an ELF vmlinux, which QEMU boots through its PVH entry point. */
  pvh: boolean;
  /** The profile boots the minimal userland, which carries modules for another kernel only. */
  minimalUserland: boolean;
  machine: MachineType;
}

/** The options a profile's kernel needs, in the order doctor names them. */
export function kernelOptionsFor(ctx: KernelOptionContext): KernelOption[] {
  const options: KernelOption[] = [
    { name: 'CONFIG_BLK_DEV_INITRD', why: 'the agent starts from the initramfs', level: 'required', builtinOnly: true },
    { name: 'CONFIG_RD_GZIP', why: 'the minimal initrd and the agent overlay are gzip cpio archives', level: 'required', builtinOnly: true },
    { name: 'CONFIG_DEVTMPFS', why: 'the agent mounts devtmpfs on /dev (there is no udev)', level: 'required', builtinOnly: true },
    { name: 'CONFIG_PROC_FS', why: 'the agent reads /proc', level: 'required', builtinOnly: true },
    { name: 'CONFIG_SYSFS', why: 'the agent finds its port under /sys/class/virtio-ports', level: 'required', builtinOnly: true },
    { name: 'CONFIG_TMPFS', why: 'the agent mounts tmpfs on /tmp and /run', level: 'required', builtinOnly: true },
    { name: 'CONFIG_BINFMT_ELF', why: 'the agent and busybox are static ELF binaries', level: 'required', builtinOnly: true },
    { name: 'CONFIG_SERIAL_8250', why: 'console=ttyS0: the console log is the first serial port', level: 'required', builtinOnly: true },
    { name: 'CONFIG_SERIAL_8250_CONSOLE', why: 'console=ttyS0: the console log is the first serial port', level: 'required', builtinOnly: true },
    { name: 'CONFIG_PCI', why: 'every virtio device is a PCI device', level: 'required', builtinOnly: true },
    { name: 'CONFIG_VIRTIO_PCI', why: 'the agent port, disks, NICs and entropy are virtio-pci devices', level: 'required' },
    { name: 'CONFIG_VIRTIO_CONSOLE', why: "the agent's channel is a virtio-serial port", level: 'required' },
    { name: 'CONFIG_VIRTIO_BLK', why: 'disks (profile and boot `disks`, vm:attach_disk)', level: 'feature' },
    { name: 'CONFIG_VIRTIO_NET', why: 'networks (bridges, uplinks)', level: 'feature' },
    { name: 'CONFIG_INET', why: 'networks (addresses, routes)', level: 'feature' },
    { name: 'CONFIG_HW_RANDOM_VIRTIO', why: 'entropy from the host and `rng_seed` (virtio-rng)', level: 'feature' },
    { name: 'CONFIG_FW_CFG_SYSFS', why: '`rng_seed`: the seed is read from fw_cfg', level: 'feature' },
    { name: 'CONFIG_UNIX', why: 'vm:spawn_worker (a worker talks over a unix socketpair)', level: 'feature' },
    { name: 'CONFIG_BINFMT_SCRIPT', why: 'running #! scripts', level: 'feature' },
    { name: 'CONFIG_ACPI_BUTTON', why: 'vm:power_button (ACPI power button)', level: 'feature' },
    { name: 'CONFIG_INPUT_EVDEV', why: "vm:power_button (the agent reads the button's event device)", level: 'feature' },
  ];
  if (ctx.machine === 'q35') {
    options.push(
      { name: 'CONFIG_PCIEPORTBUS', why: 'hot-plugged disks and NICs (pcie-root-ports)', level: 'feature' },
      { name: 'CONFIG_HOTPLUG_PCI_PCIE', why: 'hot-plugged disks and NICs (pcie-root-ports)', level: 'feature' },
    );
  }
  if (ctx.pvh) options.unshift({ name: 'CONFIG_PVH', why: 'QEMU boots an ELF vmlinux through its PVH entry point (or give a bzImage)', level: 'required', builtinOnly: true });
  return options;
}

/** `CONFIG_X=value` lines; `# CONFIG_X is not set` is `n`. */
export function parseKernelConfig(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of text.split('\n')) {
    const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line.trim());
    if (set) values.set(set[1]!, set[2]!);
    const unset = /^#\s*(CONFIG_[A-Za-z0-9_]+) is not set/.exec(line.trim());
    if (unset) values.set(unset[1]!, 'n');
  }
  return values;
}

export interface MissingOption {
  option: KernelOption;
  /** What the config says: undefined (absent), `n`, or `m` where a module will not do. */
  value: string | undefined;
}

/** The options `config` lacks; `=m` counts as missing when modules cannot load (or the option is needed before they can). */
export function missingOptions(config: Map<string, string>, options: KernelOption[], ctx: { minimalUserland: boolean }): MissingOption[] {
  const missing: MissingOption[] = [];
  for (const option of options) {
    const value = config.get(option.name);
    if (value === 'y') continue;
    if (value === 'm' && !option.builtinOnly && !ctx.minimalUserland) continue;
    missing.push({ option, value });
  }
  return missing;
}

/** `CONFIG_X (why; is =m: must be =y)` for messages. */
export function describeMissing(m: MissingOption): string {
  const state = m.value === undefined ? '' : m.value === 'n' ? '; is not set' : m.value === 'm' ? '; is =m: must be =y' : `; is ${m.value}`;
  return `${m.option.name} (${m.option.why}${state})`;
}

export interface FoundKernelConfig {
  /** The file it came from, or `<kernel> (embedded IKCONFIG)`. */
  from: string;
  text: string;
}

/** The kernel's config, from a file beside it or its root, or embedded in it; undefined when none is found. */
export async function findKernelConfig(kernel: string, opts: { root?: string } = {}): Promise<FoundKernelConfig | undefined> {
  const image = await readFile(kernel);
  const release = kernelRelease(image) ?? /^(?:vmlinuz|vmlinux|bzImage)-(.+)$/.exec(basename(kernel))?.[1];
  const dir = dirname(kernel);
  const candidates: string[] = [];
  if (release) candidates.push(join(dir, `config-${release}`));
  candidates.push(join(dir, 'config'), join(dir, '.config'));
  // A kernel tree: arch/x86/boot/bzImage → .config at the top.
  if (/\/arch\/x86(?:_64)?\/boot$/.test(dir)) candidates.push(join(dir, '../../../.config'));
  if (opts.root && release) candidates.push(join(opts.root, 'boot', `config-${release}`), join(opts.root, 'usr/lib/modules', release, 'config'));
  for (const file of candidates) {
    if (!(await stat(file).catch(() => undefined))?.isFile()) continue;
    const text = await readFile(file, 'utf8');
    if (/^CONFIG_|^# CONFIG_/m.test(text)) return { from: file, text };
  }
  const embedded = await extractIkconfig(image);
  return embedded === undefined ? undefined : { from: `${kernel} (embedded IKCONFIG)`, text: embedded };
}

/** True for an ELF file (a vmlinux), which QEMU boots through PVH. */
export function isElf(image: Buffer): boolean {
  return image.length >= 4 && image.readUInt32BE(0) === 0x7f454c46;
}

/** The release a kernel image names: the bzImage header's version string, else "Linux version <rel>". */
export function kernelRelease(image: Buffer): string | undefined {
  if (image.length > 0x210 && image.toString('latin1', 0x202, 0x206) === 'HdrS') {
    const offset = image.readUInt16LE(0x20e);
    if (offset > 0 && 0x200 + offset < image.length) {
      const end = image.indexOf(0, 0x200 + offset);
      const version = image.toString('latin1', 0x200 + offset, end < 0 ? Math.min(image.length, 0x200 + offset + 256) : end);
      const release = version.split(/\s+/)[0];
      if (release) return release;
    }
  }
  const at = image.indexOf('Linux version ');
  if (at >= 0) {
    const release = image.toString('latin1', at + 14, Math.min(image.length, at + 14 + 128)).split(/[\s\0]/)[0];
    if (release) return release;
  }
  return undefined;
}

const kIkcfgStart = Buffer.from('IKCFG_ST');
const kIkcfgEnd = Buffer.from('IKCFG_ED');
/** The decompressed kernel is searched up to this size (a vmlinux is ~50-100 MiB). */
const kMaxDecompressedBytes = 512 * 1024 * 1024;

/** The embedded config (CONFIG_IKCONFIG): in the image itself, or in a bzImage's compressed payload. */
export async function extractIkconfig(image: Buffer): Promise<string | undefined> {
  const direct = ikconfigIn(image);
  if (direct !== undefined) return direct;
  const payload = bzImagePayload(image);
  if (!payload) return undefined;
  const kernel = await decompress(payload);
  return kernel ? ikconfigIn(kernel) : undefined;
}

function ikconfigIn(data: Buffer): string | undefined {
  const start = data.indexOf(kIkcfgStart);
  if (start < 0) return undefined;
  const end = data.indexOf(kIkcfgEnd, start + kIkcfgStart.length);
  const gz = data.subarray(start + kIkcfgStart.length, end < 0 ? undefined : end);
  try {
    return gunzipSync(gz, { finishFlush: zlibConstants.Z_SYNC_FLUSH }).toString('utf8');
  } catch {
    return undefined;
  }
}

/** A bzImage's compressed vmlinux (boot protocol 2.08+: payload_offset/payload_length). */
function bzImagePayload(image: Buffer): Buffer | undefined {
  if (image.length < 0x250 || image.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined;
  const setupSects = image[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (length === 0 || start + length > image.length) return undefined;
  return image.subarray(start, start + length);
}

/** The payload decompressed by its magic: gzip in process, the rest by the usual tools when installed. */
async function decompress(payload: Buffer): Promise<Buffer | undefined> {
  const magic = payload.subarray(0, 6).toString('hex');
  if (magic.startsWith('1f8b')) {
    try {
      return gunzipSync(payload, { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: kMaxDecompressedBytes });
    } catch {
      return undefined;
    }
  }
  const tools: [string, string, string[]][] = [
    ['02214c18', 'lz4', ['-dc']],
    ['fd377a585a00', 'xz', ['-dc']],
    ['28b52ffd', 'zstd', ['-dc']],
    ['425a68', 'bzip2', ['-dc']],
    ['5d0000', 'xz', ['--format=lzma', '-dc']],
    ['894c5a4f', 'lzop', ['-dc']],
  ];
  const tool = tools.find(([m]) => magic.startsWith(m));
  return tool ? pipeThrough(tool[1], tool[2], payload) : undefined;
}

/** `cmd args < input`, stdout kept; a non-zero exit with output is fine (lz4 stops at trailing bytes). */
function pipeThrough(cmd: string, args: string[], input: Buffer): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    let bytes = 0;
    child.stdout.on('data', (c: Buffer) => {
      bytes += c.length;
      if (bytes > kMaxDecompressedBytes) child.kill('SIGKILL');
      else chunks.push(c);
    });
    child.stdin.on('error', () => {});
    child.once('error', () => resolve(undefined));
    child.once('close', () => resolve(chunks.length ? Buffer.concat(chunks) : undefined));
    child.stdin.end(input);
  });
}
