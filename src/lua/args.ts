// The contract every binding is written against, and argument checking. A method receives its
// receiver and an Args: the arguments, the Lua state, its label, and `rt`, the runtime surface
// bindings use (BindingRuntime, implemented by runtime.ts). LuaClass, Method, Args and
// BindingRuntime refer to each other, so they live in this one module, which imports nothing in
// src/lua that could import it back. Every error names the function, the argument (by position
// and name), what it got and what it accepts; unknown option keys name the key and list the
// accepted ones. Durations and sizes go through src/config/units.ts.

import { lua, type lua_CFunction, type lua_State } from 'fengari';
import { parseDuration, parseSize, UnitError } from '../config/units.js';
import { LuaError } from './errors.js';
import type { Deadline, Rpc } from './rpc.js';
import type { ResourceScope } from './scope.js';
import { eachPair, getBytes, getText, readInt64, rawLen, repr, typeName, type Int64Mode } from './values.js';

export type Method<T> = (self: T, a: Args) => number;

/** A Lua userdata type backed by a JS object. */
export interface LuaClass<T extends object> {
  /** Metatable `__name`, shown in type errors: `VM`. */
  readonly typeName: string;
  /** How messages name the receiver: `vm` gives `vm:run: …`. */
  readonly selfName: string;
  readonly methods: Readonly<Record<string, Method<T>>>;
  /** Dynamic fields, tried after methods: push one value and return true, or return false (nil). */
  readonly getField?: (self: T, name: string, L: lua_State) => boolean;
  /** `obj.name = value` with the value at stack index 3; absent → assignment is an error. */
  readonly setField?: (self: T, name: string, a: Args) => void;
  readonly toString?: (self: T) => string;
  /**
   * Methods that also work called with a dot (`provium.vm_fixture(path)`, as the reference's
   * reserved keys do): without a receiver they run on `receiver(rt)`.
   */
  readonly dotCalls?: { readonly names: readonly string[]; readonly receiver: (rt: BindingRuntime) => T };
}

/** File-scope settings (`provium.timeout = ...`) and one-shot state. */
export interface FileConfig {
  /** Default per-test timeout. */
  timeoutMs?: number;
  /** As written, for `provium.timeout` read-back. */
  timeoutRaw?: number | string;
  /** Accepted and stored; lab snapshots between tests are not implemented yet. */
  resetBetweenTests: boolean;
  claimTaken: boolean;
  /** How many tests the file has declared so far (test-runner.ts). */
  declaredTests?: number;
}

/**
 * What bindings use of the file's runtime (`a.rt`); LuaRuntime implements it. Declared here, not
 * imported from runtime.ts, so that no binding depends on the runtime that registers it.
 */
export interface BindingRuntime {
  readonly rpc: Rpc;
  readonly deadline: Deadline;
  /** Absolute path of the test file. */
  readonly file: string;
  /** Its path as reports show it. */
  readonly displayPath: string;
  /** The test roots (absolute or relative to the cwd). */
  readonly roots: string[];
  readonly fileConfig: FileConfig;
  /** Where resources created now are registered: the running test's scope, else the file's. */
  readonly currentScope: ResourceScope;
  /** The file's root lab (`provium` at file scope): a Lab, typed loosely to keep args.ts below lab.ts. */
  readonly rootLab: object;
  /** Runs `fn` with resources registered at file scope. */
  inFileScope<T>(fn: () => T): T;
  /** The running test's context (test-context.ts), null while the file's top level runs. */
  readonly currentTest: object | null;
  /** Registry ref of the value `t:skip` raises. */
  readonly skipSentinelRef: number;
  /** Pushes the userdata of `obj`; the same object always gives the same userdata. */
  push<T extends object>(cls: LuaClass<T>, obj: T, L?: lua_State): void;
  /** The object behind the userdata at `idx` if it is of class `cls`, else null. */
  toObject<T extends object>(L: lua_State, idx: number, cls: LuaClass<T>): T | null;
  /** A plain function: arguments start at 1. */
  fn(label: string, body: (a: Args) => number): lua_CFunction;
  ref(idx: number, L?: lua_State): number;
  pushRef(ref: number, L?: lua_State): void;
  /** tostring() of any value, never raising. */
  safeToString(idx: number, L?: lua_State): string;
  /** The display source of the function at `level`. */
  sourceAt(L: lua_State, level: number): string | null;
}

/** Reads the value at an absolute stack index; `what` names it in messages ("option `env`"). */
export type Reader<T> = (a: Args, idx: number, what: string) => T;
export type Spec = Record<string, Reader<unknown>>;
export type Options<S extends Spec> = { [K in keyof S]?: S[K] extends Reader<infer T> ? T : never };

export class Args {
  constructor(
    readonly rt: BindingRuntime,
    readonly L: lua_State,
    /** `vm:run`, `test`, `json.encode`. */
    readonly label: string,
    /** Stack slots before user argument 1 (1 for methods: the receiver). */
    readonly base: number,
  ) {}

