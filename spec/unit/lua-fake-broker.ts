// Test-only: a fake broker answering the worker RPC through the real channel (RpcChannel, main
// thread), with an in-memory guest (files, processes, streams, clock) good enough to drive the Lua
// bindings, plus `runLua(source)` which runs a test file in a real worker thread against it and
// reads its results with the real FileJob. Unit tests only.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { BrokerError, RpcChannel, type RpcHandlers } from '../../src/broker/rpc-server.js';
import { EventBus } from '../../src/events/bus.js';
import type { RpcErrorData, VmView } from '../../src/protocol/rpc.js';
import type { FileReport, FileResult, TestSelection } from '../../src/protocol/task.js';
import { FileJob } from '../../src/run/file-job.js';

export class FakeError extends BrokerError {
  constructor(message: string, code?: RpcErrorData['code'], errno?: number) {
    super(message, code, errno);
  }
}

type Handler = (args: any) => unknown;
type Exit = { status: 'exited' | 'signalled' | 'timed_out' | 'running'; code: number; signal: number };

interface FakeVm {
  name: string;
  profile: string;
  state: 'created' | 'booted' | 'paused' | 'shutdown' | 'dead';
  cid: number | null;
  console: string;
  generation: number;
  deadReason?: string;
}

interface FakeProc {
  argv: string[];
  stdout: Uint8Array;
  exit: Exit | null;
  stdin: Uint8Array[];
  waiters: (() => void)[];
}

interface FakeStream {
  vmId: number;
  chunks: Uint8Array[];
  ended: boolean;
  waiters: (() => void)[];
  /** Chunks handed out one per read once the queue is empty; the last one ends the stream. */
  script: string[];
}

const enc = new TextEncoder();
const cmdOf = (argv: string[]) => (argv[0] === '/bin/sh' ? argv[2]! : argv.join(' '));
const dec = new TextDecoder();
const empty = () => new Uint8Array(0);
const exited = (code: number, stdout = '', stderr = '') => ({
  status: 'exited' as const,
  code,
  signal: 0,
  stdout: enc.encode(stdout),
  stderr: enc.encode(stderr),
  stdout_truncated: false,
  stderr_truncated: false,
});

export class FakeBroker {
  readonly calls: { op: string; args: any }[] = [];
  readonly events: { kind: string; payload: any }[] = [];
  readonly vms = new Map<number, FakeVm>();
  readonly files = new Map<string, Uint8Array>();
  readonly procs = new Map<number, FakeProc>();
  readonly streams = new Map<number, FakeStream>();
  /** Per-op overrides, tried before the built-in behaviour. */
  readonly handlers: Record<string, Handler> = {};
  /** Agent-op overrides by agent op name. */
  readonly agent: Record<string, Handler> = {};
  /** Scripted growth of tailed files: path → chunks, one per read (see FakeStream.script). */
  readonly tailScripts: Record<string, string[]> = {};
  clockNs = 1_700_000_000_000_000_000n;
  private _nextId = 1;

  /** Every op is served by `handle`, through the real channel's mechanics. */
  handlers_(): RpcHandlers {
    return new Proxy({} as RpcHandlers, {
      get: (_t, op: string) => async (args: any) => {
        this.calls.push({ op, args });
        try {
          return await this.handle(op, args);
        } catch (err) {
          // Errors about a VM carry its view, as the real session's do.
          if (err instanceof BrokerError && args?.vmId !== undefined && this.vms.has(args.vmId)) err.vm ??= this.view(args.vmId);
          throw err;
        }
      },
    });
  }

  /** The broker's view of a fake VM, as real replies carry it. */
  view(vmId: number): VmView {
    const vm = this.vms.get(vmId)!;
    const streams = [...this.streams].filter(([, s]) => s.vmId === vmId).map(([id]) => id);
    return { vmId, state: vm.state, cid: vm.cid, generation: vm.generation, streams, ...(vm.deadReason ? { deadReason: vm.deadReason } : {}) };
  }

