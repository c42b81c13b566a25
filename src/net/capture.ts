// Capture subscriptions: who wants to see which frames. A port capture sees what that guest
// sent and received on its wire (like tcpdump on its TAP); a bridge capture sees every frame
// once, as it entered the switch, before faults decide its fate.

/** tx and rx from the guest's point of view, as the port counters. */
export type CaptureDirection = 'tx' | 'rx';

export interface CaptureRecord {
  /** Wall-clock time in nanoseconds since the Unix epoch (pcap timestamps). */
  tsNs: bigint;
  frame: Buffer;
  port: string;
  direction: CaptureDirection;
}

export interface CaptureOptions {
  /** Only this port's frames (both directions); absent = every frame entering the bridge. */
  port?: string;
}

export interface CaptureSubscription {
  readonly port: string | undefined;
  readonly closed: boolean;
  /** Set when the consumer threw: the subscription was closed so the switch keeps running. */
  readonly error: unknown;
  close(): void;
}

// Wall clock at one instant plus the monotonic clock since: nanosecond steps that never go back.
const kWallBaseNs = BigInt(Date.now()) * 1_000_000n;
const kHrBaseNs = process.hrtime.bigint();

/** Nanoseconds since the Unix epoch, monotonic within this process. */
export function wallClockNs(): bigint {
  return kWallBaseNs + (process.hrtime.bigint() - kHrBaseNs);
}

class Subscription implements CaptureSubscription {
  closed = false;
  error: unknown = undefined;

  constructor(
    readonly port: string | undefined,
    readonly onRecord: (record: CaptureRecord) => void,
    private readonly _remove: (sub: Subscription) => void,
  ) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this._remove(this);
  }
}

export class CaptureHub {
  private readonly _subs = new Set<Subscription>();

  constructor(private readonly _clockNs: () => bigint = wallClockNs) {}

  subscribe(options: CaptureOptions, onRecord: (record: CaptureRecord) => void): CaptureSubscription {
    if (options.port !== undefined && (typeof options.port !== 'string' || options.port === '')) {
      throw new Error(`capture port must be a port name; got ${JSON.stringify(options.port)}`);
    }
    const sub = new Subscription(options.port, onRecord, (s) => this._subs.delete(s));
    this._subs.add(sub);
    return sub;
  }

  /** Hands a frame to the subscriptions that want it. Cheap when nobody captures. */
  emit(port: string, direction: CaptureDirection, frame: Buffer): void {
    if (this._subs.size === 0) return;
    let record: CaptureRecord | undefined;
    for (const sub of this._subs) {
      const wanted = sub.port === undefined ? direction === 'tx' : sub.port === port;
      if (!wanted) continue;
      record ??= { tsNs: this._clockNs(), frame, port, direction };
      try {
        sub.onRecord(record);
      } catch (err) {
        sub.error = err;
        sub.close();
      }
    }
  }

  /** Number of open subscriptions (the reference's active_captures). */
  get size(): number {
    return this._subs.size;
  }

  closeAll(): void {
    for (const sub of [...this._subs]) sub.close();
  }
}
