// The HTML report's timeline, from the event stream: one lane per worker (per shard and worker
// when shards are merged) showing the files it ran, their tests, VM boots (cold, from the boot
// snapshot, from the warm pool) and restores (of fixtures, resets, vm:restore and lab:restore),
// and the network and disk faults the tests injected; fixture builds run in threads of their own
// and get a lane of their own. Times are ms from each stream's
// run_started, so merged shards line up at their starts.

import { createHash } from 'node:crypto';
import type { AnyEvent } from '../protocol/events.js';

export type TimelineKind = 'file' | 'test' | 'boot' | 'fixture' | 'fault';

export interface TimelineItem {
  kind: TimelineKind;
  lane: number;
  startMs: number;
  endMs: number;
  label: string;
  /** passed/failed/…, a boot's source (cold, snapshot, pool), a fault's kind. */
  status: string;
  /** The element's id (tests: what a failure links to). */
  id?: string;
  detail?: string;
}

export interface Timeline {
  lanes: string[];
  spanMs: number;
  items: TimelineItem[];
}

/** The anchor of a test on the timeline (stable across a live report and a merged one). */
export function testAnchor(path: string, name: string): string {
  return `tl-${createHash('sha256').update(`${path}\u0000${name}`).digest('hex').slice(0, 16)}`;
}

/** One stream of events with the prefix of its lanes (`shard 2/3`), or null for a lone run. */
export interface EventStream {
  label: string | null;
  events: AnyEvent[];
}

export function buildTimeline(streams: EventStream[]): Timeline {
  const timeline: Timeline = { lanes: [], spanMs: 0, items: [] };
  for (const stream of streams) addStream(timeline, stream);
  timeline.spanMs = Math.max(1, ...timeline.items.map((i) => i.endMs));
  return timeline;
}

function addStream(timeline: Timeline, stream: EventStream): void {
  const events = stream.events;
  const t0 = events.find((e) => e.kind === 'run_started')?.ts ?? events[0]?.ts ?? 0;
  const ms = (ts: number): number => Math.max(0, (ts - t0) / 1e6);
  const prefix = stream.label ? `${stream.label} · ` : '';
  const lanes = new Map<string, number>();
  const lane = (name: string): number => {
    let index = lanes.get(name);
    if (index === undefined) {
      index = timeline.lanes.length;
      timeline.lanes.push(`${prefix}${name}`);
      lanes.set(name, index);
    }
    return index;
  };
  // Workers first, in slot order, so lanes read w1, w2, … whatever finished first.
  const workers = [...new Set(events.flatMap((e) => (e.kind === 'file_dispatched' ? [e.payload.worker] : [])))].sort((a, b) => a - b);
  for (const w of workers) lane(`worker ${w + 1}`);
  const laneOfFile = new Map<string, number>();
  const fileStart = new Map<string, number>();
  const testStart = new Map<string, number>();
  const buildStart = new Map<string, number>();
  const open = (path: string): number => laneOfFile.get(path) ?? lane('fixture builds');
  const end = (kind: TimelineKind, laneIndex: number, startMs: number, endMs: number, label: string, status: string, extra: Partial<TimelineItem> = {}): void => {
    timeline.items.push({ kind, lane: laneIndex, startMs, endMs: Math.max(endMs, startMs), label, status, ...extra });
  };
  for (const event of events) {
    const at = ms(event.ts);
    switch (event.kind) {
      case 'file_dispatched':
        laneOfFile.set(event.payload.path, lane(`worker ${event.payload.worker + 1}`));
        fileStart.set(event.payload.path, at);
        break;
      case 'file_completed': {
        const p = event.payload;
        const start = fileStart.get(p.path);
        if (start !== undefined) end('file', open(p.path), start, at, p.path, p.status);
        break;
      }
      case 'test_started':
        testStart.set(`${event.payload.path}\u0000${event.payload.name}`, at);
        break;
      case 'test_passed':
      case 'test_failed':
      case 'test_skipped': {
        const p = event.payload;
        const start = testStart.get(`${p.path}\u0000${p.name}`);
        // Skipped tests and tests that never ran did no work: no bar.
        if (start === undefined || event.kind === 'test_skipped') break;
        const status = event.kind === 'test_passed' ? 'passed' : event.kind === 'test_failed' ? 'failed' : 'skipped';
        const detail = event.kind === 'test_failed' ? event.payload.reason.split('\n')[0] : undefined;
        end('test', open(p.path), start, at, p.name, status, { id: testAnchor(p.path, p.name), ...(detail ? { detail } : {}) });
        break;
      }
      case 'vm_spawned': {
        const p = event.payload;
        end('boot', open(p.file), at - p.boot_ns / 1e6, at, `${p.vm_name} (${p.profile})`, p.boot ?? (p.restored ? 'snapshot' : 'cold'), { detail: `${p.boot ?? ''} boot of ${p.vm_name} in ${(p.boot_ns / 1e9).toFixed(2)}s` });
        break;
      }
      case 'vm_restored': {
        const p = event.payload;
        const how = p.pooled ? 'pool' : 'snapshot';
        end('boot', open(p.file), at - p.restore_ns / 1e6, at, `${p.vm_name} (restore)`, how, { detail: `restore of ${p.vm_name} from ${p.from}${p.pooled ? ' (a warm spare)' : ''} in ${(p.restore_ns / 1e9).toFixed(2)}s` });
        break;
      }
      case 'fixture_build_started':
        buildStart.set(event.payload.path, at);
        break;
      case 'fixture_build_done': {
        const start = buildStart.get(event.payload.path) ?? at - event.payload.duration_ns / 1e6;
        end('fixture', lane('fixture builds'), start, at, event.payload.path, 'built');
        break;
      }
      case 'net_fault': {
        const p = event.payload;
        const between = p.from || p.to ? ` ${p.from ?? '*'} → ${p.to ?? '*'}` : '';
        end('fault', open(p.file), at, at, `${p.bridge}: ${p.kind}${between}`, `net ${p.kind}`, { detail: JSON.stringify(p.values) });
        break;
      }
      case 'disk_fault': {
        const p = event.payload;
        end('fault', open(p.file), at, at, `${p.vm_name}/${p.disk}: ${p.kind}`, `disk ${p.kind}`, { detail: JSON.stringify(p.values) });
        break;
      }
      default:
        break;
    }
  }
}