  /** Moves a fake VM to `state`; a new or stopped guest is a new generation. */
  setState(vmId: number, state: FakeVm['state'], deadReason?: string): void {
    const vm = this.vms.get(vmId)!;
    if (vm.state !== state) vm.generation++;
    vm.state = state;
    if (deadReason) vm.deadReason = deadReason;
  }

  agentCalls(op?: string): any[] {
    return this.calls.filter((c) => c.op === 'agent.call' && (!op || c.args.op === op)).map((c) => c.args);
  }

  /** Appends bytes to a stream, waking a blocked read. */
  streamPush(id: number, data: string | Uint8Array, end = false): void {
    const s = this.streams.get(id)!;
    if (data.length) s.chunks.push(typeof data === 'string' ? enc.encode(data) : data);
    if (end) s.ended = true;
    for (const w of s.waiters.splice(0)) w();
  }

  async handle(op: string, args: any): Promise<unknown> {
    if (this.handlers[op]) return this.handlers[op]!(args);
    switch (op) {
      case 'vm.create': {
        if (args.profile !== 'minimal') throw new FakeError(`unknown profile \`${args.profile}\` (known: minimal)`, 'usage');
        const id = this._nextId++;
        this.vms.set(id, { name: args.name, profile: args.profile, state: 'created', cid: null, console: '', generation: 0 });
        return { vmId: id };
      }
      case 'vm.boot': {
        const vm = this.vms.get(args.vmId)!;
        this.setState(args.vmId, 'booted');
        vm.cid = 100 + args.vmId;
        vm.console += `[boot ${vm.name}] Linux version 6.1\nprovium-agent ready\n`;
        return { vm: this.view(args.vmId), bootMs: 1, restored: false };
      }
      case 'vm.shutdown':
      case 'vm.kill':
        this.setState(args.vmId, 'shutdown');
        return { vm: this.view(args.vmId) };
      case 'vm.power_button':
        this.setState(args.vmId, 'shutdown');
        return { vm: this.view(args.vmId), graceful: true };
      case 'vm.pause':
        this.vms.get(args.vmId)!.state = 'paused';
        return { vm: this.view(args.vmId) };
      case 'vm.resume':
        this.vms.get(args.vmId)!.state = 'booted';
        return { vm: this.view(args.vmId) };
      case 'vm.reset':
        this.vms.get(args.vmId)!.generation++;
        return { vm: this.view(args.vmId) };
      case 'vm.info':
        return { vm: this.view(args.vmId) };
      case 'vm.snapshot': {
        const p = args.path ?? path.join(tmpdir(), `fake-snap-${Date.now()}.bin`);
        writeFileSync(p, 'snapshot');
        return { vm: this.view(args.vmId), path: p, bytes: 8 };
      }
      case 'vm.restore': {
        const vm = this.vms.get(args.vmId)!;
        this.setState(args.vmId, 'booted');
        vm.cid ??= 7;
        return { vm: this.view(args.vmId) };
      }
      case 'snapshot.size':
        return { bytes: existsSync(args.path) ? statSync(args.path).size : 0 };
      case 'snapshot.delete':
        rmSync(args.path, { force: true });
        return {};
      case 'vm.console_tail':
        return { text: this.vms.get(args.vmId)!.console.slice(-(args.maxBytes ?? 4096)) };
      case 'vm.console_log':
        return { data: enc.encode(this.vms.get(args.vmId)!.console) };
      case 'vm.console_write':
        this.vms.get(args.vmId)!.console += dec.decode(args.data);
        return {};
      case 'scope.close':
        for (const id of args.vmIds) this.setState(id, 'shutdown');
        return { vms: args.vmIds.map((id: number) => this.view(id)) };
      case 'lab.claim':
      case 'stream.close':
        return {};
      case 'lab.barrier':
        if (args.count > 1) throw new FakeError(`barrier \`${args.name}\` timed out: 1 of ${args.count} arrived`, 'timeout');
        return { released: true };
      case 'stream.open':
        return this._openStream(args);
      case 'stream.read':
        return this._readStream(args.streamId, args.timeoutMs);
      case 'agent.call': {
        const vm = this.vms.get(args.vmId)!;
        if (vm.state === 'dead') throw new FakeError(`vm \`${vm.name}\` is dead: ${vm.deadReason ?? 'unknown reason'}`, 'vm_dead');
        if (this.agent[args.op]) return { result: await this.agent[args.op]!(args.data) };
        return { result: await this._agent(args.op, args.data, args) };
      }
      default:
        throw new FakeError(`fake broker: unhandled op ${op}`);
    }
  }

