// Provium's benchmark (`npm run bench`, or `node dist/bench/bench.js` after a build).
//
// Every harness figure is printed beside its floor, measured in the same run and interleaved
// (floor, harness, floor, harness, …; the order alternates between rounds) so that machine noise
// hits both; every figure is the median of at least 5 rounds (the network section: 3 rounds, and
// 4 boots of each kind; the disk section: 3 rounds; each to stay within ~90 s). Floors:
//   - boot: plain QEMU with the argv and environment provium builds (buildQemuArgs, qemuEnv, same
//     spec), started as provium starts it (launchProcess: it cannot outlive us), timed to the
//     agent's first hello reply on agent.sock (framing functions only);
//   - calls, files, stats, streams, workers: the agent's own round trips from this process over a
//     raw socket to such a plain QEMU, no harness in between;
//   - network: two such plain QEMUs joined directly by QEMU's own `-netdev stream` pair (no
//     switch), driven over their raw agent sockets with the same guest commands as the Lua file;
//   - disks: such a plain QEMU with a raw image file on its command line (`-drive …,if=virtio`)
//     in place of the broker's NBD server, the same guest commands over its raw agent socket (and,
//     for reference, one whose disk is QEMU's own qemu-nbd, through the same nbd client);
//   - the 40-file fixture suite: plain QEMUs restoring the same fixture snapshot two at a time
//     (RAM image copied on the spawn, as provium does, device state through QEMU's own
//     migrate-incoming), each running the suite's check over its raw agent socket.
// Harness figures come from `provium` CLI runs of bench/lua/*.test.lua and of generated files, read
// back from the saved msgpack event stream (`--save-events`): there is no wall clock in the Lua
// sandbox, so per-call costs are test durations minus the duration of an empty test (the network
// and disk figures are the guests' own measurements, which the tests print: read back from `--json`).
//
// `--only net` (or any of boot, calls, dispatch, suite, shards, net, disk, pool, debian, comma-separated) runs those
// sections only and prints them without touching BENCHMARKS.md.
//
// The output (stdout) is also written to BENCHMARKS.md. Every QEMU and CLI started here is killed
// on exit, on error and on Ctrl-C.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, createReadStream, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { decodeBody, encodeFrame, FrameReader } from '../src/protocol/framing.js';
import { MAX_FRAME_BYTES, STREAM_WINDOW_BYTES } from '../src/protocol/agent.js';
import { builtinProfiles, type Profile } from '../src/config/profiles.js';
import { readEvents, type DecodedEvent } from '../src/events/codec.js';
import { resolveAccel } from '../src/vmm/accel.js';
import { buildQemuArgs, type LaunchContext, type LaunchSpec } from '../src/vmm/cmdline.js';
import { imageInfo } from '../src/vmm/image.js';
import { cacheDir, qemuBinary } from '../src/vmm/paths.js';
import { qemuEnv } from '../src/vmm/qemu.js';
import { FixtureCache } from '../src/broker/fixture-cache.js';
import { prepareGuestRam, ramImageOf, type GuestRam } from '../src/vmm/guest-ram.js';
import { closeProcessLauncher, launchProcess } from '../src/vmm/process-launcher.js';
import { snapshotFileBytes } from '../src/vmm/snapshot.js';

const execFileP = promisify(execFile);

// ---------------------------------------------------------------------------------------------
// Parameters. Keep them in step with bench/lua/calls.test.lua.

const kRounds = 7;
const kBootRounds = 7;
const kCallsN = 200;
const kFileRounds = 100;
const kBatches = 5;
const kStreamBytes = 32 * 1024 * 1024;
const kWorkers = 4;
const kDispatchFiles = 200;
const kSuiteFiles = 8;
const kShardFiles = 40;
const kShards = 4;
const kAgentTimeoutMs = 60_000;
// Network section (10): keep in step with bench/lua/network.test.lua and net-boot.test.lua.
const kNetRounds = 3;
const kNetBootRounds = 2; // runs of net-boot.test.lua, two pairs of boots each
const kNetPings = 20;
const kNetPingWarm = 'ping -c 2 -i 0.2 -W 2 b';
const kNetPing = `ping -c ${kNetPings} -i 0.05 -W 2 b`;
const kNetXferBytes = 32 * 1024 * 1024;
const kNetRecv = (port: number) => `nc -l -p ${port} | { dd bs=1 count=1 of=/dev/null 2>/dev/null; cut -d' ' -f1 /proc/uptime; wc -c; cut -d' ' -f1 /proc/uptime; }`;
const kNetSend = (port: number) => `dd if=/dev/zero bs=65536 count=${kNetXferBytes / 65536} 2>/dev/null | nc b ${port}`;
const kNetListening = (port: number) => `netstat -ltn | grep -q ':${port} '`;

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const repo = path.resolve(here, '..', '..');
const cliMain = path.join(repo, 'dist', 'src', 'cli', 'main.js');
const luaDir = path.join(repo, 'bench', 'lua');
const benchmarksMd = path.join(repo, 'BENCHMARKS.md');

// ---------------------------------------------------------------------------------------------
// Bookkeeping: every child we start, so nothing outlives the bench.

const children = new Set<ChildProcess>();
let workDir: string | undefined;

/** Plain QEMUs (spawnPlain) not yet seen to exit, by pid. */
const plainPids = new Set<number>();

function killChildren(): void {
  for (const pid of plainPids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  plainPids.clear();
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  children.clear();
}

process.on('exit', () => {
  killChildren();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killChildren();
    process.exit(130);
  });
}

function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

// ---------------------------------------------------------------------------------------------
// Raw agent client: framing functions and a socket, nothing else.

interface StreamSink { onData: (n: number) => void; onEnd: () => void }

class RawAgent {
  private readonly reader = new FrameReader(MAX_FRAME_BYTES);
  private readonly pending = new Map<number, { resolve: (d: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private readonly streams = new Map<number, StreamSink>();
  private nextId = 1;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (chunk: Buffer) => {
      for (const body of this.reader.push(chunk)) this.dispatch(decodeBody(body) as { id: number; kind: string; data: Record<string, unknown> });
    });
    const fail = (why: string) => {
      for (const p of this.pending.values()) p.reject(new Error(why));
      this.pending.clear();
    };
    sock.on('error', (e) => fail(`agent socket: ${e.message}`));
    sock.on('close', () => fail('agent socket closed'));
  }

