// The type definitions `provium lsp-setup` writes for lua-language-server (issue 14 item 4):
// `---@class`/`---@field`/`---@param`/`---@return` annotations of the whole test API, current
// and legacy. Every class's methods come from the bindings themselves (src/lua's LuaClass
// tables), so a new method is never missing; the signatures below make the common ones precise,
// and every option table is a class so its keys complete. The rest are `fun(...): any`.

import { kBootSpec } from '../lua/boot-options.js';
import { BatcherClass } from '../lua/batch.js';
import { BridgeClass } from '../lua/bridge.js';
import type { LuaClass } from '../lua/args.js';
import { ClockClass } from '../lua/clock.js';
import { ConsoleClass } from '../lua/console.js';
import { DiskClass } from '../lua/disk.js';
import { FileClass } from '../lua/file.js';
import { LabClass } from '../lua/lab.js';
import { PendingSyscallClass } from '../lua/layer0.js';
import { LegacyWorkerClass } from '../lua/legacy/worker.js';
import { NicClass } from '../lua/nic.js';
import { ProcessClass } from '../lua/process.js';
import { LabSnapshotClass, SnapshotClass } from '../lua/snapshot.js';
import { CaptureClass, ConsoleStreamClass, TailClass } from '../lua/stream.js';
import { TestContextClass } from '../lua/test-context.js';
import { VmClass } from '../lua/vm.js';
import { WorkerClass } from '../lua/worker.js';

/** Every class a test can hold, with the Lua name its annotations use. */
const kClasses: [string, LuaClass<object>][] = [
  ['Lab', LabClass],
  ['Vm', VmClass],
  ['Process', ProcessClass],
  ['Worker', WorkerClass],
  ['LegacyWorker', LegacyWorkerClass],
  ['File', FileClass],
  ['Tail', TailClass],
  ['ConsoleStream', ConsoleStreamClass],
  ['Capture', CaptureClass],
  ['Console', ConsoleClass],
  ['Clock', ClockClass],
  ['Bridge', BridgeClass],
  ['Nic', NicClass],
  ['Disk', DiskClass],
  ['Snapshot', SnapshotClass],
  ['LabSnapshot', LabSnapshotClass],
  ['TestContext', TestContextClass],
  ['Batch', BatcherClass],
  ['PendingSyscall', PendingSyscallClass],
] as unknown as [string, LuaClass<object>][];

/** Fields that are not methods (read through __index). */
const kFields: Record<string, string[]> = {
  Lab: ['---@field [string] Vm|Lab|Bridge a member by its name (provium.web)', '---@field timeout number|string per-test timeout of this file (settable)', '---@field reset_between_tests boolean restore the file\'s VMs before each test (settable)'],
  TestContext: ['---@field name string', '---@field meta TestMeta', '---@field attempt integer'],
};