  /** A LuaError prefixed with the label. */
  error(message: string): LuaError {
    return new LuaError(`${this.label}: ${message}`);
  }

  idx(n: number): number {
    return this.base + n;
  }

  /** Number of user arguments. */
  count(): number {
    return Math.max(0, lua.lua_gettop(this.L) - this.base);
  }

  type(n: number): number {
    return lua.lua_type(this.L, this.idx(n));
  }

  isNil(n: number): boolean {
    return lua.lua_isnoneornil(this.L, this.idx(n));
  }

  argName(n: number, name: string): string {
    return `argument #${n} (${name})`;
  }

  got(idx: number): string {
    return typeName(this.L, idx);
  }

  /** Generic check for user argument n with a reader. */
  read<T>(n: number, name: string, reader: Reader<T>): T {
    return reader(this, this.idx(n), this.argName(n, name));
  }

  opt<T>(n: number, name: string, reader: Reader<T>): T | undefined {
    return this.isNil(n) ? undefined : this.read(n, name, reader);
  }

  string(n: number, name: string): string {
    return this.read(n, name, R.string);
  }

  bytes(n: number, name: string): Uint8Array {
    return this.read(n, name, R.bytes);
  }

  /** The absolute index of a table argument. */
  table(n: number, name: string): number {
    return this.read(n, name, R.table);
  }

  /** Reads an options table against `spec`; nil gives {}. */
  options<S extends Spec>(n: number, name: string, spec: S): Options<S> {
    if (this.isNil(n)) return {};
    return readOptions(this, this.idx(n), this.argName(n, name), spec);
  }

  /** Rejects extra arguments past `max` (catches `vm:run("a", "b")`-style mistakes). */
  noMoreThan(max: number, usage: string): void {
    const extra = this.count();
    if (extra > max) {
      let last = extra;
      while (last > max && this.isNil(last)) last--;
      if (last > max) throw this.error(`takes at most ${max} argument${max === 1 ? '' : 's'}, got ${extra}; usage: ${usage}`);
    }
  }
}

/** Reads an options table: each key must be in `spec`; values go through their readers. */
export function readOptions<S extends Spec>(a: Args, idx: number, what: string, spec: S): Options<S> {
  const L = a.L;
  if (lua.lua_type(L, idx) !== lua.LUA_TTABLE) {
    throw a.error(`${what} must be a table of options (${acceptedKeys(spec)}), got ${a.got(idx)}`);
  }
  const out: Record<string, unknown> = {};
  eachPair(L, idx, () => {
    if (lua.lua_type(L, -2) !== lua.LUA_TSTRING) {
      throw a.error(`${what}: unexpected ${a.got(-2)} key ${keyRepr(L)}; accepted keys: ${acceptedKeys(spec)}`);
    }
    const k = getText(L, -2);
    const reader = Object.prototype.hasOwnProperty.call(spec, k) ? spec[k] : undefined;
    if (!reader) throw a.error(`unknown option \`${k}\` in ${what}; accepted keys: ${acceptedKeys(spec)}`);
    out[k] = reader(a, lua.lua_absindex(L, -1), `option \`${k}\``);
  });
  return out as Options<S>;
}

function keyRepr(L: lua_State): string {
  if (lua.lua_type(L, -2) === lua.LUA_TNUMBER) return `[${lua.lua_tonumberx(L, -2)}]`;
  return '';
}

export function acceptedKeys(spec: object): string {
  return Object.keys(spec).join(', ');
}