  /** Connects (retrying until QEMU created the socket) and says hello until the agent answers. */
  static async connect(socketPath: string, deadline: number, alive: () => boolean): Promise<RawAgent> {
    let sock: net.Socket | undefined;
    while (!sock) {
      if (!alive()) throw new Error('QEMU exited before the agent socket appeared');
      if (Date.now() > deadline) throw new Error(`cannot connect to ${socketPath}`);
      sock = await new Promise<net.Socket | undefined>((resolve) => {
        const s = net.createConnection(socketPath);
        s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
        s.once('error', () => { s.destroy(); resolve(undefined); });
      });
      if (!sock) await sleep(5);
    }
    const agent = new RawAgent(sock);
    // Hellos queue in the chardev until the guest opens the port; repeat in case one is lost.
    await new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearInterval(repeat);
        clearTimeout(overall);
        if (err) reject(err); else resolve();
      };
      const hello = () => agent.request('hello', { protocol_version: 1 }).then(() => finish(), () => undefined);
      const repeat = setInterval(() => (alive() ? hello() : finish(new Error('QEMU exited during boot'))), 100);
      const overall = setTimeout(() => finish(new Error('no hello reply')), Math.max(0, deadline - Date.now()));
      hello();
    });
    return agent;
  }

  request(kind: string, data: Record<string, unknown>, worker?: number): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const frame: Record<string, unknown> = { id, kind, data };
      if (worker !== undefined) frame['worker'] = worker;
      this.sock.write(encodeFrame(frame));
    });
  }

  /** Opens a stream; the sink sees every chunk, which is acked (credit returned) at once. */
  async stream(kind: string, data: Record<string, unknown>, sink: StreamSink): Promise<void> {
    const id = this.nextId;
    this.streams.set(id, sink);
    await this.request(kind, { ...data, window: STREAM_WINDOW_BYTES });
  }

  close(): void {
    this.sock.destroy();
  }

  private dispatch(f: { id: number; kind: string; data: Record<string, unknown> }): void {
    const id = Number(f.id);
    switch (f.kind) {
      case 'ok':
      case 'err': {
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        if (f.kind === 'ok') p.resolve(f.data ?? {});
        else p.reject(new Error(`agent: ${String(f.data?.['message'])}`));
        return;
      }
      case 'stream_data': {
        const bytes = f.data['bytes'] as Uint8Array;
        const s = this.streams.get(id);
        if (!s) return;
        s.onData(bytes.byteLength);
        this.sock.write(encodeFrame({ id: this.nextId++, kind: 'stream_ack', data: { stream: id, bytes: bytes.byteLength } }));
        return;
      }
      case 'stream_end': {
        const s = this.streams.get(id);
        this.streams.delete(id);
        s?.onEnd();
        return;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Plain QEMU: the argv provium builds for the same spec, spawned directly.

/** A plain QEMU (spawnPlain): its pid, whether it still runs, and its stderr so far (qemu.stderr in its dir). */
interface PlainQemu { pid: number; exit: Promise<unknown>; alive: () => boolean; stderr: () => string }
interface PlainVm { qemu: PlainQemu; dir: string; agent: RawAgent; bootMs: number }

let profileMemo: Profile | undefined;
let accelMemo: 'kvm' | 'tcg' | undefined;

async function minimalProfile(): Promise<Profile> {
  profileMemo ??= (await builtinProfiles(imageInfo))['minimal']!;
  return profileMemo;
}

async function accel(): Promise<'kvm' | 'tcg'> {
  accelMemo ??= await resolveAccel((await minimalProfile()).accel);
  return accelMemo;
}

/** Same spec as ManagedVm.boot builds for `provium:vm(name, "minimal"):boot()`. */
async function launchSpec(name: string): Promise<LaunchSpec> {
  const profile = await minimalProfile();
  return { name, profile, memoryBytes: profile.memoryBytes, cpus: profile.cpus };
}

const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => {
  try { accessSync(p, fsConstants.X_OK); return true; } catch { return false; }
});

/** The context of provium's argv for a plain QEMU whose sockets live in `dir` (RAM in `ram` when given). */
async function plainContext(dir: string, spec: LaunchSpec, ram?: GuestRam): Promise<LaunchContext> {
  return {
    accel: await accel(),
    initrdPath: spec.profile.initrd, // the minimal profile injects nothing: its initrd is used as is
    qmpSocketPath: path.join(dir, 'qmp.sock'),
    agentSocketPath: path.join(dir, 'agent.sock'),
    consoleSocketPath: path.join(dir, 'console.sock'),
    consoleLogPath: path.join(dir, 'console.log'),
    tscKhz: undefined,
    ...(ram ? { ram } : {}),
  };
}

/**
 * QEMU on provium's argv and environment for `spec`, started as provium starts it (launchProcess),
 * with `fillFirst` (prepareGuestRam: the RAM copy that rides on the spawn) first; stderr in `dir`.
 */
async function spawnPlain(spec: LaunchSpec, ctx: LaunchContext, dir: string, fillFirst: string[] = []): Promise<PlainQemu> {
  const stderrPath = path.join(dir, 'qemu.stderr');
  const proc = await launchProcess([...fillFirst, qemuBinary(), ...buildQemuArgs(spec, ctx)], { env: qemuEnv(), stderrPath });
  plainPids.add(proc.pid);
  let running = true;
  const exit = proc.exit.finally(() => { running = false; plainPids.delete(proc.pid); });
  const stderr = () => { try { return readFileSync(stderrPath, 'utf8').trim(); } catch { return ''; } };
  return { pid: proc.pid, exit, alive: () => running, stderr };
}

async function bootPlain(name: string, extraQemuArgs: string[] = []): Promise<PlainVm> {
  const spec = await launchSpec(name);
  if (extraQemuArgs.length) spec.extraQemuArgs = extraQemuArgs;
  const dir = await mkdtemp(path.join(workDir ?? os.tmpdir(), 'vm-'));
  const ctx = await plainContext(dir, spec);
  // QEMU dials QMP as a client: something must listen. Accept and leave it idle.
  const qmp = net.createServer((s) => { s.on('data', () => undefined); s.on('error', () => undefined); });
  await new Promise<void>((resolve) => qmp.listen(ctx.qmpSocketPath, resolve));
  const started = performance.now();
  const qemu = await spawnPlain(spec, ctx, dir);
  try {
    const agent = await RawAgent.connect(ctx.agentSocketPath, Date.now() + kAgentTimeoutMs, qemu.alive);
    const bootMs = performance.now() - started;
    qmp.close();
    return { qemu, dir, agent, bootMs };
  } catch (err) {
    qmp.close();
    const stderr = qemu.stderr();
    await stopPlain({ qemu, dir });
    throw new Error(`plain QEMU boot failed: ${(err as Error).message}\n${stderr}`);
  }
}

async function stopPlain(vm: { qemu: PlainQemu; dir: string; agent?: RawAgent }): Promise<void> {
  vm.agent?.close();
  if (vm.qemu.alive()) {
    try { process.kill(vm.qemu.pid, 'SIGKILL'); } catch { /* gone */ }
    await vm.qemu.exit;
  }
  await rm(vm.dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// The provium CLI, and its event stream.

interface CliRun { code: number | null; wallMs: number; cpuMs: number; stdout: string; stderr: string; events: DecodedEvent[] }

/** CPU time (user + system, ms) of this process's reaped children: the CLI and all it waited for (QEMU). */
async function childrenCpuMs(): Promise<number> {
  const stat = await readFile('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the command name: field 3 is index 0; cutime and cstime are fields 16 and 17.
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / kClockTicks;
}
const kClockTicks = 100;

async function runCli(
  args: string[],
  opts: { cwd: string; env?: Record<string, string>; events?: boolean; timingsFile: string; onSpawn?: (child: ChildProcess) => void },
): Promise<CliRun> {
  const evFile = path.join(opts.cwd, `events-${process.pid}-${Date.now()}.bin`);
  const full = [cliMain, ...args, '--timings', opts.timingsFile];
  if (opts.events !== false) full.push('--save-events', evFile);
  const cpu0 = await childrenCpuMs();
  const started = performance.now();
  const child = spawn(process.execPath, full, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  opts.onSpawn?.(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  const wallMs = performance.now() - started;
  const cpuMs = (await childrenCpuMs()) - cpu0;
  children.delete(child);
  const events: DecodedEvent[] = [];
  if (opts.events !== false) {
    try {
      for await (const e of readEvents(createReadStream(evFile))) events.push(e);
    } finally {
      await rm(evFile, { force: true });
    }
  }
  return { code, wallMs, cpuMs, stdout, stderr, events };
}

function mustPass(run: CliRun, what: string): CliRun {
  if (run.code !== 0) throw new Error(`${what}: provium exited with ${run.code}\n${run.stdout}\n${run.stderr}`);
  return run;
}

function testDurations(events: DecodedEvent[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of events) if (e.kind === 'test_passed') out.set(String(e.payload['name']), Number(e.payload['duration_ns']) / 1e6);
  return out;
}

function vmSpawned(events: DecodedEvent[]): { bootMs: number; restored: boolean } {
  const e = events.find((x) => x.kind === 'vm_spawned');
  if (!e) throw new Error('no vm_spawned event in the stream');
  return { bootMs: Number(e.payload['boot_ns']) / 1e6, restored: Boolean(e.payload['restored']) };
}

// ---------------------------------------------------------------------------------------------
// Results table.

interface Row { figure: string; floor: string; harness: string; ratio: string; note: string }
const sections: { title: string; rows: Row[] }[] = [];
const problems: string[] = [];

function section(title: string): Row[] {
  const s = { title, rows: [] as Row[] };
  sections.push(s);
  return s.rows;
}

const ms = (x: number) => (x >= 100 ? `${x.toFixed(0)} ms` : x >= 10 ? `${x.toFixed(1)} ms` : `${x.toFixed(2)} ms`);
const secs = (x: number) => `${(x / 1000).toFixed(2)} s`;
const rate = (x: number, unit: string) => `${x >= 100 ? x.toFixed(0) : x.toFixed(1)} ${unit}`;
const times = (x: number) => `${x.toFixed(2)}×`;

function table(): string {
  const head: Row = { figure: 'figure', floor: 'floor', harness: 'harness', ratio: 'h/f time', note: 'note' };
  const all = [head, ...sections.flatMap((s) => s.rows)];
  const w = (k: keyof Row) => Math.max(...all.map((r) => r[k].length));
  const line = (r: Row) =>
    `${r.figure.padEnd(w('figure'))}  ${r.floor.padStart(w('floor'))}  ${r.harness.padStart(w('harness'))}  ${r.ratio.padStart(w('ratio'))}  ${r.note}`.trimEnd();
  const out: string[] = [line(head), '-'.repeat(line(head).length)];
  for (const s of sections) {
    out.push(`[${s.title}]`);
    for (const r of s.rows) out.push(line(r));
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// 1. Boot.

async function benchBoot(work: string, timingsFile: string): Promise<void> {
  const out = section('1. boot to agent-ready (256 MiB, 1 vCPU, q35 + PVH)');
  const bootFile = path.join(luaDir, 'boot.test.lua');
  log('boot: warm-up (makes sure the boot snapshot exists)');
  mustPass(await runCli([bootFile, '--no-progress'], { cwd: work, timingsFile }), 'boot warm-up');
  const floor: number[] = [];
  const cold: number[] = [];
  const snap: number[] = [];
  const floorFirst: number[] = [];
  const coldFirst: number[] = [];
  const snapFirst: number[] = [];
  const coldRatios: number[] = [];
  const firstRun = (run: CliRun) => {
    const v = testDurations(run.events).get('first-run');
    if (v === undefined) throw new Error('boot.test.lua: no test_passed for "first-run"');
    return v;
  };
  for (let i = 0; i < kBootRounds; i++) {
    const vm = await bootPlain('bench-boot');
    floor.push(vm.bootMs);
    const t = performance.now();
    await vm.agent.request('exec', shExec('true'));
    floorFirst.push(performance.now() - t);
    await stopPlain(vm);
    const coldRun = mustPass(await runCli([bootFile, '--no-progress'], { cwd: work, timingsFile, env: { PROVIUM_BOOT_SNAPSHOTS: '0' } }), 'cold boot');
    const c = vmSpawned(coldRun.events);
    if (c.restored) problems.push('boot: a run with PROVIUM_BOOT_SNAPSHOTS=0 reported restored=true');
    cold.push(c.bootMs);
    coldFirst.push(firstRun(coldRun));
    coldRatios.push(c.bootMs / vm.bootMs);
    // The restore itself: through the warm pool (section 12) the run's first boot would wait for a spare and its warm-up command.
    const snapRun = mustPass(await runCli([bootFile, '--no-progress', '--no-warm-pool'], { cwd: work, timingsFile }), 'snapshot boot');
    const s = vmSpawned(snapRun.events);
    if (!s.restored) problems.push('boot: a default-mode run after the warm-up booted cold (restored=false)');
    snap.push(s.bootMs);
    snapFirst.push(firstRun(snapRun));
    log(`boot round ${i + 1}/${kBootRounds}: plain ${ms(vm.bootMs)}, cold ${ms(c.bootMs)}, snapshot ${ms(s.bootMs)}; first command ${ms(floorFirst.at(-1)!)} / ${ms(coldFirst.at(-1)!)} / ${ms(snapFirst.at(-1)!)}`);
  }
  const f = median(floor);
  out.push({ figure: 'cold boot (PROVIUM_BOOT_SNAPSHOTS=0)', floor: secs(f), harness: secs(median(cold)), ratio: times(median(coldRatios)), note: 'target ≤ 1.10×' });
  out.push({ figure: 'boot from the boot snapshot', floor: secs(f), harness: secs(median(snap)), ratio: times(median(snap.map((x, i) => x / floor[i]!))), note: 'restore + agent resync + seed_rng/set_time (--no-warm-pool)' });
  out.push({ figure: '  spread min–max: plain / cold / snapshot', floor: '', harness: '', ratio: '', note: `${spread(floor)} / ${spread(cold)} / ${spread(snap)}` });
  out.push({ figure: 'first vm:run("true") after a cold boot', floor: ms(median(floorFirst)), harness: ms(median(coldFirst)), ratio: times(median(coldFirst.map((x, i) => x / floorFirst[i]!))), note: 'floor: first raw exec after the plain boot' });
  out.push({ figure: 'first vm:run("true") after a snapshot boot', floor: ms(median(floorFirst)), harness: ms(median(snapFirst)), ratio: times(median(snapFirst.map((x, i) => x / floorFirst[i]!))), note: 'a restored guest starts with a cold TCG translation cache' });
}

function spread(xs: number[]): string {
  return `${secs(Math.min(...xs))}–${secs(Math.max(...xs))}`;
}

// ---------------------------------------------------------------------------------------------
// 2–6. Calls, files, stats, streams, workers. One figure at a time: its floor on a long-lived
// plain QEMU over a raw socket, and one provium run of calls.test.lua limited to that figure's tag
// (`--tag X`), alternating which goes first from round to round.

const shExec = (cmd: string) => ({ argv: ['/bin/sh', '-c', cmd], env: {}, env_clear: false, stdin: Buffer.alloc(0) });

async function timeEach(n: number, fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return (performance.now() - t) / n;
}

interface Figure {
  tag: string;
  /** The floor, on the raw agent: one value per round. */
  floor: (a: RawAgent, workers: number[]) => Promise<number>;
  /** The harness value from one run's test durations (ms), `empty` already subtracted. */
  harness: (d: (name: string) => number) => number;
}

const extra = { ping: [] as number[], execTrue: [] as number[], rpcOnly: [] as number[] };

const figures: Figure[] = [
  {
    tag: 'run',
    floor: async (a) => {
      const v = await timeEach(kCallsN, () => a.request('exec', shExec('true')));
      extra.execTrue.push(await timeEach(kCallsN, () => a.request('exec', { ...shExec('true'), argv: ['true'] })));
      extra.ping.push(await timeEach(kCallsN, () => a.request('ping', { token: 'x' })));
      return v;
    },
    harness: (d) => d('run-true-x200') / kCallsN,
  },
  {
    tag: 'stat',
    floor: (a) => timeEach(kCallsN, () => a.request('stat', { path: '/' })),
    harness: (d) => {
      extra.rpcOnly.push(d('state-x200') / kCallsN);
      return d('stat-x200') / kCallsN;
    },
  },
  {
    tag: 'files',
    // ms per call (write_file and read_file each count as one call)
    floor: async (a) => {
      const data = Buffer.alloc(4096, 'x');
      const pair = await timeEach(kFileRounds, async () => {
        await a.request('write_file', { path: '/tmp/bench-f', data });
        const r = await a.request('read_file', { path: '/tmp/bench-f' });
        if ((r['data'] as Uint8Array).byteLength !== 4096) throw new Error('raw read_file: wrong size');
      });
      return pair / 2;
    },
    harness: (d) => d('files-4k-x100') / (2 * kFileRounds),
  },
  {
    tag: 'batch',
    // ms per batch of kCallsN stats
    floor: (a) => {
      const ops = Array.from({ length: kCallsN }, () => ({ kind: 'stat', data: { path: '/' } }));
      return timeEach(kBatches, () => a.request('batch', { ops }));
    },
    harness: (d) => d('stat-batch-5x200') / kBatches,
  },
  {
    tag: 'stream',
    // ms from spawn to exit, all 32 MiB consumed
    floor: async (a) => {
      const t0 = performance.now();
      const p = await a.request('spawn', shExec('exec dd if=/dev/zero bs=65536 count=512 2>/dev/null'));
      let got = 0;
      await new Promise<void>((resolve, reject) => {
        a.stream('proc_stream', { handle: p['handle'], which: 'stdout' }, { onData: (n) => { got += n; }, onEnd: resolve }).catch(reject);
      });
      await a.request('wait', { handle: p['handle'] });
      if (got !== kStreamBytes) throw new Error(`raw proc_stream: got ${got} bytes, expected ${kStreamBytes}`);
      return performance.now() - t0;
    },
    harness: (d) => d('stream-32MiB'),
  },
  {
    tag: 'workers',
    // ms for `sleep 1` in 4 workers at once
    floor: async (a, workers) => {
      const t0 = performance.now();
      await Promise.all(workers.map((w) => a.request('exec', shExec('sleep 1'), w)));
      return performance.now() - t0;
    },
    harness: (d) => d('workers-4x-sleep1'),
  },
];

async function benchCalls(work: string, timingsFile: string): Promise<void> {
  const callsFile = path.join(luaDir, 'calls.test.lua');
  log('calls: booting the plain QEMU for the raw-agent floors');
  const vm = await bootPlain('bench-calls');
  const floor = new Map<string, number[]>(figures.map((f) => [f.tag, []]));
  const harness = new Map<string, number[]>(figures.map((f) => [f.tag, []]));
  try {
    const workers: number[] = [];
    for (let i = 0; i < kWorkers; i++) workers.push(Number((await vm.agent.request('spawn_worker', {}))['worker']));
    // Warm-up, as the Lua file does.
    for (let i = 0; i < 20; i++) {
      await vm.agent.request('exec', shExec('true'));
      await vm.agent.request('stat', { path: '/' });
    }
    for (let round = 0; round < kRounds; round++) {
      for (const fig of figures) {
        const doFloor = async () => floor.get(fig.tag)!.push(await fig.floor(vm.agent, workers));
        const doHarness = async () => {
          const run = mustPass(await runCli([callsFile, '--no-progress', '--tag', fig.tag], { cwd: work, timingsFile }), `calls.test.lua --tag ${fig.tag}`);
          const d = testDurations(run.events);
          const need = (name: string) => {
            const v = d.get(name);
            if (v === undefined) throw new Error(`calls.test.lua --tag ${fig.tag}: no test_passed for "${name}"`);
            return v;
          };
          const empty = need('empty');
          harness.get(fig.tag)!.push(fig.harness((name) => need(name) - empty));
        };
        if (round % 2 === 0) { await doFloor(); await doHarness(); } else { await doHarness(); await doFloor(); }
      }
      const f = (t: string) => floor.get(t)!.at(-1)!;
      const h = (t: string) => harness.get(t)!.at(-1)!;
      log(`calls round ${round + 1}/${kRounds}: run ${ms(f('run'))} | ${ms(h('run'))}, stat ${ms(f('stat'))} | ${ms(h('stat'))}, file call ${ms(f('files'))} | ${ms(h('files'))}, batch ${ms(f('batch'))} | ${ms(h('batch'))}, stream ${ms(f('stream'))} | ${ms(h('stream'))}, workers ${ms(f('workers'))} | ${ms(h('workers'))}`);
    }
  } finally {
    await stopPlain(vm);
  }
  const F = (t: string) => median(floor.get(t)!);
  const H = (t: string) => median(harness.get(t)!);
  // Per round (floor and harness measured back to back), then the median.
  const over = (t: string) => median(harness.get(t)!.map((h, i) => h - floor.get(t)![i]!));
  const ratio = (t: string) => median(harness.get(t)!.map((h, i) => h / floor.get(t)![i]!));

  const cmd = section('2. commands: time per call (Lua → RPC → broker → agent, vs the raw agent socket)');
  cmd.push({ figure: 'vm:run("true")  [exec /bin/sh -c true]', floor: ms(F('run')), harness: ms(H('run')), ratio: times(ratio('run')), note: `overhead ${ms(over('run'))}/call (target ≤ 1 ms)` });
  cmd.push({ figure: 'vm:stat("/")', floor: ms(F('stat')), harness: ms(H('stat')), ratio: times(ratio('stat')), note: `overhead ${ms(over('stat'))}/call (target ≤ 1 ms)` });
  cmd.push({ figure: 'vm:state()  [broker RPC only, no agent]', floor: '', harness: ms(median(extra.rpcOnly)), ratio: '', note: 'Lua → worker RPC → broker → back' });
  cmd.push({ figure: 'raw agent ping (reference)', floor: ms(median(extra.ping)), harness: '', ratio: '', note: 'the agent echo round trip' });
  cmd.push({ figure: 'raw exec of argv ["true"] (reference)', floor: ms(median(extra.execTrue)), harness: '', ratio: '', note: 'no shell' });

  const perS = (msPer: number, n = 1) => (n * 1000) / msPer;
  const files = section('3. small files: vm:write_file + vm:read_file of 4 KiB');
  files.push({ figure: 'file calls per second (each call counts)', floor: rate(perS(F('files')), '/s'), harness: rate(perS(H('files')), '/s'), ratio: times(ratio('files')), note: `overhead ${ms(over('files'))}/call; ${kFileRounds} write+read pairs` });

  const stats = section('4. stat round trips per second');
  stats.push({ figure: 'vm:stat, one call each', floor: rate(perS(F('stat')), '/s'), harness: rate(perS(H('stat')), '/s'), ratio: times(ratio('stat')), note: 'same runs as vm:stat above' });
  stats.push({ figure: `stat in vm:batch (${kCallsN} per batch)`, floor: rate(perS(F('batch'), kCallsN), '/s'), harness: rate(perS(H('batch'), kCallsN), '/s'), ratio: times(ratio('batch')), note: `overhead ${ms(over('batch'))}/batch = ${(over('batch') * 1000 / kCallsN).toFixed(0)} µs/stat; ${kBatches} batches per run` });

  const st = section("5. streaming a guest process's stdout (32 MiB from dd)");
  const mibs = (msTotal: number) => kStreamBytes / 1048576 / (msTotal / 1000);
  st.push({ figure: 'proc:stdout_stream() vs raw proc_stream', floor: rate(mibs(F('stream')), 'MiB/s'), harness: rate(mibs(H('stream')), 'MiB/s'), ratio: times(ratio('stream')), note: 'spawn to exit, 64 KiB chunks, 1 MiB credit window' });

  const wk = section('6. worker concurrency: `sleep 1` in 4 workers at once');
  wk.push({ figure: 'elapsed / 1 s', floor: times(F('workers') / 1000), harness: times(H('workers') / 1000), ratio: times(ratio('workers')), note: 'ideal 1.00× (one after the other: 4×); workers spawned before timing' });
}

// ---------------------------------------------------------------------------------------------
// 7. Dispatch overhead per file: 200 files with one empty test, -j2, minus a 1-file run.

async function benchDispatch(work: string, timingsFile: string): Promise<void> {
  const many = path.join(work, 'dispatch-many');
  const one = path.join(work, 'dispatch-one');
  await mkdir(many, { recursive: true });
  await mkdir(one, { recursive: true });
  const body = 'test("empty", function(t) end)\n';
  for (let i = 0; i < kDispatchFiles; i++) await writeFile(path.join(many, `f${String(i).padStart(3, '0')}.test.lua`), body);
  await writeFile(path.join(one, 'f000.test.lua'), body);
  const base: number[] = [];
  const full: number[] = [];
  const per: number[] = [];
  for (let i = 0; i < kRounds; i++) {
    const b = mustPass(await runCli([one, '--no-progress', '-j2'], { cwd: work, timingsFile, events: false }), 'dispatch 1 file');
    const m = mustPass(await runCli([many, '--no-progress', '-j2'], { cwd: work, timingsFile, events: false }), `dispatch ${kDispatchFiles} files`);
    base.push(b.wallMs);
    full.push(m.wallMs);
    per.push((m.wallMs - b.wallMs) / kDispatchFiles);
    log(`dispatch round ${i + 1}/${kRounds}: 1 file ${ms(b.wallMs)}, ${kDispatchFiles} files ${ms(m.wallMs)}`);
  }
  const out = section(`7. dispatch overhead per file (${kDispatchFiles} files, one empty test each, no VM, -j2)`);
  out.push({ figure: `whole CLI run: 1 file / ${kDispatchFiles} files`, floor: ms(median(base)), harness: ms(median(full)), ratio: '', note: 'process wall time' });
  out.push({ figure: 'per file = (wall − 1-file wall) / 200', floor: '', harness: ms(median(per)), ratio: '', note: `${rate(1000 / median(per), 'files/s')} with 2 workers` });
}

// ---------------------------------------------------------------------------------------------
// 8. Suite of 8 VM files at -j1 and -j2.

async function benchSuite(work: string, timingsFile: string): Promise<void> {
  const dir = path.join(work, 'suite');
  await mkdir(dir, { recursive: true });
  for (let i = 1; i <= kSuiteFiles; i++) {
    await writeFile(
      path.join(dir, `s${i}.test.lua`),
      `local vm = provium:vm("s${i}", "minimal"):boot()\ntest("one command", function(t)\n  vm:run("true"):assert_ok()\nend)\n`,
    );
  }
  const j1: number[] = [];
  const j2: number[] = [];
  const speed: number[] = [];
  const cpu1: number[] = [];
  const cpu2: number[] = [];
  for (let i = 0; i < kRounds; i++) {
    const a = mustPass(await runCli([dir, '--no-progress', '-j1'], { cwd: work, timingsFile, events: false }), 'suite -j1');
    const b = mustPass(await runCli([dir, '--no-progress', '-j2'], { cwd: work, timingsFile, events: false }), 'suite -j2');
    j1.push(a.wallMs);
    j2.push(b.wallMs);
    speed.push(a.wallMs / b.wallMs);
    cpu1.push(a.cpuMs);
    cpu2.push(b.cpuMs);
    log(`suite round ${i + 1}/${kRounds}: -j1 ${secs(a.wallMs)} (cpu ${secs(a.cpuMs)}), -j2 ${secs(b.wallMs)} (cpu ${secs(b.cpuMs)})`);
  }
  const out = section(`8. suite of ${kSuiteFiles} files, each boots a VM and runs one command (boot snapshots on)`);
  out.push({ figure: 'whole CLI run: -j1 (floor column) / -j2', floor: secs(median(j1)), harness: secs(median(j2)), ratio: times(median(j2) / median(j1)), note: `speed-up ${times(median(speed))} on ${os.cpus().length} cores` });
  out.push({ figure: '  CPU time of the whole run (CLI + QEMU): -j1 / -j2', floor: secs(median(cpu1)), harness: secs(median(cpu2)), ratio: '', note: `-j1 keeps ${(median(cpu1) / median(j1)).toFixed(2)} cores busy` });
}

// ---------------------------------------------------------------------------------------------
// 9. Shard balance from a skewed timing record (no VM).

async function benchShards(work: string): Promise<void> {
  const dir = path.join(work, 'shards');
  await mkdir(dir, { recursive: true });
  const record: Record<string, { duration_ms: number; runs: number }> = {};
  const dur = new Map<string, number>();
  for (let i = 0; i < kShardFiles; i++) {
    const name = `t${String(i).padStart(2, '0')}.test.lua`;
    await writeFile(path.join(dir, name), 'test("t", function(t) end)\n');
    // 3 files of 60 s, 2 of 30 s, 35 of 1 s: 275 s in all, which balances to 69 s per shard at
    // best (60+8, 60+9, 60+9, 30+30+9); a split by count or by hash is far off.
    const ms_ = i < 3 ? 60_000 : i < 5 ? 30_000 : 1_000;
    record[name] = { duration_ms: ms_, runs: 3 };
    dur.set(name, ms_);
  }
  const timings = path.join(dir, 'timings.json');
  await writeFile(timings, JSON.stringify({ version: 1, files: record }));
  const sums: number[] = [];
  const seen = new Map<string, number>();
  for (let i = 1; i <= kShards; i++) {
    // Run from inside the directory: timing keys are relative to the project directory (the cwd here).
    const run = mustPass(await runCli(['list', '.', '--json', '--shard', `${i}/${kShards}`], { cwd: dir, timingsFile: timings, events: false }), `list --shard ${i}/${kShards}`);
    let sum = 0;
    for (const line of run.stdout.split('\n')) {
      if (!line.trim()) continue;
      const p = path.basename(String((JSON.parse(line) as { path: string }).path));
      seen.set(p, (seen.get(p) ?? 0) + 1);
      sum += dur.get(p) ?? Number.NaN;
    }
    sums.push(sum);
  }
  const total = [...dur.values()].reduce((a, b) => a + b, 0);
  const mean = total / kShards;
  // Best possible largest shard (durations are whole seconds): no less than the largest file, nor
  // than the mean rounded up to a whole second.
  const bound = Math.max(Math.max(...dur.values()), Math.ceil(mean / 1000) * 1000);
  const partition = seen.size === kShardFiles && [...seen.values()].every((n) => n === 1);
  if (!partition) problems.push(`shards: not a partition (${seen.size} distinct files listed of ${kShardFiles}, some listed more than once or missing)`);
  const out = section(`9. shard balance: ${kShardFiles} files (3 × 60 s, 2 × 30 s, 35 × 1 s recorded), --shard i/${kShards}`);
  out.push({ figure: 'largest shard / mean shard', floor: times(bound / mean), harness: times(Math.max(...sums) / mean), ratio: '', note: `floor = best possible; shard sums ${sums.map((s) => `${s / 1000}s`).join(', ')}; ${partition ? 'a partition' : 'NOT a partition'}` });
}

// ---------------------------------------------------------------------------------------------
// 10. Network: two guests on a bridge (the broker's userspace switch, NICs hot-plugged after a
// snapshot boot) vs the floor, two plain QEMUs (the argv provium builds) joined directly by QEMU's
// own `-netdev stream` pair (A listens, B dials), NICs on the command line, addresses set through
// the raw agent. Both sides run the same guest commands and the same parsers read their output:
// ping's own RTTs, and a TCP transfer timed by the receiver's clock. Then vm:boot() from the boot
// snapshot with two NICs vs with none (both harness: the floor column is the VM without NICs).

const kNetMacs = ['52:54:00:be:00:01', '52:54:00:be:00:02'] as const;
const kNetIps = ['10.250.0.2', '10.250.0.3'] as const;

const stdoutOf = (r: Record<string, unknown>) => Buffer.from(r['stdout'] as Uint8Array).toString('utf8');

async function mustExec(agent: RawAgent, cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await agent.request('exec', { ...shExec(cmd), timeout_ms: timeoutMs });
  if (r['status'] !== 'exited' || r['code'] !== 0) {
    const err = Buffer.from(r['stderr'] as Uint8Array).toString('utf8').trim();
    throw new Error(`raw exec \`${cmd}\`: ${String(r['status'])} ${String(r['code'])}: ${err}`);
  }
  return stdoutOf(r);
}

/** Median of the per-packet RTTs busybox ping prints (ms). */
function parsePing(out: string, what: string): number {
  const times = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (times.length !== kNetPings) throw new Error(`${what}: ${times.length} of ${kNetPings} ping replies\n${out}`);
  return median(times);
}

/** The receiver's output (uptime at the first byte, bytes after it, uptime at EOF) as MiB/s. */
function parseXfer(out: string, what: string): number {
  const m = /^([\d.]+)\s+(\d+)\s+([\d.]+)$/.exec(out.trim());
  if (!m) throw new Error(`${what}: unexpected receiver output ${JSON.stringify(out)}`);
  const bytes = Number(m[2]) + 1; // + the first byte, read before the clock started
  const s = Number(m[3]) - Number(m[1]);
  if (bytes !== kNetXferBytes) throw new Error(`${what}: received ${bytes} bytes, expected ${kNetXferBytes}`);
  if (!(s > 0)) throw new Error(`${what}: transfer took ${s} s by the guest's clock (10 ms resolution)`);
  return bytes / 1048576 / s;
}

/** Two plain QEMUs joined by a direct `-netdev stream` link, addressed, with `a` and `b` in /etc/hosts. */
async function bootLinkedPair(work: string): Promise<[PlainVm, PlainVm]> {
  const dir = await mkdtemp(path.join(work, 'link-'));
  const sock = path.join(dir, 'link.sock');
  // On a pcie-root-port (bus=hp0), like the harness's hot-plugged NICs.
  const nic = (i: 0 | 1) => [
    '-netdev', `stream,id=n0,server=${i === 0 ? 'on' : 'off'},addr.type=unix,addr.path=${sock}`,
    '-device', `virtio-net-pci,netdev=n0,mac=${kNetMacs[i]},bus=hp0`,
  ];
  const pa = bootPlain('bench-net-a', nic(0));
  let aSettled = false;
  pa.then(() => { aSettled = true; }, () => { aSettled = true; });
  // B dials A's socket once, at start-up: wait for A's QEMU to listen first.
  const deadline = Date.now() + kAgentTimeoutMs;
  while (!existsSync(sock) && !aSettled && Date.now() < deadline) await sleep(5);
  if (!existsSync(sock)) {
    await stopPlain(await pa); // throws A's boot error, if that is why
    throw new Error(`plain QEMU a never listened on ${sock}`);
  }
  await sleep(100); // bind() made the file; let listen() follow (a probe would take A's one connection)
  let b: PlainVm;
  try {
    b = await bootPlain('bench-net-b', nic(1));
  } catch (err) {
    await pa.then(stopPlain, () => undefined);
    throw err;
  }
  let a: PlainVm;
  try {
    a = await pa;
  } catch (err) {
    await stopPlain(b);
    throw err;
  }
  try {
    const hosts = Buffer.from(`127.0.0.1\tlocalhost\n${kNetIps[0]}\ta\n${kNetIps[1]}\tb\n`);
    for (const [i, vm] of [a, b].entries()) {
      // The broker's configuration script, less its bookkeeping: the interface by MAC, up, addressed.
      await mustExec(vm.agent, [
        'i=0',
        `while :; do for d in /sys/class/net/*; do [ "$(cat $d/address 2>/dev/null)" = "${kNetMacs[i]}" ] && IF=\${d##*/}; done`,
        '  [ -n "$IF" ] && break; i=$((i+1)); [ $i -gt 200 ] && { echo "no interface with MAC ' + kNetMacs[i] + '" >&2; exit 1; }; sleep 0.05',
        'done',
        'ip link set "$IF" up',
        `ip addr add ${kNetIps[i]}/24 dev "$IF"`,
      ].join('\n'));
      await vm.agent.request('write_file', { path: '/etc/hosts', data: hosts });
    }
  } catch (err) {
    await stopPlain(a);
    await stopPlain(b);
    throw err;
  }
  return [a, b];
}

/** One floor round on the linked pair: ping RTT (ms) and the transfer's rate (MiB/s). */
async function netFloorRound(a: PlainVm, b: PlainVm, port: number): Promise<{ rtt: number; mibs: number }> {
  await mustExec(a.agent, kNetPingWarm);
  const rtt = parsePing(await mustExec(a.agent, kNetPing), 'floor ping');
  // Spawned, as run_async does: its stdin stays open (nc -l ends the connection at EOF on stdin).
  const handle = (await b.agent.request('spawn', shExec(kNetRecv(port))))['handle'];
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await b.agent.request('exec', shExec(kNetListening(port)));
    if (r['code'] === 0) break;
    if (Date.now() > deadline) throw new Error(`floor: nc never listened on port ${port}`);
    await sleep(50);
  }
  await mustExec(a.agent, kNetSend(port));
  const r = await b.agent.request('wait', { handle, timeout_ms: 60_000 });
  if (r['status'] !== 'exited' || r['code'] !== 0) throw new Error(`floor receiver: ${String(r['status'])} ${String(r['code'])}: ${Buffer.from(r['stderr'] as Uint8Array).toString('utf8').trim()}`);
  return { rtt, mibs: parseXfer(stdoutOf(r), 'floor transfer') };
}

/** Each test's printed log from a `--json` run. */
function testLogs(run: CliRun): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of run.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const file = JSON.parse(line) as { tests?: { name: string; log?: string[] }[] };
    for (const t of file.tests ?? []) out.set(t.name, (t.log ?? []).join('\n'));
  }
  return out;
}

async function benchNetwork(work: string, timingsFile: string): Promise<void> {
  const netFile = path.join(luaDir, 'network.test.lua');
  const bootFile = path.join(luaDir, 'net-boot.test.lua');
  const started = performance.now();
  log('net: booting two plain QEMUs joined by a direct -netdev stream link');
  const [a, b] = await bootLinkedPair(work);
  const fRtt: number[] = [];
  const hRtt: number[] = [];
  const fRate: number[] = [];
  const hRate: number[] = [];
  const floorMs: number[] = [];
  const harnessMs: number[] = [];
  log(`net: linked pair up (${secs(performance.now() - started)})`);
  try {
    for (let round = 0; round < kNetRounds; round++) {
      const doFloor = async () => {
        const t0 = performance.now();
        const f = await netFloorRound(a, b, 9000 + round);
        floorMs.push(performance.now() - t0);
        fRtt.push(f.rtt);
        fRate.push(f.mibs);
      };
      const doHarness = async () => {
        const run = mustPass(await runCli([netFile, '--no-progress', '--json'], { cwd: work, timingsFile, events: false }), 'network.test.lua');
        harnessMs.push(run.wallMs);
        const logs = testLogs(run);
        hRtt.push(parsePing(logs.get('ping') ?? '', 'harness ping'));
        hRate.push(parseXfer(logs.get('xfer-32MiB') ?? '', 'harness transfer'));
      };
      if (round % 2 === 0) { await doFloor(); await doHarness(); } else { await doHarness(); await doFloor(); }
      log(`net round ${round + 1}/${kNetRounds} (${secs(performance.now() - started)}): ping ${ms(fRtt.at(-1)!)} | ${ms(hRtt.at(-1)!)}, 32 MiB ${rate(fRate.at(-1)!, 'MiB/s')} | ${rate(hRate.at(-1)!, 'MiB/s')}; took ${secs(floorMs.at(-1)!)} | ${secs(harnessMs.at(-1)!)}`);
    }
  } finally {
    await stopPlain(a);
    await stopPlain(b);
  }
  const boot0: number[] = [];
  const boot2: number[] = [];
  const spawned0: number[] = [];
  const spawned2: number[] = [];
  // The runs of network.test.lua above made sure the boot snapshot exists.
  for (let round = 0; round < kNetBootRounds; round++) {
    const run = mustPass(await runCli([bootFile, '--no-progress'], { cwd: work, timingsFile }), 'net-boot.test.lua');
    const d = testDurations(run.events);
    const need = (name: string) => {
      const v = d.get(name);
      if (v === undefined) throw new Error(`net-boot.test.lua: no test_passed for "${name}"`);
      return v;
    };
    const spawned = (name: string) => {
      const e = run.events.find((x) => x.kind === 'vm_spawned' && x.payload['vm_name'] === name);
      if (!e) throw new Error(`net-boot.test.lua: no vm_spawned for ${name}`);
      if (!e.payload['restored']) problems.push(`net: vm \`${name}\` booted cold (restored=false)`);
      return Number(e.payload['boot_ns']) / 1e6;
    };
    for (const pair of [1, 2]) {
      boot0.push(need(`boot-0nic-${pair}`));
      boot2.push(need(`boot-2nic-${pair}`));
      spawned0.push(spawned(`plain${pair}`));
      spawned2.push(spawned(`nics${pair}`));
    }
    log(`net boot round ${round + 1}/${kNetBootRounds} (${secs(performance.now() - started)}): 0 NICs ${ms(boot0.at(-2)!)}, ${ms(boot0.at(-1)!)} (vm_spawned ${ms(spawned0.at(-2)!)}, ${ms(spawned0.at(-1)!)}); 2 NICs ${ms(boot2.at(-2)!)}, ${ms(boot2.at(-1)!)} (vm_spawned ${ms(spawned2.at(-2)!)}, ${ms(spawned2.at(-1)!)})`);
  }
  log(`net: section took ${secs(performance.now() - started)}`);

  const perRound = (h: number[], f: number[], op: (h: number, f: number) => number) => median(h.map((x, i) => op(x, f[i]!)));
  const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const rttOver = perRound(hRtt, fRtt, (h, f) => h - f);
  const rateRatio = perRound(hRate, fRate, (h, f) => h / f);
  const out = section(`10. network: two guests on a bridge (broker's switch) vs a direct QEMU -netdev stream link (${kNetRounds} rounds; boots: ${kNetBootRounds} × 2)`);
  out.push({ figure: `ping RTT a → b  [busybox ping, median of ${kNetPings}]`, floor: ms(median(fRtt)), harness: ms(median(hRtt)), ratio: times(perRound(hRtt, fRtt, (h, f) => h / f)), note: `${rttOver < 0 ? '−' : '+'}${ms(Math.abs(rttOver))} over the direct link (target ≤ +1.5 ms: ${verdict(rttOver <= 1.5)})` });
  out.push({ figure: 'TCP 32 MiB a → b  [dd | nc, receiver\'s clock]', floor: rate(median(fRate), 'MiB/s'), harness: rate(median(hRate), 'MiB/s'), ratio: times(perRound(hRate, fRate, (h, f) => f / h)), note: `switch/direct rate ${rateRatio.toFixed(2)} (target ≥ 0.70: ${verdict(rateRatio >= 0.7)})` });
  // The restore's own noise is large on a busy machine; what the NICs add comes after agent-ready.
  const after0 = boot0.map((x, i) => x - spawned0[i]!);
  const after2 = boot2.map((x, i) => x - spawned2[i]!);
  out.push({ figure: 'vm:boot() from the snapshot: no NIC / 2 NICs', floor: ms(median(boot0)), harness: ms(median(boot2)), ratio: times(perRound(boot2, boot0, (h, f) => h / f)), note: `${kNetBootRounds * 2} boots of each, alternating; whole vm:boot() as the test sees it` });
  out.push({ figure: '  restore to agent-ready (vm_spawned.boot_ns)', floor: ms(median(spawned0)), harness: ms(median(spawned2)), ratio: '', note: `spread ${ms(Math.min(...spawned0, ...spawned2))}–${ms(Math.max(...spawned0, ...spawned2))}: the same work either way` });
  out.push({ figure: '  after agent-ready: NICs plugged and configured', floor: ms(median(after0)), harness: ms(median(after2)), ratio: '', note: `2 NICs add ${ms(median(after2) - median(after0))} (hot-plug, link, address, /etc/hosts)` });
}

// ---------------------------------------------------------------------------------------------
// 11. Disks: /dev/vda of a provium VM (virtio-blk hot-plugged after a snapshot boot), with each
// backend: "qemu" (QEMU opens a raw file behind a blkdebug filter) and "nbd" (the broker's NBD
// server, QEMU's `nbd` block driver as the client), vs the floor, a plain QEMU (the argv provium
// builds) with a raw image file on its command line (`-drive file=…,format=raw,if=virtio`, QEMU's
// defaults: cache=writeback, aio=threads). Both sides run the same guest commands, written once
// here (the harness side as a Lua file generated into the work directory), and the same parser
// reads what they print: the elapsed time by the guest's monotonic clock (`now at … nsecs` of
// /proc/timer_list, read with shell builtins, so no process starts around the clock reads) and
// the deltas of /sys/block/vda/stat, which show that every request reached the device (direct
// I/O: the guest's page cache is out of the way). Random reads: busybox has no fio and its dd
// reads one offset per process, so each random read is a dd of its own, on both sides; the
// 4 KiB reads of one dd process (sequential offsets, one request at a time) give the per-request
// cost without the process start. A reference beside the floor: a second plain QEMU whose disk is
// served by qemu-nbd through the same nbd client, to tell the NBD path's own cost from the broker's.

const kDiskRounds = 3;
const kDiskMiB = 64;
const kDiskSeqReads = 2048;
const kDiskRandReads = 200;
const kDiskRandSeed = 7;

interface DiskWorkload {
  /** The test's name in the generated Lua file. */
  name: string;
  /** Untimed set-up, in the same shell. */
  prep?: string;
  /** The timed commands; they exit non-zero on failure. */
  work: string;
  /** What the figure counts (MiB, or reads) and how many; the stat deltas that prove it. */
  amount: number;
  minReads?: number;
  minReadSectors?: number;
  minWriteSectors?: number;
}

const kDiskWorkloads: DiskWorkload[] = [
  {
    name: 'write-64MiB',
    work: `dd if=/dev/zero of=/dev/vda bs=1M count=${kDiskMiB} oflag=direct || exit 1`,
    amount: kDiskMiB,
    minWriteSectors: kDiskMiB * 2048,
  },
  {
    name: 'read-64MiB',
    work: `dd if=/dev/vda of=/dev/null bs=1M count=${kDiskMiB} iflag=direct || exit 1`,
    amount: kDiskMiB,
    minReadSectors: kDiskMiB * 2048,
  },
  {
    name: 'read-4k-one-dd',
    work: `dd if=/dev/vda of=/dev/null bs=4k count=${kDiskSeqReads} iflag=direct || exit 1`,
    amount: kDiskSeqReads,
    minReads: kDiskSeqReads,
    minReadSectors: kDiskSeqReads * 8,
  },
  {
    name: 'read-4k-random',
    // The same offsets on both sides: busybox awk's generator with a fixed seed.
    prep: `B=$(awk 'BEGIN { srand(${kDiskRandSeed}); for (i = 0; i < ${kDiskRandReads}; i++) print int(rand() * ${kDiskMiB * 256}) }')`,
    work: `for b in $B; do dd if=/dev/vda of=/dev/null bs=4k count=1 skip=$b iflag=direct 2>/dev/null || { echo "dd failed at block $b" >&2; exit 1; }; done`,
    amount: kDiskRandReads,
    minReads: kDiskRandReads,
    minReadSectors: kDiskRandReads * 8,
  },
];

/**
 * Untimed, before the figures on both sides: the TCG translation cache of the paths the figures
 * take, and one write of the whole disk, so both image files are allocated on the host before the
 * write figure (the harness's disk is a new sparse file every run; the floor's is reused).
 */
const kDiskWarmUp = [
  `dd if=/dev/zero of=/dev/vda bs=1M count=${kDiskMiB} oflag=direct 2>/dev/null`,
  'dd if=/dev/vda of=/dev/null bs=1M count=2 iflag=direct 2>/dev/null',
  'dd if=/dev/vda of=/dev/null bs=4k count=64 iflag=direct 2>/dev/null',
  'for b in 1 9 17 25; do dd if=/dev/vda of=/dev/null bs=4k count=1 skip=$b iflag=direct 2>/dev/null; done',
].join(' && ');

/** A workload wrapped in the guest's measurement: prints `ns reads read-sectors writes write-sectors`. */
function diskCommand(w: DiskWorkload): string {
  return [
    'now() { { read l; read l; read _ _ n _; } < /proc/timer_list; }',
    'io() { read ri _ rs _ wi _ ws _ < /sys/block/vda/stat; }',
    ...(w.prep ? [w.prep] : []),
    'io; r0=$ri; s0=$rs; w0=$wi; x0=$ws; now; t0=$n',
    w.work,
    'now; t1=$n; io',
    'echo $((t1 - t0)) $((ri - r0)) $((rs - s0)) $((wi - w0)) $((ws - x0))',
  ].join('\n');
}

type DiskBackend = 'qemu' | 'nbd';
const kDiskBackends: DiskBackend[] = ['qemu', 'nbd'];

/** The harness side: the same commands, in one VM with a 64 MiB disk on `backend`, one test per figure. */
function diskLua(backend: DiskBackend): string {
  const long = (cmd: string) => {
    if (cmd.includes(']==]')) throw new Error(`disk command contains ]==]: ${cmd}`);
    return `[==[${cmd}]==]`;
  };
  return [
    '-- Generated by bench/bench.ts (section 11): the harness side of the disk figures. Each test runs',
    '-- one guest command and prints its measurement, read back from --json; the floor runs the same',
    '-- commands over the raw agent of a plain QEMU with the disk as a raw image on -drive.',
    `local vm = provium:vm("disk", "minimal", {disks = {{id = "data", size = "${kDiskMiB}M", backend = "${backend}"}}}):boot()`,
    'local function probe(cmd)',
    '  local r = vm:run(cmd)',
    '  r:assert_ok()',
    '  print(r.stdout)',
    'end',
    'test("warm-up", function(t)',
    '  t:assert_eq(vm:disk("data"):device(), "/dev/vda")',
    `  t:assert_eq(vm:run("cat /sys/block/vda/size").stdout, "${kDiskMiB * 2048}\\n")`,
    `  vm:run(${long(kDiskWarmUp)}):assert_ok()`,
    'end)',
    ...kDiskWorkloads.map((w) => `test("${w.name}", function(t)\n  probe(${long(diskCommand(w))})\nend)`),
    '',
  ].join('\n');
}

/** One workload's printed measurement as its rate (MiB/s or reads/s), after checking the stat deltas. */
function parseDisk(out: string, w: DiskWorkload, what: string): number {
  const m = /^(\d+) (\d+) (\d+) (\d+) (\d+)$/.exec(out.trim());
  if (!m) throw new Error(`${what} ${w.name}: unexpected output ${JSON.stringify(out)}`);
  const [ns, reads, readSectors, , writeSectors] = m.slice(1).map(Number) as [number, number, number, number, number];
  const short = (got: number, want: number | undefined, of: string) => {
    if (want !== undefined && got < want) throw new Error(`${what} ${w.name}: /sys/block/vda/stat counted ${got} ${of}, expected at least ${want} (did the I/O reach the device?)`);
  };
  short(reads, w.minReads, 'reads');
  short(readSectors, w.minReadSectors, 'read sectors');
  short(writeSectors, w.minWriteSectors, 'written sectors');
  if (!(ns > 0)) throw new Error(`${what} ${w.name}: took ${ns} ns by the guest's clock`);
  return w.amount / (ns / 1e9);
}

/** qemu-nbd serving `image` on a Unix socket, as a reference NBD server (QEMU's own). */
async function startQemuNbd(image: string, sock: string): Promise<ChildProcess> {
  const bin = path.join(path.dirname(qemuBinary()), 'qemu-nbd');
  const nbd = existsSync(bin) ? bin : 'qemu-nbd';
  const args = ['--persistent', '--shared=4', '--format=raw', `--socket=${sock}`, image];
  const argv = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', nbd, ...args] : [nbd, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.on('error', (e) => { stderr += e.message; });
  const deadline = Date.now() + 10_000;
  while (!existsSync(sock)) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      children.delete(child);
      throw new Error(`qemu-nbd did not listen on ${sock}: ${stderr.trim()}`);
    }
    await sleep(10);
  }
  await sleep(50); // bind() made the file; let listen() follow
  return child;
}

async function benchDisk(work: string, timingsFile: string): Promise<void> {
  const started = performance.now();
  const luaFiles = new Map<DiskBackend, string>();
  for (const b of kDiskBackends) {
    luaFiles.set(b, path.join(work, `disk-${b}.test.lua`));
    await writeFile(luaFiles.get(b)!, diskLua(b));
  }
  const images: string[] = [];
  const newImage = async (name: string) => {
    const p = path.join(work, name);
    await writeFile(p, '');
    await truncate(p, kDiskMiB * 1048576);
    images.push(p);
    return p;
  };
  const driveImage = await newImage('disk-floor.img');
  const refImage = await newImage('disk-ref.img');
  const refSock = path.join(work, 'disk-ref.sock');
  log('disk: booting the plain QEMUs: a raw image on -drive (floor), and QEMU\'s nbd client to qemu-nbd (reference)');
  const qemuNbd = await startQemuNbd(refImage, refSock);
  const plain: { label: string; vm?: PlainVm; values: Map<string, number[]>; ms: number[] }[] = [
    { label: 'floor', values: new Map(), ms: [] },
    { label: 'qemu-nbd', values: new Map(), ms: [] },
  ];
  const harnessOf = new Map<DiskBackend, Map<string, number[]>>(kDiskBackends.map((b) => [b, new Map(kDiskWorkloads.map((w) => [w.name, []]))]));
  const harnessMs: number[] = [];
  try {
    plain[0]!.vm = await bootPlain('bench-disk', ['-drive', `file=${driveImage},format=raw,if=virtio`]);
    plain[1]!.vm = await bootPlain('bench-disk-nbd', [
      '-blockdev', `driver=nbd,node-name=nbd0,server.type=unix,server.path=${refSock}`,
      '-device', 'virtio-blk-pci,drive=nbd0',
    ]);
    log(`disk: plain QEMUs up (${secs(performance.now() - started)})`);
    for (const p of plain) {
      for (const w of kDiskWorkloads) p.values.set(w.name, []);
      const size = (await mustExec(p.vm!.agent, 'cat /sys/block/vda/size')).trim();
      if (size !== String(kDiskMiB * 2048)) throw new Error(`${p.label}: /dev/vda has ${size} sectors, expected ${kDiskMiB * 2048}`);
    }
    for (let round = 0; round < kDiskRounds; round++) {
      const doPlain = async (p: (typeof plain)[number]) => {
        const t0 = performance.now();
        await mustExec(p.vm!.agent, kDiskWarmUp);
        for (const w of kDiskWorkloads) p.values.get(w.name)!.push(parseDisk(await mustExec(p.vm!.agent, diskCommand(w)), w, p.label));
        p.ms.push(performance.now() - t0);
      };
      const doHarness = async () => {
        let wallMs = 0;
        for (const b of kDiskBackends) {
          const file = luaFiles.get(b)!;
          const run = mustPass(await runCli([file, '--no-progress', '--json'], { cwd: work, timingsFile, events: false }), path.basename(file));
          wallMs += run.wallMs;
          const logs = testLogs(run);
          for (const w of kDiskWorkloads) harnessOf.get(b)!.get(w.name)!.push(parseDisk(logs.get(w.name) ?? '', w, `harness (${b})`));
        }
        harnessMs.push(wallMs);
      };
      // floor, harness, reference; then reference, harness, floor.
      if (round % 2 === 0) { await doPlain(plain[0]!); await doHarness(); await doPlain(plain[1]!); } else { await doPlain(plain[1]!); await doHarness(); await doPlain(plain[0]!); }
      const v = (m: Map<string, number[]>, n: string, unit: string) => rate(m.get(n)!.at(-1)!, unit);
      const all = (n: string, unit: string) => `${v(plain[0]!.values, n, unit)} | ${v(harnessOf.get('qemu')!, n, unit)} | ${v(harnessOf.get('nbd')!, n, unit)} | ${v(plain[1]!.values, n, unit)}`;
      log(`disk round ${round + 1}/${kDiskRounds} (${secs(performance.now() - started)}), drive | backend qemu | backend nbd | qemu-nbd: write ${all('write-64MiB', 'MiB/s')}; read ${all('read-64MiB', 'MiB/s')}; 4k one dd ${all('read-4k-one-dd', '/s')}; 4k random ${all('read-4k-random', '/s')}; took ${secs(plain[0]!.ms.at(-1)!)} | ${secs(harnessMs.at(-1)!)} | ${secs(plain[1]!.ms.at(-1)!)}`);
    }
  } finally {
    for (const p of plain) if (p.vm) await stopPlain(p.vm);
    qemuNbd.kill('SIGKILL');
    children.delete(qemuNbd);
    for (const p of images) await rm(p, { force: true });
    await rm(refSock, { force: true });
  }
  log(`disk: section took ${secs(performance.now() - started)}`);

  const out = section(`11. disks: /dev/vda of a provium VM, each backend, vs a raw image on a plain QEMU's -drive (${kDiskRounds} rounds)`);
  const floor = plain[0]!.values;
  const ref = plain[1]!.values;
  const perRound = (h: number[], f: number[], op: (h: number, f: number) => number) => median(h.map((x, i) => op(x, f[i]!)));
  const row = (figure: string, name: string, unit: string, note: string) => {
    const f = floor.get(name)!;
    const r = ref.get(name)!;
    const q = harnessOf.get('qemu')!.get(name)!;
    const n = harnessOf.get('nbd')!.get(name)!;
    const share = perRound(q, f, (x, y) => x / y); // harness rate / floor rate, per round
    out.push({
      figure,
      floor: rate(median(f), unit),
      harness: rate(median(q), unit),
      ratio: times(perRound(q, f, (x, y) => y / x)),
      note: `backend "qemu": harness/drive ${share.toFixed(2)} (target ≥ 0.50: ${share >= 0.5 ? 'met' : 'MISSED'})${note ? `; ${note}` : ''}`,
    });
    out.push({
      figure: '  backend "nbd" (every fault, write cache)',
      floor: rate(median(f), unit),
      harness: rate(median(n), unit),
      ratio: times(perRound(n, f, (x, y) => y / x)),
      note: `nbd/drive ${perRound(n, f, (x, y) => x / y).toFixed(2)}`,
    });
    out.push({
      figure: '  floor column: qemu-nbd as the server (reference)',
      floor: rate(median(r), unit),
      harness: rate(median(n), unit),
      ratio: times(perRound(n, r, (x, y) => y / x)),
      note: `broker's nbd/qemu-nbd ${perRound(n, r, (x, y) => x / y).toFixed(2)}; qemu-nbd/drive ${perRound(r, f, (x, y) => x / y).toFixed(2)}: the ceiling of QEMU's nbd client`,
    });
  };
  row(`sequential write ${kDiskMiB} MiB  [dd bs=1M oflag=direct]`, 'write-64MiB', 'MiB/s', 'from /dev/zero');
  row(`sequential read ${kDiskMiB} MiB  [dd bs=1M iflag=direct]`, 'read-64MiB', 'MiB/s', '');
  row(`4 KiB reads, one dd process  [${kDiskSeqReads} × bs=4k]`, 'read-4k-one-dd', '/s', 'iflag=direct, one request at a time');
  row(`4 KiB random reads, one dd each  [${kDiskRandReads} offsets]`, 'read-4k-random', '/s', 'a dd per read (busybox has no fio; its start dominates), same offsets both sides');
  out.push({ figure: '  method', floor: '', harness: '', ratio: '', note: "guest's clock (/proc/timer_list); /sys/block/vda/stat shows every request reached the device" });
}

// ---------------------------------------------------------------------------------------------
// 12. Restores, the warm pool and fixtures. (a) Boot-snapshot restores one at a time beside two at
// once (--no-warm-pool, so each boot restores), from `vm_spawned.boot_ns`. (b) A boot that takes
// a warm spare beside a restore and a cold boot; a fixture with a data disk taken from the pool
// beside restored, on each backend (an NBD disk a clone of the saved contents either way; a
// "qemu" disk a copy of them). (c) A suite of 40 files that all start from the same set-up (10
// files written, a process started): through a fixture, doing the set-up in every file, and doing
// it in every file with cold boots, at -j2; the ideal is 40 × a lone restore ÷ 2.
// Floors: plain QEMU restoring the fixture's snapshot alone and two at once, and doing the suite's
// 40 restores and checks two at a time (plainRestore).

const kPoolRounds = 5;
const kSuite40Files = 40;
const kSuite40Rounds = 2;
const kSetupLines = [
  'vm:run("mkdir -p /srv && for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > /srv/f$i; done"):assert_ok()',
  'vm:run("(while true; do sleep 1; done) >/dev/null 2>&1 & echo $! > /srv/pid"):assert_ok()',
];
/** What each file of the suite checks, in the guest (the floor runs it too), and as the Lua line. */
const kSuite40CheckCmd = 'test -f /srv/f10 && kill -0 $(cat /srv/pid)';
const kSuite40Check = `vm:run(${JSON.stringify(kSuite40CheckCmd)}):assert_ok()`;

function restoreLua(): string {
  return [
    '-- Generated by bench/bench.ts (section 12a): restores one at a time, then two at once.',
    'test("alone", function(t)',
    `  for i = 1, ${kPoolRounds} do local v = provium:vm("alone" .. i, "minimal"):boot(); v:shutdown() end`,
    'end)',
    'test("pairs", function(t)',
    `  for i = 1, ${kPoolRounds} do`,
    '    local l = provium:lab("pair" .. i); l:vm("x" .. i, "minimal"); l:vm("y" .. i, "minimal"); l:boot(); l:shutdown()',
    '  end',
    'end)',
    '',
  ].join('\n');
}

function poolLua(): string {
  return [
    '-- Generated by bench/bench.ts (section 12b): boots that take a warm spare, one at a time.',
    'test("pool", function(t)',
    '  local first = provium:vm("first", "minimal"):boot()',
    `  for i = 1, ${kPoolRounds} do`,
    '    first:run("sleep 2"):assert_ok() -- a spare is restored meanwhile',
    '    provium:vm("pooled" .. i, "minimal"):boot():shutdown()',
    '  end',
    'end)',
    '',
  ].join('\n');
}

const kDiskFixtureMiB = 256;
const kDiskFixtureWrittenMiB = 32;

/** A fixture whose VM has a data disk (on `backend`) with random data on it, and a file that takes copies of it. */
async function writeDiskFixture(dir: string, backend: 'nbd' | 'qemu'): Promise<string> {
  await mkdir(path.join(dir, 'fx'), { recursive: true });
  await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["."]\n');
  await writeFile(
    path.join(dir, 'fx/data.fixture.lua'),
    [
      `local vm = provium:vm("data", "minimal", {disks = {{id = "data", size = "${kDiskFixtureMiB}M", backend = "${backend}"}}}):boot()`,
      `vm:run("dd if=/dev/urandom of=/dev/vda bs=1M count=${kDiskFixtureWrittenMiB} oflag=direct"):assert_ok()`,
      'return vm:snapshot()',
      '',
    ].join('\n'),
  );
  const file = path.join(dir, 'disk-fixture.test.lua');
  const lines = ['-- Generated by bench/bench.ts (section 12b): copies of a fixture with a data disk, one at a time.', 'local host = provium:vm("host", "minimal"):boot()'];
  for (let i = 1; i <= kPoolRounds; i++) {
    lines.push(`test("wait ${i}", function(t) host:run("sleep 2"):assert_ok() end) -- a spare is restored meanwhile`);
    lines.push(`test("take ${i}", function(t) provium:vm_fixture("fx/data", "d${i}"):shutdown() end)`);
  }
  await writeFile(file, [...lines, ''].join('\n'));
  return file;
}

async function writeSuite40(dir: string, kind: 'fixture' | 'setup'): Promise<void> {
  await mkdir(path.join(dir, 'fx'), { recursive: true });
  await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["."]\n');
  await writeFile(path.join(dir, 'fx/setup.fixture.lua'), ['local vm = provium:vm("svc", "minimal"):boot()', ...kSetupLines, 'return vm:snapshot()', ''].join('\n'));
  for (let i = 1; i <= kSuite40Files; i++) {
    const head = kind === 'fixture' ? ['local vm = provium:vm_fixture("fx/setup")'] : ['local vm = provium:vm("svc", "minimal"):boot()', ...kSetupLines];
    await writeFile(path.join(dir, `f${String(i).padStart(2, '0')}.test.lua`), [...head, 'test("starts from the set-up", function(t)', `  ${kSuite40Check}`, 'end)', ''].join('\n'));
  }
}

/**
 * One restore of `snapshot` through plain QEMU: the argv provium builds, the RAM image copied to
 * the tmpfs, device state through QEMU's own `migrate-incoming`, `cont`, the raw agent's hello;
 * then `check` over the raw socket, when given, and SIGKILL. Returns ms from start to hello.
 */
async function plainRestore(snapshot: string, tag: string, check?: string): Promise<number> {
  const spec = await launchSpec(tag);
  spec.incomingSnapshot = true;
  const dir = await mkdtemp(path.join(workDir ?? os.tmpdir(), 'floor-'));
  let qemu: PlainQemu | undefined;
  let ram: string | undefined;
  let qmpConn: net.Socket | undefined;
  const qmpServer = net.createServer((s) => { qmpConn = s; });
  try {
    const started = performance.now();
    // Where and as provium puts its own (so a later run sweeps it if this bench is killed mid-restore), copied on the spawn.
    const guestRam = await prepareGuestRam({ memoryBytes: spec.memoryBytes, ramImage: ramImageOf(snapshot) });
    if (!guestRam.ram?.shared) throw new Error('bench: no room for a guest RAM file (PROVIUM_RAM_DIR, /dev/shm): the floor restores as provium does');
    ram = guestRam.ram.path;
    const ctx = await plainContext(dir, spec, guestRam.ram);
    await new Promise<void>((resolve) => qmpServer.listen(ctx.qmpSocketPath, resolve));
    qemu = await spawnPlain(spec, ctx, dir, guestRam.fillFirst);
    const alive = qemu.alive;
    while (!qmpConn) { if (!alive()) throw new Error(`floor: QEMU exited before QMP: ${qemu.stderr()}`); await sleep(2); }
    const qmp = rawQmp(qmpConn);
    await qmp('qmp_capabilities');
    await qmp('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    const incoming = path.join(dir, 'mig.sock');
    await qmp('migrate-incoming', { uri: `unix:${incoming}` });
    createReadStream(snapshot).pipe(net.createConnection(incoming));
    for (;;) {
      const status = ((await qmp('query-migrate')) as { status?: string }).status;
      if (status === 'completed') break;
      if (status === 'failed' || !alive()) throw new Error(`floor: migration ${status ?? 'ended with QEMU'}`);
      await sleep(2);
    }
    await qmp('cont');
    const agent = await RawAgent.connect(ctx.agentSocketPath, Date.now() + kAgentTimeoutMs, alive);
    const ms = performance.now() - started;
    if (check !== undefined) await mustExec(agent, check);
    agent.close();
    return ms;
  } finally {
    qmpServer.close();
    qmpConn?.destroy();
    if (qemu) await stopPlain({ qemu, dir });
    else await rm(dir, { recursive: true, force: true });
    if (ram) await rm(ram, { force: true });
  }
}

/** The floor of the fixture suite: its restores and checks through plainRestore, two at a time. Returns the wall ms. */
async function plainRestoreSuite(snapshot: string, files: number): Promise<number> {
  const started = performance.now();
  let next = 0;
  const lane = async () => { while (next < files) await plainRestore(snapshot, `floor${next++}`, kSuite40CheckCmd); };
  await Promise.all([lane(), lane()]);
  return performance.now() - started;
}

/** A QMP client over an accepted connection: one command at a time, events skipped. */
function rawQmp(sock: net.Socket): (execute: string, args?: Record<string, unknown>) => Promise<unknown> {
  let buf = '';
  const waiting: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  sock.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const msg = JSON.parse(buf.slice(0, nl)) as { return?: unknown; error?: { desc: string } };
      buf = buf.slice(nl + 1);
      if (msg.error) waiting.shift()?.reject(new Error(`QMP: ${msg.error.desc}`));
      else if ('return' in msg) waiting.shift()?.resolve(msg.return);
    }
  });
  return (execute, args) => new Promise((resolve, reject) => {
    waiting.push({ resolve, reject });
    sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
  });
}

async function benchPool(work: string, timingsFile: string): Promise<void> {
  const started = performance.now();
  const restoreFile = path.join(work, 'restore.test.lua');
  const poolFile = path.join(work, 'pool.test.lua');
  await writeFile(restoreFile, restoreLua());
  await writeFile(poolFile, poolLua());
  const queuedFile = path.join(work, 'queued.test.lua');
  await writeFile(queuedFile, 'test("waits its turn", function(t) end)\n');
  const bootFile = path.join(luaDir, 'boot.test.lua');
  mustPass(await runCli([bootFile, '--no-progress'], { cwd: work, timingsFile }), 'pool warm-up');
  const alone: number[] = [];
  const pairs: number[] = [];
  const pooled: number[] = [];
  const cold: number[] = [];
  let hits = 0;
  const spawned = (run: CliRun, prefix: string) =>
    run.events.filter((e) => e.kind === 'vm_spawned' && String(e.payload['vm_name']).startsWith(prefix)).map((e) => Number(e.payload['boot_ns']) / 1e6);
  for (let round = 0; round < 2; round++) {
    const r = mustPass(await runCli([restoreFile, '--no-progress', '--no-warm-pool'], { cwd: work, timingsFile }), 'restores');
    alone.push(...spawned(r, 'alone'));
    const xs = spawned(r, 'x');
    const ys = spawned(r, 'y');
    xs.forEach((x, i) => pairs.push(Math.max(x, ys[i]!)));
    // -j1 with a second file queued behind: spares are kept while files wait to start.
    const p = mustPass(await runCli([poolFile, queuedFile, '--no-progress', '-j1'], { cwd: work, timingsFile }), 'warm pool');
    pooled.push(...spawned(p, 'pooled'));
    hits += p.events.filter((e) => e.kind === 'pool_hit').length;
    const c = mustPass(await runCli([bootFile, '--no-progress'], { cwd: work, timingsFile, env: { PROVIUM_BOOT_SNAPSHOTS: '0' } }), 'cold boot');
    cold.push(vmSpawned(c.events).bootMs);
    log(`pool round ${round + 1}/2 (${secs(performance.now() - started)}): alone ${ms(median(alone))}, two at once ${ms(median(pairs))}, pooled ${ms(median(pooled))} (${hits} hits), cold ${ms(median(cold))}`);
  }
  if (hits < pooled.length) problems.push(`warm pool: ${pooled.length - hits} of ${pooled.length} boots found no spare ready`);

  // A fixture with a data disk, on each backend: restored each time (--no-warm-pool), then from spares (a file queued behind).
  const diskRestores = { nbd: { restored: [] as number[], pooled: [] as number[] }, qemu: { restored: [] as number[], pooled: [] as number[] } };
  for (const backend of ['nbd', 'qemu'] as const) {
    const diskDir = path.join(work, `disk-fixture-${backend}`);
    const diskFile = await writeDiskFixture(diskDir, backend);
    const diskQueued = path.join(diskDir, 'queued.test.lua');
    await writeFile(diskQueued, 'test("waits its turn", function(t) end)\n');
    mustPass(await runCli([diskFile, '--no-progress', '--no-warm-pool'], { cwd: diskDir, timingsFile, events: false }), `disk fixture (${backend}) warm-up`);
    const copies = diskRestores[backend];
    const restoredOf = (run: CliRun) => run.events.filter((e) => e.kind === 'vm_restored' && /^d\d+$/.test(String(e.payload['vm_name'])));
    for (let round = 0; round < 2; round++) {
      const r = mustPass(await runCli([diskFile, '--no-progress', '--no-warm-pool'], { cwd: diskDir, timingsFile }), `disk fixture (${backend}) restores`);
      copies.restored.push(...restoredOf(r).map((e) => Number(e.payload['restore_ns']) / 1e6));
      const p = mustPass(await runCli([diskFile, diskQueued, '--no-progress', '-j1'], { cwd: diskDir, timingsFile }), `disk fixture (${backend}) from the pool`);
      // The first copy of a run is restored (no spare yet); the later ones are what the pool gives.
      copies.pooled.push(...restoredOf(p).filter((e) => e.payload['pooled'] === true).map((e) => Number(e.payload['restore_ns']) / 1e6));
    }
    if (copies.pooled.length < 2 * (kPoolRounds - 1)) problems.push(`warm pool: ${2 * (kPoolRounds - 1) - copies.pooled.length} of ${2 * (kPoolRounds - 1)} copies of the disk fixture (${backend}) found no spare ready`);
    log(`disk fixture, backend ${backend} (${secs(performance.now() - started)}): restored ${ms(median(copies.restored))}, from the pool ${ms(median(copies.pooled))}`);
  }

  // The 40-file suites: the fixture is built by a warm-up run, so the rounds measure its use.
  const suites = { fixture: path.join(work, 'suite40-fixture'), setup: path.join(work, 'suite40-setup') };
  await writeSuite40(suites.fixture, 'fixture');
  await writeSuite40(suites.setup, 'setup');
  mustPass(await runCli([path.join(suites.fixture, 'f01.test.lua'), '--no-progress'], { cwd: suites.fixture, timingsFile, events: false }), 'fixture warm-up');
  // The floor restores the very entry the suite restores (the newest use of fx/setup), extracted once.
  const cache = new FixtureCache({ dir: path.join(cacheDir(), 'fixtures'), maxBytes: Number.MAX_SAFE_INTEGER });
  const entry = (await cache.list()).find((e) => e.meta['path'] === 'fx/setup');
  if (!entry) throw new Error('bench: the fixture warm-up left no cache entry for fx/setup');
  const floorDir = await mkdtemp(path.join(work, 'floor-fixture-'));
  await cache.extract(entry, floorDir);
  const floorSnapshot = path.join(floorDir, 'svc.snap');
  const wall = { floor: [] as number[], fixture: [] as number[], setup: [] as number[], cold: [] as number[] };
  const floorAlone: number[] = [];
  const floorPairs: number[] = [];
  for (let round = 0; round < kSuite40Rounds; round++) {
    const run = async (dir: string, env?: Record<string, string>) =>
      mustPass(await runCli(['.', '--no-progress', '-j2'], { cwd: dir, timingsFile, events: false, ...(env ? { env } : {}) }), `suite of ${kSuite40Files}`).wallMs;
    wall.floor.push(await plainRestoreSuite(floorSnapshot, kSuite40Files));
    for (let i = 0; i < kPoolRounds; i++) {
      floorAlone.push(await plainRestore(floorSnapshot, `alone${i}`));
      floorPairs.push(Math.max(...(await Promise.all([plainRestore(floorSnapshot, `x${i}`), plainRestore(floorSnapshot, `y${i}`)]))));
    }
    wall.fixture.push(await run(suites.fixture));
    wall.setup.push(await run(suites.setup));
    wall.cold.push(await run(suites.setup, { PROVIUM_BOOT_SNAPSHOTS: '0' }));
    log(`suite40 round ${round + 1}/${kSuite40Rounds} (${secs(performance.now() - started)}): plain QEMU floor ${secs(wall.floor.at(-1)!)}, fixture ${secs(wall.fixture.at(-1)!)}, set-up per file ${secs(wall.setup.at(-1)!)}, cold ${secs(wall.cold.at(-1)!)}`);
  }

  const out = section('12. restores, the warm pool and fixtures (2 rounds; suites: 40 files at -j2)');
  const lone = median(alone);
  const two = median(pairs);
  out.push({ figure: 'restore: two at once / one alone  [vm_spawned]', floor: ms(lone), harness: ms(two), ratio: times(two / lone), note: `target ≤ 1.50×: ${two / lone <= 1.5 ? 'met' : 'MISSED'}; ${alone.length} lone, ${pairs.length} pairs, boot-snapshot restores (--no-warm-pool)` });
  const plainTwo = median(floorPairs) / median(floorAlone);
  out.push({ figure: '  plain QEMU: two at once / one alone', floor: ms(median(floorAlone)), harness: ms(median(floorPairs)), ratio: times(plainTwo), note: `the floor of the line above: ${floorAlone.length} lone, ${floorPairs.length} pairs of plainRestore (the fixture's snapshot, to the raw hello)` });
  out.push({ figure: 'boot(): warm pool / restore', floor: ms(lone), harness: ms(median(pooled)), ratio: times(median(pooled) / lone), note: `target ≤ 20 ms: ${median(pooled) <= 20 ? 'met' : 'MISSED'}; ${hits} of ${pooled.length} boots took a spare` });
  out.push({ figure: '  cold boot (PROVIUM_BOOT_SNAPSHOTS=0)', floor: '', harness: ms(median(cold)), ratio: '', note: 'the same run' });
  for (const backend of ['nbd', 'qemu'] as const) {
    const d = diskRestores[backend];
    const restored = median(d.restored);
    const pooledMs = median(d.pooled);
    const figure = backend === 'nbd' ? `vm_fixture() with a ${kDiskFixtureMiB} MiB disk: pool / restore` : '  the same, backend "qemu"';
    const what = backend === 'nbd' ? `vm_restored.restore_ns, disk plugged; ${kDiskFixtureWrittenMiB} MiB written` : 'the disk a sparse copy (the spare\'s, or copied in by the restore)';
    out.push({ figure, floor: ms(restored), harness: ms(pooledMs), ratio: times(pooledMs / restored), note: `${what}; ${d.restored.length} restores, ${d.pooled.length} from spares` });
  }
  const ideal = (kSuite40Files * lone) / 2;
  const fx = median(wall.fixture);
  out.push({ figure: `suite of ${kSuite40Files}: fixture / ideal`, floor: secs(ideal), harness: secs(fx), ratio: times(fx / ideal), note: `target ≤ 1.30×: ${fx / ideal <= 1.3 ? 'met' : 'MISSED'}; ideal = files × lone restore ÷ 2 cores` });
  const floorWall = median(wall.floor);
  out.push({ figure: '  fixture suite / plain QEMU doing its restores', floor: secs(floorWall), harness: secs(fx), ratio: times(fx / floorWall), note: `floor: the same ${kSuite40Files} restores 2 at a time (QEMU start, RAM copy, migrate-incoming, cont, raw hello, the check, kill); floor / ideal ${times(floorWall / ideal)}` });
  out.push({ figure: '  set-up in every file (snapshot boots)', floor: '', harness: secs(median(wall.setup)), ratio: times(median(wall.setup) / fx), note: 'vs the fixture suite' });
  out.push({ figure: '  set-up in every file, cold boots', floor: '', harness: secs(median(wall.cold)), ratio: times(median(wall.cold) / fx), note: `target ≥ 5× the fixture suite: ${median(wall.cold) / fx >= 5 ? 'met' : 'MISSED'}` });
}

// ---------------------------------------------------------------------------------------------
// 13. Debian profiles: boot to agent-ready beside minimal (same memory, same run), and the root
// image build from an empty cache and with the downloaded packages kept.

const kDebianRounds = 3;
const kDebianPackages = ['python3'];

async function benchDebian(work: string, timingsFile: string): Promise<void> {
  const dir = path.join(work, 'debian');
  await mkdir(dir, { recursive: true });
  const packages = kDebianPackages.map((p) => JSON.stringify(p)).join(', ');
  await writeFile(path.join(dir, 'provium.toml'), `[provium]\nroots = ["."]\n\n[profiles.bench-debian]\ndebian = { packages = [${packages}] }\nmemory = "256M"\n`);
  const files = {
    minimal: path.join(luaDir, 'boot.test.lua'),
    debian: path.join(dir, 'debian-boot.test.lua'),
  };
  await writeFile(files.debian, 'local vm = provium:vm("bench-debian", "bench-debian"):boot()\ntest("first-run", function(t) vm:run("true"):assert_ok() end)\n');

  // 1. The image build, in a cache of its own: first empty, then with the packages downloaded.
  const cache = path.join(dir, 'cache');
  await mkdir(path.join(cache, 'images'), { recursive: true });
  const minimal = await imageInfo();
  if (!minimal) throw new Error('debian: the minimal image is not built');
  await symlink(minimal.dir, path.join(cache, 'images', 'minimal'));
  const build = async (what: string) => {
    const t = performance.now();
    await execFileP(process.execPath, [cliMain, 'image', 'build', 'bench-debian', '--force', '--quiet'], { cwd: dir, env: { ...process.env, PROVIUM_CACHE_DIR: cache } });
    const took = performance.now() - t;
    log(`debian: ${what} took ${secs(took)}`);
    return took;
  };
  const emptyMs = await build('image build, empty cache');
  const warmMs = await build('image build, packages downloaded');

  // 2. Boots: cold and from the boot snapshot, minimal and Debian back to back in each round.
  const boot = async (file: string, cold: boolean, warmUp = false) => {
    // --no-warm-pool: the boot itself. A pooled first boot would wait for its spare's warm-up command, which costs each userland differently.
    const run = mustPass(await runCli([file, '--no-progress', '--no-warm-pool'], { cwd: dir, timingsFile, env: { PROVIUM_CACHE_DIR: cache, ...(cold ? { PROVIUM_BOOT_SNAPSHOTS: '0' } : {}) } }), `boot ${file}`);
    const v = vmSpawned(run.events);
    if (!warmUp && v.restored === cold) problems.push(`debian: a ${cold ? 'cold' : 'snapshot'} boot of ${path.basename(file)} reported restored=${v.restored}`);
    return v.bootMs;
  };
  // The warm-ups save the boot snapshots (this cache starts empty).
  await boot(files.minimal, false, true);
  await boot(files.debian, false, true);
  const got = { minimalCold: [] as number[], debianCold: [] as number[], minimalSnap: [] as number[], debianSnap: [] as number[] };
  for (let i = 0; i < kDebianRounds; i++) {
    got.minimalCold.push(await boot(files.minimal, true));
    got.debianCold.push(await boot(files.debian, true));
    got.minimalSnap.push(await boot(files.minimal, false));
    got.debianSnap.push(await boot(files.debian, false));
    log(`debian round ${i + 1}/${kDebianRounds}: cold ${ms(got.minimalCold.at(-1)!)} / ${ms(got.debianCold.at(-1)!)}, snapshot ${ms(got.minimalSnap.at(-1)!)} / ${ms(got.debianSnap.at(-1)!)}`);
  }
  const snaps = await readdir(path.join(cache, 'boot-snapshots')).catch(() => [] as string[]);
  const sizes = await Promise.all(snaps.filter((f) => f.endsWith('.snap')).map((f) => snapshotFileBytes(path.join(cache, 'boot-snapshots', f))));

  const out = section(`13. Debian profiles (debian = { packages = [${packages}] }, 256 MiB; floor: minimal in the same run)`);
  const ratio = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]!));
  const snapRatio = ratio(got.debianSnap, got.minimalSnap);
  out.push({ figure: 'cold boot: Debian / minimal', floor: secs(median(got.minimalCold)), harness: secs(median(got.debianCold)), ratio: times(ratio(got.debianCold, got.minimalCold)), note: 'mount the image, overlay, switch root, agent again' });
  out.push({ figure: 'boot from the boot snapshot: Debian / minimal', floor: secs(median(got.minimalSnap)), harness: secs(median(got.debianSnap)), ratio: times(snapRatio), note: `target ≤ 1.30×: ${snapRatio <= 1.3 ? 'met' : 'MISSED'}; restores (--no-warm-pool)` });
  out.push({ figure: '  boot snapshot sizes', floor: '', harness: '', ratio: '', note: sizes.map((b) => `${(b / 1048576).toFixed(0)} MiB`).join(', ') });
  out.push({ figure: 'root image build: empty cache', floor: '', harness: secs(emptyMs), ratio: '', note: 'mmdebstrap (download + unpack + configure) and mksquashfs' });
  out.push({ figure: 'root image build: packages downloaded', floor: '', harness: secs(warmMs), ratio: times(warmMs / emptyMs), note: 'the same list again (--force), .debs kept in <cache>/downloads' });
}

