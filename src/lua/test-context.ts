// The `t` context a test body receives (reference §1.2). assert_eq compares tables deeply
// (compare.ts). Assertions raise at the caller's line
// (`error(msg, 2)`) and also set a sticky failure, so an assertion swallowed by pcall still fails
// the test; assert_raises saves and restores it. t:skip raises a sentinel the runner recognises.

import { lua } from 'fengari';
import type { MetaMap } from '../protocol/events.js';
import type { SourceLocation } from '../protocol/task.js';
import { TestLog } from '../protocol/test-log.js';
import type { Args, LuaClass } from './args.js';
import { describe, deepEqual } from './compare.js';
import { LuaError, where } from './errors.js';
import { pushText, repr } from './values.js';

/** A registered test. */
export interface TestDef {
  name: string;
  /** Registry refs of the body and of the meta table (shared by every attempt's t.meta). */
  fnRef: number;
  metaRef: number;
  meta: MetaMap;
  /** Where test() was called. */
  site: SourceLocation;
  timeoutMs?: number;
  /** From meta.skip: the skip reason, or null. */
  metaSkip: string | null;
  slow: boolean;
  tags: string[];
}

export class TestContext {
  /** print and t:log, capped (a print in a tight loop keeps the first and last lines, with a note). */
  readonly log = new TestLog();
  /** Positioned messages of failed assertions, first first (sticky). */
  failures: string[] = [];
  skipReason: string | null = null;

  constructor(
    readonly def: TestDef,
    readonly attempt: number,
  ) {}

  /** Records a failure and returns the error to throw (already positioned). */
  fail(a: Args, message: string): LuaError {
    const full = where(a.L, 1) + message;
    this.failures.push(full);
    return new LuaError(full, 0);
  }
}

function optMessage(a: Args, n: number, fallback: string): string {
  return a.isNil(n) ? fallback : a.rt.safeToString(a.idx(n), a.L);
}

export const TestContextClass: LuaClass<TestContext> = {
  typeName: 'TestContext',
  selfName: 't',
  toString: (t) => `t(${t.def.name})`,
  methods: {
    assert(t, a) {
      if (!lua.lua_toboolean(a.L, a.idx(1))) throw t.fail(a, optMessage(a, 2, 'assertion failed'));
      return 0;
    },
    assert_eq(t, a) {
      if (a.count() < 2) throw a.error('needs two values to compare: t:assert_eq(actual, expected, msg?)');
      if (!deepEqual(a.L, a.idx(1), a.idx(2))) {
        throw t.fail(a, `${optMessage(a, 3, 'assert_eq failed')}: ${describe(a.L, a.idx(1))} ~= ${describe(a.L, a.idx(2))}`);
      }
      return 0;
    },
    assert_neq(t, a) {
      if (a.count() < 2) throw a.error('needs two values to compare: t:assert_neq(actual, unexpected, msg?)');
      if (deepEqual(a.L, a.idx(1), a.idx(2))) {
        throw t.fail(a, `${optMessage(a, 3, 'assert_neq failed')}: ${describe(a.L, a.idx(1))} == ${describe(a.L, a.idx(2))}`);
      }
      return 0;
    },
    assert_contains(t, a) {
      const haystack = a.bytes(1, 'haystack');
      const needle = a.bytes(2, 'needle');
      if (Buffer.from(haystack).indexOf(Buffer.from(needle)) < 0) {
        throw t.fail(a, `${optMessage(a, 3, 'assert_contains failed')}: ${repr(a.L, a.idx(1))} does not contain ${repr(a.L, a.idx(2))}`);
      }
      return 0;
    },
    assert_raises(t, a) {
      const fn = a.idx(1);
      if (lua.lua_type(a.L, fn) !== lua.LUA_TFUNCTION) throw a.error(`argument #1 (fn) must be a function, got ${a.got(fn)}`);
      // The sticky state is saved and restored: an assertion failing inside fn is what we expect.
      const failures = t.failures;
      const skip = t.skipReason;
      t.failures = [...failures];
      lua.lua_pushvalue(a.L, fn);
      const status = lua.lua_pcall(a.L, 0, 0, 0);
      t.failures = failures;
      t.skipReason = skip;
      if (status === lua.LUA_OK) throw t.fail(a, `${optMessage(a, 2, 'assert_raises failed')}: the function did not raise an error`);
      return 1;
    },
    fail(t, a) {
      throw t.fail(a, optMessage(a, 1, 'explicit failure (t:fail)'));
    },
    skip(t, a) {
      t.skipReason = optMessage(a, 1, 'skipped (t:skip)');
      a.rt.pushRef(a.rt.skipSentinelRef, a.L);
      return lua.lua_error(a.L);
    },
    log(t, a) {
      t.log.push(a.isNil(1) ? 'nil' : a.rt.safeToString(a.idx(1), a.L));
      return 0;
    },
  },
  getField(t, name, L) {
    if (name === 'name') {
      pushText(L, t.def.name);
      return true;
    }
    if (name === 'meta') {
      lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, t.def.metaRef);
      return true;
    }
    if (name === 'attempt') {
      lua.lua_pushinteger(L, t.attempt);
      return true;
    }
    return false;
  },
};
