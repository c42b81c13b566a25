// One fengari Lua state per test file: creation, the userdata class machinery every binding uses,
// the protecting wrapper that turns JS exceptions into positioned Lua errors, protected calls that
// capture a traceback and the test-file location, chunk loading as `@<display path>`, and the
// count hook that enforces a test's deadline on pure Lua code (`while true do end`). Bindings see
// it only as args.ts's BindingRuntime, so none of them imports this module.

import { lauxlib, lua, lualib, to_jsstring, type lua_CFunction, type lua_Hook, type lua_State } from 'fengari';
import { RpcError } from '../protocol/rpc.js';
import { UnitError } from '../config/units.js';
import type { SourceLocation } from '../protocol/task.js';
import { Args, type BindingRuntime, type FileConfig, type LuaClass, type Method } from './args.js';
import { LuaError, TestTimeoutError, describeJsError, findFrame, raise, where } from './errors.js';
import { Deadline, Rpc, type Caller } from './rpc.js';
import { describe } from './compare.js';
import { getText, key, pushText, typeName } from './values.js';
import type { Lab } from './lab.js';
import type { ResourceScope } from './scope.js';
import type { TestContext } from './test-context.js';
import type { Vm } from './vm.js';

/** Instructions (or units of library work, see our fengari patch) between two deadline checks: cheap enough to be invisible, fine enough to stop within ms. */
const kHookInstructions = 1000;

export interface RuntimeOptions {
  caller: Caller;
  /** Absolute path of the test file. */
  file: string;
  /** Its path as reports show it; chunks load as `@<displayPath>`. */
  displayPath: string;
  /** Test roots, for `require`. */
  roots: string[];
}

/** What a protected call left behind when it failed. */
export interface CallFailure {
  message: string;
  /** Innermost frame in the test file, if any. */
  location?: SourceLocation;
  traceback: string;
  /** The raised value was `t:skip`'s sentinel. */
  isSkip: boolean;
}

export class LuaRuntime implements BindingRuntime {
  readonly L: lua_State;
  readonly deadline = new Deadline();
  readonly rpc: Rpc;
  readonly file: string;
  readonly displayPath: string;
  readonly roots: string[];

  // Session state the object modules share. Set up by file-runner.ts / test-runner.ts.
  rootLab!: Lab;
  /** Where resources created now are registered: the running test's scope, else the file's. */
  currentScope!: ResourceScope<Vm>;
  fileScope!: ResourceScope<Vm>;
  currentTest: TestContext | null = null;
  readonly fileConfig: FileConfig = { resetBetweenTests: false, claimTaken: false };

  /** Runs `fn` with resources registered at file scope (a fixture's VMs live until the file ends). */
  inFileScope<T>(fn: () => T): T {
    const was = this.currentScope;
    this.currentScope = this.fileScope;
    try {
      return fn();
    } finally {
      this.currentScope = was;
    }
  }
  /** Registry ref of the value `t:skip` raises. */
  skipSentinelRef = 0;
  /** Called by the message handler with the failing stack intact (--debug-on-fail keeps the test's locals). */
  onError: ((L: lua_State) => void) | null = null;

  private readonly _classNames = new Map<LuaClass<object>, string>();
  private readonly _objectRefs = new WeakMap<object, number>();
  private _lastFailure: Omit<CallFailure, 'message' | 'isSkip'> | null = null;
  private readonly _msgh: lua_CFunction;
  private readonly _hook: lua_Hook;