// ---------------------------------------------------------------------------------------------
// 14. Faults: time to name a wedged guest, and a 1 GiB stdout flood (issue 15).

/** The peak RSS (VmHWM) of a process in bytes, polled until it exits: the last reading is the peak. */
function watchPeakRss(child: ChildProcess): { peak: () => number } {
  let peak = 0;
  const timer = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {
      // gone
    }
  }, 50);
  child.once('close', () => clearInterval(timer));
  return { peak: () => peak };
}

/** Sends SIGSTOP to the QEMU whose console log shows `marker`; resolves with the time it did. */
async function stopQemuAt(dir: string, marker: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let argv: string[];
      try {
        argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      } catch {
        continue;
      }
      if (!argv[0]?.includes('qemu-system') || !argv.some((a) => a.includes('bench-faults'))) continue;
      const log = /logfile=([^,]+)/.exec(argv.find((a) => a.includes('logfile=')) ?? '')?.[1];
      if (!log?.startsWith(dir)) continue;
      try {
        if (readFileSync(log, 'utf8').includes(marker)) {
          process.kill(Number(entry), 'SIGSTOP');
          return Date.now();
        }
      } catch {
        // not yet
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`faults: no bench-faults guest printed ${marker} within ${timeoutMs} ms`);
}

async function benchFaults(work: string, timingsFile: string): Promise<void> {
  const out = section('14. faults: naming a wedged guest, and a 1 GiB stdout flood');
  const file = path.join(luaDir, 'faults.test.lua');
  const tmp = await mkdtemp(path.join(work, 'faults-tmp-'));
  const env = { TMPDIR: tmp };
  const testMs = (run: CliRun, name: string): number => {
    const d = testDurations(run.events).get(name);
    if (d === undefined) throw new Error(`faults: no passing test \`${name}\`\n${run.stdout}\n${run.stderr}`);
    return d;
  };
  // 1. Frozen guest: its QEMU SIGSTOPped while a command waits; from the stop to the test's end.
  log('faults: a frozen guest (QEMU SIGSTOPped mid-command)');
  const frozen: number[] = [];
  for (let round = 0; round < 3; round++) {
    let stoppedAt = 0;
    const stopping = { p: Promise.resolve() };
    const run = await runCli([file, '--no-progress', '--tag', 'frozen'], {
      cwd: work, env, timingsFile,
      onSpawn: () => void (stopping.p = stopQemuAt(tmp, 'BENCH-FROZEN', 120_000).then((t) => void (stoppedAt = t))),
    });
    await stopping.p;
    mustPass(run, 'faults.test.lua --tag frozen');
    const ended = run.events.find((e) => e.kind === 'test_passed');
    if (!ended || !stoppedAt) throw new Error(`faults: the frozen run did not end as expected\n${run.stdout}\n${run.stderr}`);
    frozen.push(Number(ended.ts) / 1e6 - stoppedAt);
  }
  const fz = median(frozen);
  out.push({ figure: 'frozen guest (QEMU SIGSTOPped): stop → op failed', floor: '', harness: secs(fz), ratio: '', note: `target ≤ 10 s: ${fz <= 10_000 ? 'met' : 'MISSED'}; liveness ping after 2.5 s of silence, diagnosis at 7 s (QMP query-status)` });
  // 2. The agent's channel closed inside the guest (its PCI device removed).
  log('faults: the agent channel closed inside the guest');
  const channel: number[] = [];
  for (let round = 0; round < 3; round++) channel.push(testMs(mustPass(await runCli([file, '--no-progress', '--tag', 'channel'], { cwd: work, env, timingsFile }), 'faults --tag channel'), 'channel'));
  const ch = median(channel);
  out.push({ figure: 'agent channel closed inside: op → failed', floor: '', harness: secs(ch), ratio: '', note: `target ≤ 10 s: ${ch <= 10_000 ? 'met' : 'MISSED'}; QMP VSERPORT_CHANGE, then 2 s for the agent to reopen it` });
  // 3. 1 GiB of stdout: the raw agent's exec (floor) vs vm:run; the CLI's peak RSS vs an idle run.
  log('faults: 1 GiB stdout flood');
  const vm = await bootPlain('bench-flood');
  const floorRates: number[] = [];
  const harnessRates: number[] = [];
  const growth: number[] = [];
  const kGiB = 1024;
  try {
    for (let round = 0; round < 3; round++) {
      const t0 = performance.now();
      await vm.agent.request('exec', shExec('dd if=/dev/zero bs=1M count=1024 2>/dev/null'));
      floorRates.push(kGiB / ((performance.now() - t0) / 1000));
      let idle = { peak: () => 0 };
      mustPass(await runCli([file, '--no-progress', '--tag', 'idle'], { cwd: work, env, timingsFile, onSpawn: (c) => void (idle = watchPeakRss(c)) }), 'faults --tag idle');
      let flood = { peak: () => 0 };
      const run = mustPass(await runCli([file, '--no-progress', '--tag', 'flood'], { cwd: work, env, timingsFile, onSpawn: (c) => void (flood = watchPeakRss(c)) }), 'faults --tag flood');
      harnessRates.push(kGiB / (testMs(run, 'flood') / 1000));
      growth.push((flood.peak() - idle.peak()) / (1024 * 1024));
    }
  } finally {
    await stopPlain(vm);
  }
  const fr = median(floorRates);
  const hr = median(harnessRates);
  const shown = (x: number) => rate(x, 'MiB/s');
  out.push({ figure: '1 GiB stdout (dd) through exec: raw agent vs vm:run', floor: shown(fr), harness: shown(hr), ratio: times(fr / hr), note: `16 MiB kept, stdout_truncated; ${(kGiB / hr).toFixed(1)} s per GiB` });
  out.push({ figure: '  vs the streaming floor of BENCHMARKS.md §5 (44.9 MiB/s)', floor: '', harness: times(hr / 44.9), ratio: '', note: `target ≥ 0.70×: ${hr / 44.9 >= 0.7 ? 'met' : 'MISSED'}` });
  const g = median(growth);
  out.push({ figure: '  CLI peak RSS: flood run − idle run', floor: '', harness: `${g.toFixed(1)} MiB`, ratio: '', note: `target ≤ 64 MiB: ${g <= 64 ? 'met' : 'MISSED'}; VmHWM of the provium process, polled` });
}

