// The timeline's items from an event stream: a file's lane holds its boots and restores, each
// ending when its event came and starting its duration before.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnyEvent } from '../../src/protocol/events.js';
import { buildTimeline } from '../../src/report/timeline.js';

const kMs = 1e6;

function event(kind: string, atMs: number, payload: Record<string, unknown>): AnyEvent {
  return { ts: atMs * kMs, kind, payload } as unknown as AnyEvent;
}

describe('the timeline', () => {
  it('shows a restore from a snapshot and one a warm spare served, on the file\'s lane', () => {
    const timeline = buildTimeline([
      {
        label: null,
        events: [
          event('run_started', 0, { version: 1, files: 1, workers: 1, shard: null, accel: 'tcg', seed: '1' }),
          event('file_dispatched', 10, { path: 'a.test.lua', reservation: { memory_bytes: 0, cpus: 0 }, worker: 0 }),
          event('vm_restored', 400, { file: 'a.test.lua', vm_name: 'db', restore_ns: 300 * kMs, from: '/cache/fx/db.snap', pooled: false }),
          event('vm_restored', 500, { file: 'a.test.lua', vm_name: 'db2', restore_ns: 2 * kMs, from: '/cache/fx/db.snap', pooled: true }),
          event('file_completed', 600, { path: 'a.test.lua', status: 'passed', duration_ns: 590 * kMs }),
        ],
      },
    ]);
    const restores = timeline.items.filter((i) => i.kind === 'boot');
    assert.deepEqual(
      restores.map((i) => [i.label, i.status, i.startMs, i.endMs, timeline.lanes[i.lane]]),
      [
        ['db (restore)', 'snapshot', 100, 400, 'worker 1'],
        ['db2 (restore)', 'pool', 498, 500, 'worker 1'],
      ],
    );
    assert.match(restores[1]!.detail!, /restore of db2 from \/cache\/fx\/db\.snap \(a warm spare\) in 0\.00s/);
  });
});
