// Where a fixture lives and what its cache key is (reference §3.3, DESIGN §4). A fixture is
// `<root>/<ref>.fixture.lua`, the first root that has it wins. Its key is a SHA-256 over
// everything that could change what its build produces, and nothing else:
//   1. the fixture's source bytes;
//   2. the caller's `extra` parts (qemu binary, agent overlay, protocol version…);
//   3. `dep=` the key of each fixture it uses, recursively, in source order (legacy
//      provium.fixture names after the others);
//   4. each `require`d module found where the sandbox's `require` looks (the roots, then the
//      fixture's directory), recursively: its path there and its content hash;
//   5. each profile it boots (literal names; all of them when a profile is computed): everything
//      in the profile that shapes a boot, files by content hash;
//   6. each literal host file (push_file, depends_on_file, a disk's image): its path relative to
//      the fixture and its content hash, or `missing`.
// Only the fixture's and its modules' own text is scanned (src/config/lua-scan.ts). Files are
// hashed by content (contentHash, src/vmm/file-hash.ts), never by mtime.

import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { scanLua, type LuaStatics } from '../config/lua-scan.js';
import { kFixtureSuffix } from '../config/config.js';
import { legacyFixtureBase, legacyFixtureCandidates, legacyFixtureRefOf } from '../config/legacy-fixtures.js';
import type { Profile } from '../config/profiles.js';
import { contentHash } from '../vmm/file-hash.js';

/** Bumped when the way the key is computed changes, so that old cache entries stop matching. */
const kKeyScheme = 'fixture-key/1';

/** A fixture ref that names no file under the roots. */
export class FixtureNotFoundError extends Error {
  override name = 'FixtureNotFoundError';
}

/** A fixture ref written in a form that can never name a fixture; the message says how to write it. */
export class FixtureRefError extends Error {
  override name = 'FixtureRefError';
}

/** Fixtures that use each other in a loop; the message names the loop. */
export class FixtureCycleError extends Error {
  override name = 'FixtureCycleError';
}

const kRefHint = 'name a fixture by its path under a test root without the suffix, e.g. `db/fixtures/warm` for <root>/db/fixtures/warm.fixture.lua';

/** Throws a FixtureRefError when `ref` cannot name a fixture (empty, absolute, `..`, suffixed). */
export function checkFixtureRef(ref: string): void {
  if (ref.trim() === '') throw new FixtureRefError(`fixture ref is empty: ${kRefHint}`);
  if (ref.endsWith(kFixtureSuffix)) {
    throw new FixtureRefError(`fixture \`${ref}\`: drop the \`${kFixtureSuffix}\` suffix and write \`${ref.slice(0, -kFixtureSuffix.length)}\``);
  }
  if (path.isAbsolute(ref)) throw new FixtureRefError(`fixture \`${ref}\` is an absolute path: ${kRefHint}`);
  if (ref.split(/[\\/]/).includes('..')) throw new FixtureRefError(`fixture \`${ref}\` climbs out of the test root with \`..\`: ${kRefHint}`);
}

/**
 * `ref` → the absolute path of `<root>/<ref>.fixture.lua`, first root wins. A ref ending in `.lua`
 * names its file as is: the legacy `fixtures/<name>.lua` of provium.fixture (seed 002).
 */
export async function resolveFixture(ref: string, roots: string[]): Promise<string> {
  checkFixtureRef(ref);
  const file = ref.endsWith('.lua') ? ref : `${ref}${kFixtureSuffix}`;
  for (const root of roots) {
    const candidate = path.resolve(root, file);
    if (await isFile(candidate)) return candidate;
  }
  const where = roots.length ? roots.join(', ') : '(no test roots configured)';
  throw new FixtureNotFoundError(`fixture \`${ref}\` not found in any test root (looked for ${file} under: ${where})`);
}

export interface FixtureKeyInputs {
  /** Absolute test roots, in order (where fixtures and `require`d modules are found). */
  roots: string[];
  /** The resolved profiles by name (src/config/profiles.ts `Profile`). */
  profiles: Record<string, Profile>;
  /** Other parts the caller folds in, e.g. `qemu=<binary stamp>`, `agent=<overlay stamp>`, `protocol=<n>`. */
  extra: string[];
}