async function machineHeader(): Promise<string[]> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  const qemu = (await execFileP(qemuBinary(), ['--version']).catch(() => ({ stdout: 'unknown' }))).stdout.split('\n')[0]!.trim();
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  return [
    `machine: ${os.cpus().length} cpus (nproc), ${model}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, accel ${await accel()}`,
    `date:    ${new Date().toISOString()}`,
    `qemu:    ${qemu}; node ${process.version}; load average at start ${load}`,
    `method:  medians of ${kRounds} rounds (boot: ${kBootRounds}; network: ${kNetRounds}, its boots: ${kNetBootRounds} × 2; disk: ${kDiskRounds}; pool: 2, suites: ${kSuite40Rounds}), floor and harness back to back in each round;`,
    `         h/f time = harness time / floor time (for rates: floor rate / harness rate), median of per-round ratios`,
  ];
}

const kSectionNames = ['boot', 'calls', 'dispatch', 'suite', 'shards', 'net', 'disk', 'pool', 'debian', 'faults'] as const;
type SectionName = (typeof kSectionNames)[number];

/** `--only NAME[,NAME...]`: run those sections only, print, and leave BENCHMARKS.md alone. */
function parseOnly(argv: string[]): Set<SectionName> | undefined {
  const usage = `usage: bench.js [--only ${kSectionNames.join('|')}[,...]]`;
  let only: Set<SectionName> | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = arg === '--only' ? argv[++i] : arg.startsWith('--only=') ? arg.slice('--only='.length) : undefined;
    if (value === undefined) {
      process.stderr.write(`bench: unknown argument \`${arg}\`\n${usage}\n`);
      process.exit(2);
    }
    for (const name of value.split(',').filter(Boolean)) {
      if (!(kSectionNames as readonly string[]).includes(name)) {
        process.stderr.write(`bench: unknown section \`${name}\`\n${usage}\n`);
        process.exit(2);
      }
      (only ??= new Set()).add(name as SectionName);
    }
  }
  return only;
}

