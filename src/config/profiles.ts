// Profiles: what a VM boots, and the kernel command line a profile means. The built-in `minimal`
// comes from the image built by `provium image build`, which src/vmm finds: the caller passes that
// lookup in (config never imports vmm). User profiles come from `[profiles.<name>]` in provium.toml.

import { isAbsolute, resolve } from 'node:path';
import { isDiskBackend, type DiskSpec } from '../protocol/rpc.js';
import { parseDuration, parseSize } from './units.js';

/** DESIGN §3: the boot-time flags that measured fastest on TCG. */
export const kTunedCmdline =
  'console=ttyS0 quiet panic=-1 cryptomgr.notests mitigations=off i8042.noaux i8042.nomux i8042.nopnp ' +
  '8250.nr_uarts=1 no_timer_check tsc=reliable nokaslr random.trust_cpu=on audit=0';
/** Where the agent lives in the guest: the `rdinit=` of the minimal image and of injected profiles. */
export const kAgentRdinit = '/sbin/provium-agent';

/** The value of the last `rdinit=` in a command line. */
export function rdinitOf(cmdline: string): string | undefined {
  let value: string | undefined;
  for (const t of cmdline.split(/\s+/)) if (t.startsWith('rdinit=')) value = t.slice('rdinit='.length);
  return value;
}

export type MachineType = 'q35' | 'microvm' | 'pc';
export type AccelChoice = 'auto' | 'kvm' | 'tcg';

export interface Profile {
  name: string;
  /** Absolute path; for minimal: the PVH vmlinux. */
  kernel: string;
  /** Absolute path. */
  initrd?: string;
  /** Full kernel command line (console=ttyS0 always present; rdinit= when the agent is injected). */
  cmdline: string;
  memoryBytes: number;
  cpus: number;
  machine: MachineType;
  accel: AccelChoice;
  /** Append the agent overlay cpio to the initrd (cmdline then carries rdinit=/sbin/provium-agent). */
  injectAgent: boolean;
  agentTimeoutMs: number;
  builtin: boolean;
  /** Disks every VM of the profile gets (before a boot's own `disks`), as /dev/vda, /dev/vdb, … */
  disks?: DiskSpec[];
}

const MiB = 1024 * 1024;
export const kMinimalMemoryBytes = 256 * MiB;
/** The reference's default for user profiles. */
export const kUserMemoryBytes = 512 * MiB;
export const kDefaultAgentTimeoutMs = 30_000;
const kMinMemoryBytes = 32 * MiB;
const kMaxCpus = 64;
const kMachines: readonly MachineType[] = ['q35', 'microvm', 'pc'];
const kAccels: readonly AccelChoice[] = ['auto', 'kvm', 'tcg'];
const kProfileKeys = ['kernel', 'initrd', 'cmdline', 'memory', 'cpus', 'machine', 'accel', 'inject_agent', 'agent_boot_timeout', 'disks'] as const;
const kDiskKeys = ['id', 'size', 'image', 'readonly', 'backend'];
const kNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** A profile that cannot be used as written; the message names the profile, the key and the fix. */
export class ProfileError extends Error {
  override name = 'ProfileError';
}

/** The built `minimal` image, as far as a profile needs it (src/vmm's BuiltImage has more). */
export interface MinimalImage {
  /** Absolute path of the PVH vmlinux. */
  kernel: string;
  /** Absolute path of the initrd, agent included. */
  initrd: string;
}

/**
 * Finds the built `minimal` image, or undefined when it is not built. Injected by the caller
 * (src/cli passes src/vmm's imageInfo), so that config does not depend on vmm.
 */
export type MinimalImageLookup = () => Promise<MinimalImage | undefined>;