  private _openStream(args: any): { streamId: number } {
    const id = this._nextId++;
    const script = args.op === 'tail_file' ? [...(this.tailScripts[args.data.path] ?? [])] : [];
    const s: FakeStream = { vmId: args.vmId, chunks: [], ended: false, waiters: [], script };
    this.streams.set(id, s);
    if (args.op === 'tail_file' && args.data.start === 'beginning') {
      const data = this.files.get(args.data.path);
      if (data?.length) s.chunks.push(data);
    }
    if (args.op === 'proc_stream') {
      const p = this.procs.get(args.data.handle)!;
      if (p.stdout.length) s.chunks.push(p.stdout);
    }
    return { streamId: id };
  }

  private async _readStream(id: number, timeoutMs: number): Promise<{ data: Uint8Array | null; eof: boolean }> {
    const s = this.streams.get(id)!;
    if (s.chunks.length === 0 && s.script.length > 0) {
      s.chunks.push(enc.encode(s.script.shift()!));
      if (s.script.length === 0) s.ended = true;
    }
    if (s.chunks.length === 0 && !s.ended && timeoutMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs).unref();
        s.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const data = s.chunks.shift() ?? null;
    return { data, eof: s.ended && s.chunks.length === 0 };
  }

  private async _agent(op: string, d: any, args: any): Promise<unknown> {
    switch (op) {
      case 'exec':
        return this._exec(d.argv, d);
      case 'spawn': {
        const handle = this._nextId++;
        this.procs.set(handle, { argv: d.argv, stdout: d.argv.join(' ').includes('hello') ? enc.encode('hello\n') : empty(), exit: null, stdin: [], waiters: [] });
        return { handle, pid: 1000 + handle };
      }
      case 'wait': {
        const p = this.procs.get(d.handle)!;
        if (!p.exit) {
          await new Promise<void>((resolve) => {
            const timer = d.timeout_ms !== undefined ? setTimeout(() => {
              p.exit ??= { status: 'timed_out', code: 0, signal: 9 };
              resolve();
            }, d.timeout_ms).unref() : null;
            p.waiters.push(() => {
              if (timer) clearTimeout(timer);
              resolve();
            });
          });
        }
        const stdin = Buffer.concat(p.stdin);
        return { ...p.exit!, stdout: cmdOf(p.argv) === 'cat' ? new Uint8Array(stdin) : p.stdout, stderr: empty(), stdout_truncated: false, stderr_truncated: false };
      }
      case 'proc_status': {
        const p = this.procs.get(d.handle)!;
        return p.exit ?? { status: 'running', code: 0, signal: 0 };
      }
      case 'kill': {
        const p = this.procs.get(d.handle)!;
        p.exit ??= { status: 'signalled', code: 0, signal: d.signal };
        for (const w of p.waiters.splice(0)) w();
        return {};
      }
      case 'get_pid':
        return { pid: 1000 + d.handle };
      case 'stdin_write':
        this.procs.get(d.handle)!.stdin.push(d.data);
        return { written: d.data.length };
      case 'stdin_close': {
        const p = this.procs.get(d.handle)!;
        if (cmdOf(p.argv) === 'cat') {
          p.exit ??= { status: 'exited', code: 0, signal: 0 };
          for (const w of p.waiters.splice(0)) w();
        }
        return {};
      }
      case 'read_file': {
        const data = this.files.get(d.path);
        if (!data) throw new FakeError('No such file or directory', 'agent', 2);
        return { data };
      }
      case 'write_file':
        this.files.set(d.path, d.data);
        return {};
      case 'stat': {
        const data = this.files.get(d.path);
        if (!data) throw new FakeError('No such file or directory', 'agent', 2);
        return { size: data.length, mtime_ns: 1700000000123456789n, perm: 0o644, entry_type: 'file', uid: 0, gid: 0, nlink: 1 };
      }
      case 'listdir':
        return {
          entries: [...this.files.keys()]
            .filter((p) => path.dirname(p) === d.path)
            .map((p) => ({ name: path.basename(p), entry_type: 'file' })),
        };
      case 'mkdir':
      case 'unlink':
      case 'rename':
        if (op === 'unlink') this.files.delete(d.path);
        if (op === 'rename') {
          this.files.set(d.to, this.files.get(d.from)!);
          this.files.delete(d.from);
        }
        return {};
      case 'open_file': {
        const handle = 3 + this._nextId++;
        if (!this.files.has(d.path)) {
          if (!(d.flags & 4)) throw new FakeError('No such file or directory', 'agent', 2);
          this.files.set(d.path, empty());
        }
        this._fds.set(handle, { path: d.path, pos: 0 });
        return { handle };
      }
      case 'read': {
        const fd = this._fds.get(d.handle)!;
        const data = this.files.get(fd.path)!.slice(fd.pos, fd.pos + d.len);
        fd.pos += data.length;
        return { data };
      }
      case 'write': {
        const fd = this._fds.get(d.handle)!;
        const old = this.files.get(fd.path)!;
        const next = new Uint8Array(Math.max(old.length, fd.pos + d.data.length));
        next.set(old);
        next.set(d.data, fd.pos);
        this.files.set(fd.path, next);
        fd.pos += d.data.length;
        return { written: d.data.length };
      }
      case 'seek': {
        const fd = this._fds.get(d.handle)!;
        const size = this.files.get(fd.path)!.length;
        const base = d.whence === 'set' ? 0 : d.whence === 'cur' ? fd.pos : size;
        fd.pos = base + Number(d.offset);
        return { offset: fd.pos };
      }
      case 'close':
        this._fds.delete(d.handle);
        return {};
      case 'get_time':
        return { sec: this.clockNs / 1_000_000_000n, nsec: Number(this.clockNs % 1_000_000_000n) };
      case 'set_time':
        this.clockNs = BigInt(d.sec) * 1_000_000_000n + BigInt(d.nsec);
        return {};
      case 'advance_time':
        this.clockNs += BigInt(d.ns);
        return { sec: this.clockNs / 1_000_000_000n, nsec: Number(this.clockNs % 1_000_000_000n) };
      case 'sleep':
        return {};
      case 'syscall':
        return { ret: 42, errno: 0, out_bufs: d.bufs };
      case 'ioctl':
        return { ret: 0, errno: 0, ...(d.data ? { out_data: d.data } : {}), out_bufs: d.bufs };
      case 'read_mem':
        if (Number(d.addr) === 0) throw new FakeError('Bad address', 'agent', 14);
        return { data: new Uint8Array(d.len) };
      case 'batch': {
        const results = [];
        for (const o of d.ops) {
          try {
            results.push({ ok: await this._agent(o.kind, o.data, args) });
          } catch (err) {
            results.push({ err: { errno: (err as FakeError).errno ?? 5, message: (err as Error).message } });
          }
        }
        return { results };
      }
      case 'spawn_worker': {
        const worker = this._nextId++;
        return { worker, pid: 2000 + worker };
      }
      case 'worker_join':
        return { status: 'exited', code: 0, signal: 0 };
      case 'kill_all':
        return { killed: 0 };
      case 'exit':
        return {};
      default:
        throw new FakeError(`fake agent: unhandled op ${op}`, 'agent', 22);
    }
  }