/** Readers for common shapes. */
export const R = {
  string: ((a, idx, what) => {
    if (lua.lua_type(a.L, idx) !== lua.LUA_TSTRING) throw a.error(`${what} must be a string, got ${a.got(idx)}`);
    return getText(a.L, idx);
  }) as Reader<string>,

  /** A string or a number (env values, argv entries written as numbers). */
  stringish: ((a, idx, what) => {
    const t = lua.lua_type(a.L, idx);
    if (t !== lua.LUA_TSTRING && t !== lua.LUA_TNUMBER) throw a.error(`${what} must be a string, got ${a.got(idx)}`);
    return getText(a.L, idx);
  }) as Reader<string>,

  bytes: ((a, idx, what) => {
    if (lua.lua_type(a.L, idx) !== lua.LUA_TSTRING) throw a.error(`${what} must be a string (bytes), got ${a.got(idx)}`);
    return getBytes(a.L, idx);
  }) as Reader<Uint8Array>,

  bool: ((a, idx, what) => {
    if (lua.lua_type(a.L, idx) !== lua.LUA_TBOOLEAN) throw a.error(`${what} must be a boolean, got ${a.got(idx)}`);
    return lua.lua_toboolean(a.L, idx);
  }) as Reader<boolean>,

  number: ((a, idx, what) => {
    if (lua.lua_type(a.L, idx) !== lua.LUA_TNUMBER) throw a.error(`${what} must be a number, got ${a.got(idx)}`);
    const n = lua.lua_tonumberx(a.L, idx) as number;
    if (!Number.isFinite(n)) throw a.error(`${what} must be a finite number, got ${n}`);
    return n;
  }) as Reader<number>,

  table: ((a, idx, what) => {
    if (lua.lua_type(a.L, idx) !== lua.LUA_TTABLE) throw a.error(`${what} must be a table, got ${a.got(idx)}`);
    return idx;
  }) as Reader<number>,

  function: ((a, idx, what) => {
    if (lua.lua_type(a.L, idx) !== lua.LUA_TFUNCTION) throw a.error(`${what} must be a function, got ${a.got(idx)}`);
    return idx;
  }) as Reader<number>,

  /** An integer in [min, max]; integral floats are accepted. */
  int(min = -(2 ** 53), max = 2 ** 53): Reader<number> {
    return (a, idx, what) => {
      if (lua.lua_type(a.L, idx) !== lua.LUA_TNUMBER) throw a.error(`${what} must be an integer, got ${a.got(idx)}`);
      const n = lua.lua_tonumberx(a.L, idx) as number;
      if (!Number.isInteger(n)) throw a.error(`${what} must be an integer, got ${n}`);
      if (n < min || n > max) throw a.error(`${what} must be between ${min} and ${max}, got ${n}`);
      return n;
    };
  },

  /** A duration (seconds as a number, or "500ms"/"5s"/"2m"/"1h") in milliseconds. */
  duration: ((a, idx, what) => {
    const t = lua.lua_type(a.L, idx);
    if (t !== lua.LUA_TNUMBER && t !== lua.LUA_TSTRING) {
      throw a.error(`${what} must be a duration (seconds as a number, or a string like "500ms", "5s", "2m"), got ${a.got(idx)}`);
    }
    const v = t === lua.LUA_TNUMBER ? (lua.lua_tonumberx(a.L, idx) as number) : getText(a.L, idx);
    try {
      return parseDuration(v, what);
    } catch (err) {
      if (err instanceof UnitError) throw a.error(err.message);
      throw err;
    }
  }) as Reader<number>,

  /** A size (bytes, or "512M"/"2G") in bytes. */
  size: ((a, idx, what) => {
    const t = lua.lua_type(a.L, idx);
    if (t !== lua.LUA_TNUMBER && t !== lua.LUA_TSTRING) {
      throw a.error(`${what} must be a size (bytes as a number, or a string like "512M", "2G"), got ${a.got(idx)}`);
    }
    const v = t === lua.LUA_TNUMBER ? (lua.lua_tonumberx(a.L, idx) as number) : getText(a.L, idx);
    try {
      return parseSize(v, what);
    } catch (err) {
      if (err instanceof UnitError) throw a.error(err.message);
      throw err;
    }
  }) as Reader<number>,

  int64(mode: Int64Mode): Reader<bigint> {
    return (a, idx, what) => {
      const v = readInt64(a.L, idx, mode);
      if (typeof v === 'string') {
        throw a.error(
          `${what} must be a ${mode === 'signed' ? '' : 'non-negative '}64-bit integer: a number, or a decimal or hex string ("0xC0104B00") for values past 2^53; ${v}`,
        );
      }
      return v;
    };
  },

  /** An array (sequence table) whose items go through `item`. */
  array<T>(item: Reader<T>, itemWord = 'item'): Reader<T[]> {
    return (a, idx, what) => {
      const L = a.L;
      if (lua.lua_type(L, idx) !== lua.LUA_TTABLE) throw a.error(`${what} must be an array of ${itemWord}s, got ${a.got(idx)}`);
      const n = rawLen(L, idx);
      let count = 0;
      eachPair(L, idx, () => {
        count++;
        if (!lua.lua_isinteger(L, -2) || (lua.lua_tointegerx(L, -2) as number) < 1 || (lua.lua_tointegerx(L, -2) as number) > n) {
          throw a.error(`${what} must be an array of ${itemWord}s (keys 1..n), but has key ${repr(L, -2)}`);
        }
      });
      if (count !== n) throw a.error(`${what} must be an array of ${itemWord}s without holes`);
      const out: T[] = [];
      for (let i = 1; i <= n; i++) {
        lua.lua_rawgeti(L, idx, i);
        try {
          out.push(item(a, lua.lua_absindex(L, -1), `${what}[${i}]`));
        } finally {
          lua.lua_pop(L, 1);
        }
      }
      return out;
    };
  },

  /** A table of string keys to strings (env). */
  stringMap: ((a, idx, what) => {
    const L = a.L;
    if (lua.lua_type(L, idx) !== lua.LUA_TTABLE) throw a.error(`${what} must be a table of string keys to strings, got ${a.got(idx)}`);
    const out: Record<string, string> = {};
    eachPair(L, idx, () => {
      if (lua.lua_type(L, -2) !== lua.LUA_TSTRING) throw a.error(`${what}: keys must be strings, got ${a.got(-2)}`);
      const k = getText(L, -2);
      out[k] = R.stringish(a, lua.lua_absindex(L, -1), `${what} entry \`${k}\``);
    });
    return out;
  }) as Reader<Record<string, string>>,
};
