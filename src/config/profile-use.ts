// Which profiles a run will use, from a static read of its files (lua-scan.ts): the literal
// profile names of `:vm(name, "profile")` in each selected file, in the fixtures it references (the
// legacy `provium.fixture(name)` ones too) and
// in the helper modules it requires, followed transitively. A computed profile name anywhere
// means any profile may be used. Builds and path checks run for these before dispatch.

import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { kFixtureSuffix } from './config.js';
import { legacyFixtureBase, legacyFixtureCandidates } from './legacy-fixtures.js';
import { scanLua } from './lua-scan.js';

export interface ProfileUse {
  /** Literal profile names, sorted. */
  names: string[];
  /** Files (tests, fixtures, helpers) that pass a computed profile name: then every profile counts. */
  dynamicIn: string[];
}

/** A selected test file and the directories its `require` and fixture refs resolve against. */
export interface UsingFile {
  file: string;
  roots: string[];
}

export async function profilesUsedBy(files: UsingFile[]): Promise<ProfileUse> {
  const names = new Set<string>();
  const dynamicIn: string[] = [];
  const seen = new Set<string>();
  const visit = async (file: string, roots: string[]): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return;
    const statics = scanLua(text);
    for (const name of statics.profiles) names.add(name);
    if (statics.dynamicProfiles) dynamicIn.push(file);
    for (const ref of statics.fixtures) {
      const found = await firstFile(roots.map((r) => join(r, `${ref}${kFixtureSuffix}`)));
      if (found) await visit(found, roots);
    }
    // Seed 002's provium.fixture(name): fixtures/<name>.lua, found as the binding finds it.
    for (const name of statics.legacyFixtures) {
      const base = legacyFixtureBase(name);
      const found = base === null ? undefined : await firstFile(legacyFixtureCandidates(dirname(file), roots, base).map((c) => c.file));
      if (found) await visit(found, roots);
    }
    // Modules resolve from the roots, as the sandbox's require does, and beside the file.
    for (const name of statics.requires) {
      const rel = name.replace(/\./g, '/');
      const dirs = [...roots, dirname(file)];
      const found = await firstFile(dirs.flatMap((d) => [join(d, `${rel}.lua`), join(d, rel, 'init.lua')]));
      if (found) await visit(found, roots);
    }
  };
  for (const f of files) await visit(f.file, f.roots);
  return { names: [...names].sort(), dynamicIn };
}

async function firstFile(candidates: string[]): Promise<string | undefined> {
  for (const c of candidates) {
    if ((await stat(c).catch(() => undefined))?.isFile()) return c;
  }
  return undefined;
}
