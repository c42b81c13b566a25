// provium.toml (reference §3.1): the [provium] section (roots, cache_dir, cache_max_size) and the
// [profiles] tables and from_dir directories, which profile-sources.ts reads and profiles.ts
// resolves. Nothing here checks a profile's files: that waits for its first use. A missing default provium.toml is fine (defaults,
// built-in profiles only); a missing explicit --config, a parse error or an unknown key is a
// ConfigError, which the CLI turns into exit 2. Messages name file:line where we can find it.

import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { cacheDir as defaultCacheDir } from './cache-dir.js';
import { keyLine, ProfileSourceError, readProfileSources } from './profile-sources.js';
import {
  builtinProfiles,
  kMinimalProfile,
  ProfileError,
  resolveProfileSources,
  type MinimalImageLookup,
  type Profile,
  type ProfileSource,
} from './profiles.js';
import { parseSize, UnitError } from './units.js';

export const kConfigFileName = 'provium.toml';
/** Fixtures under the roots: never run as tests, referenced by root-relative path without it. */
export const kFixtureSuffix = '.fixture.lua';
const kSections = ['provium', 'profiles'] as const;
const kProviumKeys = ['roots', 'cache_dir', 'cache_max_size'] as const;
const kDefaultCacheMaxSize = '20G';

/** Bad configuration; the CLI prints the message and exits 2. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly exitCode = 2;
}

export interface ProviumConfig {
  /** The provium.toml that was read, or null when there is none (defaults). */
  path: string | null;
  /** Relative paths in the config resolve against this (the config's directory, else the cwd). */
  baseDir: string;
  /** Absolute test roots from [provium] roots; empty when not configured. */
  roots: string[];
  /** Absolute cache directory (images, timings, fixtures). */
  cacheDir: string;
  cacheMaxSizeBytes: number;
  /** Built-in profiles (adjusted by a [profiles.<builtin>] table) and the user's profiles. */
  profiles: Record<string, Profile>;
  /**
   * Profiles that cannot be used, with the reason and fix: a built-in whose image is not built,
   * and any profile that extends one.
   */
  unavailableProfiles: Record<string, string>;
}

export type LoadConfigOptions = {
  /** --config; when absent, ./provium.toml if it exists. */
  path?: string;
  cwd?: string;
} & (
  | {
    /** Skip loading profiles (subcommands that never boot, e.g. `events`). */
    skipProfiles: true;
    findMinimalImage?: undefined;
  }
  | {
    skipProfiles?: false;
    /**
     * Finds the built image of the built-in profile `minimal` (src/cli passes src/vmm's
     * imageInfo). Called after cache_dir is applied, so it looks in the configured cache.
     */
    findMinimalImage: MinimalImageLookup;
  }
);

