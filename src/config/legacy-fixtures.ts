// Where the legacy provium.fixture(name) of seed 002 finds its builder `fixtures/<name>.lua`: in
// the calling file's directory and each parent up to the test root holding it, then at the top of
// each root. One home for the order, shared by the binding (src/lua/legacy/fixture.ts) and the
// fixture cache key (src/broker/fixture-key.ts), which must agree on which file a name means.

import path from 'node:path';

export interface LegacyFixtureCandidate {
  /** Absolute path of a possible `fixtures/<name>.lua`. */
  file: string;
  /** The test root it lies under. */
  root: string;
}

/** The builder file a legacy fixture name stands for, without a trailing `.lua`; null when it cannot name one. */
export function legacyFixtureBase(name: string): string | null {
  const base = name.endsWith('.lua') ? name.slice(0, -'.lua'.length) : name;
  if (base === '' || path.isAbsolute(base) || base.split(/[\\/]/).includes('..')) return null;
  return base;
}

/** Every place `fixtures/<base>.lua` may be for a file in `fileDir`, in the order they win. */
export function legacyFixtureCandidates(fileDir: string, roots: string[], base: string): LegacyFixtureCandidate[] {
  const absRoots = roots.map((r) => path.resolve(r));
  const dir0 = path.resolve(fileDir);
  const out: LegacyFixtureCandidate[] = [];
  const home = absRoots.find((r) => dir0 === r || dir0.startsWith(r + path.sep));
  if (home) {
    for (let dir = dir0; ; dir = path.dirname(dir)) {
      out.push({ file: path.join(dir, 'fixtures', `${base}.lua`), root: home });
      if (dir === home) break;
    }
  }
  for (const root of absRoots) out.push({ file: path.join(root, 'fixtures', `${base}.lua`), root });
  return out;
}

/** The fixture ref of a found candidate: its path below its root, `.lua` kept (what resolveFixture takes). */
export function legacyFixtureRefOf(c: LegacyFixtureCandidate): string {
  return path.relative(c.root, c.file).split(path.sep).join('/');
}
