// Coverage by spec (reference §2.8, issue 14 item 6): test outcomes grouped by one meta key. A
// string value is one bucket; a list counts the test once in each of its strings; anything else
// (unset, a number, a table) goes to `<unset>` ("uncategorised" in JSON). Fed with events, from
// a saved stream (`provium coverage`) or a run's bus (`--coverage`).

import type { Reporter } from '../run/reporter.js';

export interface BucketCounts {
  passed: number;
  failed: number;
  skipped: number;
}

export interface CoverageJson {
  by: string;
  buckets: ({ name: string } & BucketCounts)[];
  uncategorised: BucketCounts;
}

export const kUnsetBucket = '<unset>';

const kOutcomes: Record<string, keyof BucketCounts> = { test_passed: 'passed', test_failed: 'failed', test_skipped: 'skipped' };

export class CoverageTable {
  private readonly _buckets = new Map<string, BucketCounts>();
  private readonly _unset: BucketCounts = { passed: 0, failed: 0, skipped: 0 };

  constructor(readonly by: string) {}

  /** One event; kinds other than a test's outcome are ignored. */
  add(kind: string, payload: Record<string, unknown>): void {
    const outcome = kOutcomes[kind];
    if (!outcome) return;
    for (const name of bucketsOf((payload['meta'] as Record<string, unknown> | undefined)?.[this.by])) {
      if (name === null) this._unset[outcome]++;
      else {
        let counts = this._buckets.get(name);
        if (!counts) this._buckets.set(name, (counts = { passed: 0, failed: 0, skipped: 0 }));
        counts[outcome]++;
      }
    }
  }

  /** Some bucket (the unset one included) has a failed test. */
  get hasFailures(): boolean {
    return this._unset.failed > 0 || [...this._buckets.values()].some((c) => c.failed > 0);
  }

  toJson(): CoverageJson {
    const buckets = [...this._buckets.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([name, c]) => ({ name, ...c }));
    return { by: this.by, buckets, uncategorised: { ...this._unset } };
  }

  /** The table: one row per bucket (sorted), `<unset>` last when it has tests. */
  render(): string {
    const json = this.toJson();
    const rows: [string, BucketCounts][] = json.buckets.map((b) => [b.name, b]);
    const unset = json.uncategorised;
    if (unset.passed + unset.failed + unset.skipped > 0) rows.push([kUnsetBucket, unset]);
    if (rows.length === 0) return `coverage by ${this.by}: no test outcomes\n`;
    const width = Math.max(this.by.length, ...rows.map(([name]) => name.length));
    const line = (name: string, cells: (string | number)[]): string => `${name.padEnd(width)}  ${cells.map((c) => String(c).padStart(7)).join(' ')}`.trimEnd();
    const out = [line(this.by, ['passed', 'failed', 'skipped'])];
    for (const [name, c] of rows) out.push(line(name, [c.passed, c.failed, c.skipped]));
    return `${out.join('\n')}\n`;
  }
}

/** The buckets a meta value puts a test in; null is `<unset>`. */
export function bucketsOf(value: unknown): (string | null)[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) {
    const names = [...new Set(value.filter((v): v is string => typeof v === 'string'))];
    return names.length > 0 ? names : [null];
  }
  return [null];
}

/** --coverage: the table after the run's summary. */
export function coverageReporter(by: string, screen: { write(text: string): unknown }): Reporter {
  const table = new CoverageTable(by);
  return {
    onEvent: (event) => table.add(event.kind, event.payload as unknown as Record<string, unknown>),
    onEnd: () => void screen.write(`\n${table.render()}`),
  };
}
