// The VM side of seed 002. A VM made by provium.create or provium.fixture is marked `legacy`; every
// VM answers the legacy methods whose names the current API does not use (exec, json, dmesg,
// mount_vfs, wait_until, kill, spawn, syscall_buf…, background…), and for the names both APIs use
// (boot, shutdown, syscall, ioctl) the mark picks the shape: withLegacyVm builds that dispatch
// into VmClass.
//
// Legacy shapes:
//   boot(opts)   `memory`, `cpus`, `files` as {[guest path] = host path}, `disks` as
//                {path, format = "raw" | "qcow2", readonly}; the current forms of files and disks (and
//                the other current keys) are accepted too.
//   shutdown()   graceful: the ACPI power button, up to 10 s, then QEMU is stopped.
//   kill()       QEMU is killed at once.
// The legacy runner ran each test where the file declared it; here tests run after the top level.
// So a file-scope shutdown or kill that follows a test() declaration waits until the tests have
// run (the file's teardown stops the VM); a later boot() does it first.

import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { lua } from 'fengari';
import type { BootOptions, DiskSpec, RpcReply } from '../../protocol/rpc.js';
import { R, readOptions, type Args, type BindingRuntime, type Method, type Reader } from '../args.js';
import { kBootSpec, readBootOptions, readDiskSpec } from '../boot-options.js';
import type { VmHandle } from '../guest.js';
import { eachPair, getText, isSequence, key, rawLen } from '../values.js';
import { kLegacyTargetMethods } from './target.js';
import { legacySpawnMethod } from './worker.js';

/** What the legacy methods need of a VM (vm.ts's Vm). */
export interface LegacyVm extends VmHandle {
  /** Made by provium.create / provium.fixture: the shared names answer in the legacy shapes. */
  legacy: boolean;
  readonly rt: BindingRuntime;
  readonly released: boolean;
  boot(fn: string, opts: BootOptions): void;
  shutdown(fn: string): void;
  lifecycle<K extends 'vm.power_button' | 'vm.kill'>(fn: string, op: K): RpcReply<K>;
}

/** Legacy VMs whose file-scope shutdown() or kill() waits for the end of the file (or the next boot). */
const kStopPutOff = new WeakMap<LegacyVm, 'shutdown' | 'kill'>();

type BootFile = NonNullable<BootOptions['files']>[number];

/** A host path of the boot options: relative to the test file's directory. */
function hostPath(a: Args, p: string): string {
  return path.resolve(path.dirname(a.rt.file), p);
}

/** `files`: {[guest path] = host path} (seed 002), or the current array of {path, content, mode}. */
const readFiles: Reader<BootFile[]> = (a, idx, what) => {
  const L = a.L;
  if (lua.lua_type(L, idx) === lua.LUA_TTABLE && rawLen(L, idx) > 0 && isSequence(L, idx)) return kBootSpec.files(a, idx, what);
  if (lua.lua_type(L, idx) !== lua.LUA_TTABLE) throw a.error(`${what} must be a table {["/guest/path"] = "host/path"}, got ${a.got(idx)}`);
  const files: BootFile[] = [];
  eachPair(L, idx, () => {
    if (lua.lua_type(L, -2) !== lua.LUA_TSTRING) throw a.error(`${what}: keys are guest paths (strings), got ${a.got(-2)}`);
    const guest = getText(L, -2);
    if (!guest.startsWith('/')) throw a.error(`${what}: the guest path ${JSON.stringify(guest)} must be absolute`);
    const host = hostPath(a, R.string(a, lua.lua_absindex(L, -1), `${what}[${JSON.stringify(guest)}]`));
    try {
      files.push({ path: guest, content: new Uint8Array(readFileSync(host)), mode: statSync(host).mode & 0o7777 });
    } catch (err) {
      throw a.error(`${what}: cannot read host file ${host} for ${guest}: ${(err as Error).message}`);
    }
  });
  return files;
};

const kLegacyDiskSpec = { path: R.string, format: R.string, readonly: R.bool };