/** Precise signatures: `Class.method` → `(params): returns`. Others are `(...: any): any`. */
const kSignatures: Record<string, string> = {
  'Lab.vm': '(name: string, profile?: string, opts?: BootOptions): Vm',
  'Lab.lab': '(name: string): Lab',
  'Lab.bridge': '(name: string, opts?: BridgeOptions): Bridge',
  'Lab.boot': '(): Lab',
  'Lab.shutdown': '(): Lab',
  'Lab.claim': '(amount: ClaimAmount)',
  'Lab.barrier': '(name: string, count: integer, timeout?: Duration): boolean',
  'Lab.snapshot': '(dir?: string): LabSnapshot',
  'Lab.restore': '(snap: LabSnapshot|string): Lab',
  'Lab.vm_fixture': '(path: string, name?: string): Vm',
  'Lab.lab_fixture': '(path: string, name?: string): Lab',
  'Lab.vm_names': '(): string[]',
  'Lab.bridge_names': '(): string[]',
  'Lab.name': '(): string',
  'Lab.create': '(profile: string): Vm',
  'Lab.fixture': '(name: string): Vm',
  'Lab.pack': '(format: string, ...: any): string',
  'Lab.unpack': '(format: string, data: string): any',
  'Vm.boot': '(opts?: BootOptions): Vm',
  'Vm.shutdown': '(): Vm',
  'Vm.snapshot': '(path?: string): Snapshot',
  'Vm.restore': '(snap: Snapshot|string): Vm',
  'Vm.name': '(): string',
  'Vm.profile': '(): string',
  'Vm.state': '(): string',
  'Vm.run': '(cmd: string, args?: string[]|RunOptions, opts?: RunOptions): RunResult',
  'Vm.run_async': '(cmd: string, args?: string[]|RunOptions, opts?: RunOptions): Process',
  'Vm.exec': '(cmd: string): LegacyResult',
  'Vm.read_file': '(path: string): string',
  'Vm.write_file': '(path: string, data: string): Vm',
  'Vm.push_file': '(host: string, guest: string, opts?: PushOptions): Vm',
  'Vm.stat': '(path: string, opts?: {follow?: boolean}): Stat',
  'Vm.listdir': '(path: string): string[]',
  'Vm.mkdir': '(path: string, opts?: MkdirOptions)',
  'Vm.open_file': '(path: string, mode?: OpenMode): File',
  'Vm.tail_file': '(path: string, opts?: {start?: string|integer}): Tail',
  'Vm.console': '(): Console',
  'Vm.clock': '(): Clock',
  'Vm.disk': '(id: string): Disk',
  'Vm.attach_disk': '(spec: DiskSpec): Disk',
  'Vm.nic': '(bridge: string): Nic',
  'Vm.spawn_worker': '(opts?: {thread?: boolean}): Worker',
  'Vm.spawn': '(opts?: {thread?: boolean}): LegacyWorker',
  'Vm.batch': '(fn: fun(b: Batch)): table[]',
  'Vm.wait_until': '(fn: fun(): any, opts?: WaitOptions): any',
  'Vm.dmesg': '(pattern?: string): string',
  'Process.wait': '(timeout?: Duration): RunResult',
  'Process.stdout_stream': '(): Capture',
  'Process.stderr_stream': '(): Capture',
  'Process.pid': '(): integer',
  'Worker.run': '(cmd: string, args?: string[]|RunOptions, opts?: RunOptions): RunResult',
  'Worker.run_async': '(cmd: string, args?: string[]|RunOptions, opts?: RunOptions): Process',
  'File.read': '(n?: integer): string',
  'File.read_all': '(): string',
  'File.write': '(data: string): integer',
  'Console.read_log': '(): string',
  'Console.expect': '(pattern: string, timeout?: Duration): string',
  'Clock.get': '(): number',
  'Bridge.attach': '(vm: Vm): Nic',
  'Bridge.nic': '(vm: Vm|string): Nic',
  'Bridge.partition': '(a: Vm|string|(Vm|string)[], b: Vm|string|(Vm|string)[])',
  'Nic.ip': '(): string',
  'Nic.mac': '(): string',
  'Disk.read_sectors': '(sector: integer, count: integer): string',
  'Disk.device': '(): string',
  'Snapshot.path': '(): string',
  'Snapshot.size': '(): integer',
  'LabSnapshot.path': '(): string',
  'TestContext.assert': '(cond: any, msg?: string)',
  'TestContext.assert_eq': '(actual: any, expected: any, msg?: string)',
  'TestContext.assert_neq': '(actual: any, unexpected: any, msg?: string)',
  'TestContext.assert_contains': '(haystack: string, needle: string, msg?: string)',
  'TestContext.assert_raises': '(fn: fun(), msg?: string): string',
  'TestContext.fail': '(msg?: string)',
  'TestContext.skip': '(reason?: string)',
  'TestContext.log': '(value: any)',
};

/** Methods also called with a dot on the `provium` table (`provium.create("minimal")`). */
const kDotCalls = new Set(['vm_fixture', 'lab_fixture', 'pack', 'unpack', 'create', 'fixture', 'shutdown_all']);

/** `(a: T, b?: U): R` → LuaLS lines for a method. */
function annotate(signature: string | undefined): string[] {
  if (!signature) return ['---@param ... any', '---@return any'];
  const m = /^\((.*)\)(?::\s*(.+))?$/.exec(signature)!;
  const params = splitTop(m[1]!).filter(Boolean).map((p) => {
    const [name, type] = p.split(/:\s*(.*)/s) as [string, string];
    return `---@param ${name.trim()} ${type.trim()}`;
  });
  return m[2] ? [...params, `---@return ${m[2]}`] : params;
}

