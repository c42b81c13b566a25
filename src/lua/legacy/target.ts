// The legacy (seed 002) methods every guest target has, a VM made by provium.create and a worker
// from vm:spawn alike: exec, json, read_file, write_file, dmesg, mount_vfs, wait_until, the
// syscall and ioctl shapes (syscalls.ts) and background jobs (jobs.ts). Each maps onto the
// current bindings: exec onto run's agent call, wait_until onto the wait_until global.
//
// exec returns `{ok, exit_code, stdout, stderr, status}` (plus `signal` when signalled); stdout
// and stderr are Lua strings, which strings.ts gives `.value`, `contains`, `starts_with`, `trim`.

import { lua } from 'fengari';
import type { Captured, ExitInfo } from '../../protocol/agent.js';
import type { Args } from '../args.js';
import { LuaError } from '../errors.js';
import { execCommand } from '../exec.js';
import { readFileMethod, writeFileMethod } from '../files.js';
import { agentCall, type AgentTarget } from '../guest.js';
import { pushDecoded } from '../json.js';
import { describeExit, exitCodeOf } from '../run-result.js';
import { bytesText, pushBytes, pushText, quoteBytes, setField } from '../values.js';
import { waitUntil, type WaitDefaults } from '../wait.js';
import { kLegacyJobMethods } from './jobs.js';
import { kLegacySyscallMethods } from './syscalls.js';

/** vm:wait_until's defaults (seed 002): 10 s, polled every 0.5 s. */
const kLegacyWait: WaitDefaults = { timeoutMs: 10_000, intervalMs: 500 };
/** How much of a command's output an error quotes. */
const kQuoteBytes = 500;

/** Idempotent: each filesystem is mounted only where /proc/mounts does not show it yet. */
const kMountVfsScript = `set -e
[ -r /proc/mounts ] || { mkdir -p /proc; mount -t proc proc /proc; }
for m in "proc /proc" "sysfs /sys" "devtmpfs /dev" "securityfs /sys/kernel/security"; do
  set -- $m
  if ! grep -qs "^[^ ]* $2 $1 " /proc/mounts; then
    mkdir -p "$2"
    mount -t "$1" "$1" "$2" || { echo "mounting $1 on $2 failed" >&2; exit 1; }
  fi
done`;

/** dmesg, through grep when a pattern is given; "no line matched" is an empty result, not a failure. */
const kDmesgGrepScript = 'd=$(dmesg) || exit 2; printf "%s\\n" "$d" | grep -e "$1" || [ $? -eq 1 ]';

type Result = ExitInfo & Captured;

function isOk(r: ExitInfo): boolean {
  return r.status === 'exited' && r.code === 0;
}

function quote(bytes: Uint8Array): string {
  if (bytes.length === 0) return '(empty)';
  return bytes.length > kQuoteBytes ? `${quoteBytes(bytes.subarray(0, kQuoteBytes))}…(${bytes.length} bytes)` : quoteBytes(bytes);
}

function failure(a: Args, what: string, r: Result): LuaError {
  return a.error(`${what} failed: ${describeExit(r.status, exitCodeOf(r), r.signal)}; stderr: ${quote(r.stderr)}; stdout: ${quote(r.stdout)}`);
}

/** Runs a fixed argv in the guest (no shell parsing of user text). */
function runArgv(target: AgentTarget, a: Args, argv: string[], display: string): Result {
  return agentCall(target, a.label, 'exec', { argv, env: {}, env_clear: false, stdin: new Uint8Array(0) }, { context: display });
}

export const kLegacyTargetMethods: Record<string, (target: AgentTarget, a: Args) => number> = {
  /** exec(cmd) → {ok, exit_code, stdout, stderr}; run's call shapes are accepted too. */
  exec(target, a) {
    const { result: r } = execCommand(target, a);
    const L = a.L;
    lua.lua_createtable(L, 0, 6);
    setField(L, 'ok', () => lua.lua_pushboolean(L, isOk(r)));
    setField(L, 'exit_code', () => lua.lua_pushinteger(L, exitCodeOf(r)));
    setField(L, 'stdout', () => pushBytes(L, r.stdout));
    setField(L, 'stderr', () => pushBytes(L, r.stderr));
    setField(L, 'status', () => pushText(L, r.status));
    if (r.status === 'signalled') setField(L, 'signal', () => lua.lua_pushinteger(L, r.signal));
    return 1;
  },
  /** json(cmd) → the command's stdout decoded; raises when it fails or prints something else. */
  json(target, a) {
    const { result: r, display } = execCommand(target, a);
    if (!isOk(r)) throw failure(a, `command ${display}`, r);
    const top = lua.lua_gettop(a.L);
    try {
      pushDecoded(a.L, r.stdout, a.label);
    } catch (err) {
      if (!(err instanceof LuaError)) throw err;
      lua.lua_settop(a.L, top);
      throw a.error(`the output of ${display} is not JSON (${err.message}); stdout: ${quote(r.stdout)}`);
    }
    return 1;
  },
  read_file: readFileMethod,
  write_file: writeFileMethod,
  /** dmesg(pattern?) → the kernel log, or its lines matching the grep pattern. */
  dmesg(target, a) {
    const pattern = a.isNil(1) ? undefined : a.string(1, 'pattern');
    const argv = pattern === undefined ? ['dmesg'] : ['/bin/sh', '-c', kDmesgGrepScript, 'sh', pattern];
    const display = pattern === undefined ? '`dmesg`' : `\`dmesg | grep -e ${JSON.stringify(pattern)}\``;
    const r = runArgv(target, a, argv, display);
    if (!isOk(r)) throw failure(a, display, r);
    pushBytes(a.L, r.stdout);
    return 1;
  },
  /** mount_vfs(): proc, sysfs, devtmpfs and securityfs, each unless already mounted. */
  mount_vfs(target, a) {
    const r = runArgv(target, a, ['/bin/sh', '-c', kMountVfsScript], 'mount_vfs');
    if (!isOk(r)) {
      const why = bytesText(r.stderr).trim() || describeExit(r.status, exitCodeOf(r), r.signal);
      const hint = why.includes('securityfs') ? ' (the guest kernel needs CONFIG_SECURITYFS=y)' : '';
      throw a.error(`${target.label}: ${why}${hint}`);
    }
    return 0;
  },
  /** wait_until(fn, {timeout = 10, interval = 0.5, desc}) → fn's first truthy value. */
  wait_until(_target, a) {
    return waitUntil(a, 1, kLegacyWait);
  },
  ...kLegacySyscallMethods,
  ...kLegacyJobMethods,
};
