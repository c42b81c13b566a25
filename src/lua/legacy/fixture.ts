// Where provium.fixture(name) (seed 002) finds its builder: `fixtures/<name>.lua`, looked up as
// src/config/legacy-fixtures.ts orders it. The ref handed to the fixture machinery is the
// builder's path under its root with the `.lua` suffix (a legacy ref; a current one names
// `<ref>.fixture.lua`), so caching, locking and keys work as for `*.fixture.lua` files.

import { statSync } from 'node:fs';
import path from 'node:path';
import { legacyFixtureBase, legacyFixtureCandidates, legacyFixtureRefOf } from '../../config/legacy-fixtures.js';
import type { Args } from '../args.js';

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The fixture ref of legacy fixture `name`; raises naming every place it looked. */
export function legacyFixtureRef(a: Args, name: string): string {
  const base = legacyFixtureBase(name);
  if (base === null) {
    throw a.error(`fixture name ${JSON.stringify(name)} must name fixtures/<name>.lua below a test root (no absolute path, no \`..\`)`);
  }
  const candidates = legacyFixtureCandidates(path.dirname(path.resolve(a.rt.file)), a.rt.roots, base);
  const found = candidates.find((c) => isFile(c.file));
  if (found) return legacyFixtureRefOf(found);
  const tried = [...new Set(candidates.map((c) => c.file))].join(', ');
  throw a.error(`fixture \`${name}\` not found: no fixtures/${base}.lua (looked for ${tried})`);
}
