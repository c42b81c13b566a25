// Console (reference §1.12): the host's view of the guest's serial console. read() streams the
// chardev, read_log() returns everything captured, expect() polls the log, write() types into it.

import { lua } from 'fengari';
import { R, type Args, type LuaClass } from './args.js';
import { LuaError } from './errors.js';
import { showSeconds, translateRpcError, type VmHandle } from './guest.js';
import { indexOf, openConsoleStream, pushStream } from './stream.js';
import { bytesText, key, pushBytes } from './values.js';
import { sleepSync } from './sync-call.js';

const kExpectDefaultMs = 30_000;
const kExpectPollMs = 50;

export class Console {
  constructor(readonly vm: VmHandle) {}

  log(fn: string): Uint8Array {
    try {
      return this.vm.rt.rpc.call('vm.console_log', { vmId: this.vm.vmId }).data;
    } catch (err) {
      throw translateRpcError(this.vm, err, fn);
    }
  }
}

export const ConsoleClass: LuaClass<Console> = {
  typeName: 'Console',
  selfName: 'console',
  toString: (c) => `console(${c.vm.name})`,
  methods: {
    read(c, a) {
      pushStream(a, openConsoleStream(c.vm, a));
      return 1;
    },
    read_log(c, a) {
      pushBytes(a.L, c.log(a.label));
      return 1;
    },
    expect(c, a) {
      const pattern = a.bytes(1, 'pattern');
      if (pattern.length === 0) throw a.error('argument #1 (pattern) must not be empty');
      const timeoutMs = a.isNil(2) ? kExpectDefaultMs : a.read(2, 'timeout', R.duration);
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const log = c.log(a.label);
        if (indexOf(log, pattern) >= 0) {
          pushBytes(a.L, pattern);
          return 1;
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          const tail = bytesText(log.subarray(Math.max(0, log.length - 200)));
          throw new LuaError(`console:expect timed out after ${showSeconds(timeoutMs)} waiting for \`${bytesText(pattern)}\`; console ends with ${JSON.stringify(tail)}`);
        }
        sleepSync(Math.min(kExpectPollMs, left, Math.max(1, a.rt.deadline.remainingMs())));
      }
    },
    write(c, a) {
      const data = a.bytes(1, 'data');
      const opts = consoleWriteOptions(a);
      try {
        a.rt.rpc.call('vm.console_write', { vmId: c.vm.vmId, data, ...(opts ? { timeoutMs: opts } : {}) }, opts ?? Infinity);
      } catch (err) {
        throw translateRpcError(c.vm, err, a.label);
      }
      return 0;
    },
    close() {
      // v1: the console stays captured for the VM's life; streams from read() close on their own.
      return 0;
    },
  },
};

/** `{timeout = ...}` in ms (0 = none → undefined); the legacy `timeout_ms` key is refused. */
function consoleWriteOptions(a: Args): number | undefined {
  if (a.isNil(2)) return undefined;
  a.table(2, 'opts');
  lua.lua_getfield(a.L, a.idx(2), key('timeout_ms'));
  const legacy = lua.lua_type(a.L, -1) !== lua.LUA_TNIL;
  lua.lua_pop(a.L, 1);
  if (legacy) throw a.error('option `timeout_ms` is not accepted here; use `timeout` (seconds or "500ms"; 0 means no limit)');
  const o = a.options(2, 'opts', { timeout: R.duration });
  return o.timeout === undefined || o.timeout === 0 ? undefined : o.timeout;
}
