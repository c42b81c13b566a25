// MAC learning: which port a source address was last seen on, forgotten after an ageing time
// (as a hardware switch or a Linux bridge does), so a guest that moves or disappears is flooded
// to again instead of being black-holed.

import { formatMac } from './ethernet.js';

/** Linux bridge default ageing time. */
export const kMacAgeingMs = 300_000;
/** Bounds the table's memory against a guest that sends from random source MACs. */
export const kMaxMacEntries = 8192;

interface Entry {
  port: string;
  lastSeenMs: number;
}

export interface MacEntry {
  mac: string;
  port: string;
  ageMs: number;
}

export class MacTable {
  private readonly _entries = new Map<number, Entry>();

  constructor(
    private readonly _ageingMs: number = kMacAgeingMs,
    private readonly _nowMs: () => number = () => performance.now(),
    private readonly _maxEntries: number = kMaxMacEntries,
  ) {}

  /** Records that `mac` was seen on `port` now. A full table first sweeps, then stops learning. */
  learn(mac: number, port: string): void {
    const now = this._nowMs();
    const entry = this._entries.get(mac);
    if (entry) {
      entry.port = port;
      entry.lastSeenMs = now;
      return;
    }
    if (this._entries.size >= this._maxEntries) {
      this.sweep();
      // Still full: unknown MACs are flooded, which is correct, only less efficient.
      if (this._entries.size >= this._maxEntries) return;
    }
    this._entries.set(mac, { port, lastSeenMs: now });
  }

  /** The port `mac` was last seen on, or undefined when unknown or aged out. */
  lookup(mac: number): string | undefined {
    const entry = this._entries.get(mac);
    if (!entry) return undefined;
    if (this._nowMs() - entry.lastSeenMs > this._ageingMs) {
      this._entries.delete(mac);
      return undefined;
    }
    return entry.port;
  }

  /** Forgets every MAC learned on `port` (the port went away or its guest reconnected). */
  forgetPort(port: string): void {
    for (const [mac, entry] of this._entries) if (entry.port === port) this._entries.delete(mac);
  }

  /** Drops aged-out entries. */
  sweep(): void {
    const now = this._nowMs();
    for (const [mac, entry] of this._entries) {
      if (now - entry.lastSeenMs > this._ageingMs) this._entries.delete(mac);
    }
  }

  clear(): void {
    this._entries.clear();
  }

  /** The live entries, for introspection and tests. */
  entries(): MacEntry[] {
    this.sweep();
    const now = this._nowMs();
    return [...this._entries].map(([mac, e]) => ({ mac: formatMac(mac), port: e.port, ageMs: now - e.lastSeenMs }));
  }

  get size(): number {
    return this._entries.size;
  }
}