  private readonly _fds = new Map<number, { path: string; pos: number }>();

  private async _exec(argv: string[], d: any): Promise<unknown> {
    const cmd = cmdOf(argv);
    let m: RegExpExecArray | null;
    if ((m = /^echo (.*)$/.exec(cmd))) return exited(0, `${m[1]}\n`);
    if ((m = /^exit (\d+)$/.exec(cmd))) return exited(Number(m[1]));
    if (cmd === 'cat') return { ...exited(0), stdout: d.stdin };
    if (cmd === 'env') return exited(0, Object.entries(d.env).map(([k, v]) => `${k}=${v}\n`).join(''));
    if (cmd === 'fail') return exited(3, 'some output', 'bad things');
    if (cmd === 'kill9') return { ...exited(0), status: 'signalled', signal: 9 };
    if ((m = /^sleep (\S+)$/.exec(cmd))) {
      const ms = Number(m[1]) * 1000;
      const limit = d.timeout_ms ?? Infinity;
      await new Promise((r) => setTimeout(r, Math.min(ms, limit)).unref());
      return ms > limit ? { ...exited(0), status: 'timed_out', code: 0, signal: 9 } : exited(0);
    }
    return exited(127, '', `sh: ${cmd}: not found`);
  }
}

/** Asserts every test passed, showing the failures otherwise. */
export function assertAllPassed(result: FileResult, count?: number): void {
  assert.deepEqual(result.fatalErrors, [], result.fatalErrors[0]?.message);
  const bad = result.tests.filter((t) => t.status !== 'passed').map((t) => `${t.name}: ${t.status}: ${t.message}`);
  assert.deepEqual(bad, []);
  if (count !== undefined) assert.equal(result.tests.length, count);
}

