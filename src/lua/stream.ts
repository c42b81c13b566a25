// Streams (reference §1.11): Tail (tail_file, fd_stream, file:tail_stream, proc stdout/stderr),
// ConsoleStream (console:read) and Capture (bridge:capture, nic:capture: pcap bytes) share next /
// read_until / expect / drain / close / eof / creation_site. The broker buffers frames;
// `stream.read` returns one chunk or nothing within a timeout. Matching is plain bytes; bytes
// after a match stay pending for the next call.

import { lua } from 'fengari';
import type { AgentStreamOp, AgentStreamOps } from '../protocol/agent.js';
import type { RpcArgs } from '../protocol/rpc.js';
import { RpcError } from '../protocol/rpc.js';
import type { SourceLocation } from '../protocol/task.js';
import { R, type Args, type BindingRuntime, type LuaClass } from './args.js';
import { findFrame, LuaError } from './errors.js';
import { showSeconds, translateRpcError, type AgentTarget, type VmHandle } from './guest.js';
import type { ScopedResource } from './scope.js';
import { bytesText, pushBytes, pushText, setField } from './values.js';

export type StreamKind = 'tail_file' | 'fd_stream' | 'proc_stdout_stream' | 'proc_stderr_stream' | 'console' | 'capture';

const kDefaultTimeoutMs = 10_000;
const kDefaultDrainMs = 500;
/** How much of the pending bytes a timeout message quotes. */
const kQuoteBytes = 200;

export class Stream implements ScopedResource {
  readonly resourceKind = 'stream' as const;
  private _pending: Uint8Array = new Uint8Array(0);
  private _transportEof = false;
  private _closed = false;

  constructor(
    readonly rt: BindingRuntime,
    /** The guest it reads from; null for a bridge capture, which lives as long as its bridge. */
    readonly vm: VmHandle | null,
    readonly streamId: number,
    readonly kind: StreamKind,
    /** The path, fd or command the stream follows. */
    readonly detail: string,
    readonly site: SourceLocation | null,
  ) {}

  get closed(): boolean {
    return this._closed;
  }

  isClosed(): boolean {
    return this._closed;
  }

  describe(): string {
    const where = this.site ? ` (opened at ${this.site.file}:${this.site.line})` : '';
    return `${this.kind} ${this.detail}${where}`;
  }

  forget(): void {
    this._closed = true;
    this._pending = new Uint8Array(0);
    this.vm?.openStreams.delete(this);
  }

  close(): void {
    if (this._closed) return;
    this.forget();
    try {
      this.rt.rpc.call('stream.close', { streamId: this.streamId });
    } catch (err) {
      // A dead VM took its streams with it.
      if (!(err instanceof RpcError && err.code === 'vm_dead')) throw err;
    }
  }

  private get _closedWord(): string {
    return this.kind === 'console' ? 'console closed' : 'stream closed';
  }

  /** One read from the broker, appended to pending. Returns false when nothing arrived. */
  private _fill(fn: string, timeoutMs: number): boolean {
    if (this._transportEof) return false;
    let chunk;
    try {
      chunk = this.rt.rpc.call('stream.read', { streamId: this.streamId, timeoutMs: Math.max(0, Math.ceil(timeoutMs)) }, timeoutMs);
    } catch (err) {
      if (!this.vm) throw new LuaError(`${fn}: ${this.detail}: ${(err as Error).message}`);
      throw translateRpcError(this.vm, err, fn, this.detail);
    }
    if (chunk.eof) this._transportEof = true;
    if (!chunk.data || chunk.data.length === 0) return false;
    this._pending = concat(this._pending, chunk.data);
    return true;
  }

  /** The next chunk (pending bytes first), or null on timeout, EOF or after close. */
  next(fn: string, timeoutMs: number): Uint8Array | null {
    if (this._closed) return null;
    if (this._pending.length === 0) this._fill(fn, timeoutMs);
    if (this._pending.length === 0) return null;
    const out = this._pending;
    this._pending = new Uint8Array(0);
    return out;
  }

