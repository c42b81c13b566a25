// The fault policy of one disk, applied to the guest's requests only (host-side reads and writes
// bypass it). A failed request goes back to the guest as EIO, so its kernel sees an I/O error.
// Every change is reported through `notify` for the run's timeline.

/** 512-byte sectors: the unit of failRange and of torn writes. */
export const kSectorBytes = 512;

/** What a guest request does to the medium. FLUSH counts as a write: a failing disk fails it too. */
export type GuestOp = 'read' | 'write' | 'write_zeroes' | 'trim' | 'flush';
/** Which requests failAfter counts. */
export type FaultTarget = 'read' | 'write' | 'any';

/** The policy as `fault_policy()` shows it: null means "off". Keys follow the Lua table. */
export interface FaultPolicyView {
  fail_reads: boolean;
  fail_writes: boolean;
  fail_after: number | null;
  fail_after_target: FaultTarget | null;
  fail_range_sector: number | null;
  fail_range_count: number | null;
  delay_ms: number;
  torn_write: boolean;
  random_eio_rate: number;
}

export type FaultKind =
  | 'fail_reads'
  | 'fail_writes'
  | 'fail_after'
  | 'fail_range'
  | 'delay'
  | 'torn_write'
  | 'random_eio'
  | 'clear'
  | 'power_cut';

/** One entry of the run's timeline: which fault changed on which export, with its parameters. */
export interface FaultEvent {
  kind: FaultKind;
  export: string;
  values: Record<string, number | boolean | string | null>;
}

/** The verdict on one guest request. */
export interface FaultDecision {
  /** Answer EIO instead of doing the request. */
  fail: boolean;
  /** The reply may not leave sooner than this after the request arrived. */
  delayMs: number;
  /** For a torn write: how many leading bytes land (a sector boundary); undefined otherwise. */
  tornBytes?: number;
}

export class FaultPolicy {
  private _failReads = false;
  private _failWrites = false;
  private _failAfter: { n: number; target: FaultTarget; seen: number } | null = null;
  private _failRange: { sector: number; count: number } | null = null;
  private _delayMs = 0;
  private _tornWrite = false;
  private _randomEioRate = 0;

  /**
   * @param _random uniform in [0, 1), seeded by the caller so a run is reproducible.
   * @param _notify called after every change with its kind and parameters.
   */
  constructor(
    private readonly _random: () => number,
    private readonly _notify: (kind: FaultKind, values: FaultEvent['values']) => void = () => {},
  ) {}

  failReads(on = true): void {
    this._failReads = on;
    this._notify('fail_reads', { on });
  }

  failWrites(on = true): void {
    this._failWrites = on;
    this._notify('fail_writes', { on });
  }

  /** The first `n` requests of `target` after this call succeed; the (n+1)-th and later fail. */
  failAfter(n: number, target: FaultTarget = 'any'): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`failAfter: n must be an integer >= 0, got ${n}`);
    if (target !== 'read' && target !== 'write' && target !== 'any') {
      throw new RangeError(`failAfter: target must be 'read', 'write' or 'any', got ${String(target)}`);
    }
    this._failAfter = { n, target, seen: 0 };
    this._notify('fail_after', { n, target });
  }

  /** Requests touching sectors [sector, sector + count) fail. Replaces any earlier range. */
  failRange(sector: number, count: number): void {
    if (!Number.isSafeInteger(sector) || sector < 0) throw new RangeError(`failRange: sector must be an integer >= 0, got ${sector}`);
    if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`failRange: count must be an integer >= 1, got ${count}`);
    this._failRange = { sector, count };
    this._notify('fail_range', { sector, count });
  }

  /** Every request is answered no sooner than `ms` after it arrived; 0 turns it off. */
  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay: ms must be >= 0, got ${ms}`);
    this._delayMs = ms;
    this._notify('delay', { ms });
  }

  /** The next guest write lands only up to a sector boundary part-way through, then reports success. */
  tornWrite(on = true): void {
    this._tornWrite = on;
    this._notify('torn_write', { on });
  }

  /** Each read or write fails with probability `rate` (drawn from the injected random). */
  randomEio(rate: number): void {
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`randomEio: rate must be in [0, 1], got ${rate}`);
    this._randomEioRate = rate;
    this._notify('random_eio', { rate });
  }

  clear(): void {
    this._failReads = false;
    this._failWrites = false;
    this._failAfter = null;
    this._failRange = null;
    this._delayMs = 0;
    this._tornWrite = false;
    this._randomEioRate = 0;
    this._notify('clear', {});
  }

  /** Takes `other`'s whole policy, counters included, without an event: the same disk on a new medium. */
  copyFrom(other: FaultPolicy): void {
    this._failReads = other._failReads;
    this._failWrites = other._failWrites;
    this._failAfter = other._failAfter && { ...other._failAfter };
    this._failRange = other._failRange && { ...other._failRange };
    this._delayMs = other._delayMs;
    this._tornWrite = other._tornWrite;
    this._randomEioRate = other._randomEioRate;
  }

  describe(): FaultPolicyView {
    return {
      fail_reads: this._failReads,
      fail_writes: this._failWrites,
      fail_after: this._failAfter?.n ?? null,
      fail_after_target: this._failAfter?.target ?? null,
      fail_range_sector: this._failRange?.sector ?? null,
      fail_range_count: this._failRange?.count ?? null,
      delay_ms: this._delayMs,
      torn_write: this._tornWrite,
      random_eio_rate: this._randomEioRate,
    };
  }

  /**
   * The verdict on one guest request, in arrival order. It counts the request for failAfter and
   * consumes a pending torn write, so call it exactly once per request.
   */
  check(op: GuestOp, offsetBytes: number, lengthBytes: number): FaultDecision {
    const isRead = op === 'read';
    const decision: FaultDecision = { fail: false, delayMs: this._delayMs };
    // 1. failAfter counts every request of its target, failed or not.
    const fa = this._failAfter;
    if (fa && (fa.target === 'any' || (fa.target === 'read') === isRead)) {
      fa.seen++;
      if (fa.seen > fa.n) decision.fail = true;
    }
    if (isRead ? this._failReads : this._failWrites) decision.fail = true;
    if (this._failRange && op !== 'flush' && this._touchesRange(offsetBytes, lengthBytes)) decision.fail = true;
    // 2. Draw only when a rate is set, so turning it on does not shift other random choices.
    if (this._randomEioRate > 0 && this._random() < this._randomEioRate) decision.fail = true;
    // 3. A torn write is spent on the first write that would otherwise succeed.
    if (!decision.fail && op === 'write' && this._tornWrite) {
      this._tornWrite = false;
      decision.tornBytes = tornLength(offsetBytes, lengthBytes);
    }
    return decision;
  }

  private _touchesRange(offsetBytes: number, lengthBytes: number): boolean {
    const r = this._failRange!;
    const first = Math.floor(offsetBytes / kSectorBytes);
    // A zero-length request touches no sector.
    if (lengthBytes === 0) return false;
    const last = Math.floor((offsetBytes + lengthBytes - 1) / kSectorBytes);
    return first < r.sector + r.count && last >= r.sector;
  }
}

/** Bytes of a torn write that land: up to the last sector boundary at or before its middle. */
export function tornLength(offsetBytes: number, lengthBytes: number): number {
  const middle = offsetBytes + Math.floor(lengthBytes / 2);
  const cut = Math.floor(middle / kSectorBytes) * kSectorBytes;
  return Math.max(0, cut - offsetBytes);
}