/** The built-in `minimal` profile for a built image. The agent is baked in: nothing is injected. */
export function minimalProfile(image: MinimalImage): Profile {
  return {
    name: 'minimal',
    kernel: image.kernel,
    initrd: image.initrd,
    cmdline: `${kTunedCmdline} rdinit=${kAgentRdinit}`,
    memoryBytes: kMinimalMemoryBytes,
    cpus: 1,
    machine: 'q35',
    accel: 'auto',
    injectAgent: false,
    agentTimeoutMs: kDefaultAgentTimeoutMs,
    builtin: true,
  };
}

/**
 * The built-in profiles. `minimal` needs its image, found by `findImage`: without it this throws,
 * naming the command that builds it.
 */
export async function builtinProfiles(findImage: MinimalImageLookup): Promise<Record<string, Profile>> {
  const image = await findImage();
  if (!image) {
    throw new ProfileError('profile `minimal`: the guest image is not built — run `provium image build` (or `npm run setup`)');
  }
  return { minimal: minimalProfile(image) };
}

/**
 * `[profiles.<name>]` tables from provium.toml (`raw` is the value of `profiles`). Relative paths
 * resolve against `baseDir`; files are checked at boot time, not here.
 */
export function resolveProfiles(raw: unknown, baseDir: string): Record<string, Profile> {
  if (raw === undefined || raw === null) return {};
  if (!isTable(raw)) throw new ProfileError(`[profiles] must be a table of [profiles.<name>] tables, got ${describe(raw)}`);
  const out: Record<string, Profile> = {};
  for (const [name, table] of Object.entries(raw)) {
    if (!kNamePattern.test(name)) {
      throw new ProfileError(`profile \`${name}\`: invalid name; use letters, digits, '_', '.' and '-'`);
    }
    if (!isTable(table)) {
      throw new ProfileError(`profile \`${name}\`: expected a [profiles.${name}] table, got ${describe(table)}`);
    }
    out[name] = resolveOne(name, table, baseDir);
  }
  return out;
}

function resolveOne(name: string, t: Record<string, unknown>, baseDir: string): Profile {
  const where = `profile \`${name}\``;
  for (const key of Object.keys(t)) {
    if (!(kProfileKeys as readonly string[]).includes(key)) {
      throw new ProfileError(`${where}: unknown key \`${key}\`; accepted keys: ${kProfileKeys.join(', ')}`);
    }
  }

  // 1. Paths.
  if (t['kernel'] === undefined) throw new ProfileError(`${where}: \`kernel\` is required (a path to a bzImage or PVH vmlinux)`);
  const kernel = path(where, 'kernel', t['kernel'], baseDir);
  const initrd = t['initrd'] === undefined ? undefined : path(where, 'initrd', t['initrd'], baseDir);

  // 2. Agent injection and the command line.
  const injectAgent = t['inject_agent'] === undefined ? true : bool(where, 'inject_agent', t['inject_agent']);
  let cmdline = t['cmdline'] === undefined ? '' : str(where, 'cmdline', t['cmdline']).trim();
  const parts = cmdline.split(/\s+/).filter(Boolean);
  if (!parts.some((p) => p === 'console=ttyS0' || p.startsWith('console=ttyS0,'))) parts.unshift('console=ttyS0');
  if (injectAgent) {
    const rdinit = rdinitOf(cmdline);
    if (rdinit !== undefined && rdinit !== kAgentRdinit) {
      throw new ProfileError(`${where}: \`cmdline\` sets rdinit=${rdinit}, which conflicts with inject_agent (rdinit=${kAgentRdinit}); remove it or set inject_agent = false`);
    }
    if (rdinit === undefined) parts.push(`rdinit=${kAgentRdinit}`);
  }
  cmdline = parts.join(' ');

  // 3. Sizes and counts.
  const memoryBytes = t['memory'] === undefined ? kUserMemoryBytes : parseSize(t['memory'], `${where}: memory`);
  if (memoryBytes < kMinMemoryBytes) {
    throw new ProfileError(`${where}: memory ${memoryBytes} bytes is too small; use at least "32M"`);
  }
  const cpus = t['cpus'] === undefined ? 1 : t['cpus'];
  if (typeof cpus !== 'number' || !Number.isInteger(cpus) || cpus < 1 || cpus > kMaxCpus) {
    throw new ProfileError(`${where}: cpus must be an integer from 1 to ${kMaxCpus}, got ${describe(cpus)}`);
  }
  const machine = oneOf(where, 'machine', t['machine'] ?? 'q35', kMachines);
  const accel = oneOf(where, 'accel', t['accel'] ?? 'auto', kAccels);
  const agentTimeoutMs = t['agent_boot_timeout'] === undefined
    ? kDefaultAgentTimeoutMs
    : parseDuration(t['agent_boot_timeout'], `${where}: agent_boot_timeout`);
  if (agentTimeoutMs <= 0) throw new ProfileError(`${where}: agent_boot_timeout must be more than 0`);

  const profile: Profile = { name, kernel, cmdline, memoryBytes, cpus, machine, accel, injectAgent, agentTimeoutMs, builtin: false };
  if (initrd !== undefined) profile.initrd = initrd;
  if (t['disks'] !== undefined) profile.disks = disks(where, t['disks'], baseDir);
  return profile;
}

