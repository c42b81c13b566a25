// Impairment values, their validation, and the rule table that says which values apply to a
// direction. Rules exist at three scopes: the whole bridge, every frame from one port
// ({from}), and one direction ({from, to}). A direction gets, field by field, the worst value of
// the rules that cover it (the reference collapses rules of one source to the worst value too).

import type { NetImpairment } from '../protocol/rpc.js';

/** The values of one rule (the protocol's shape: the broker reports them as they are). */
export type Impairment = NetImpairment;

/** Where a rule applies: `to` absent means every destination of `from`. */
export interface ImpairmentScope {
  from: string;
  to?: string;
}

export const kNoImpairment: Readonly<Impairment> = Object.freeze({
  latencyMs: 0,
  jitterMs: 0,
  dropRate: 0,
  bandwidthBps: 0,
  duplicateRate: 0,
  reorderRate: 0,
});

/** Ten minutes: longer would only hide a test bug (a frame that never arrives). */
export const kMaxLatencyMs = 600_000;
/** One byte per second: below that a single frame takes minutes. */
export const kMinBandwidthBps = 8;
/** 100 Gbit/s, far above what a TCG guest can send. */
export const kMaxBandwidthBps = 100e9;

const kFields = Object.keys(kNoImpairment) as (keyof Impairment)[];

interface Range {
  min: number;
  max: number;
  text: string;
}

const kRanges: Record<keyof Impairment, Range> = {
  latencyMs: { min: 0, max: kMaxLatencyMs, text: `a number of milliseconds from 0 to ${kMaxLatencyMs}` },
  jitterMs: { min: 0, max: kMaxLatencyMs, text: `a number of milliseconds from 0 to ${kMaxLatencyMs}` },
  dropRate: { min: 0, max: 1, text: 'a probability from 0 to 1' },
  bandwidthBps: {
    min: 0,
    max: kMaxBandwidthBps,
    text: `0 (unlimited) or bits per second from ${kMinBandwidthBps} to ${kMaxBandwidthBps}`,
  },
  duplicateRate: { min: 0, max: 1, text: 'a probability from 0 to 1' },
  reorderRate: { min: 0, max: 1, text: 'a probability from 0 to 1' },
};

/**
 * Checks a partial impairment: unknown keys and out-of-range values throw an Error naming the
 * key, the value and the accepted range. Returns a copy holding only the given keys.
 */
export function validateImpairment(values: Partial<Impairment>): Partial<Impairment> {
  if (typeof values !== 'object' || values === null) {
    throw new Error(`impairment must be an object with keys ${kFields.join(', ')}; got ${String(values)}`);
  }
  const out: Partial<Impairment> = {};
  for (const [key, value] of Object.entries(values)) {
    if (!(kFields as string[]).includes(key)) {
      throw new Error(`unknown impairment key "${key}"; accepted keys: ${kFields.join(', ')}`);
    }
    if (value === undefined) continue;
    const field = key as keyof Impairment;
    const range = kRanges[field];
    const bad =
      typeof value !== 'number' ||
      !Number.isFinite(value) ||
      value < range.min ||
      value > range.max ||
      (field === 'bandwidthBps' && value > 0 && value < kMinBandwidthBps);
    if (bad) throw new Error(`${field} ${String(value)} is out of range: expected ${range.text}`);
    out[field] = value;
  }
  return out;
}

/** Checks a scope's port names; the error names the bad value. */
export function validateScope(scope: ImpairmentScope): void {
  if (typeof scope !== 'object' || scope === null || typeof scope.from !== 'string' || scope.from === '') {
    throw new Error(`impairment scope must be {from: <port name>, to?: <port name>}; got ${JSON.stringify(scope)}`);
  }
  if (scope.to !== undefined && (typeof scope.to !== 'string' || scope.to === '')) {
    throw new Error(`impairment scope "to" must be a port name; got ${JSON.stringify(scope.to)}`);
  }
  if (scope.to === scope.from) throw new Error(`impairment scope from and to are both "${scope.from}"`);
}

/** Field by field, the worse of two impairments (bandwidth: the lower non-zero limit). */
export function worstOf(a: Readonly<Impairment>, b: Readonly<Impairment>): Impairment {
  const bandwidth =
    a.bandwidthBps === 0 ? b.bandwidthBps : b.bandwidthBps === 0 ? a.bandwidthBps : Math.min(a.bandwidthBps, b.bandwidthBps);
  return {
    latencyMs: Math.max(a.latencyMs, b.latencyMs),
    jitterMs: Math.max(a.jitterMs, b.jitterMs),
    dropRate: Math.max(a.dropRate, b.dropRate),
    bandwidthBps: bandwidth,
    duplicateRate: Math.max(a.duplicateRate, b.duplicateRate),
    reorderRate: Math.max(a.reorderRate, b.reorderRate),
  };
}

export function isNoImpairment(i: Readonly<Impairment>): boolean {
  return kFields.every((field) => i[field] === 0);
}

export interface ImpairmentRule {
  scope?: ImpairmentScope;
  values: Impairment;
}

function scopeKey(scope?: ImpairmentScope): string {
  if (!scope) return '';
  return `${scope.from}\0${scope.to ?? ''}`;
}

/** The impairment rules of one bridge. */
export class ImpairmentRules {
  private readonly _rules = new Map<string, ImpairmentRule>();

  /**
   * Merges validated `values` into the rule at `scope` (whole bridge when absent) and returns the
   * rule's values after the change. A rule left with only zeros is removed.
   */
  set(values: Partial<Impairment>, scope?: ImpairmentScope): Impairment {
    if (scope) validateScope(scope);
    const checked = validateImpairment(values);
    const key = scopeKey(scope);
    const merged: Impairment = { ...(this._rules.get(key)?.values ?? kNoImpairment), ...checked };
    if (isNoImpairment(merged)) this._rules.delete(key);
    else this._rules.set(key, { scope: scope && { from: scope.from, ...(scope.to !== undefined ? { to: scope.to } : {}) }, values: merged });
    return { ...merged };
  }

  /** The values of the rule at exactly `scope` (zeros when there is none). */
  get(scope?: ImpairmentScope): Impairment {
    return { ...(this._rules.get(scopeKey(scope))?.values ?? kNoImpairment) };
  }

  /** What applies to frames from `from` to `to`: the worst of the bridge, {from} and {from, to} rules. */
  effective(from: string, to: string): Impairment {
    let out: Impairment = { ...kNoImpairment };
    for (const key of ['', `${from}\0`, `${from}\0${to}`]) {
      const rule = this._rules.get(key);
      if (rule) out = worstOf(out, rule.values);
    }
    return out;
  }

  clear(): void {
    this._rules.clear();
  }

  rules(): ImpairmentRule[] {
    return [...this._rules.values()].map((r) => ({ ...(r.scope ? { scope: { ...r.scope } } : {}), values: { ...r.values } }));
  }

  get size(): number {
    return this._rules.size;
  }
}