/** One disk: {path, format, readonly} (seed 002; its id is given by position), or the current spec. */
const readDisk: Reader<DiskSpec> = (a, idx, what) => {
  lua.lua_getfield(a.L, idx, key('path'));
  const legacy = lua.lua_type(a.L, -1) !== lua.LUA_TNIL;
  lua.lua_pop(a.L, 1);
  if (!legacy) return readDiskSpec(a, idx, what);
  const d = readOptions(a, idx, what, kLegacyDiskSpec);
  // The broker reads the format from the image itself; these are the ones it serves.
  if (d.format !== undefined && d.format !== 'raw' && d.format !== 'qcow2') {
    throw a.error(`${what}: format ${JSON.stringify(d.format)} is not supported, only "raw" and "qcow2"; convert the image with \`qemu-img convert -O raw\``);
  }
  return { id: '', image: hostPath(a, d.path!), ...(d.readonly !== undefined ? { readonly: d.readonly } : {}) };
};

/** `disks`: legacy disks get the ids disk0, disk1, … by position (the guest's /dev/vda, /dev/vdb, …). */
const readDisks: Reader<DiskSpec[]> = (a, idx, what) => {
  const disks = R.array(readDisk, 'disk table')(a, idx, what);
  const taken = new Set(disks.map((d) => d.id));
  return disks.map((d, i) => {
    if (d.id !== '') return d;
    let id = `disk${i}`;
    for (let n = 2; taken.has(id); n++) id = `disk${i}_${n}`;
    taken.add(id);
    return { ...d, id };
  });
};

const kLegacyBootSpec: typeof kBootSpec = { ...kBootSpec, files: readFiles, disks: readDisks };

function isDown(vm: LegacyVm): boolean {
  return vm.released || vm.state === 'shutdown' || vm.state === 'created';
}

/** Shutdown: the power button, then QEMU is stopped if the guest has not powered off within 10 s. Kill: at once. */
function stop(vm: LegacyVm, fn: string, how: 'shutdown' | 'kill'): void {
  kStopPutOff.delete(vm);
  if (isDown(vm)) return;
  if (how === 'kill') vm.lifecycle(fn, 'vm.kill');
  else if (vm.state === 'booted') vm.lifecycle(fn, 'vm.power_button');
  else vm.shutdown(fn);
}

/** Stops `vm` now, or at file scope after a test() declaration, once the tests have run. */
function stopOrPutOff(vm: LegacyVm, a: Args, how: 'shutdown' | 'kill'): void {
  if (isDown(vm)) return;
  if (a.rt.currentTest === null && (a.rt.fileConfig.declaredTests ?? 0) > 0) {
    if (kStopPutOff.get(vm) !== 'kill') kStopPutOff.set(vm, how);
  } else {
    stop(vm, a.label, how);
  }
}

/** Legacy shutdown of one VM (vm:shutdown, provium.shutdown_all). */
export function legacyShutdown(vm: LegacyVm, a: Args): void {
  stopOrPutOff(vm, a, 'shutdown');
}

/** Methods only a VM has (not a worker), in their legacy shapes. */
const kLegacyVmOnly: Record<string, Method<LegacyVm>> = {
  boot(vm, a) {
    const opts = readBootOptions(a, 1, 'opts', kLegacyBootSpec);
    a.noMoreThan(1, `${a.label}(opts?)`);
    const putOff = kStopPutOff.get(vm);
    if (putOff) stop(vm, a.label, putOff);
    vm.boot(a.label, opts);
    lua.lua_pushvalue(a.L, 1);
    return 1;
  },
  shutdown(vm, a) {
    legacyShutdown(vm, a);
    return 0;
  },
  kill(vm, a) {
    stopOrPutOff(vm, a, 'kill');
    return 0;
  },
  spawn: legacySpawnMethod,
};

/** Names both APIs have with one shape: the current method serves both. */
const kSameInBoth = new Set(['read_file', 'write_file']);

/**
 * `current` with the legacy methods added: a name only the legacy API has is added as is; a name
 * both have answers in the legacy shape for a legacy VM and in the current one otherwise.
 */
export function withLegacyVm<T extends LegacyVm>(current: Record<string, Method<T>>): Record<string, Method<T>> {
  const out: Record<string, Method<T>> = { ...current };
  for (const [name, legacy] of Object.entries({ ...kLegacyTargetMethods, ...kLegacyVmOnly })) {
    const now: Method<T> | undefined = Object.prototype.hasOwnProperty.call(current, name) ? current[name] : undefined;
    if (now && kSameInBoth.has(name)) continue;
    out[name] = now ? (vm, a) => (vm.legacy ? legacy(vm, a) : now(vm, a)) : legacy;
  }
  return out;
}
