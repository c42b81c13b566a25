// Profiles: what a VM boots, and the kernel command line a profile means. The built-in `minimal`
// comes from the image built by `provium image build`, which src/vmm finds: the caller passes that
// lookup in (config never imports vmm). User profiles come from `[profiles.<name>]` tables and
// `[profiles] from_dir` (profile-sources.ts reads those); this file resolves them: defaults,
// `extends`, `{out}`, and the minimal userland under a kernel-only profile. What needs the disk
// (the build, root's kernel, cmdline_file, path checks) waits for first use: profile-prepare.ts.

import { isAbsolute, resolve } from 'node:path';
import { isDiskBackend, type DiskSpec } from '../protocol/rpc.js';
import { cacheDir as defaultCacheDir } from './cache-dir.js';
import { parseDuration, parseSize } from './units.js';

/**
 * DESIGN §3: the boot-time flags that measured fastest on TCG. rng_core.default_quality=0 keeps the
 * kernel's hwrng thread from reading virtio-rng at moments that depend on timing: with rng_seed,
 * /dev/hwrng then reads the same bytes in every clone.
 */
export const kTunedCmdline =
  'console=ttyS0 quiet panic=-1 cryptomgr.notests mitigations=off i8042.noaux i8042.nomux i8042.nopnp ' +
  '8250.nr_uarts=1 no_timer_check tsc=reliable nokaslr random.trust_cpu=on audit=0 rng_core.default_quality=0';
/** Where the agent lives in the guest: the `rdinit=` of the minimal image and of injected profiles. */
export const kAgentRdinit = '/sbin/provium-agent';
/** The name of the built-in profile whose image every other profile may borrow from. */
export const kMinimalProfile = 'minimal';

/** The value of the last `rdinit=` in a command line. */
export function rdinitOf(cmdline: string): string | undefined {
  let value: string | undefined;
  for (const t of cmdline.split(/\s+/)) if (t.startsWith('rdinit=')) value = t.slice('rdinit='.length);
  return value;
}

export type MachineType = 'q35' | 'microvm' | 'pc';
/** What runs in a Debian profile's root: the agent as PID 1, or systemd with the agent as a unit. */
export type GuestInit = 'agent' | 'systemd';

/** A Debian profile's root filesystem (`debian = { packages = [...] }`), built by src/vmm/debian-image.ts. */
export interface DebianRoot {
  suite: string;
  /** mmdebstrap's --variant: which packages come before `packages`. */
  variant: string;
  /** Sorted, without duplicates; systemd, udev and dbus are added for `init = "systemd"`. */
  packages: string[];
  mirror?: string;
}

/** The serial of the virtio disk holding a Debian profile's root image (the agent looks for it). */
export const kRootDiskSerial = 'provium-root';
export const kDebianSuiteDefault = 'bookworm';
export const kDebianVariantDefault = 'required';
const kDebianVariants = ['essential', 'required', 'important', 'standard'] as const;
const kDebianKeys = ['packages', 'suite', 'variant', 'mirror'];
const kInits: readonly GuestInit[] = ['agent', 'systemd'];
const kDebianPackagePattern = /^[a-z0-9][a-z0-9+.-]+$/;
export type AccelChoice = 'auto' | 'kvm' | 'tcg';

export interface Profile {
  name: string;
  /**
   * Absolute path; for minimal: the PVH vmlinux. Empty for a profile with `root` and no `kernel`
   * until its first use finds the kernel in the root (profile-prepare.ts).
   */
  kernel: string;
  /** Absolute path. */
  initrd?: string;
  /**
   * Full kernel command line (console=ttyS0 always present; rdinit= when the agent is injected).
   * With `cmdline_file`, the file's text is put in front at first use.
   */
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
  /** `root`: a directory holding a root filesystem and its kernel (absolute). */
  root?: string;
  /** `debian`: the root is built from these Debian packages and mounted read-only under an overlay. */
  debian?: DebianRoot;
  /** With `debian`: what runs in the root (default the agent as PID 1). */
  init?: GuestInit;
  /** The built Debian root image (absolute), set at first use; QEMU gets it as a read-only disk. */
  rootImage?: string;
  /** What the profile's first use must do or check; absent for the untouched built-in `minimal`. */
  firstUse?: FirstUse;
}

