// The REPL inside a worker thread (issue 14): reads lines from the main thread over the REPL
// channel (src/protocol/repl.ts), compiles them (an expression is printed; an unfinished chunk
// asks for more lines), runs them in an environment table over the globals, and prints the
// results readably. An error is printed and the prompt comes back; Ctrl-C interrupts the running
// chunk (the count hook) or the blocking call it waits in (SyncCaller.interrupted); EOF ends it.

import { receiveMessageOnPort } from 'node:worker_threads';
import { lauxlib, lua, type lua_State } from 'fengari';
import { REPL_INTERRUPT_SLOT, REPL_WAKE_SLOT, type HostToRepl, type ReplChannel, type ReplToHost } from '../protocol/repl.js';
import { describe } from './compare.js';
import type { LuaRuntime } from './runtime.js';
import { getText, key, pushText, repr, textBytes } from './values.js';

/** Instructions between two interrupt checks while a chunk runs. */
const kInterruptCheckInstructions = 1000;
/** The chunk name errors carry: `repl:1: attempt to call a nil value`. */
const kChunkName = 'repl';

export class ReplLoop {
  private readonly _signal: Int32Array;
  private _envRef = 0;

  constructor(
    private readonly _rt: LuaRuntime,
    private readonly _channel: ReplChannel,
  ) {
    this._signal = new Int32Array(_channel.signalBuffer);
  }

  write(text: string, stream: 'stdout' | 'stderr' = 'stdout'): void {
    this._post({ type: 'write', stream, text });
  }