/** Splits on commas outside brackets and parentheses. */
function splitTop(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if ('({['.includes(ch)) depth++;
    if (')}]'.includes(ch)) depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function paramNames(signature: string | undefined): string {
  if (!signature) return '...';
  const inner = /^\((.*)\)/.exec(signature)![1]!;
  return splitTop(inner).map((p) => p.split(':')[0]!.replace('?', '').trim()).join(', ');
}

/** Option tables and result shapes, as classes so their keys complete. */
const kShapes = `
---@alias Duration number|string seconds, or "500ms", "5s", "2m"
---@alias Size integer|string bytes, or "64M", "1G"

---@class BootOptions
${Object.keys(kBootSpec).map((k) => `---@field ${k}? ${bootKeyType(k)}`).join('\n')}

---@class BootFile
---@field path string absolute guest path
---@field content string
---@field mode? integer

---@class DiskSpec
---@field id string
---@field size? Size
---@field image? string host file to start from (relative to the test file)
---@field readonly? boolean
---@field backend? "nbd"|"qemu"

---@class RunOptions
---@field args? string[]
---@field env? table<string, string>
---@field env_clear? boolean
---@field cwd? string
---@field stdin? string
---@field timeout? Duration
---@field timeout_ms? integer

---@class RunResult
---@field exit_code integer -1 signalled, -2 timed out
---@field status string
---@field stdout string
---@field stderr string
---@field signal? integer
---@field timed_out boolean
---@field stdout_truncated boolean
---@field stderr_truncated boolean
---@field cmd string
local RunResult = {}
---@return boolean
function RunResult:ok() end
---@return RunResult
function RunResult:assert_ok() end

---@class LegacyResult
---@field ok boolean
---@field exit_code integer
---@field stdout string
---@field stderr string
---@field status string
---@field signal? integer

---@class Stat
---@field size integer
---@field mtime number
---@field mtime_ns number
---@field mtime_ns_str string
---@field perm integer
---@field entry_type string

---@class OpenMode
---@field read? boolean
---@field write? boolean
---@field create? boolean
---@field truncate? boolean
---@field append? boolean
---@field exclusive? boolean
---@field perm? integer

---@class PushOptions
---@field auto_dep? boolean
---@field perm? integer

---@class MkdirOptions
---@field parents? boolean
---@field perm? integer

---@class WaitOptions
---@field timeout? Duration
---@field interval? Duration
---@field desc? string

---@class BridgeOptions
---@field subnet? string
---@field addressing? "auto"|"manual"

---@class ClaimAmount
---@field memory? Size
---@field cpus? integer

---@class TestMeta
---@field timeout? Duration
---@field tags? string|string[]
---@field skip? boolean|string
---@field slow? boolean
---@field spec? string|string[]
---@field [string] any
`;

function bootKeyType(k: string): string {
  const types: Record<string, string> = {
    memory: 'Size',
    cpus: 'integer',
    kernel_cmdline: 'string',
    kernel_cmdline_append: 'string',
    rng_seed: 'integer|string',
    initial_time: 'number',
    files: 'BootFile[]',
    agent_timeout: 'Duration',
    disks: 'DiskSpec[]',
  };
  return types[k] ?? 'any';
}

const kGlobals = `
---The root lab of the file (inside a test: that test's lab).
---@type Lab
provium = {}

---Declares a test.
---@param name string
---@param meta_or_fn TestMeta|fun(t: TestContext)
---@param fn? fun(t: TestContext)
function test(name, meta_or_fn, fn) end

---At file scope: skip the file; inside a test: skip that test.
---@param reason? string
function todo(reason) end

---Calls fn until it returns a truthy value, which it returns.
---@param fn fun(): any
---@param opts? WaitOptions
---@return any
function wait_until(fn, opts) end

---@class JsonLib
json = {}
---@param value any
---@return string
function json.encode(value) end
---@param text string
---@return any
function json.decode(text) end

---Deep equality (legacy API); inside a test a failure sticks like t:assert_eq.
---@param expected any
---@param actual any
---@param msg? string
function assert_eq(expected, actual, msg) end

---@param haystack string
---@param needle string
---@param msg? string
function assert_contains(haystack, needle, msg) end

---@class string
---@field value string the string itself (legacy results)
local stringlib = {}
---@param s string
---@return boolean
function stringlib:contains(s) end
---@param s string
---@return boolean
function stringlib:starts_with(s) end
---@return string
function stringlib:trim() end
`;

/** The whole definitions file. */
export function luaTypeDefinitions(): string {
  const out: string[] = ['---@meta provium', '-- Written by `provium lsp-setup`: the Provium test API for lua-language-server. Do not edit; run it again after an upgrade.', kShapes, kGlobals];
  for (const [name, cls] of kClasses) {
    out.push(`---@class ${name}`, ...(kFields[name] ?? []));
    const dots = name === 'Lab' ? Object.keys(cls.methods).filter((m) => kDotCalls.has(m)) : [];
    for (const m of dots) out.push(`---@field ${m} fun(...): any also callable as provium.${m}(...)`);
    out.push(`local ${name} = {}`);
    for (const method of Object.keys(cls.methods)) {
      if (dots.includes(method)) continue;
      const signature = kSignatures[`${name}.${method}`];
      out.push(...annotate(signature), `function ${name}:${method}(${paramNames(signature)}) end`);
    }
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

/** The names a test file may use without declaring them, for .luarc.json's diagnostics.globals. */
export const kLuaGlobals = ['provium', 'test', 'todo', 'wait_until', 'json', 'assert_eq', 'assert_contains'];
