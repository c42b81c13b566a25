// Clock (reference §1.12): the guest's CLOCK_REALTIME through the agent.
//
// Nanoseconds since 1970 exceed 2^53, which fengari can only hold as an inexact float. So
// `get_ns()` returns a float (within ~256 ns today) and `get_ns_str()` the exact decimal string;
// `set_ns()` accepts either (or any 64-bit form: integer, hex/decimal string). `get()`/`set()`
// work in float seconds. NaN and infinities are rejected everywhere; sleep() also rejects
// negative durations, advance() accepts them ("-5s" or -5).

import { lua } from 'fengari';
import { parseDuration, UnitError } from '../config/units.js';
import { R, type Args, type LuaClass } from './args.js';
import { agentCall, type VmHandle } from './guest.js';
import { getText, int64ToBigInt, pushText, wireInt64 } from './values.js';

const kNsPerSec = 1_000_000_000n;

export class Clock {
  constructor(readonly vm: VmHandle) {}

  nowNs(fn: string): bigint {
    const t = agentCall(this.vm, fn, 'get_time', {});
    return int64ToBigInt(t.sec) * kNsPerSec + BigInt(t.nsec);
  }

  setNs(fn: string, ns: bigint): void {
    agentCall(this.vm, fn, 'set_time', splitNs(ns));
  }
}

/** { sec, nsec } with 0 <= nsec < 1e9 (floor division, also for negative times). */
function splitNs(ns: bigint): { sec: number | bigint; nsec: number } {
  let sec = ns / kNsPerSec;
  let nsec = ns % kNsPerSec;
  if (nsec < 0n) {
    nsec += kNsPerSec;
    sec -= 1n;
  }
  return { sec: wireInt64(sec), nsec: Number(nsec) };
}

function secondsToNs(secs: number): bigint {
  const whole = Math.floor(secs);
  let nsec = Math.round((secs - whole) * 1e9);
  let sec = BigInt(whole);
  if (nsec >= 1e9) {
    nsec -= 1e9;
    sec += 1n;
  }
  return sec * kNsPerSec + BigInt(nsec);
}

/** A signed duration: seconds (may be negative) or "[-]<n><ms|s|m|h>"; in ns. */
function signedDurationNs(a: Args, n: number): bigint {
  const t = a.type(n);
  if (t === lua.LUA_TNUMBER) return secondsToNs(a.read(n, 'duration', R.number));
  if (t === lua.LUA_TSTRING) {
    const s = getText(a.L, a.idx(n)).trim();
    const negative = s.startsWith('-');
    try {
      const ms = parseDuration(negative ? s.slice(1) : s, `argument #${n} (duration)`);
      const ns = BigInt(Math.round(ms * 1e6));
      return negative ? -ns : ns;
    } catch (err) {
      if (err instanceof UnitError) throw a.error(err.message);
      throw err;
    }
  }
  throw a.error(`argument #${n} (duration) must be seconds as a number or a string like "5s" or "-2m", got ${a.got(a.idx(n))}`);
}

export const ClockClass: LuaClass<Clock> = {
  typeName: 'Clock',
  selfName: 'clock',
  toString: (c) => `clock(${c.vm.name})`,
  methods: {
    get(c, a) {
      lua.lua_pushnumber(a.L, Number(c.nowNs(a.label)) / 1e9);
      return 1;
    },
    get_ns(c, a) {
      lua.lua_pushnumber(a.L, Number(c.nowNs(a.label)));
      return 1;
    },
    get_ns_str(c, a) {
      pushText(a.L, c.nowNs(a.label).toString());
      return 1;
    },
    set(c, a) {
      const secs = a.read(1, 'secs', R.number);
      c.setNs(a.label, secondsToNs(secs));
      return 0;
    },
    set_ns(c, a) {
      c.setNs(a.label, a.read(1, 'ns', R.int64('signed')));
      return 0;
    },
    sleep(c, a) {
      const ms = a.read(1, 'duration', R.duration);
      agentCall(c.vm, a.label, 'sleep', { ns: wireInt64(BigInt(Math.round(ms * 1e6))) }, { boundMs: ms });
      return 0;
    },
    advance(c, a) {
      const ns = signedDurationNs(a, 1);
      const t = agentCall(c.vm, a.label, 'advance_time', { ns: wireInt64(ns) });
      lua.lua_pushnumber(a.L, Number(int64ToBigInt(t.sec) * kNsPerSec + BigInt(t.nsec)) / 1e9);
      return 1;
    },
  },
};
