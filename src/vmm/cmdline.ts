// Pure construction of the kernel command line and QEMU's argv from a LaunchSpec. No I/O here
// (the TSC frequency and paths are passed in), so unit tests can pin every flag. What a profile's
// command line means (the tuned flags, the agent's rdinit) is src/config's; this file only
// assembles a boot's line from it.

import { kAgentRdinit, kRootDiskSerial, rdinitOf, type Profile } from '../config/profiles.js';
import type { GuestRam } from './guest-ram.js';

/** Virtio-serial port name the agent scans /sys/class/virtio-ports for. */
export const kAgentPortName = 'org.provium.agent';
/** The agent port's device id, as QMP VSERPORT_CHANGE events name it. */
export const kAgentPortId = 'agent-port';
/** The longest kernel command line x86 Linux takes (COMMAND_LINE_SIZE is 2048 with the NUL). */
export const kMaxCmdlineBytes = 2047;
/** Empty pcie-root-ports on q35, so disks and NICs can be hot-plugged. */
export const kDefaultHotplugSlots = 8;

/** Where a hot-plugged disk's bytes come from: the broker's NBD server, or a raw file QEMU opens behind a blkdebug filter. */
export type DiskBackendSpec =
  | { kind: 'nbd'; socketPath: string; exportName: string }
  | { kind: 'file'; path: string; filterNode: string; rules: BlkdebugRuleLists };

/** blkdebug's `inject-error` and `set-state` option lists (built in src/disk). */
export interface BlkdebugRuleLists {
  'inject-error': object[];
  'set-state': object[];
}

/** A device hot-plugged into a pcie-root-port (`slot`), given again on the argv of a restore. */
export type SlotDevice =
  | { kind: 'nic'; slot: string; id: string; socketPath: string; mac: string }
  /** `guestDevice`: the guest's name for it (/dev/vdX) once known; a snapshot keeps it, so a restore need not ask. */
  | { kind: 'disk'; slot: string; node: string; readonly: boolean; serial: string; backend: DiskBackendSpec; guestDevice?: string };

/**
 * The block nodes of a disk, bottom up, as blockdev-add arguments (QMP, or JSON on the argv).
 * `node` is the top one, the device's drive. A file disk is file → blkdebug (its faults) → raw.
 */
export function diskBlockdevs(node: string, backend: DiskBackendSpec, readonly: boolean): Record<string, unknown>[] {
  if (backend.kind === 'nbd') {
    return [{ driver: 'nbd', 'node-name': node, server: { type: 'unix', path: backend.socketPath }, export: backend.exportName, 'read-only': readonly }];
  }
  const file = fileNodeOf(node);
  return [
    { driver: 'file', 'node-name': file, filename: backend.path, 'read-only': readonly },
    blkdebugBlockdev(backend.filterNode, file, backend.rules, readonly),
    { driver: 'raw', 'node-name': node, file: backend.filterNode, 'read-only': readonly },
  ];
}

/** A blkdebug node over the file node `image`, with these rules. */
export function blkdebugBlockdev(filterNode: string, image: string, rules: BlkdebugRuleLists, readonly: boolean): Record<string, unknown> {
  const node: Record<string, unknown> = { driver: 'blkdebug', 'node-name': filterNode, image, 'read-only': readonly };
  // QEMU refuses an empty list ("doesn't support the option"): a list goes in only when it has rules.
  if (rules['inject-error'].length > 0) node['inject-error'] = rules['inject-error'];
  if (rules['set-state'].length > 0) node['set-state'] = rules['set-state'];
  return node;
}

/** The protocol node under a file disk's top node. */
export function fileNodeOf(node: string): string {
  return `${node}-file`;
}

