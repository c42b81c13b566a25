// Where profiles are written (reference §3.2): `[profiles.<name>]` tables in provium.toml, and
// `[profiles] from_dir = "profiles"`, where each subdirectory holding a profile.provium.toml is a
// profile named after the directory, its keys at the top level of that file, its relative paths
// and its `build` starting in that subdirectory. A name written in both places is an error that
// names both; profiles.ts resolves what this returns.

import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { kProfileNamePattern, ProfileError, sourceOf, type ProfileSource } from './profiles.js';

/** The file that makes a directory under `from_dir` a profile. */
export const kProfileFileName = 'profile.provium.toml';

/** A source-level error whose message already names its file (and line): shown as it is. */
export class ProfileSourceError extends ProfileError {
  override name = 'ProfileSourceError';
}

export interface ReadSourcesOptions {
  /** provium.toml's directory: inline profiles and `from_dir` resolve against it. */
  baseDir: string;
  /** provium.toml, for messages. */
  configPath: string;
  /** `path:line` of an inline `[profiles.<name>]` table, for the duplicate-name error. */
  locateInline?: (name: string) => string;
}

/** The inline tables and the from_dir profiles of `[profiles]` (its parsed value). */
export async function readProfileSources(raw: unknown, opts: ReadSourcesOptions): Promise<ProfileSource[]> {
  if (raw === undefined || raw === null) return [];
  if (typeof raw !== 'object' || Array.isArray(raw) || raw instanceof Date) {
    throw new ProfileError(`[profiles] must be a table of [profiles.<name>] tables (and \`from_dir\`), got ${Array.isArray(raw) ? 'an array' : typeof raw}`);
  }
  // 1. Inline tables; `from_dir` is the one key of [profiles] that is not a profile.
  const sources: ProfileSource[] = [];
  let fromDir: unknown;
  for (const [name, table] of Object.entries(raw as Record<string, unknown>)) {
    if (name === 'from_dir') {
      fromDir = table;
      continue;
    }
    sources.push(sourceOf(name, table, opts.baseDir, opts.configPath));
  }
  if (fromDir === undefined) return sources;

  // 2. from_dir: one profile per subdirectory that holds profile.provium.toml.
  if (typeof fromDir !== 'string' || fromDir.trim() === '') {
    throw new ProfileError(`[profiles] \`from_dir\` must be a directory path, e.g. from_dir = "profiles", got ${JSON.stringify(fromDir)}`);
  }
  const dir = resolve(opts.baseDir, fromDir);
  const found = await readFromDir(dir, fromDir);
  for (const discovered of found) {
    const inline = sources.find((s) => s.name === discovered.name);
    if (inline) {
      const at = opts.locateInline?.(discovered.name) ?? opts.configPath;
      throw new ProfileSourceError(
        `profile \`${discovered.name}\` is defined twice: [profiles.${discovered.name}] in ${at} and ${discovered.source} (from_dir = ${JSON.stringify(fromDir)}); ` +
          'remove one, or rename the table or the directory',
      );
    }
    sources.push(discovered);
  }
  return sources;
}

async function readFromDir(dir: string, written: string): Promise<ProfileSource[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ProfileError(
      `[profiles] from_dir = ${JSON.stringify(written)}: ${dir} ${code === 'ENOENT' ? 'does not exist' : code === 'ENOTDIR' ? 'is not a directory' : `cannot be read (${code})`}; ` +
        `create it with one subdirectory per profile, each holding ${kProfileFileName}, or remove from_dir`,
    );
  }
  const sources: ProfileSource[] = [];
  // Sorted: the same profiles in the same order whatever the filesystem returns.
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const sub = join(dir, entry.name);
    const isDir = entry.isDirectory() || (entry.isSymbolicLink() && (await stat(sub).then((s) => s.isDirectory(), () => false)));
    if (!isDir) continue;
    const file = join(sub, kProfileFileName);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      // A subdirectory without the file is not a profile: it may hold anything else.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new ProfileSourceError(`${file}: cannot read: ${(err as Error).message}`);
    }
    if (!kProfileNamePattern.test(entry.name)) {
      throw new ProfileSourceError(`${file}: the directory name \`${entry.name}\` is not a valid profile name; rename it using letters, digits, '_', '.' and '-'`);
    }
    let table: unknown;
    try {
      table = parse(text);
    } catch (err) {
      if (err instanceof TomlError) {
        const message = err.message.split('\n')[0]!.replace(/^Invalid TOML document:\s*/i, '');
        throw new ProfileSourceError(`${file}:${err.line}:${err.column}: ${message}`);
      }
      throw new ProfileSourceError(`${file}: ${(err as Error).message}`);
    }
    sources.push({ ...sourceOf(entry.name, table, sub, file), source: file });
  }
  if (sources.length === 0) {
    throw new ProfileError(
      `[profiles] from_dir = ${JSON.stringify(written)}: no subdirectory of ${dir} holds a ${kProfileFileName}; ` +
        `add one (e.g. ${join(dir, '<name>', kProfileFileName)}) or remove from_dir`,
    );
  }
  return sources;
}

/** `:<line>` of a top-level `key =` in a from_dir profile file, or "" (best effort, for messages). */
export function keyLine(text: string, key: string): string {
  const re = new RegExp(`^\\s*["']?${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["']?\\s*=`);
  const i = text.split('\n').findIndex((l) => re.test(l));
  return i >= 0 ? `:${i + 1}` : '';
}
