// The run's event bus: every progress fact goes through `emit`, and sinks subscribe. A sink that
// throws is reported once and detached so the others keep receiving.

import type { AnyEvent, EventKind, EventPayloads } from '../protocol/events.js';

export type EventSink = (event: AnyEvent) => void;

export class EventBus {
  private readonly _sinks = new Set<EventSink>();

  subscribe(sink: EventSink): () => void {
    this._sinks.add(sink);
    return () => this._sinks.delete(sink);
  }

  emit<K extends EventKind>(kind: K, payload: EventPayloads[K]): void {
    this.publish({ ts: nowNs(), kind, payload } as AnyEvent);
  }

  /** An event stamped elsewhere (a --watch iteration's bus), delivered as it is. */
  publish(event: AnyEvent): void {
    for (const sink of this._sinks) {
      try {
        sink(event);
      } catch (err) {
        this._sinks.delete(sink);
        process.emitWarning(`event sink failed and was detached: ${(err as Error).message}`);
      }
    }
  }
}

/** Nanoseconds since the epoch (a float: exact to about 0.25 µs today, which events do not need). */
export function nowNs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1e6);
}