export interface LaunchSpec {
  /** VM name (for messages). */
  name: string;
  profile: Profile;
  memoryBytes: number;
  cpus: number;
  /** Extra kernel args, appended last (so they win). */
  cmdlineAppend?: string;
  /** Replaces profile.cmdline; console=ttyS0 and the profile's rdinit are re-added. */
  cmdlineReplace?: string;
  /** An extra cpio(.gz) appended after the initrd and the agent overlay (per-boot files). */
  extraInitrd?: string;
  /** Exposed as fw_cfg `opt/provium/rng-seed`: the 8 bytes as 16 lowercase hex digits. */
  rngSeed?: bigint;
  /** Seconds since the epoch: the guest's RTC at boot (-rtc base=<ISO>,clock=vm). */
  initialTime?: number;
  /** Start with `-incoming defer` (for restoreSnapshot). */
  incomingSnapshot?: boolean;
  /** A console log to start the new one with (a restored guest's boot log); QEMU appends to it. */
  consoleReplay?: string;
  /** Guest RAM in a tmpfs file (guest-ram.ts), so a snapshot saves it as a sparse image: the broker's VMs. */
  sharedRam?: boolean;
  /** The RAM image a restore starts from (a snapshot's `.ram`); the migration then carries device state only. */
  ramImage?: string;
  /** Overrides the accelerator (skips resolveAccel); the KVM probe uses it. */
  accel?: 'kvm' | 'tcg';
  /** Spare pcie-root-ports on q35 (default kDefaultHotplugSlots). */
  hotplugSlots?: number;
  /** Devices that were hot-plugged into those slots (a restore must see the saved machine's devices). */
  slotDevices?: SlotDevice[];
  /** Raw QEMU arguments appended last (for `provium console -- ARGS`). */
  extraQemuArgs?: string[];
  /** `provium console`: the serial console on stdio (`-serial mon:stdio`), no QMP, no agent socket. */
  interactiveConsole?: boolean;
}

/** Everything buildQemuArgs needs beyond the spec, resolved by the caller. */
export interface LaunchContext {
  accel: 'kvm' | 'tcg';
  /** The initrd QEMU gets: the profile's, or a concatenation made in the scratch dir. */
  initrdPath: string | undefined;
  qmpSocketPath: string;
  agentSocketPath: string;
  consoleSocketPath: string;
  consoleLogPath: string;
  /** Host TSC frequency in kHz (microvm only: tsc_early_khz). */
  tscKhz: number | undefined;
  /** Guest RAM backed by this file (guest-ram.ts); anonymous memory when absent. */
  ram?: GuestRam;
}

/** The memory backend's id: also the RAM block's name in the migration stream. */
const kRamBackendId = 'pc.ram';

/** Splits a command line on whitespace (kernel parameters do not nest quotes we need to honour). */
function tokens(cmdline: string | undefined): string[] {
  return (cmdline ?? '').split(/\s+/).filter(Boolean);
}

/**
 * The kernel command line for a boot:
 * 1. the profile's cmdline, or `cmdlineReplace`;
 * 2. `console=ttyS0` at the front when missing (the console log is the serial port);
 * 3. the profile's rdinit (its own `rdinit=` or the injected agent) when the replacement lost it;
 * 4. on microvm, `tsc_early_khz=<host kHz>` (else it may hang calibrating the TSC);
 * 5. `cmdlineAppend` last, so its values win.
 */
export function kernelCmdline(spec: LaunchSpec, tscKhz?: number): string {
  const profile = spec.profile;
  const parts = tokens(spec.cmdlineReplace ?? profile.cmdline);
  if (!parts.some((t) => t === 'console=ttyS0' || t.startsWith('console=ttyS0,'))) parts.unshift('console=ttyS0');
  const rdinit = rdinitOf(profile.cmdline) ?? (profile.injectAgent ? kAgentRdinit : undefined);
  if (rdinit !== undefined && !parts.some((t) => t.startsWith('rdinit='))) parts.push(`rdinit=${rdinit}`);
  if (profile.machine === 'microvm' && tscKhz !== undefined && !parts.some((t) => t.startsWith('tsc_early_khz='))) {
    parts.push(`tsc_early_khz=${tscKhz}`);
  }
  parts.push(...tokens(spec.cmdlineAppend));
  const line = parts.join(' ');
  // Past the boot protocol's size the kernel cuts the line silently, often the agent's rdinit=
  // with it: the boot would then end in "the agent did not answer". Say so instead.
  const bytes = Buffer.byteLength(line);
  if (bytes > kMaxCmdlineBytes) {
    throw new Error(
      `VM ${spec.name}: the kernel command line is ${bytes} bytes, longer than the ${kMaxCmdlineBytes} the x86 boot protocol passes ` +
        `to the kernel (COMMAND_LINE_SIZE 2048 with its NUL); the rest would be cut: shorten kernel_cmdline, kernel_cmdline_append or the profile's cmdline`,
    );
  }
  return line;
}