/** Work and checks deferred to a profile's first use (its first boot, or its build). */
export interface FirstUse {
  /** The file the profile is written in (provium.toml or a from_dir profile.provium.toml), for messages. */
  source: string;
  /** The profile's directory: its relative paths and its `build` start here. */
  dir: string;
  build?: ProfileBuild;
  /** Absolute; its whitespace-collapsed text goes before `inlineCmdline`. */
  cmdlineFile?: string;
  /** The inline `cmdline`, before console=ttyS0 and rdinit= are added. */
  inlineCmdline: string;
  /** The agent runs as rdinit (injected, or baked into the initrd): compose with rdinit=. */
  agentRdinit: boolean;
}

/** A profile's `build`: `sh -c command` in `cwd`, writing to `out`. */
export interface ProfileBuild {
  /** The profile whose table declares it; a profile that extends it shares the same build. */
  owner: string;
  /** As written, `{out}` expanded. */
  command: string;
  cwd: string;
  /** Absolute: what `{out}` means. */
  out: string;
  /** `build_inputs`: globs relative to `cwd`; the build is skipped while they are unchanged. */
  inputs?: string[];
}

const MiB = 1024 * 1024;
/** The reference's default per VM (§1.6), for the built-in profile and user profiles alike. */
export const kUserMemoryBytes = 512 * MiB;
export const kMinimalMemoryBytes = kUserMemoryBytes;
export const kDefaultAgentTimeoutMs = 30_000;
/** `init = "systemd"` unless agent_boot_timeout says otherwise. */
export const kSystemdAgentTimeoutMs = 120_000;
const kMinMemoryBytes = 32 * MiB;
const kMaxCpus = 64;
const kMachines: readonly MachineType[] = ['q35', 'microvm', 'pc'];
const kAccels: readonly AccelChoice[] = ['auto', 'kvm', 'tcg'];
export const kProfileKeys = [
  'kernel', 'initrd', 'root', 'cmdline', 'cmdline_file', 'memory', 'cpus', 'machine', 'accel', 'inject_agent',
  'agent_boot_timeout', 'disks', 'build', 'build_out', 'build_inputs', 'extends', 'debian', 'init',
] as const;
const kDiskKeys = ['id', 'size', 'image', 'readonly', 'backend'];
export const kProfileNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const kOut = '{out}';

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
    name: kMinimalProfile,
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
 * The kernel command line a profile means: `text` with console=ttyS0 in front when missing and
 * the agent's rdinit= at the end when the agent runs as rdinit. `what` names where `text` came
 * from, for the conflict error.
 */
export function composeCmdline(where: string, what: string, text: string, agentRdinit: boolean): string {
  const parts = text.split(/\s+/).filter(Boolean);
  if (!parts.some((p) => p === 'console=ttyS0' || p.startsWith('console=ttyS0,'))) parts.unshift('console=ttyS0');
  if (agentRdinit) {
    const rdinit = rdinitOf(text);
    if (rdinit !== undefined && rdinit !== kAgentRdinit) {
      throw new ProfileError(`${where}: ${what} sets rdinit=${rdinit}, which conflicts with inject_agent (rdinit=${kAgentRdinit}); remove it or set inject_agent = false`);
    }
    if (rdinit === undefined) parts.push(`rdinit=${kAgentRdinit}`);
  }
  return parts.join(' ');
}

/** One profile as written: a `[profiles.<name>]` table or a from_dir profile.provium.toml. */
export interface ProfileSource {
  name: string;
  table: Record<string, unknown>;
  /** Relative paths and `build` resolve against this directory. */
  dir: string;
  /** The file it is written in, for messages. */
  source: string;
}

export interface ResolveContext {
  /** The built-in profiles that could be loaded (minimal, when its image is built). */
  builtins?: Record<string, Profile>;
  /** Built-in profiles that could not be loaded, with the reason and fix. */
  unavailableBuiltins?: Record<string, string>;
  /** `{out}` defaults to `<cacheDir>/build/<profile>` (default: cache-dir.ts's). */
  cacheDir?: string;
  /** For PROVIUM_BUILD_DIR (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedProfiles {
  /** The built-ins (adjusted by a table of their name) and every user profile that resolved. */
  profiles: Record<string, Profile>;
  /** Profiles that need something missing (the minimal image), with the reason and the fix. */
  unavailable: Record<string, string>;
}

/**
 * `[profiles.<name>]` tables from provium.toml (`raw` is the value of `profiles`, without
 * `from_dir`). Relative paths resolve against `baseDir`; files are checked at first use, not
 * here. A profile that cannot be made (its parent's image is missing) is a ProfileError.
 */
