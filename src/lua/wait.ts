// Polling a Lua predicate until it holds: the `wait_until` global and the legacy vm:wait_until,
// which differ only in their default interval.

import { lua } from 'fengari';
import { R, type Args } from './args.js';
import { LuaError } from './errors.js';
import { showSeconds } from './guest.js';
import { sleepSync } from './sync-call.js';

export interface WaitDefaults {
  timeoutMs: number;
  intervalMs: number;
}

/** The `wait_until` global's defaults (reference §1.1). */
export const kWaitUntilDefaults: WaitDefaults = { timeoutMs: 10_000, intervalMs: 100 };

/**
 * Calls the function at user argument `n` until it returns a truthy value, which it leaves on the
 * stack (returns 1); options at `n + 1`: `{timeout, interval, desc}`. Raises naming `desc` when
 * the timeout passes; an error in the predicate propagates at once.
 */
export function waitUntil(a: Args, n: number, defaults: WaitDefaults): number {
  const L = a.L;
  const fn = a.read(n, 'predicate', R.function);
  const o = a.options(n + 1, 'opts', { timeout: R.duration, interval: R.duration, desc: R.string });
  const timeoutMs = o.timeout ?? defaults.timeoutMs;
  const intervalMs = o.interval ?? defaults.intervalMs;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    lua.lua_pushvalue(L, fn);
    lua.lua_call(L, 0, 1);
    if (lua.lua_toboolean(L, -1)) return 1;
    lua.lua_pop(L, 1);
    const left = deadline - Date.now();
    if (left <= 0) throw new LuaError(`${a.label}: ${o.desc ?? 'condition'} not met within ${showSeconds(timeoutMs)}`);
    const testLeft = a.rt.deadline.remainingMs();
    sleepSync(Math.max(1, Math.min(intervalMs, left, testLeft)));
  }
}
