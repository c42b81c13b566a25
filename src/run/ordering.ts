// Dispatch order (DESIGN §6): longest first by recorded duration, so the longest files start
// early and the pool (and every shard) finishes together. Files without a record are estimated as
// the mean of the recorded ones; equal estimates keep declaration (discovery) order. With no
// record at all this is exactly declaration order.

import { estimateDurations, type TimingRecord } from './timings.js';

export function orderLongestFirst<T>(items: T[], keyOf: (item: T) => string, record: TimingRecord | null): T[] {
  const keys = items.map(keyOf);
  const { estimates, known } = estimateDurations(keys, record);
  if (known === 0) return [...items];
  return items
    .map((item, index) => ({ item, index, ms: estimates.get(keys[index]!)! }))
    .sort((a, b) => b.ms - a.ms || a.index - b.index)
    .map((entry) => entry.item);
}