export function resolveProfiles(raw: unknown, baseDir: string, ctx: ResolveContext = {}): Record<string, Profile> {
  if (raw === undefined || raw === null) return {};
  if (!isTable(raw)) throw new ProfileError(`[profiles] must be a table of [profiles.<name>] tables, got ${describe(raw)}`);
  const sources = Object.entries(raw).map(([name, table]) => sourceOf(name, table, baseDir, 'provium.toml'));
  const resolved = resolveProfileSources(sources, ctx);
  const names = new Set(sources.map((s) => s.name));
  for (const [name, reason] of Object.entries(resolved.unavailable)) if (names.has(name)) throw new ProfileError(reason);
  return Object.fromEntries(Object.entries(resolved.profiles).filter(([name]) => names.has(name)));
}

/** A checked ProfileSource from a name and a parsed value. */
export function sourceOf(name: string, table: unknown, dir: string, source: string): ProfileSource {
  if (!kProfileNamePattern.test(name)) {
    throw new ProfileError(`profile \`${name}\`: invalid name; use letters, digits, '_', '.' and '-'`);
  }
  if (!isTable(table)) {
    throw new ProfileError(`profile \`${name}\`: expected a [profiles.${name}] table, got ${describe(table)}`);
  }
  return { name, table, dir, source };
}

/**
 * Every profile: the built-ins, each adjusted by a source of its name (`[profiles.minimal]`), and
 * each source, on top of the profile it `extends` when it names one. Throws a ProfileError for a
 * bad key or value, an unknown parent or a cycle.
 */