export interface FixtureKey {
  /** Hex SHA-256. */
  key: string;
  /** The fixture's absolute path. */
  file: string;
  ref: string;
  /** Other fixtures it uses, transitively, as refs (depth first, in source order). */
  deps: string[];
  /** Every input that went in, human-readable, for `provium fixture stale` to say what changed. */
  parts: string[];
}

/** The cache key of fixture `ref`. Throws FixtureNotFoundError, FixtureRefError or FixtureCycleError. */
export async function fixtureKey(ref: string, inputs: FixtureKeyInputs): Promise<FixtureKey> {
  return keyOf(ref, inputs, [], new Map());
}

/** One scanned source (the fixture or a module) and the directory its relative paths start from. */
interface Scanned {
  statics: LuaStatics;
  dir: string;
}

async function keyOf(ref: string, inputs: FixtureKeyInputs, stack: string[], done: Map<string, FixtureKey>): Promise<FixtureKey> {
  // 1. A loop, or a fixture already keyed in this call (two deps sharing one base).
  const at = stack.indexOf(ref);
  if (at >= 0) throw new FixtureCycleError(`fixtures use each other in a cycle: ${[...stack.slice(at), ref].join(' → ')}`);
  const known = done.get(ref);
  if (known) return known;

  // 2. The fixture's own source.
  let file: string;
  try {
    file = await resolveFixture(ref, inputs.roots);
  } catch (err) {
    const parent = stack[stack.length - 1];
    if (parent !== undefined && err instanceof Error) err.message = `fixture \`${parent}\` uses fixture \`${ref}\`: ${err.message}`;
    throw err;
  }
  const source = await readFile(file);
  const fixtureDir = path.dirname(file);
  const scanned: Scanned[] = [{ statics: scanLua(source.toString('utf8')), dir: fixtureDir }];
  const parts = [`source=${path.basename(file)} ${sha256(source)}`, `scheme=${kKeyScheme}`, ...inputs.extra];

  // 3. Modules, depth first in source order (scanned here, folded in after the deps).
  const moduleParts = await scanModules(scanned, moduleDirs(inputs.roots, file));

  // 4. Dep fixtures, from the fixture and its modules, in source order; the legacy names of
  //    provium.fixture after them, found from the fixture's directory as the binding finds them.
  const legacy: string[] = [];
  for (const name of unique(scanned.flatMap((s) => s.statics.legacyFixtures))) legacy.push(await legacyRef(ref, name, fixtureDir, inputs.roots));
  const deps: string[] = [];
  for (const dep of unique([...scanned.flatMap((s) => s.statics.fixtures), ...legacy])) {
    const sub = await keyOf(dep, inputs, [...stack, ref], done);
    parts.push(`dep=${dep} ${sub.key}`);
    for (const d of [dep, ...sub.deps]) if (!deps.includes(d)) deps.push(d);
  }
  parts.push(...moduleParts);

  // 5. Profiles: the literal ones, or all of them when one is computed.
  const dynamic = scanned.some((s) => s.statics.dynamicProfiles);
  const used = dynamic ? Object.keys(inputs.profiles) : unique(scanned.flatMap((s) => s.statics.profiles));
  for (const name of [...new Set(used)].sort()) parts.push(...(await profileParts(name, inputs.profiles[name])));

  // 6. Host files, relative to the fixture so that the key does not depend on where the checkout is.
  const seen = new Set<string>();
  for (const s of scanned) {
    for (const h of s.statics.hostFileRefs) {
      const resolved = path.resolve(h.relativeTo === 'source' ? s.dir : fixtureDir, h.path);
      if (seen.has(resolved)) continue;
      seen.add(resolved);
      parts.push(`file=${toPosix(path.relative(fixtureDir, resolved))} ${await contentHash(resolved)}`);
    }
  }

  // 7. The key: the source bytes, then every other part, NUL-separated (no path holds a NUL).
  const hash = createHash('sha256').update(source);
  for (const part of parts.slice(1)) hash.update('\0').update(part);
  const result: FixtureKey = { key: hash.digest('hex'), file, ref, deps, parts };
  done.set(ref, result);
  return result;
}