/** `disks = [{id = "data", size = "64M"}, {id = "base", image = "golden.img", readonly = true}]` */
function disks(where: string, raw: unknown, baseDir: string): DiskSpec[] {
  if (!Array.isArray(raw)) throw new ProfileError(`${where}: disks must be an array of tables like {id = "data", size = "64M"}, got ${describe(raw)}`);
  return raw.map((d, i) => {
    const at = `${where}: disks[${i + 1}]`;
    if (!isTable(d)) throw new ProfileError(`${at}: expected a table like {id = "data", size = "64M"}, got ${describe(d)}`);
    for (const key of Object.keys(d)) {
      if (!kDiskKeys.includes(key)) throw new ProfileError(`${at}: unknown key \`${key}\`; accepted keys: ${kDiskKeys.join(', ')}`);
    }
    if (d['id'] === undefined) throw new ProfileError(`${at}: \`id\` is required`);
    const spec: DiskSpec = { id: str(at, 'id', d['id']) };
    if (d['size'] !== undefined) spec.sizeBytes = parseSize(d['size'], `${at}: size`);
    if (d['image'] !== undefined) spec.image = path(at, 'image', d['image'], baseDir);
    if (d['readonly'] !== undefined) spec.readonly = bool(at, 'readonly', d['readonly']);
    if (d['backend'] !== undefined) {
      if (!isDiskBackend(d['backend'])) throw new ProfileError(`${at}: \`backend\` must be "nbd" (every fault, the default) or "qemu" (plain-drive speed, blkdebug faults), got ${describe(d['backend'])}`);
      spec.backend = d['backend'];
    }
    if (spec.sizeBytes === undefined && spec.image === undefined) throw new ProfileError(`${at}: give \`size\` (e.g. "64M") or \`image\``);
    return spec;
  });
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  return typeof v === 'string' ? JSON.stringify(v) : typeof v === 'object' ? typeof v : `${typeof v} ${String(v)}`;
}

function str(where: string, key: string, v: unknown): string {
  if (typeof v !== 'string') throw new ProfileError(`${where}: \`${key}\` must be a string, got ${describe(v)}`);
  return v;
}

function bool(where: string, key: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new ProfileError(`${where}: \`${key}\` must be true or false, got ${describe(v)}`);
  return v;
}

function path(where: string, key: string, v: unknown, baseDir: string): string {
  const s = str(where, key, v);
  if (s.trim() === '') throw new ProfileError(`${where}: \`${key}\` is empty`);
  return isAbsolute(s) ? s : resolve(baseDir, s);
}

function oneOf<T extends string>(where: string, key: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new ProfileError(`${where}: \`${key}\` must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${describe(v)}`);
  }
  return v as T;
}