export function resolveProfileSources(sources: ProfileSource[], ctx: ResolveContext = {}): ResolvedProfiles {
  const builtins = ctx.builtins ?? {};
  const unavailableBuiltins = ctx.unavailableBuiltins ?? {};
  const byName = new Map(sources.map((s) => [s.name, s]));
  const memo = new Map<string, Spec | Unavailable>();
  const resolving: string[] = [];

  const builtinSpec = (name: string): Spec | Unavailable | undefined => {
    const profile = builtins[name];
    if (profile) return specOfProfile(profile);
    const reason = unavailableBuiltins[name];
    return reason === undefined ? undefined : { unavailable: reason };
  };

  // The effective spec of a name: its source on top of its parent, or a built-in.
  const specOf = (name: string): Spec | Unavailable | undefined => {
    const done = memo.get(name);
    if (done) return done;
    const src = byName.get(name);
    if (!src) return builtinSpec(name);
    if (resolving.includes(name)) {
      const chain = [...resolving.slice(resolving.indexOf(name)), name].join(' → ');
      throw new ProfileError(`profile \`${name}\`: \`extends\` makes a cycle: ${chain}; remove \`extends\` from one of them`);
    }
    resolving.push(name);
    try {
      const read = readTable(src, ctx);
      const isBuiltinName = name in builtins || name in unavailableBuiltins;
      let parent: Spec | Unavailable | undefined;
      if (isBuiltinName) {
        // `[profiles.minimal]` adjusts the built-in; without its image it can still stand alone.
        if (read.extends !== undefined) {
          throw new ProfileError(`profile \`${name}\`: \`extends\` is not allowed here: [profiles.${name}] adjusts the built-in profile \`${name}\`; name the table differently to make a new profile`);
        }
        parent = builtinSpec(name);
        if (isUnavailable(parent) && (read.fields.kernel !== undefined || read.fields.root !== undefined)) parent = undefined;
      } else if (read.extends !== undefined) {
        if (!byName.has(read.extends) && builtinSpec(read.extends) === undefined) {
          const known = [...new Set([...Object.keys(builtins), ...Object.keys(unavailableBuiltins), ...byName.keys()])].sort();
          throw new ProfileError(`profile \`${name}\`: \`extends\` names an unknown profile \`${read.extends}\`; known profiles: ${known.join(', ') || '(none)'}`);
        }
        parent = specOf(read.extends);
        if (isUnavailable(parent)) parent = { unavailable: `profile \`${name}\` extends \`${read.extends}\`, which is unavailable: ${parent.unavailable}` };
      }
      // Only the built-in's own table keeps it built-in; a profile made from it is the user's.
      const spec: Spec | Unavailable = isUnavailable(parent)
        ? parent
        : { ...merge(parent ?? userDefaults(), read.fields, src), builtin: isBuiltinName && parent !== undefined };
      memo.set(name, spec);
      return spec;
    } finally {
      resolving.pop();
    }
  };

  const out: ResolvedProfiles = { profiles: {}, unavailable: {} };
  const minimalImage = builtins[kMinimalProfile];
  const names = [...new Set([...Object.keys(builtins), ...Object.keys(unavailableBuiltins), ...byName.keys()])];
  for (const name of names) {
    const spec = specOf(name);
    if (!spec) continue;
    if (isUnavailable(spec)) out.unavailable[name] = spec.unavailable;
    else out.profiles[name] = byName.has(name) ? finish(name, spec, minimalImage) : builtins[name]!;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Specs: a profile's values before the minimal userland and the command line are worked out.

interface Unavailable {
  unavailable: string;
}

function isUnavailable(v: Spec | Unavailable | undefined): v is Unavailable {
  return v !== undefined && 'unavailable' in v;
}

interface Spec {
  kernel?: string;
  initrd?: string;
  root?: string;
  /** The inline cmdline; undefined when none was given anywhere up the chain. */
  cmdline?: string;
  cmdlineFile?: string;
  memoryBytes: number;
  cpus: number;
  machine: MachineType;
  accel: AccelChoice;
  /** The user's `inject_agent`: the agent runs as rdinit. */
  injectAgent: boolean;
  /** The initrd already holds the agent (minimal's): nothing to append. */
  agentBaked: boolean;
  agentTimeoutMs: number;
  disks?: DiskSpec[];
  build?: ProfileBuild;
  debian?: DebianRoot;
  init?: GuestInit;
  builtin: boolean;
  /** The nearest source up the chain, for messages and first use. */
  source?: ProfileSource;
}

type Fields = Partial<Omit<Spec, 'builtin' | 'source' | 'agentBaked'>>;

function userDefaults(): Spec {
  return {
    memoryBytes: kUserMemoryBytes,
    cpus: 1,
    machine: 'q35',
    accel: 'auto',
    injectAgent: true,
    agentBaked: false,
    agentTimeoutMs: kDefaultAgentTimeoutMs,
    builtin: false,
  };
}

/** A built-in profile as a spec: the agent baked in, its rdinit part of what the profile means. */
function specOfProfile(p: Profile): Spec {
  const rdinit = rdinitOf(p.cmdline);
  const spec: Spec = {
    kernel: p.kernel,
    cmdline: p.cmdline.split(/\s+/).filter((t) => t && t !== `rdinit=${kAgentRdinit}`).join(' '),
    memoryBytes: p.memoryBytes,
    cpus: p.cpus,
    machine: p.machine,
    accel: p.accel,
    injectAgent: p.injectAgent || rdinit === kAgentRdinit,
    agentBaked: !p.injectAgent && rdinit === kAgentRdinit,
    agentTimeoutMs: p.agentTimeoutMs,
    builtin: p.builtin,
  };
  if (p.initrd !== undefined) spec.initrd = p.initrd;
  if (p.disks !== undefined) spec.disks = p.disks;
  return spec;
}

/** `parent` with the keys a table gives replaced ("overriding only the keys given"). */
function merge(parent: Spec, fields: Fields, source: ProfileSource): Spec {
  const spec: Spec = { ...parent, source };
  for (const [key, value] of Object.entries(fields)) if (value !== undefined) (spec as unknown as Record<string, unknown>)[key] = value;
  // A new root brings its own kernel; a new initrd does not carry the parent's agent.
  if (fields.root !== undefined && fields.kernel === undefined) delete spec.kernel;
  if (fields.initrd !== undefined) spec.agentBaked = false;
  // A Debian root replaces a parent's `root`, and the other way round.
  if (fields.debian !== undefined) delete spec.root;
  if (fields.root !== undefined) delete spec.debian;
  return spec;
}

/** The Profile of a spec: the minimal userland under a bare kernel, the command line, first use. */
function finish(name: string, spec: Spec, minimal: Profile | undefined): Profile {
  const where = `profile \`${name}\``;
  if (spec.init !== undefined && spec.debian === undefined) {
    throw new ProfileError(`${where}: \`init\` needs \`debian\` (it says what runs in a Debian root); remove it, or add debian = { packages = [...] }`);
  }
  if (spec.debian !== undefined) return finishDebian(name, spec, minimal);
  if (spec.kernel === undefined && spec.root === undefined) {
    throw new ProfileError(`${where}: \`kernel\` is required (a path to a bzImage or PVH vmlinux), or \`root\` (a root filesystem holding its kernel), or \`extends\` (a profile to start from)`);
  }
  // 1. A kernel with no userland of its own boots minimal's initrd, which carries the agent.
  let initrd = spec.initrd;
  let agentBaked = spec.agentBaked;
  let inline = spec.cmdline;
  if (initrd === undefined && spec.root === undefined && spec.injectAgent && minimal?.initrd !== undefined) {
    initrd = minimal.initrd;
    agentBaked = true;
    if (inline === undefined && spec.cmdlineFile === undefined) inline = kTunedCmdline;
  }

  // 2. The command line: final now, or at first use when a cmdline_file goes in front.
  const inlineCmdline = (inline ?? '').trim();
  const cmdline = composeCmdline(where, '`cmdline`', inlineCmdline, spec.injectAgent);

  const profile: Profile = {
    name,
    kernel: spec.kernel ?? '',
    cmdline,
    memoryBytes: spec.memoryBytes,
    cpus: spec.cpus,
    machine: spec.machine,
    accel: spec.accel,
    injectAgent: spec.injectAgent && !agentBaked,
    agentTimeoutMs: spec.agentTimeoutMs,
    builtin: spec.builtin,
  };
  if (initrd !== undefined) profile.initrd = initrd;
  if (spec.disks !== undefined) profile.disks = spec.disks;
  if (spec.root !== undefined) profile.root = spec.root;
  const src = spec.source!;
  const firstUse: FirstUse = { source: src.source, dir: src.dir, inlineCmdline, agentRdinit: spec.injectAgent };
  if (spec.build !== undefined) firstUse.build = spec.build;
  if (spec.cmdlineFile !== undefined) firstUse.cmdlineFile = spec.cmdlineFile;
  profile.firstUse = firstUse;
  return profile;
}

/**
 * A Debian profile: minimal's kernel (or the profile's own) and initramfs, whose agent mounts the
 * root image read-only under a tmpfs overlay and starts there (src/vmm/debian-image.ts builds it).
 */
function finishDebian(name: string, spec: Spec, minimal: Profile | undefined): Profile {
  const where = `profile \`${name}\``;
  if (spec.initrd !== undefined) throw new ProfileError(`${where}: \`debian\` boots minimal's initramfs, which mounts the Debian root; remove \`initrd\``);
  if (!spec.injectAgent) throw new ProfileError(`${where}: \`debian\` needs the agent (it mounts the root and serves in it); remove inject_agent = false`);
  if (minimal?.initrd === undefined) {
    throw new ProfileError(`${where}: \`debian\` boots the minimal image's kernel and initramfs, which are not built — run \`provium image build\` (or \`npm run setup\`)`);
  }
  const init = spec.init ?? 'agent';
  const rootArgs = [`provium.root=${kRootDiskSerial}`, ...(init === 'systemd' ? ['provium.init=systemd'] : [])];
  const inlineCmdline = [spec.cmdline ?? kTunedCmdline, ...rootArgs].join(' ').trim();
  const profile: Profile = {
    name,
    kernel: spec.kernel ?? minimal.kernel,
    initrd: minimal.initrd,
    cmdline: composeCmdline(where, '`cmdline`', inlineCmdline, true),
    memoryBytes: spec.memoryBytes,
    cpus: spec.cpus,
    machine: spec.machine,
    accel: spec.accel,
    injectAgent: false,
    // A systemd boot under TCG takes tens of seconds on a busy host: the default waits longer.
    agentTimeoutMs: init === 'systemd' && spec.agentTimeoutMs === kDefaultAgentTimeoutMs ? kSystemdAgentTimeoutMs : spec.agentTimeoutMs,
    builtin: false,
    debian: init === 'systemd' ? withPackages(spec.debian!, kSystemdPackages) : spec.debian!,
    init,
  };
  if (spec.disks !== undefined) profile.disks = spec.disks;
  const src = spec.source!;
  profile.firstUse = { source: src.source, dir: src.dir, inlineCmdline, agentRdinit: true };
  if (spec.build !== undefined) profile.firstUse.build = spec.build;
  if (spec.cmdlineFile !== undefined) profile.firstUse.cmdlineFile = spec.cmdlineFile;
  return profile;
}

/**
 * What `init = "systemd"` needs in the root: systemd itself, udev (else every device unit, the
 * serial console's first, waits 90 s for a device that never shows) and dbus (for logind, which
 * turns the ACPI power button into a clean poweroff).
 */
const kSystemdPackages = ['dbus', 'systemd', 'udev'];

function withPackages(root: DebianRoot, more: string[]): DebianRoot {
  return { ...root, packages: [...new Set([...root.packages, ...more])].sort() };
}

/** `debian = { packages = ["nginx"], suite = "bookworm", variant = "required", mirror = "…" }` */
function debianRoot(where: string, raw: unknown): DebianRoot {
  const example = '{ packages = ["nginx", "curl"] }';
  if (!isTable(raw)) throw new ProfileError(`${where}: \`debian\` must be a table like ${example}, got ${describe(raw)}`);
  for (const key of Object.keys(raw)) {
    if (!kDebianKeys.includes(key)) throw new ProfileError(`${where}: debian: unknown key \`${key}\`; accepted keys: ${kDebianKeys.join(', ')}`);
  }
  const packages = raw['packages'] ?? [];
  if (!Array.isArray(packages) || packages.some((p) => typeof p !== 'string')) {
    throw new ProfileError(`${where}: debian.packages must be an array of Debian package names like ["nginx", "curl"], got ${describe(packages)}`);
  }
  for (const p of packages as string[]) {
    if (!kDebianPackagePattern.test(p)) throw new ProfileError(`${where}: debian.packages: ${JSON.stringify(p)} is not a Debian package name (lowercase letters, digits, + - .)`);
  }
  const root: DebianRoot = {
    suite: raw['suite'] === undefined ? kDebianSuiteDefault : str(where, 'debian.suite', raw['suite']),
    variant: raw['variant'] === undefined ? kDebianVariantDefault : oneOf(where, 'debian.variant', raw['variant'], kDebianVariants),
    packages: [...new Set(packages as string[])].sort(),
  };
  if (!/^[a-z][a-z0-9-]*$/.test(root.suite)) throw new ProfileError(`${where}: debian.suite must be a Debian suite or codename like "bookworm", got ${JSON.stringify(root.suite)}`);
  if (raw['mirror'] !== undefined) root.mirror = str(where, 'debian.mirror', raw['mirror']);
  return root;
}

// ---------------------------------------------------------------------------------------------
// One table: every key checked, paths resolved against the table's directory with its `{out}`.

function readTable(src: ProfileSource, ctx: ResolveContext): { fields: Fields; extends?: string } {
  const { name, table: t, dir } = src;
  const where = `profile \`${name}\``;
  for (const key of Object.keys(t)) {
    if (!(kProfileKeys as readonly string[]).includes(key)) {
      throw new ProfileError(`${where}: unknown key \`${key}\`; accepted keys: ${kProfileKeys.join(', ')}`);
    }
  }

  // 1. `{out}`: build_out, else $PROVIUM_BUILD_DIR/<profile>, else <cache>/build/<profile>.
  const env = ctx.env ?? process.env;
  let out: string;
  if (t['build_out'] !== undefined) {
    out = path(where, 'build_out', t['build_out'], dir);
    if (out.includes(kOut)) throw new ProfileError(`${where}: \`build_out\` cannot contain ${kOut} (it is what ${kOut} means)`);
  } else {
    const base = env['PROVIUM_BUILD_DIR'];
    out = base ? resolve(base, name) : resolve(ctx.cacheDir ?? defaultCacheDir(), 'build', name);
  }
  const file = (key: string, v: unknown): string => path(where, key, v, dir, out);

  // 2. Paths.
  const fields: Fields = {};
  if (t['kernel'] !== undefined) fields.kernel = file('kernel', t['kernel']);
  if (t['initrd'] !== undefined) fields.initrd = file('initrd', t['initrd']);
  if (t['root'] !== undefined) fields.root = file('root', t['root']);
  if (t['cmdline_file'] !== undefined) fields.cmdlineFile = file('cmdline_file', t['cmdline_file']);
  if (t['cmdline'] !== undefined) fields.cmdline = str(where, 'cmdline', t['cmdline']);
  if (t['inject_agent'] !== undefined) fields.injectAgent = bool(where, 'inject_agent', t['inject_agent']);

  // 3. Sizes and counts.
  if (t['memory'] !== undefined) {
    fields.memoryBytes = parseSize(t['memory'], `${where}: memory`);
    if (fields.memoryBytes < kMinMemoryBytes) {
      throw new ProfileError(`${where}: memory ${fields.memoryBytes} bytes is too small; use at least "32M"`);
    }
  }
  if (t['cpus'] !== undefined) {
    const cpus = t['cpus'];
    if (typeof cpus !== 'number' || !Number.isInteger(cpus) || cpus < 1 || cpus > kMaxCpus) {
      throw new ProfileError(`${where}: cpus must be an integer from 1 to ${kMaxCpus}, got ${describe(cpus)}`);
    }
    fields.cpus = cpus;
  }
  if (t['machine'] !== undefined) fields.machine = oneOf(where, 'machine', t['machine'], kMachines);
  if (t['accel'] !== undefined) fields.accel = oneOf(where, 'accel', t['accel'], kAccels);
  if (t['agent_boot_timeout'] !== undefined) {
    fields.agentTimeoutMs = parseDuration(t['agent_boot_timeout'], `${where}: agent_boot_timeout`);
    if (fields.agentTimeoutMs <= 0) throw new ProfileError(`${where}: agent_boot_timeout must be more than 0`);
  }
  if (t['disks'] !== undefined) fields.disks = disks(where, t['disks'], dir, out);
  if (t['debian'] !== undefined) fields.debian = debianRoot(where, t['debian']);
  if (t['init'] !== undefined) fields.init = oneOf(where, 'init', t['init'], kInits);

  // 4. The build.
  if (t['build'] !== undefined) {
    const command = str(where, 'build', t['build']);
    if (command.trim() === '') throw new ProfileError(`${where}: \`build\` is empty; give a shell command such as "./build.sh ${kOut}", or remove it`);
    fields.build = { owner: name, command: command.split(kOut).join(out), cwd: dir, out };
    if (t['build_inputs'] !== undefined) fields.build.inputs = globs(where, t['build_inputs']);
  } else if (t['build_inputs'] !== undefined) {
    throw new ProfileError(`${where}: \`build_inputs\` needs \`build\` in the same table (they describe that command's inputs)`);
  }

  let parent: string | undefined;
  if (t['extends'] !== undefined) {
    parent = str(where, 'extends', t['extends']);
    if (!kProfileNamePattern.test(parent)) throw new ProfileError(`${where}: \`extends\` must name a profile, got ${describe(parent)}`);
    if (parent === name) throw new ProfileError(`${where}: \`extends\` makes a cycle: ${name} → ${name}; remove \`extends\``);
  }
  return parent === undefined ? { fields } : { fields, extends: parent };
}

/** `disks = [{id = "data", size = "64M"}, {id = "base", image = "golden.img", readonly = true}]` */
function disks(where: string, raw: unknown, baseDir: string, out: string): DiskSpec[] {
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
    if (d['image'] !== undefined) spec.image = path(at, 'image', d['image'], baseDir, out);
    if (d['readonly'] !== undefined) spec.readonly = bool(at, 'readonly', d['readonly']);
    if (d['backend'] !== undefined) {
      if (!isDiskBackend(d['backend'])) throw new ProfileError(`${at}: \`backend\` must be "nbd" (every fault, the default) or "qemu" (plain-drive speed, blkdebug faults), got ${describe(d['backend'])}`);
      spec.backend = d['backend'];
    }
    if (spec.sizeBytes === undefined && spec.image === undefined) throw new ProfileError(`${at}: give \`size\` (e.g. "64M") or \`image\``);
    return spec;
  });
}

function globs(where: string, raw: unknown): string[] {
  if (!Array.isArray(raw) || raw.some((g) => typeof g !== 'string' || g.trim() === '')) {
    throw new ProfileError(`${where}: \`build_inputs\` must be an array of globs relative to the profile's directory, e.g. ["src/**", "build.sh"], got ${describe(raw)}`);
  }
  return raw as string[];
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

/** An absolute path: `{out}` expanded first (when `out` is given), then resolved against `baseDir`. */
function path(where: string, key: string, v: unknown, baseDir: string, out?: string): string {
  const s = str(where, key, v);
  if (s.trim() === '') throw new ProfileError(`${where}: \`${key}\` is empty`);
  const expanded = out === undefined ? s : s.split(kOut).join(out);
  return isAbsolute(expanded) ? expanded : resolve(baseDir, expanded);
}

function oneOf<T extends string>(where: string, key: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new ProfileError(`${where}: \`${key}\` must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${describe(v)}`);
  }
  return v as T;
}
