// Which registered tests run (reference §1.3, §2.2): meta.skip, meta.slow without
// --include-slow, --tag / --no-tag on meta.tags, --tag-meta / --no-tag-meta on any meta key.
// Filtered tests are reported skipped with a reason starting `filtered:`.

import type { MetaMap } from '../protocol/events.js';
import type { TestSelection } from '../protocol/task.js';

export const kSlowReason = 'filtered: slow tests skipped (pass --include-slow)';

/** meta.skip → a reason, or null: true/non-zero → "skipped (meta.skip)", a string → "skipped: <s>". */
export function metaSkipReason(skip: unknown): string | null {
  if (skip === undefined || skip === null || skip === false || skip === 0) return null;
  if (typeof skip === 'string') return `skipped: ${skip}`;
  return 'skipped (meta.skip)';
}

/** meta.slow is truthy: true or a non-zero number (a string counts too). */
export function isSlow(slow: unknown): boolean {
  return !(slow === undefined || slow === null || slow === false || slow === 0);
}

/** Whether `value` (a string, or an array containing strings) matches `wanted`. */
function metaMatches(value: unknown, wanted: string): boolean {
  if (Array.isArray(value)) return value.some((v) => String(v) === wanted);
  if (value === undefined || value === null || typeof value === 'object') return false;
  return String(value) === wanted;
}

function groupByKey(pairs: { key: string; value: string }[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const { key, value } of pairs) groups.set(key, [...(groups.get(key) ?? []), value]);
  return groups;
}

/** Why the selection filters this test out, or null to run it. */
export function filterReason(test: { slow: boolean; tags: string[]; meta: MetaMap }, sel: TestSelection): string | null {
  if (test.slow && !sel.includeSlow) return kSlowReason;
  const excluded = test.tags.find((tag) => sel.noTags.includes(tag));
  if (excluded !== undefined) return `filtered: tag \`${excluded}\` excluded by --no-tag`;
  if (sel.tags.length > 0 && !test.tags.some((tag) => sel.tags.includes(tag))) {
    return `filtered: no tag matches --tag ${sel.tags.join(', ')}${test.tags.length ? ` (tags: ${test.tags.join(', ')})` : ' (test has no tags)'}`;
  }
  for (const [key, values] of groupByKey(sel.noTagMeta)) {
    const hit = values.find((v) => metaMatches(test.meta[key], v));
    if (hit !== undefined) return `filtered: meta ${key}=${hit} excluded by --no-tag-meta`;
  }
  // Same key ORs, different keys AND.
  for (const [key, values] of groupByKey(sel.tagMeta)) {
    if (!values.some((v) => metaMatches(test.meta[key], v))) {
      return `filtered: meta ${key} matches none of --tag-meta ${values.map((v) => `${key}=${v}`).join(', ')}`;
    }
  }
  return null;
}