export interface RunOptions {
  selection?: Partial<TestSelection>;
  retries?: number;
  listOnly?: boolean;
  /** Extra files next to the test file (for require/push_file). */
  files?: Record<string, string>;
  setup?: (broker: FakeBroker) => void;
}

const kEntry = new URL('./lua-worker-entry.js', import.meta.url);

/** Runs `source` as spec/sample.test.lua in a worker against a fake broker. */
export async function runLua(
  source: string,
  options: RunOptions = {},
): Promise<{ result: FileResult; broker: FakeBroker; reports: FileReport[] }> {
  const root = mkdtempSync(path.join(tmpdir(), 'provium-lua-'));
  mkdirSync(path.join(root, 'spec'), { recursive: true });
  const file = path.join(root, 'spec', 'sample.test.lua');
  writeFileSync(file, source);
  for (const [name, text] of Object.entries(options.files ?? {})) {
    mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    writeFileSync(path.join(root, name), text);
  }
  const broker = new FakeBroker();
  options.setup?.(broker);
  // The real result path: the channel hands reports to a FileJob, which puts them on a bus.
  const bus = new EventBus();
  bus.subscribe((event) => broker.events.push(event));
  const planned = { file, displayPath: 'spec/sample.test.lua', key: 'spec/sample.test.lua', root: root };
  const job = new FileJob(planned as never, 0, bus, {});
  const reports: FileReport[] = [];
  const channel = new RpcChannel(broker.handlers_(), (report) => {
    reports.push(report);
    job.onReport(report);
  });
  const port2 = channel.workerPort;
  const signalBuffer = channel.signalBuffer;
  const worker = new Worker(kEntry);
  const task = {
    file,
    displayPath: 'spec/sample.test.lua',
    roots: [path.join(root, 'spec')],
    selection: { includeSlow: false, tags: [], noTags: [], tagMeta: [], noTagMeta: [], ...options.selection },
    retries: options.retries ?? 0,
    listOnly: options.listOnly ?? false,
    port: port2,
    signalBuffer,
  };
  const done = new Promise<unknown>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const started = performance.now();
  worker.postMessage(task, [port2]);
  await done;
  await worker.terminate();
  // Reports travel on the session port, not with the acknowledgement: take the ones in flight.
  channel.close();
  assert.ok(job.done, 'the worker sent no file_done');
  const result = job.finish({ kind: 'acknowledged' }, performance.now() - started);
  rmSync(root, { recursive: true, force: true });
  return { result, broker, reports };
}