async function main(): Promise<void> {
  const only = parseOnly(process.argv.slice(2));
  const started = performance.now();
  const header = await machineHeader();
  const work = await mkdtemp(path.join(os.tmpdir(), 'provium-bench-work-'));
  workDir = work;
  // A private timing record, so bench runs never touch the project's.
  const timingsFile = path.join(work, 'timings.json');
  await writeFile(timingsFile, JSON.stringify({ version: 1, files: {} }));
  try {
    const steps: Record<SectionName, () => Promise<void>> = {
      boot: () => benchBoot(work, timingsFile),
      calls: () => benchCalls(work, timingsFile),
      dispatch: () => benchDispatch(work, timingsFile),
      suite: () => benchSuite(work, timingsFile),
      shards: () => benchShards(work),
      net: () => benchNetwork(work, timingsFile),
      disk: () => benchDisk(work, timingsFile),
      pool: () => benchPool(work, timingsFile),
      debian: () => benchDebian(work, timingsFile),
      faults: () => benchFaults(work, timingsFile),
    };
    for (const name of kSectionNames) if (!only || only.has(name)) await steps[name]();
  } finally {
    killChildren();
    await closeProcessLauncher();
    await rm(work, { recursive: true, force: true });
  }
  const totalS = (performance.now() - started) / 1000;
  const lines = [...header, '', table(), ''];
  if (problems.length) lines.push('problems:', ...problems.map((p) => `  - ${p}`), '');
  lines.push(`bench took ${totalS.toFixed(0)} s; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const text = lines.join('\n') + '\n';
  process.stdout.write(text);
  if (only) {
    log(`--only ${[...only].join(',')}: BENCHMARKS.md left as it is`);
    return;
  }
  const md = [
    '# Benchmarks',
    '',
    'Output of the last `npm run bench` (`node dist/bench/bench.js`; source `bench/bench.ts`, Lua files',
    '`bench/lua/`). Floors: a plain QEMU started with the argv provium builds, and the agent driven over a',
    'raw socket with no harness in between. Harness figures come from `provium` runs, read back from the',
    'saved event stream. Every figure is the median over rounds (a rate is the median of the per-round rates).',
    '',
    '```',
    text.trimEnd(),
    '```',
    '',
  ].join('\n');
  await writeFile(benchmarksMd, md);
  log(`wrote ${benchmarksMd}`);
}

main().catch((err: unknown) => {
  killChildren();
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