/** `-rtc base=` wants whole seconds in UTC without a zone suffix: 2001-01-01T00:00:00. */
export function rtcBase(initialTime: number): string {
  if (!Number.isFinite(initialTime) || initialTime < 0 || initialTime > 253402300799) {
    throw new RangeError(`initial_time must be seconds since the epoch between 0 and 253402300799 (year 9999), got ${initialTime}`);
  }
  return new Date(Math.floor(initialTime) * 1000).toISOString().replace(/\.\d{3}Z$/, '');
}

/** 8 bytes as 16 hex digits (two's complement for negative seeds). */
export function rngSeedHex(seed: bigint): string {
  return BigInt.asUintN(64, seed).toString(16).padStart(16, '0');
}

/** QEMU's `-m` in MiB, rounded up. */
export function memoryArg(bytes: number): string {
  return `${Math.max(1, Math.ceil(bytes / (1024 * 1024)))}M`;
}

/** Escapes a value for QEMU's option parser, where `,` is written `,,`. */
function q(value: string): string {
  return value.replace(/,/g, ',,');
}

/** QEMU's argv (without the binary) for a launch. */
export function buildQemuArgs(spec: LaunchSpec, ctx: LaunchContext): string[] {
  const profile = spec.profile;
  const microvm = profile.machine === 'microvm';
  const a: string[] = [];

  // 1. Machine, CPU, memory. +arat everywhere (else an idle microvm guest burns a core's 5-7%).
  a.push('-name', q(spec.name));
  const memoryBackend = ctx.ram ? `,memory-backend=${kRamBackendId}` : '';
  if (microvm) {
    // PCIe on microvm lets us keep the virtio-pci devices (and modules) of q35.
    a.push('-machine', `microvm,accel=${ctx.accel},pcie=on,rtc=on,pit=off,pic=off,x-option-roms=off${memoryBackend}`);
  } else {
    a.push('-machine', `${profile.machine},accel=${ctx.accel}${memoryBackend}`);
  }
  a.push('-cpu', ctx.accel === 'kvm' ? 'host' : 'qemu64,+arat');
  a.push('-m', memoryArg(spec.memoryBytes), '-smp', String(spec.cpus));
  if (ctx.ram) {
    const share = ctx.ram.shared ? 'on' : 'off';
    a.push('-object', `memory-backend-file,id=${kRamBackendId},size=${memoryArg(spec.memoryBytes)},mem-path=${q(ctx.ram.path)},share=${share}`);
  }
  a.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot');

  // 2. Kernel, initrd, command line.
  a.push('-kernel', profile.kernel);
  if (ctx.initrdPath) a.push('-initrd', ctx.initrdPath);
  a.push('-append', kernelCmdline(spec, ctx.tscKhz));

  // A Debian profile's root: read-only, so snapshots hold RAM only and clones share the file.
  if (profile.rootImage !== undefined) {
    a.push('-blockdev', JSON.stringify({ driver: 'file', 'node-name': 'root-file', filename: profile.rootImage, 'read-only': true }));
    a.push('-blockdev', JSON.stringify({ driver: 'raw', 'node-name': 'root', file: 'root-file', 'read-only': true }));
    a.push('-device', `virtio-blk-pci,drive=root,id=root-dev,serial=${kRootDiskSerial}`);
  }

  // 3. QMP: QEMU dials the broker's socket (no polling for a socket file to appear).
  const interactive = spec.interactiveConsole === true;
  if (!interactive) a.push('-chardev', `socket,id=qmp,path=${q(ctx.qmpSocketPath)}`, '-mon', 'chardev=qmp,mode=control');

  // 4. Serial console: a server socket for live readers/writers, and a log written even when
  //    nobody is connected. Interactive: the terminal, with QEMU's monitor behind Ctrl-A C.
  //    Always appended (O_APPEND): a restored guest's log starts with the replayed boot log, and
  //    the broker cuts a log that grows too big under QEMU (console-log.ts).
  const append = ',logappend=on';
  if (interactive) a.push('-serial', 'mon:stdio');
  else {
    a.push('-chardev', `socket,id=con,path=${q(ctx.consoleSocketPath)},server=on,wait=off,logfile=${q(ctx.consoleLogPath)}${append}`);
    a.push('-serial', 'chardev:con');
  }

  // 5. The agent's virtio-serial port (interactive: present, so the guest finds it, but unconnected), and entropy.
  a.push('-device', 'virtio-serial-pci,id=vser0');
  a.push('-chardev', interactive ? 'null,id=agent' : `socket,id=agent,path=${q(ctx.agentSocketPath)},server=on,wait=off`);
  // The id names the port in VSERPORT_CHANGE events (the guest closed or opened it).
  a.push('-device', `virtserialport,bus=vser0.0,chardev=agent,name=${kAgentPortName},id=${kAgentPortId}`);
  // With an rng_seed, virtio-rng reads QEMU's own generator, which `-seed` makes a deterministic
  // stream (TCG's RDRAND too); the backend is not part of a snapshot, so a restore may switch it.
  if (spec.rngSeed !== undefined) a.push('-seed', spec.rngSeed.toString(), '-object', 'rng-builtin,id=rng0');
  else a.push('-object', 'rng-random,id=rng0,filename=/dev/urandom');
  a.push('-device', 'virtio-rng-pci,rng=rng0');
  // A guest kernel panic becomes QMP GUEST_PANICKED (the guest's pvpanic-mmio driver finds it by ACPI).
  a.push('-device', 'pvpanic');

  // 6. Per-boot values.
  if (spec.rngSeed !== undefined) a.push('-fw_cfg', `name=opt/provium/rng-seed,string=${rngSeedHex(spec.rngSeed)}`);
  // clock=vm: the RTC stops while the VM is paused, like the guest's own clock (TSC) does.
  const base = spec.initialTime !== undefined ? rtcBase(spec.initialTime) : 'utc';
  a.push('-rtc', `base=${base},clock=vm`);

  // 7. Spare hot-plug slots (q35 only: microvm cannot hot-plug, pc has no PCIe).
  if (profile.machine === 'q35') {
    const n = spec.hotplugSlots ?? kDefaultHotplugSlots;
    for (let i = 0; i < n; i++) a.push('-device', `pcie-root-port,id=hp${i},chassis=${i + 1}`);
  }
  for (const d of spec.slotDevices ?? []) {
    if (d.kind === 'nic') {
      a.push('-netdev', `stream,id=${q(d.id)},server=off,addr.type=unix,addr.path=${q(d.socketPath)}`);
      a.push('-device', `virtio-net-pci,netdev=${q(d.id)},mac=${q(d.mac)},id=${q(d.id)}-dev,bus=${q(d.slot)}`);
    } else {
      for (const node of diskBlockdevs(d.node, d.backend, d.readonly)) a.push('-blockdev', JSON.stringify(node));
      a.push('-device', `virtio-blk-pci,drive=${q(d.node)},id=${q(d.node)}-dev,bus=${q(d.slot)},serial=${q(d.serial)}`);
    }
  }

  if (spec.incomingSnapshot) a.push('-incoming', 'defer');
  a.push(...(spec.extraQemuArgs ?? []));
  return a;
}
