// Selection (reference §2.2, §1.3). File filters run here, before sharding: --filter (substring
// of the path), --since (mtime newer than a reference file) and --rerun-failed. Test filters
// (--tag/--no-tag, --tag-meta/--no-tag-meta, --include-slow) need each test's meta, which only the
// worker sees: they travel in FileTask.selection, built and validated here, and the worker
// applies them per test (src/lua/selection.ts).

import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { TestSelection } from '../protocol/task.js';
import type { DiscoveredFile } from './discovery.js';
import { UsageError } from './errors.js';

export interface FileFilterOptions {
  /** --filter (repeatable, OR): substring of the display path or the root-relative path. */
  filters: string[];
  /** --since: keep files modified after this file was. */
  since?: string;
  /** --rerun-failed: keep only these absolute paths. */
  only?: ReadonlySet<string>;
  cwd: string;
}

export async function filterFiles(files: DiscoveredFile[], opts: FileFilterOptions): Promise<DiscoveredFile[]> {
  let out = files;
  if (opts.filters.length > 0) {
    out = out.filter((f) => opts.filters.some((s) => f.displayPath.includes(s) || f.rootPath.includes(s)));
  }
  if (opts.only) {
    const only = opts.only;
    out = out.filter((f) => only.has(f.file));
  }
  if (opts.since !== undefined) {
    const ref = resolve(opts.cwd, opts.since);
    const refStat = await stat(ref).catch(() => undefined);
    if (!refStat) throw new UsageError(`--since ${opts.since}: no such file; give an existing file whose mtime marks the cut-off`);
    const stats = await Promise.all(out.map((f) => stat(f.file).then((s) => s.mtimeMs, () => Infinity)));
    out = out.filter((_f, i) => stats[i]! > refStat.mtimeMs);
  }
  return out;
}

/** `KEY=VALUE` from --tag-meta/--no-tag-meta: split at the first '='. */
export function parseKeyValue(text: string, flag: string): { key: string; value: string } {
  const i = text.indexOf('=');
  if (i <= 0) throw new UsageError(`${flag} ${JSON.stringify(text)}: expected KEY=VALUE, e.g. ${flag} subsystem=net`);
  return { key: text.slice(0, i), value: text.slice(i + 1) };
}

export function buildSelection(opts: {
  includeSlow: boolean;
  tags: string[];
  noTags: string[];
  tagMeta: string[];
  noTagMeta: string[];
}): TestSelection {
  for (const [flag, list] of [['--tag', opts.tags], ['--no-tag', opts.noTags]] as const) {
    for (const tag of list) if (tag.trim() === '') throw new UsageError(`${flag}: the tag is empty`);
  }
  return {
    includeSlow: opts.includeSlow,
    tags: [...new Set(opts.tags)],
    noTags: [...new Set(opts.noTags)],
    tagMeta: opts.tagMeta.map((t) => parseKeyValue(t, '--tag-meta')),
    noTagMeta: opts.noTagMeta.map((t) => parseKeyValue(t, '--no-tag-meta')),
  };
}
