// A mistyped subcommand (`provium lsit`) would otherwise be taken for a test path and fail with
// "no such file or directory". A first argument that exists on disk is a path; one that does not,
// and looks like a word rather than a path, is an unknown command, with the nearest one offered.

import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UsageError } from '../run/errors.js';

/** Levenshtein distance, with a swap of two neighbours counting one (`lsit` → `list`). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_v, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** The command nearest to `word`, when it is near enough to be a typo of it. */
export function nearestCommand(word: string, commands: string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of commands) {
    const distance = editDistance(word.toLowerCase(), name);
    if (!best || distance < best.distance) best = { name, distance };
  }
  return best && best.distance <= Math.max(1, Math.floor(best.name.length / 3)) ? best.name : undefined;
}

/** A UsageError when `first` is a word that names neither a path nor a command; undefined otherwise. */
export async function unknownCommandError(first: string | undefined, commands: string[], cwd: string): Promise<UsageError | undefined> {
  if (first === undefined || !/^[a-z][a-z0-9-]*$/i.test(first)) return undefined;
  if (await stat(resolve(cwd, first)).then(() => true, () => false)) return undefined;
  const near = nearestCommand(first, commands.filter((c) => c !== 'help'));
  return new UsageError(
    near
      ? `unknown command \`${first}\`; did you mean \`${near}\`?`
      : `unknown command \`${first}\`, and no file or directory of that name; the commands are ${commands.filter((c) => c !== 'help').join(', ')}`,
  );
}
