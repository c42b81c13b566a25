// File (reference §1.10): an open file descriptor in the guest (the agent's handle is the fd in
// the serving process). close() is idempotent; afterwards every call raises `file is closed` and
// fd() returns 0.

import { lua } from 'fengari';
import { R, type LuaClass } from './args.js';
import { LuaError } from './errors.js';
import { agentCall, type AgentTarget, type VmHandle } from './guest.js';
import type { ScopedResource } from './scope.js';
import { usable } from './process.js';
import { openAgentStream, pushStream } from './stream.js';
import { pushBytes, pushInt64, wireInt64 } from './values.js';

/** read_all's chunk size, and read()'s default. */
const kChunkBytes = 64 * 1024;
/** The agent caps one read at 16 MiB. */
const kMaxReadBytes = 16 * 1024 * 1024;

export class GuestFile implements ScopedResource {
  readonly resourceKind = 'file' as const;
  private _closed = false;

  constructor(
    readonly target: AgentTarget,
    readonly handle: number,
    readonly path: string,
  ) {
    target.vm.openFiles.add(this);
  }

  get vm(): VmHandle {
    return this.target.vm;
  }

  isClosed(): boolean {
    return this._closed;
  }

  describe(): string {
    return `file ${this.path} (fd ${this.handle})`;
  }

  forget(): void {
    this._closed = true;
    this.vm.openFiles.delete(this);
  }

  close(): void {
    if (this._closed) return;
    this.forget();
    // A file opened through a worker that is gone went with it.
    if (!usable(this.target)) return;
    agentCall(this.target, 'file:close', 'close', { handle: this.handle }, { context: this.path });
  }

  /** Throws `file is closed` once closed. */
  check(fn: string): void {
    if (this._closed) throw new LuaError(`${fn}: file is closed (${this.path})`);
  }

  read(fn: string, len: number): Uint8Array {
    return agentCall(this.target, fn, 'read', { handle: this.handle, len }, { context: this.path }).data;
  }
}

export const FileClass: LuaClass<GuestFile> = {
  typeName: 'File',
  selfName: 'file',
  toString: (f) => `file(${f.path} fd=${f.isClosed() ? 'closed' : f.handle})`,
  methods: {
    read(f, a) {
      f.check(a.label);
      const n = a.isNil(1) ? kChunkBytes : a.read(1, 'n', R.int(0, kMaxReadBytes));
      pushBytes(a.L, n === 0 ? new Uint8Array(0) : f.read(a.label, n));
      return 1;
    },
    read_all(f, a) {
      f.check(a.label);
      const chunks: Uint8Array[] = [];
      for (;;) {
        const chunk = f.read(a.label, kChunkBytes);
        if (chunk.length === 0) break;
        chunks.push(chunk);
      }
      pushBytes(a.L, Buffer.concat(chunks));
      return 1;
    },
    write(f, a) {
      f.check(a.label);
      const data = a.bytes(1, 'data');
      const reply = agentCall(f.target, a.label, 'write', { handle: f.handle, data }, { context: f.path });
      pushInt64(a.L, reply.written);
      return 1;
    },
    seek(f, a) {
      f.check(a.label);
      const offset = a.read(1, 'offset', R.int64('signed'));
      const whence = a.isNil(2) ? 'set' : a.string(2, 'whence');
      if (whence !== 'set' && whence !== 'cur' && whence !== 'end') {
        throw a.error(`argument #2 (whence) must be "set", "cur" or "end", got ${JSON.stringify(whence)}`);
      }
      const reply = agentCall(f.target, a.label, 'seek', { handle: f.handle, offset: wireInt64(offset), whence }, { context: f.path });
      pushInt64(a.L, reply.offset);
      return 1;
    },
    tell(f, a) {
      f.check(a.label);
      const reply = agentCall(f.target, a.label, 'seek', { handle: f.handle, offset: 0, whence: 'cur' }, { context: f.path });
      pushInt64(a.L, reply.offset);
      return 1;
    },
    close(f) {
      f.close();
      return 0;
    },
    fd(f, a) {
      lua.lua_pushinteger(a.L, f.isClosed() ? 0 : f.handle);
      return 1;
    },
    tail_stream(f, a) {
      f.check(a.label);
      pushStream(a, openAgentStream(f.target, a, 'fd_stream', { handle: f.handle }, 'fd_stream', f.path));
      return 1;
    },
  },
};
