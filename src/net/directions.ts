// The directions of one bridge that currently need an impairment pipeline. A direction with
// no impairment and nothing in flight takes the fast path (delivered at once); a pipeline is made
// when a rule starts to apply and retired once it is empty and no rule applies, so frames still
// inside it are never overtaken by later frames of the same direction.

import { isNoImpairment, kNoImpairment, type ImpairmentRules } from './impairment.js';
import { DirectionPipeline, type PipelineDropReason, type PipelineLimits } from './pipeline.js';
import type { Prng } from './prng.js';

export interface DirectionHooks {
  deliver(to: string, frame: Buffer): void;
  drop(from: string, reason: PipelineDropReason): void;
  nowMs(): number;
}

interface Entry {
  from: string;
  to: string;
  pipe: DirectionPipeline;
}

function pairKey(from: string, to: string): string {
  return `${from}\0${to}`;
}

export class Directions {
  private readonly _pipelines = new Map<string, Entry>();
  /** One PRNG stream per direction, kept across pipeline lifetimes so its draws continue. */
  private readonly _streams = new Map<string, Prng>();

  constructor(
    private readonly _prng: Prng,
    private readonly _rules: ImpairmentRules,
    private readonly _hooks: DirectionHooks,
    private readonly _limits: PipelineLimits,
  ) {}

  /** Sends a frame from `from` to `to` through that direction's impairments, if any. */
  forward(from: string, to: string, frame: Buffer): void {
    const key = pairKey(from, to);
    const entry = this._pipelines.get(key);
    if (entry) {
      entry.pipe.push(frame);
      return;
    }
    const impairment = this._rules.size === 0 ? kNoImpairment : this._rules.effective(from, to);
    if (isNoImpairment(impairment)) {
      this._hooks.deliver(to, frame);
      return;
    }
    const pipe = new DirectionPipeline(this._stream(key, from, to), impairment, {
      deliver: (f) => this._hooks.deliver(to, f),
      drop: (reason) => this._hooks.drop(from, reason),
      idle: () => this._retireIfUnneeded(key),
      nowMs: this._hooks.nowMs,
    }, this._limits);
    this._pipelines.set(key, { from, to, pipe });
    pipe.push(frame);
  }

  /** The rules changed: every live pipeline takes its new values; empty unneeded ones go. */
  applyRules(): void {
    for (const [key, entry] of this._pipelines) {
      entry.pipe.update(this._rules.effective(entry.from, entry.to));
      this._retireIfUnneeded(key);
    }
  }

  /** Discards the pipelines to and from a port that left (their frames have nowhere to go). */
  forgetPort(name: string): void {
    for (const [key, entry] of this._pipelines) {
      if (entry.from === name || entry.to === name) {
        entry.pipe.close();
        this._pipelines.delete(key);
      }
    }
  }

  closeAll(): void {
    for (const entry of this._pipelines.values()) entry.pipe.close();
    this._pipelines.clear();
  }

  /** Directions with a live pipeline (for tests and introspection). */
  get size(): number {
    return this._pipelines.size;
  }

  private _stream(key: string, from: string, to: string): Prng {
    let stream = this._streams.get(key);
    if (!stream) {
      stream = this._prng.fork(`${from}->${to}`);
      this._streams.set(key, stream);
    }
    return stream;
  }

  private _retireIfUnneeded(key: string): void {
    const entry = this._pipelines.get(key);
    if (!entry || !entry.pipe.idle) return;
    if (!isNoImpairment(this._rules.effective(entry.from, entry.to))) return;
    entry.pipe.close();
    this._pipelines.delete(key);
  }
}