  /** Everything up to and including `pattern`; the rest stays pending. */
  readUntil(fn: string, op: string, pattern: Uint8Array, timeoutMs: number): Uint8Array {
    if (this._closed) throw new LuaError(`${fn}: ${this._closedWord}`);
    const deadline = Date.now() + timeoutMs;
    let searchFrom = 0;
    for (;;) {
      const i = indexOf(this._pending, pattern, searchFrom);
      if (i >= 0) {
        const end = i + pattern.length;
        const out = this._pending.slice(0, end);
        this._pending = this._pending.slice(end);
        return out;
      }
      searchFrom = Math.max(0, this._pending.length - pattern.length + 1);
      if (this._transportEof) {
        throw new LuaError(`stream EOF: ${op} reached the end of ${this.kind} ${this.detail} without \`${bytesText(pattern)}\`${this._quotePending()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new LuaError(`${op} timed out waiting for \`${bytesText(pattern)}\` after ${showSeconds(timeoutMs)}${this._quotePending()}`);
      }
      this._fill(fn, left);
    }
  }

  private _quotePending(): string {
    if (this._pending.length === 0) return ' (nothing received)';
    const tail = this._pending.length > kQuoteBytes ? this._pending.subarray(this._pending.length - kQuoteBytes) : this._pending;
    return `; pending ${this._pending.length} bytes, ending ${JSON.stringify(bytesText(tail))}`;
  }

  /** Chunks until the stream stays quiet for `quietMs` (pending bytes first). */
  drain(fn: string, quietMs: number): Uint8Array[] {
    if (this._closed) return [];
    const chunks: Uint8Array[] = [];
    for (;;) {
      if (this._pending.length > 0) {
        chunks.push(this._pending);
        this._pending = new Uint8Array(0);
      }
      if (!this._fill(fn, quietMs)) return chunks;
    }
  }