  /**
   * The environment chunks run in: a fresh table whose misses fall through to the globals, with
   * `bindings` (name → pushes the value) set in it and `print` writing to the terminal.
   */
  makeEnv(bindings: Map<string, (L: lua_State) => void> = new Map()): void {
    const L = this._rt.L;
    lua.lua_createtable(L, 0, bindings.size + 1);
    for (const [name, push] of bindings) {
      push(L);
      lua.lua_setfield(L, -2, key(name));
    }
    lua.lua_pushcfunction(L, (L1) => {
      const n = lua.lua_gettop(L1);
      const parts: string[] = [];
      for (let i = 1; i <= n; i++) parts.push(this._rt.safeToString(i, L1));
      this.write(`${parts.join('\t')}\n`);
      return 0;
    });
    lua.lua_setfield(L, -2, key('print'));
    lua.lua_createtable(L, 0, 1);
    lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, lua.LUA_RIDX_GLOBALS);
    lua.lua_setfield(L, -2, key('__index'));
    lua.lua_setmetatable(L, -2);
    if (this._envRef !== 0) this._rt.unref(this._envRef);
    this._envRef = this._rt.ref(-1);
    lua.lua_pop(L, 1);
  }

  /** Runs `source` once in the environment; returns the error message, or null. */
  runSetup(source: string): string | null {
    if (this._envRef === 0) this.makeEnv();
    const error = this._load(source, 'setup');
    if (error !== null) return error;
    const failure = this._call(0);
    return failure;
  }

  /** Prompts until EOF. Every chunk's error is printed; nothing escapes. */
  run(): void {
    if (this._envRef === 0) this.makeEnv();
    for (;;) {
      const chunk = this._readChunk();
      if (chunk === null) break;
      if (chunk.trim() === '') continue;
      const failure = this._evaluate(chunk);
      if (failure !== null) this.write(`${failure}\n`, 'stderr');
    }
    this._post({ type: 'end' });
  }

  /** Lines until they form a chunk that compiles (or is wrong for another reason than its end). */
  private _readChunk(): string | null {
    let text = '';
    for (;;) {
      const line = this._readLine(text === '' ? '> ' : '>> ');
      if (line === null) return text === '' ? null : text;
      text = text === '' ? line : `${text}\n${line}`;
      if (!this._unfinished(text)) return text;
    }
  }

  private _unfinished(text: string): boolean {
    if (this._compiles(`return ${text}`)) return false;
    const error = this._compileError(text);
    // Lua's syntax errors for a chunk cut short end at <eof>: `'end' expected near <eof>`.
    return error !== null && /<eof>'?$/.test(error);
  }

  private _compiles(text: string): boolean {
    return this._compileError(text) === null;
  }

  private _compileError(text: string): string | null {
    const error = this._rt.load(textBytes(text), kChunkName);
    if (error === null) lua.lua_pop(this._rt.L, 1);
    return error;
  }

  /** Compiles as an expression if it is one (its values are printed), else as statements. */
  private _evaluate(chunk: string): string | null {
    const error = this._load(`return ${chunk}`, kChunkName) === null ? null : this._load(chunk, kChunkName);
    if (error !== null) return error;
    return this._call(lua.LUA_MULTRET);
  }

  /** Loads `source` and sets its _ENV to the environment; the function is left on the stack. */
  private _load(source: string, name: string): string | null {
    const L = this._rt.L;
    const error = this._rt.load(textBytes(source), name);
    if (error !== null) return error;
    this._rt.pushRef(this._envRef);
    lua.lua_setupvalue(L, -2, 1);
    return null;
  }

  /** Calls the loaded function with the interrupt hook on; prints its results. */
  private _call(nresults: number): string | null {
    const rt = this._rt;
    const L = rt.L;
    const base = lua.lua_gettop(L) - 1;
    Atomics.store(this._signal, REPL_INTERRUPT_SLOT, 0);
    lua.lua_sethook(L, (L1) => {
      if (Atomics.exchange(this._signal, REPL_INTERRUPT_SLOT, 0) === 0) return;
      pushText(L1, 'interrupted (Ctrl-C)');
      lua.lua_error(L1);
    }, lua.LUA_MASKCOUNT, kInterruptCheckInstructions);
    let failure;
    try {
      failure = rt.callProtected(0, nresults);
    } finally {
      rt.resetHook();
      Atomics.store(this._signal, REPL_INTERRUPT_SLOT, 0);
    }
    if (failure) return failure.message;
    const shown: string[] = [];
    for (let i = base + 1; i <= lua.lua_gettop(L); i++) shown.push(show(L, i));
    lua.lua_settop(L, base);
    if (shown.length > 0) this.write(`${shown.join('\t')}\n`);
    return null;
  }

  /** One line from the terminal, or null at EOF. */
  private _readLine(prompt: string): string | null {
    let seen = Atomics.load(this._signal, REPL_WAKE_SLOT);
    this._post({ type: 'read', prompt });
    for (;;) {
      for (let m = receiveMessageOnPort(this._channel.port); m; m = receiveMessageOnPort(this._channel.port)) {
        const message = m.message as HostToRepl;
        if (message.type === 'eof') return null;
        return message.text;
      }
      Atomics.wait(this._signal, REPL_WAKE_SLOT, seen, 1000);
      seen = Atomics.load(this._signal, REPL_WAKE_SLOT);
    }
  }

  private _post(message: ReplToHost): void {
    this._channel.port.postMessage(message);
  }
}

/** RunResult's fields in the order a reader wants them. */
const kRunResultFields = ['exit_code', 'status', 'signal', 'stdout', 'stderr', 'timed_out'];

/** Strings as they are (like the Lua interpreter); tables and RunResults expanded; the rest tostring'd. */
function show(L: lua_State, idx: number): string {
  if (lua.lua_type(L, idx) === lua.LUA_TSTRING) return getText(L, idx);
  if (lua.lua_type(L, idx) === lua.LUA_TTABLE && lauxlib.luaL_getmetafield(L, idx, key('__name')) !== lua.LUA_TNIL) {
    const name = getText(L, -1);
    lua.lua_pop(L, 1);
    if (name === 'RunResult') {
      const fields: string[] = [];
      for (const field of kRunResultFields) {
        if (lua.lua_getfield(L, idx, key(field)) !== lua.LUA_TNIL) fields.push(`${field} = ${repr(L, -1, 2000)}`);
        lua.lua_pop(L, 1);
      }
      return `RunResult{${fields.join(', ')}}`;
    }
  }
  return describe(L, idx);
}

/** The interrupt check of a REPL channel, for SyncCaller.interrupted. */
export function replInterrupted(channel: ReplChannel): () => boolean {
  const signal = new Int32Array(channel.signalBuffer);
  return () => Atomics.load(signal, REPL_INTERRUPT_SLOT) !== 0;
}