  constructor(options: RuntimeOptions) {
    this.file = options.file;
    this.displayPath = options.displayPath;
    this.roots = options.roots;
    this.rpc = new Rpc(options.caller, this.deadline);
    const L = lauxlib.luaL_newstate();
    this.L = L;
    // 1. Standard libraries, without io (sandbox.ts installs a refusing stub).
    const libs: [string, lua_CFunction][] = [
      ['_G', lualib.luaopen_base],
      ['package', lualib.luaopen_package],
      ['coroutine', lualib.luaopen_coroutine],
      ['table', lualib.luaopen_table],
      ['os', lualib.luaopen_os],
      ['string', lualib.luaopen_string],
      ['math', lualib.luaopen_math],
      ['utf8', lualib.luaopen_utf8],
      ['debug', lualib.luaopen_debug],
    ];
    for (const [name, open] of libs) {
      lauxlib.luaL_requiref(L, key(name), open, 1);
      lua.lua_pop(L, 1);
    }
    // 2. A JS exception crossing a pcall becomes a catchable Lua error instead of killing the task.
    lua.lua_atnativeerror(L, (L1) => {
      const err = lua.lua_touserdata(L1, 1);
      if (err instanceof TestTimeoutError) this.deadline.expired = true;
      pushText(L1, err instanceof LuaError ? err.message : `internal error: ${describeJsError(err)}`);
      return 1;
    });
    // 3. The deadline hook. Coroutines created later inherit it from the main thread. Once the
    //    deadline passed it fires on every instruction, so the error also lands outside any pcall
    //    a loop keeps re-entering (`while true do pcall(spin) end`) and unwinds the test. Our
    //    fengari patch also calls it from inside slow library calls (gsub, rep, sort, concat),
    //    where level 0 is the library function and the caller's line is at level 1.
    this._hook = (L1) => {
      if (Date.now() < this.deadline.atMs) return;
      this.deadline.expired = true;
      lua.lua_sethook(L1, this._hook, lua.LUA_MASKCOUNT, 1);
      pushText(L1, (where(L1, 0) || where(L1, 1)) + this.deadline.message);
      lua.lua_error(L1);
    };
    this.resetHook();
    // 4. The message handler of protected calls: remember where the error happened.
    this._msgh = (L1) => {
      this.onError?.(L1);
      const location = findFrame(L1, (f) => f === this.displayPath, 1) ?? undefined;
      lauxlib.luaL_traceback(L1, L1, null, 1);
      const traceback = getText(L1, -1);
      lua.lua_pop(L1, 1);
      this._lastFailure = { location, traceback };
      return 1;
    };
  }

  /** Back to one deadline check per kHookInstructions (after a test that timed out). */
  resetHook(): void {
    lua.lua_sethook(this.L, this._hook, lua.LUA_MASKCOUNT, kHookInstructions);
  }

  // Classes and objects.

  /** Creates the metatable of a class (once), using the stack of the running thread `L`. */
  register<T extends object>(cls: LuaClass<T>, L: lua_State = this.L): void {
    const anyCls = cls as unknown as LuaClass<object>;
    if (this._classNames.has(anyCls)) return;
    const mtName = `provium.${cls.typeName}`;
    this._classNames.set(anyCls, mtName);
    lauxlib.luaL_newmetatable(L, key(mtName));
    const mt = lua.lua_gettop(L);
    pushText(L, cls.typeName);
    lua.lua_setfield(L, mt, key('__name'));
    // Methods table.
    lua.lua_createtable(L, 0, Object.keys(cls.methods).length);
    for (const [name, method] of Object.entries(cls.methods)) {
      lua.lua_pushcfunction(L, this._bindMethod(cls, name, method));
      lua.lua_setfield(L, -2, key(name));
    }
    if (cls.getField) {
      const getField = cls.getField;
      // __index(obj, k): methods first, then the class's dynamic fields.
      lua.lua_pushcclosure(
        L,
        (L1) => {
          lua.lua_pushvalue(L1, 2);
          if (lua.lua_rawget(L1, lua.lua_upvalueindex(1)) !== lua.LUA_TNIL) return 1;
          lua.lua_pop(L1, 1);
          const self = this.toObject(L1, 1, cls);
          if (!self || lua.lua_type(L1, 2) !== lua.LUA_TSTRING) return 0;
          const name = getText(L1, 2);
          return this.protect(L1, `${cls.selfName}.${name}`, () => (getField(self, name, L1) ? 1 : 0));
        },
        1,
      );
    }
    lua.lua_setfield(L, mt, key('__index'));
    const setField = cls.setField;
    lua.lua_pushcfunction(L, (L1) => {
      const self = this.toObject(L1, 1, cls);
      const name = lua.lua_type(L1, 2) === lua.LUA_TSTRING ? getText(L1, 2) : '?';
      const label = `${cls.selfName}.${name}`;
      if (!self || !setField) return raise(L1, `${label}: cannot assign fields of a ${cls.typeName}`);
      return this.protect(L1, label, () => {
        setField(self, name, new Args(this, L1, label, 2));
        return 0;
      });
    });
    lua.lua_setfield(L, mt, key('__newindex'));
    const toString = cls.toString ?? (() => cls.typeName);
    lua.lua_pushcfunction(L, (L1) => {
      const self = this.toObject(L1, 1, cls);
      pushText(L1, self ? toString(self) : cls.typeName);
      return 1;
    });
    lua.lua_setfield(L, mt, key('__tostring'));
    pushText(L, cls.typeName);
    lua.lua_setfield(L, mt, key('__metatable'));
    lua.lua_pop(L, 1);
  }