  eof(fn: string): boolean {
    if (this._closed) return true;
    if (this._pending.length === 0 && !this._transportEof) this._fill(fn, 0);
    return this._transportEof && this._pending.length === 0;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b.slice();
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Byte-wise search (patterns are short; Buffer.indexOf does the work). */
export function indexOf(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  if (needle.length === 0) return 0;
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).indexOf(
    Buffer.from(needle.buffer, needle.byteOffset, needle.byteLength),
    from,
  );
}

/** The first frame in a *.test.lua or *.fixture.lua file: where a stream was opened. */
function creationSite(a: Args): SourceLocation | null {
  return findFrame(a.L, (f) => f.endsWith('.test.lua') || f.endsWith('.fixture.lua'), 1);
}

/** Opens an agent stream (tail_file, fd_stream, proc_stream) and registers it with the scope. */
export function openAgentStream<K extends AgentStreamOp>(
  target: AgentTarget,
  a: Args,
  op: K,
  data: Omit<AgentStreamOps[K], 'window'>,
  kind: StreamKind,
  detail: string,
): Stream {
  target.ensureUsable(a.label);
  const args = { vmId: target.vm.vmId, op, data, ...(target.workerId !== undefined ? { worker: target.workerId } : {}) };
  let streamId: number;
  try {
    streamId = a.rt.rpc.call('stream.open', args as RpcArgs<'stream.open'>).streamId;
  } catch (err) {
    throw translateRpcError(target.vm, err, a.label, detail);
  }
  return register(a, new Stream(a.rt, target.vm, streamId, kind, detail, creationSite(a)));
}

/** Opens the VM's serial console as a stream. */
export function openConsoleStream(vm: VmHandle, a: Args): Stream {
  let streamId: number;
  try {
    streamId = a.rt.rpc.call('stream.open', { vmId: vm.vmId, op: 'console' }).streamId;
  } catch (err) {
    throw translateRpcError(vm, err, a.label);
  }
  return register(a, new Stream(a.rt, vm, streamId, 'console', `of ${vm.label}`, creationSite(a)));
}

/**
 * Opens a packet capture of a bridge (or of `vm`'s NIC on it) as a stream of pcap bytes; with
 * `file`, the switch also writes a pcap file there. A NIC capture is not the VM's own stream:
 * it belongs to the bridge and ends with it.
 */
export function openCaptureStream(a: Args, bridge: { bridgeId: number; label: string }, vm: VmHandle | null, file: string | undefined): Stream {
  let streamId: number;
  try {
    streamId = a.rt.rpc.call('capture.open', {
      bridgeId: bridge.bridgeId,
      ...(vm ? { vmId: vm.vmId } : {}),
      ...(file !== undefined ? { file } : {}),
    }).streamId;
  } catch (err) {
    throw a.error((err as Error).message);
  }
  const detail = `of ${vm ? `${vm.label} on ` : ''}${bridge.label}`;
  return register(a, new Stream(a.rt, null, streamId, 'capture', detail, creationSite(a)));
}

function register(a: Args, stream: Stream): Stream {
  a.rt.currentScope.add(stream);
  stream.vm?.openStreams.add(stream);
  return stream;
}

export function pushStream(a: Args, stream: Stream): void {
  const cls = stream.kind === 'console' ? ConsoleStreamClass : stream.kind === 'capture' ? CaptureClass : TailClass;
  a.rt.push(cls, stream, a.L);
}

function timeoutArg(a: Args, n: number, defaultMs: number): number {
  return a.isNil(n) ? defaultMs : a.read(n, 'timeout', R.duration);
}

function patternArg(a: Args, n: number): Uint8Array {
  const p = a.bytes(n, 'pattern');
  if (p.length === 0) throw a.error('argument #1 (pattern) must not be empty');
  return p;
}

const kStreamMethods: LuaClass<Stream>['methods'] = {
  next(s, a) {
    const chunk = s.next(a.label, timeoutArg(a, 1, kDefaultTimeoutMs));
    if (chunk) pushBytes(a.L, chunk);
    else lua.lua_pushnil(a.L);
    return 1;
  },
  read_until(s, a) {
    pushBytes(a.L, s.readUntil(a.label, 'read_until', patternArg(a, 1), timeoutArg(a, 2, kDefaultTimeoutMs)));
    return 1;
  },
  expect(s, a) {
    const pattern = patternArg(a, 1);
    s.readUntil(a.label, 'expect', pattern, timeoutArg(a, 2, kDefaultTimeoutMs));
    pushBytes(a.L, pattern);
    return 1;
  },
  drain(s, a) {
    const chunks = s.drain(a.label, timeoutArg(a, 1, kDefaultDrainMs));
    lua.lua_createtable(a.L, chunks.length, 0);
    chunks.forEach((c, i) => {
      pushBytes(a.L, c);
      lua.lua_rawseti(a.L, -2, i + 1);
    });
    return 1;
  },
  close(s) {
    s.close();
    return 0;
  },
  eof(s, a) {
    lua.lua_pushboolean(a.L, s.eof(a.label));
    return 1;
  },
  creation_site(s, a) {
    if (!s.site) {
      lua.lua_pushnil(a.L);
      return 1;
    }
    const site = s.site;
    lua.lua_createtable(a.L, 0, 2);
    setField(a.L, 'file', () => pushText(a.L, site.file));
    setField(a.L, 'line', () => lua.lua_pushinteger(a.L, site.line));
    return 1;
  },
};

const toString = (s: Stream): string => `${s.kind === 'console' ? 'ConsoleStream' : 'Tail'}(${s.kind} ${s.detail}${s.closed ? ' closed' : ''})`;

export const TailClass: LuaClass<Stream> = { typeName: 'Tail', selfName: 'stream', methods: kStreamMethods, toString };
export const ConsoleStreamClass: LuaClass<Stream> = { typeName: 'ConsoleStream', selfName: 'stream', methods: kStreamMethods, toString };
export const CaptureClass: LuaClass<Stream> = { typeName: 'Capture', selfName: 'capture', methods: kStreamMethods, toString };