/** Where the sandbox's `require` looks when running `file` (src/lua/sandbox.ts moduleDirs). */
function moduleDirs(roots: string[], file: string): string[] {
  return [...new Set([...roots.map((r) => path.resolve(r)), path.dirname(file)])];
}

/**
 * Follows `require`s from the already scanned sources (appending each module found), and returns
 * one part per module. A name found nowhere is skipped: it is a built-in or preloaded module.
 */
async function scanModules(scanned: Scanned[], dirs: string[]): Promise<string[]> {
  const parts: string[] = [];
  const seen = new Set<string>();
  const visit = async (names: string[]): Promise<void> => {
    for (const name of names) {
      if (seen.has(name)) continue;
      seen.add(name);
      const found = await findModule(name, dirs);
      if (!found) continue;
      const bytes = await readFile(found.file);
      parts.push(`module=${name} ${found.shown} ${sha256(bytes)}`);
      const statics = scanLua(bytes.toString('utf8'));
      scanned.push({ statics, dir: path.dirname(found.file) });
      await visit(statics.requires);
    }
  };
  await visit(scanned[0]!.statics.requires);
  return parts;
}

/** `a.b` → `<dir>/a/b.lua` or `<dir>/a/b/init.lua`, for each directory in order (as the sandbox). */
async function findModule(name: string, dirs: string[]): Promise<{ file: string; shown: string } | null> {
  const rel = name.replace(/\./g, '/');
  for (const dir of dirs) {
    for (const shown of [`${rel}.lua`, `${rel}/init.lua`]) {
      const file = path.join(dir, shown);
      if (await isFile(file)) return { file, shown };
    }
  }
  return null;
}

/** Everything in a profile that shapes what a boot produces; files by content. */
async function profileParts(name: string, profile: Profile | undefined): Promise<string[]> {
  const p = `profile.${name}`;
  // An unknown profile fails the build; defining it later must change the key.
  if (!profile) return [`${p}=undefined`];
  const parts = [
    `${p}.kernel=${await contentHash(profile.kernel)}`,
    `${p}.initrd=${profile.initrd === undefined ? 'none' : await contentHash(profile.initrd)}`,
    `${p}.cmdline=${profile.cmdline}`,
    `${p}.memory_bytes=${profile.memoryBytes}`,
    `${p}.cpus=${profile.cpus}`,
    `${p}.machine=${profile.machine}`,
    `${p}.accel=${profile.accel}`,
    `${p}.inject_agent=${profile.injectAgent}`,
    `${p}.agent_timeout_ms=${profile.agentTimeoutMs}`,
    // The package list decides the root image (its key, src/vmm/debian-image.ts).
    `${p}.debian=${profile.debian === undefined ? 'none' : JSON.stringify(profile.debian)}`,
  ];
  for (const [i, d] of (profile.disks ?? []).entries()) {
    const fields = [`id=${d.id}`];
    if (d.sizeBytes !== undefined) fields.push(`size_bytes=${d.sizeBytes}`);
    if (d.image !== undefined) fields.push(`image=${await contentHash(d.image)}`);
    if (d.readonly !== undefined) fields.push(`readonly=${d.readonly}`);
    if (d.backend !== undefined) fields.push(`backend=${d.backend}`);
    parts.push(`${p}.disks[${i + 1}]=${fields.join(' ')}`);
  }
  return parts;
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** The ref of the legacy fixture `name` that the fixture `parent` (in `dir`) uses. */
async function legacyRef(parent: string, name: string, dir: string, roots: string[]): Promise<string> {
  const base = legacyFixtureBase(name);
  if (base === null) throw new FixtureRefError(`fixture \`${parent}\` uses provium.fixture(${JSON.stringify(name)}), which cannot name fixtures/<name>.lua below a test root`);
  const candidates = legacyFixtureCandidates(dir, roots, base);
  for (const c of candidates) if (await isFile(c.file)) return legacyFixtureRefOf(c);
  throw new FixtureNotFoundError(`fixture \`${parent}\` uses fixture \`${name}\`: no fixtures/${base}.lua (looked for ${unique(candidates.map((c) => c.file)).join(', ')})`);
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

function unique<T>(values: T[]): T[] {
  return [...new Set(values)];
}

function toPosix(p: string): string {
  return p.split(path.sep).join('/');
}
