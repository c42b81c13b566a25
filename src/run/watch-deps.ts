// What a test file depends on, for --watch (issue 14 item 5): the file, the modules it
// `require`s (resolved as the sandbox does: each root, then the test file's directory), the
// fixtures it uses (`<root>/<ref>.fixture.lua`, the legacy `fixtures/<name>.lua` near it) and the
// host files it pushes, each followed through the files it reaches. A literal scan (lua-scan.ts):
// a computed name is unknown until the file runs, and is not watched.

import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { kFixtureSuffix } from '../config/config.js';
import { scanLua } from '../config/lua-scan.js';

async function isFile(p: string): Promise<boolean> {
  return stat(p).then((s) => s.isFile(), () => false);
}

/** The first candidate that exists, else all of them (so that creating one counts as a change). */
async function firstExisting(candidates: string[]): Promise<string[]> {
  for (const c of candidates) if (await isFile(c)) return [c];
  return candidates;
}

/** Every file `testFile` depends on, itself included (absolute paths). */
export async function fileDependencies(testFile: string, roots: string[]): Promise<Set<string>> {
  const deps = new Set<string>([testFile]);
  const moduleDirs = [...new Set([...roots.map((r) => path.resolve(r)), path.dirname(testFile)])];
  const queue = [testFile];
  while (queue.length > 0) {
    const source = queue.shift()!;
    const text = await readFile(source, 'utf8').catch(() => '');
    // Only Lua sources are scanned; pushed host files are leaves.
    if (!source.endsWith('.lua')) continue;
    const statics = scanLua(text);
    const found: string[] = [];
    for (const name of statics.requires) {
      const rel = name.replace(/\./g, '/');
      found.push(...(await firstExisting(moduleDirs.flatMap((d) => [path.join(d, `${rel}.lua`), path.join(d, rel, 'init.lua')]))));
    }
    for (const ref of statics.fixtures) {
      const file = ref.endsWith('.lua') ? ref : `${ref}${kFixtureSuffix}`;
      found.push(...(await firstExisting(roots.map((r) => path.resolve(r, file)))));
    }
    for (const name of statics.legacyFixtures) found.push(...(await legacyFixtureCandidates(source, name, roots)));
    for (const ref of statics.hostFileRefs) {
      const base = ref.relativeTo === 'source' ? path.dirname(source) : path.dirname(testFile);
      found.push(path.resolve(base, ref.path));
    }
    for (const dep of found) {
      if (deps.has(dep)) continue;
      deps.add(dep);
      queue.push(dep);
    }
  }
  return deps;
}

/** provium.fixture(name): fixtures/<name>.lua in the source's directory or a parent up to its root, then each root. */
async function legacyFixtureCandidates(source: string, name: string, roots: string[]): Promise<string[]> {
  const dirs: string[] = [];
  const root = roots.map((r) => path.resolve(r)).find((r) => source.startsWith(`${r}${path.sep}`));
  for (let dir = path.dirname(source); ; dir = path.dirname(dir)) {
    dirs.push(dir);
    if (dir === root || path.dirname(dir) === dir || (root === undefined && dirs.length > 0)) break;
  }
  dirs.push(...roots.map((r) => path.resolve(r)));
  return firstExisting([...new Set(dirs)].map((d) => path.join(d, 'fixtures', `${name}.lua`)));
}

/** A file's change stamp: size and mtime, or absence. */
export async function stampOf(file: string): Promise<string> {
  return stat(file).then((s) => `${s.size}:${s.mtimeMs}`, () => 'absent');
}