export async function loadConfig(opts: LoadConfigOptions): Promise<ProviumConfig> {
  const cwd = opts.cwd ?? process.cwd();
  const explicit = opts.path !== undefined;
  const path = resolve(cwd, opts.path ?? kConfigFileName);

  // 1. Read; only an explicit --config must exist.
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' || explicit) {
      throw new ConfigError(
        code === 'ENOENT'
          ? `${path}: no such file (given with --config); check the path or drop --config to use ./${kConfigFileName}`
          : `${path}: cannot read: ${(err as Error).message}`,
      );
    }
  }
  const baseDir = text === undefined ? cwd : dirname(path);
  const raw = text === undefined ? {} : parseToml(path, text);
  const where = (section: string, key?: string): string => `${path}${lineSuffix(text, section, key)}`;

  // 2. Sections.
  for (const section of Object.keys(raw)) {
    if (!(kSections as readonly string[]).includes(section)) {
      throw new ConfigError(
        `${where(section)}: unknown section \`${section}\`; accepted: ${kSections.map((s) => `[${s}]`).join(', ')}`,
      );
    }
  }
  const provium = raw['provium'] ?? {};
  if (!isTable(provium)) throw new ConfigError(`${where('provium')}: \`provium\` must be a table ([provium])`);
  for (const key of Object.keys(provium)) {
    if (!(kProviumKeys as readonly string[]).includes(key)) {
      throw new ConfigError(`${where('provium', key)}: unknown key \`${key}\` in [provium]; accepted keys: ${kProviumKeys.join(', ')}`);
    }
  }

  // 3. [provium] values.
  let roots: string[] = [];
  if (provium['roots'] !== undefined) {
    const value = provium['roots'];
    if (!Array.isArray(value) || value.some((r) => typeof r !== 'string' || r.trim() === '')) {
      throw new ConfigError(`${where('provium', 'roots')}: \`roots\` must be an array of directory paths, e.g. roots = ["spec", "examples"]`);
    }
    roots = [...new Set((value as string[]).map((r) => resolve(baseDir, r)))];
  }
  let cacheDir = defaultCacheDir();
  if (provium['cache_dir'] !== undefined) {
    const value = provium['cache_dir'];
    if (typeof value !== 'string' || value.trim() === '') {
      throw new ConfigError(`${where('provium', 'cache_dir')}: \`cache_dir\` must be a directory path string`);
    }
    cacheDir = isAbsolute(value) ? value : resolve(baseDir, expandHome(value));
    // The image, the accelerator verdict and boot snapshots are found through cacheDir()
    // (./cache-dir.ts), which reads PROVIUM_CACHE_DIR: a config that names a cache wins.
    process.env['PROVIUM_CACHE_DIR'] = cacheDir;
  }
  let cacheMaxSizeBytes: number;
  try {
    cacheMaxSizeBytes = parseSize(provium['cache_max_size'] ?? kDefaultCacheMaxSize, 'cache_max_size');
  } catch (err) {
    if (err instanceof UnitError) throw new ConfigError(`${where('provium', 'cache_max_size')}: ${err.message}`);
    throw err;
  }

  // 4. Profiles: the built-ins, then the user's: inline tables and from_dir directories. A table
  //    named after a built-in adjusts it; `extends` starts from another profile.
  const profiles: Record<string, Profile> = {};
  const unavailableProfiles: Record<string, string> = {};
  if (!opts.skipProfiles) {
    const builtins: Record<string, Profile> = {};
    const unavailableBuiltins: Record<string, string> = {};
    try {
      Object.assign(builtins, await builtinProfiles(opts.findMinimalImage));
    } catch (err) {
      if (!(err instanceof ProfileError)) throw err;
      unavailableBuiltins[kMinimalProfile] = err.message;
    }
    let sources: ProfileSource[] = [];
    try {
      sources = await readProfileSources(raw['profiles'], {
        baseDir,
        configPath: path,
        locateInline: (name) => where(`profiles.${name}`),
      });
      const resolved = resolveProfileSources(sources, { builtins, unavailableBuiltins, cacheDir, env: process.env });
      Object.assign(profiles, resolved.profiles);
      Object.assign(unavailableProfiles, resolved.unavailable);
    } catch (err) {
      if (err instanceof ProfileSourceError) throw new ConfigError(err.message);
      if (err instanceof ProfileError || err instanceof UnitError) {
        const name = /profile `([^`]+)`/.exec(err.message)?.[1];
        const source = sources.find((s) => s.name === name);
        // A from_dir profile's error names its own file; an inline one names provium.toml:line.
        if (source && source.source !== path) {
          const key = /`([a-z_]+)`/.exec(err.message.slice(err.message.indexOf(':') + 1))?.[1];
          const fileText = await readFile(source.source, 'utf8').catch(() => '');
          throw new ConfigError(`${source.source}${key ? keyLine(fileText, key) : ''}: ${err.message}`);
        }
        throw new ConfigError(`${where(name ? `profiles.${name}` : 'profiles')}: ${err.message}`);
      }
      throw err;
    }
  }

  return { path: text === undefined ? null : path, baseDir, roots, cacheDir, cacheMaxSizeBytes, profiles, unavailableProfiles };
}

function parseToml(path: string, text: string): Record<string, unknown> {
  try {
    return parse(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const message = err.message.split('\n')[0]!.replace(/^Invalid TOML document:\s*/i, '');
      throw new ConfigError(`${path}:${err.line}:${err.column}: ${message}`);
    }
    throw new ConfigError(`${path}: ${(err as Error).message}`);
  }
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? `${process.env['HOME'] ?? ''}${p.slice(1)}` : p;
}

/**
 * ":<line>" of a section header or of a key inside a section, found by a textual scan (the TOML
 * parser gives positions only for syntax errors). Best effort: "" when not found.
 */
function lineSuffix(text: string | undefined, section: string, key?: string): string {
  if (text === undefined) return '';
  const lines = text.split('\n');
  const escaped = section.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const header = new RegExp(`^\\s*\\[\\s*${escaped}\\s*\\]`);
  let inSection = false;
  let headerLine = -1;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^\s*\[/.test(line)) {
      inSection = header.test(line);
      if (inSection && headerLine < 0) headerLine = i;
      if (inSection && key === undefined) return `:${i + 1}`;
      continue;
    }
    if (key !== undefined && inSection && new RegExp(`^\\s*["']?${key}["']?\\s*=`).test(line)) return `:${i + 1}`;
    // Dotted keys at top level: `provium.roots = [...]` or `[profiles]`-less `profiles.x.kernel`.
    if (!inSection && headerLine < 0) {
      const dotted = new RegExp(`^\\s*${escaped}\\.${key ?? ''}`);
      if (dotted.test(line)) return `:${i + 1}`;
    }
  }
  return headerLine >= 0 ? `:${headerLine + 1}` : '';
}