  /** Pushes the userdata of `obj`; the same object always gives the same userdata. */
  push<T extends object>(cls: LuaClass<T>, obj: T, L: lua_State = this.L): void {
    const ref = this._objectRefs.get(obj);
    if (ref !== undefined) {
      lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, ref);
      return;
    }
    this.register(cls, L);
    const data = lua.lua_newuserdata(L, 0);
    data.obj = obj;
    lauxlib.luaL_setmetatable(L, key(this._classNames.get(cls as unknown as LuaClass<object>)!));
    lua.lua_pushvalue(L, -1);
    this._objectRefs.set(obj, lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX));
  }

  /** The object behind the userdata at `idx` if it is of class `cls`, else null. */
  toObject<T extends object>(L: lua_State, idx: number, cls: LuaClass<T>): T | null {
    const mtName = this._classNames.get(cls as unknown as LuaClass<object>);
    if (!mtName || lua.lua_type(L, idx) !== lua.LUA_TUSERDATA) return null;
    const data = lauxlib.luaL_testudata(L, idx, key(mtName)) as { obj?: T } | null;
    return data?.obj ?? null;
  }

  private _bindMethod<T extends object>(cls: LuaClass<T>, name: string, method: Method<T>): lua_CFunction {
    const label = `${cls.selfName}:${name}`;
    return (L) => {
      const self = this.toObject(L, 1, cls);
      if (!self && cls.dotCalls?.names.includes(name)) {
        const dotLabel = `${cls.selfName}.${name}`;
        return this.protect(L, dotLabel, () => method(cls.dotCalls!.receiver(this), new Args(this, L, dotLabel, 0)));
      }
      if (!self) return raise(L, `${label}: call it with a colon, as ${label}(...) (got ${typeName(L, 1)} as self)`);
      return this.protect(L, label, () => method(self, new Args(this, L, label, 1)));
    };
  }

  /** A plain function (a global such as `test` or `json.encode`): arguments start at 1. */
  fn(label: string, body: (a: Args) => number): lua_CFunction {
    return (L) => this.protect(L, label, () => body(new Args(this, L, label, 0)));
  }

  /**
   * Runs a binding body. A JS exception becomes a Lua error at the binding's caller; a Lua error
   * already unwinding (fengari throws a non-Error object) passes through untouched.
   */
  protect(L: lua_State, label: string, body: () => number): number {
    let message: string;
    let level = 1;
    try {
      return body();
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      if (err instanceof LuaError) {
        message = err.message;
        level = err.level;
        if (err instanceof TestTimeoutError) this.deadline.expired = true;
      } else if (err instanceof RpcError || err instanceof UnitError) {
        message = `${label}: ${err.message}`;
      } else {
        message = `${label}: internal error: ${err.stack ?? err.message}`;
      }
    }
    return raise(L, message, level);
  }

  // Calling Lua.

  /**
   * Calls the function below `nargs` arguments on the stack in protected mode, leaving `nresults`
   * results. On failure the stack holds nothing of the call and the failure is described.
   */
  callProtected(nargs: number, nresults: number): CallFailure | null {
    const L = this.L;
    const base = lua.lua_gettop(L) - nargs;
    lua.lua_pushcfunction(L, this._msgh);
    lua.lua_insert(L, base);
    this._lastFailure = null;
    const status = lua.lua_pcall(L, nargs, nresults, base);
    if (status === lua.LUA_OK) {
      lua.lua_remove(L, base);
      return null;
    }
    const isSkip = this.skipSentinelRef !== 0 && this._isSkipSentinel(-1);
    // `error({code = 1})` says what the table holds, not `table: 0x26`.
    let plainTable = lua.lua_type(L, -1) === lua.LUA_TTABLE;
    if (plainTable && lauxlib.luaL_getmetafield(L, -1, key('__tostring')) !== lua.LUA_TNIL) {
      lua.lua_pop(L, 1); // the __tostring the lookup pushed
      plainTable = false;
    }
    const message = plainTable ? `error object is a table: ${describe(L, -1)}` : this.safeToString(-1);
    lua.lua_settop(L, base - 1);
    const info = this._lastFailure as Omit<CallFailure, 'message' | 'isSkip'> | null;
    return { message, isSkip, location: info?.location, traceback: info?.traceback ?? '' };
  }

  private _isSkipSentinel(idx: number): boolean {
    const L = this.L;
    const abs = lua.lua_absindex(L, idx);
    lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, this.skipSentinelRef);
    const same = lua.lua_rawequal(L, abs, -1);
    lua.lua_pop(L, 1);
    return same;
  }

  /** tostring() of any value, never raising (a failing __tostring gives a placeholder). */
  safeToString(idx: number, L: lua_State = this.L): string {
    const t = lua.lua_type(L, idx);
    if (t === lua.LUA_TSTRING) return getText(L, idx);
    const abs = lua.lua_absindex(L, idx);
    lua.lua_pushcfunction(L, (L1) => {
      lauxlib.luaL_tolstring(L1, 1);
      return 1;
    });
    lua.lua_pushvalue(L, abs);
    if (lua.lua_pcall(L, 1, 1, 0) !== lua.LUA_OK) {
      lua.lua_pop(L, 1);
      return `(error object is a ${typeName(L, abs)} value)`;
    }
    const s = getText(L, -1);
    lua.lua_pop(L, 1);
    return s;
  }

  /**
   * Loads source bytes as a chunk named `@<name>` and leaves the function on the stack; returns
   * the syntax error message instead when it does not compile.
   */
  load(source: Uint8Array, name: string, L: lua_State = this.L): string | null {
    let bytes = source;
    // Like luaL_loadfile: a UTF-8 byte-order mark (editors on Windows add one) is skipped, and a
    // first line starting with '#' is a comment (kept as an empty line).
    if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
    if (bytes[0] === 0x23) {
      const nl = bytes.indexOf(0x0a);
      bytes = nl < 0 ? new Uint8Array(0) : bytes.subarray(nl);
    }
    const status = lauxlib.luaL_loadbufferx(L, bytes, bytes.length, key(`@${name}`), key('t'));
    if (status === lua.LUA_OK) return null;
    const message = getText(L, -1);
    lua.lua_pop(L, 1);
    return message;
  }

  /** Registry helpers for Lua values the TS side keeps (test functions, meta tables). */
  ref(idx: number, L: lua_State = this.L): number {
    lua.lua_pushvalue(L, idx);
    return lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX);
  }

  pushRef(ref: number, L: lua_State = this.L): void {
    lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, ref);
  }

  unref(ref: number): void {
    lauxlib.luaL_unref(this.L, lua.LUA_REGISTRYINDEX, ref);
  }

  /** The display source of the function at `level` (for push_file's relative paths). */
  sourceAt(L: lua_State, level: number): string | null {
    const ar = new lua.lua_Debug();
    if (!lua.lua_getstack(L, level, ar)) return null;
    lua.lua_getinfo(L, key('S'), ar);
    if (!ar.source || ar.source[0] !== 0x40) return null;
    return to_jsstring(ar.source).slice(1);
  }
}
