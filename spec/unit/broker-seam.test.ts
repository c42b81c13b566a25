// The real broker (session, managed VM, QemuVm, QMP, snapshots) driven through the real worker
// end of a session's channel (SyncCaller, in broker-seam-worker.ts), with a stand-in for QEMU
// (qemu-standin.mjs) whose "guest" is the real agent in --listen mode. No guest, no TCG: the
// paths the Lua specs exercise on real guests, in a few seconds.
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { Broker } from '../../src/broker/broker.js';
import { minimalProfile, type Profile } from '../../src/config/profiles.js';
import { EventBus } from '../../src/events/bus.js';
import type { AgentOps } from '../../src/protocol/agent.js';
import type { AnyEvent } from '../../src/protocol/events.js';
import type { RpcArgs, RpcErrorData, RpcOp, RpcReply, VmView } from '../../src/protocol/rpc.js';
import type { SeamCall, SeamOutcome, SeamResults, SeamScript, SeamWorkerData } from './broker-seam-worker.js';

// dist/spec/unit → the repository (the .mjs stand-in is not compiled, so it is not in dist).
const kRepo = fileURLToPath(new URL('../../../', import.meta.url));
const kStandin = path.join(kRepo, 'spec', 'unit', 'qemu-standin.mjs');
const kAgent = process.env['PROVIUM_AGENT_BIN'] ? path.resolve(process.env['PROVIUM_AGENT_BIN']) : path.join(kRepo, 'agent', 'build', 'provium-agent');
const kWorker = new URL('./broker-seam-worker.js', import.meta.url);
const MiB = 1024 * 1024;
const kVmMemory = 64 * MiB;
const kProfileName = 'minimal';

// The broker reads PROVIUM_QEMU when it launches a VM.
process.env['PROVIUM_QEMU'] = kStandin;

const missing = !existsSync(kAgent) ? `${kAgent} is missing (make -C agent)` : !existsSync(kStandin) ? `${kStandin} is missing` : undefined;

// ---------------------------------------------------------------------------------------------
// Host process checks

/** Alive and not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** Live stand-ins launched for the VM named `name`. */
function standinsNamed(name: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = cmdline(Number(entry));
    const at = argv.indexOf('-name');
    if (at >= 0 && argv[at + 1] === name && argv.some((a) => a.endsWith('qemu-standin.mjs')) && alive(Number(entry))) out.push(Number(entry));
  }
  return out;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sets environment variables (the stand-in's switches, read at launch); returns the undo. */
function setEnv(vars: Record<string, string>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const restore = setEnv(vars);
  try {
    return await fn();
  } finally {
    restore();
  }
}

// ---------------------------------------------------------------------------------------------
// One broker, one session, one worker holding the session's port

let nameSeq = 0;
function uniqueName(tag: string): string {
  return `seam-${process.pid}-${tag}-${++nameSeq}`;
}

class CallFailed extends Error {
  constructor(readonly op: string, readonly data: RpcErrorData) {
    super(`${op} failed: ${data.message}`);
  }
}

class Seam {
  readonly bus = new EventBus();
  readonly events: AnyEvent[] = [];
  readonly broker: Broker;
  readonly sessionId: number;
  readonly names: string[] = [];
  private readonly _worker: Worker;
  private readonly _pending = new Map<number, (outcomes: SeamOutcome[]) => void>();
  private _nextScript = 1;
  private _closed = false;

  constructor(readonly cacheDir: string, profile: Profile) {
    this.bus.subscribe((e) => this.events.push(e));
    this.broker = new Broker({
      bus: this.bus,
      profiles: { [kProfileName]: profile },
      resources: { memory_bytes: 1024 * MiB, cpus: 4 },
      cacheDir,
    });
    const session = this.broker.openSession({ path: '/seam.test.lua', displayPath: 'seam.test.lua' }, () => undefined);
    this.sessionId = session.sessionId;
    const workerData: SeamWorkerData = { port: session.port, signalBuffer: session.signalBuffer };
    this._worker = new Worker(kWorker, { workerData, transferList: [session.port] });
    this._worker.on('message', (r: SeamResults) => {
      this._pending.get(r.id)?.(r.outcomes);
      this._pending.delete(r.id);
    });
    this._worker.on('error', (err) => {
      for (const done of this._pending.values()) done([{ ok: false, error: { message: `seam worker died: ${err.message}` }, ms: 0 }]);
      this._pending.clear();
    });
  }

  /**
   * A broker for one test. Boot snapshots are off unless asked for (the boot-snapshot test
   * wants them; everywhere else they would add a save to the first boot). BootCache reads
   * PROVIUM_BOOT_SNAPSHOTS when the broker is built.
   */
  static open(opts: { bootSnapshots?: boolean; profile?: Partial<Profile> } = {}): Seam {
    const cacheDir = mkdtempSync(path.join(tmpdir(), 'provium-seam-'));
    const kernel = path.join(cacheDir, 'vmlinux');
    const initrd = path.join(cacheDir, 'initrd.img');
    writeFileSync(kernel, 'not a kernel: the stand-in only checks that it is readable\n');
    writeFileSync(initrd, 'not an initrd\n');
    // The minimal profile, on TCG (no KVM probe), small, with a short agent timeout.
    const profile: Profile = { ...minimalProfile({ kernel, initrd }), accel: 'tcg', memoryBytes: kVmMemory, agentTimeoutMs: 5000, ...opts.profile };
    const restore = setEnv({ PROVIUM_BOOT_SNAPSHOTS: opts.bootSnapshots ? '1' : '0' });
    try {
      return new Seam(cacheDir, profile);
    } finally {
      restore();
    }
  }

  /** Runs calls in order on the worker, through SyncCaller. */
  run(calls: SeamCall[]): Promise<SeamOutcome[]> {
    const id = this._nextScript++;
    const script: SeamScript = { id, calls };
    return new Promise((resolve) => {
      this._pending.set(id, resolve);
      this._worker.postMessage(script);
    });
  }

  async call<K extends RpcOp>(op: K, args: RpcArgs<K>, timeoutMs?: number): Promise<RpcReply<K>> {
    const [outcome] = await this.run([{ op, args, timeoutMs }]);
    if (!outcome!.ok) throw new CallFailed(op, outcome!.error);
    return outcome!.reply as RpcReply<K>;
  }

  /** A call that must fail: its error data. */
  async fail<K extends RpcOp>(op: K, args: RpcArgs<K>, timeoutMs?: number): Promise<RpcErrorData & { ms: number }> {
    const [outcome] = await this.run([{ op, args, timeoutMs }]);
    if (outcome!.ok) assert.fail(`${op} should have failed; it returned ${JSON.stringify(outcome!.reply)}`);
    return { ...outcome!.error, ms: outcome!.ms };
  }

  async createVm(tag: string): Promise<{ vmId: number; name: string }> {
    const name = uniqueName(tag);
    this.names.push(name);
    const { vmId } = await this.call('vm.create', { name, profile: kProfileName, labPath: `provium/${name}-lab` });
    return { vmId, name };
  }

  async bootVm(tag: string): Promise<{ vmId: number; name: string; vm: VmView; restored: boolean }> {
    const created = await this.createVm(tag);
    const reply = await this.call('vm.boot', { vmId: created.vmId, opts: {} });
    return { ...created, vm: reply.vm, restored: reply.restored };
  }

  async agent<K extends keyof AgentOps>(vmId: number, op: K, data: AgentOps[K]['req'], timeoutMs?: number): Promise<AgentOps[K]['res']> {
    const args = { vmId, op, data, timeoutMs } as RpcArgs<'agent.call'>;
    return (await this.call('agent.call', args)).result as AgentOps[K]['res'];
  }

  async exec(vmId: number, argv: string[]): Promise<{ code: number; stdout: string; status: string }> {
    const r = await this.agent(vmId, 'exec', { argv, env: {}, env_clear: false, stdin: new Uint8Array() });
    return { code: r.code, status: r.status, stdout: Buffer.from(r.stdout).toString('utf8') };
  }

  /** The guest's agent (the parent of a process it runs) and the stand-in above it. */
  async pids(vmId: number): Promise<{ agent: number; standin: number }> {
    const { stdout } = await this.exec(vmId, ['/bin/sh', '-c', 'echo $PPID']);
    const agent = Number(stdout.trim());
    return { agent, standin: parentOf(agent) };
  }

  poolUsed(): { memory_bytes: number; cpus: number } {
    return this.broker.poolState().used;
  }

  async closeSession(): Promise<void> {
    await this.broker.closeSession(this.sessionId);
  }

  /** Everything down, and nothing this test launched still running. */
  async dispose(): Promise<void> {
    if (this._closed) return;
    this._closed = true;
    try {
      await this.broker.close();
      for (const name of this.names) assert.deepEqual(standinsNamed(name), [], `stand-in of ${name} still running after broker.close()`);
    } finally {
      await this._worker.terminate();
      rmSync(this.cacheDir, { recursive: true, force: true });
    }
  }
}

async function withSeam(opts: Parameters<typeof Seam.open>[0], fn: (s: Seam) => Promise<void>): Promise<void> {
  const s = Seam.open(opts);
  try {
    await fn(s);
  } finally {
    await s.dispose();
  }
}

function assertBooted(vm: VmView, vmId: number, generation: number): void {
  assert.equal(vm.vmId, vmId);
  assert.equal(vm.state, 'booted');
  assert.equal(vm.generation, generation);
  assert.deepEqual(vm.streams, []);
  assert.equal(typeof vm.cid, 'number');
  assert.equal(vm.deadReason, undefined);
}

// ---------------------------------------------------------------------------------------------

describe('broker seam: the real broker, a QEMU stand-in, the real agent', { skip: missing }, () => {
  // First: ManagedVm.powerButton leaves its 10 s grace timer running after a graceful power-off,
  // which keeps this process alive 10 s after the test; run first, that overlaps the others.
  it('vm.power_button: the guest powers off by itself and the VM is shut down', async () => {
    await withSeam({}, async (s) => {
      const { vmId, name } = await s.bootVm('power');
      const { agent } = await s.pids(vmId);
      const reply = await s.call('vm.power_button', { vmId });
      assert.equal(reply.graceful, true);
      assert.equal(reply.vm.state, 'shutdown');
      assert.equal(alive(agent), false);
      assert.deepEqual(standinsNamed(name), []);
      assert.deepEqual(s.poolUsed(), { memory_bytes: 0, cpus: 0 });
    });
  });

  it('vm.boot replies with the booted view, and agent.call reaches the real agent', async () => {
    await withSeam({}, async (s) => {
      const { vmId, name } = await s.createVm('boot');
      const boot = await s.call('vm.boot', { vmId, opts: {} });
      assertBooted(boot.vm, vmId, 1);
      assert.equal(boot.restored, false);
      assert.ok(boot.bootMs > 0);

      const echo = await s.exec(vmId, ['/bin/echo', 'hi']);
      assert.deepEqual(echo, { status: 'exited', code: 0, stdout: 'hi\n' });

      // The process ran under the real agent in listen mode, under this VM's stand-in.
      const { agent, standin } = await s.pids(vmId);
      assert.match(cmdline(agent).join(' '), /provium-agent --listen \S+standin-agent\.sock$/);
      assert.deepEqual(standinsNamed(name), [standin]);

      const log = Buffer.from((await s.call('vm.console_log', { vmId })).data).toString('utf8');
      assert.match(log, /^stand-in console\n/);
      assert.match(log, /provium-agent: ready \(mode=listen/);

      const spawned = s.events.filter((e) => e.kind === 'vm_spawned');
      assert.equal(spawned.length, 1);
      assert.equal(spawned[0]!.kind === 'vm_spawned' && spawned[0]!.payload.vm_name, name);
      // vm_spawned names the test file and the VM's lab, and how it came up.
      const payload = spawned[0]!.kind === 'vm_spawned' ? spawned[0]!.payload : undefined;
      assert.deepEqual([payload?.file, payload?.lab, payload?.boot], ['seam.test.lua', `provium/${name}-lab`, 'cold']);
      assert.deepEqual(s.poolUsed(), { memory_bytes: kVmMemory, cpus: 1 });
    });
  });

  it('vm.shutdown replies shutdown with a higher generation; the stand-in, its agent and scratch dir are gone', async () => {
    await withSeam({}, async (s) => {
      const { vmId, name, vm } = await s.bootVm('shutdown');
      const { agent, standin } = await s.pids(vmId);
      const scratch = path.dirname(cmdline(agent).at(-1)!);
      assert.ok(existsSync(scratch), `scratch dir ${scratch}`);

      const reply = await s.call('vm.shutdown', { vmId });
      assert.equal(reply.vm.state, 'shutdown');
      assert.ok(reply.vm.generation > vm.generation, `generation ${reply.vm.generation} after ${vm.generation}`);
      assert.equal(alive(standin), false, 'stand-in still running');
      assert.equal(alive(agent), false, 'agent still running');
      assert.deepEqual(standinsNamed(name), []);
      assert.equal(existsSync(scratch), false, 'scratch dir left behind');
      assert.deepEqual(s.poolUsed(), { memory_bytes: 0, cpus: 0 });
      assert.equal(s.events.filter((e) => e.kind === 'vm_shutdown').length, 1);

      const again = await s.fail('agent.call', { vmId, op: 'ping', data: { token: 'x' } });
      assert.equal(again.code, 'usage');
      assert.equal(again.vm?.state, 'shutdown');
    });
  });

  it('a QEMU that dies on its own: the call in flight and the next one fail vm_dead with the exit code', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('dies');
      const { agent, standin } = await s.pids(vmId);
      const child = await s.agent(vmId, 'spawn', { argv: ['/bin/sleep', '30'], env: {}, env_clear: false, stdin: new Uint8Array() });
      assert.ok(alive(child.pid));

      // A wait in flight at the agent when QEMU goes (bounded: a broker that never notices fails the test).
      const waiting = s.run([{ op: 'agent.call', args: { vmId, op: 'wait', data: { handle: child.handle } }, timeoutMs: 8000 }]);
      await new Promise((r) => setTimeout(r, 150));
      process.kill(standin, 'SIGUSR2');
      const [inFlight] = await waiting;
      assert.equal(inFlight!.ok, false, 'wait should fail when QEMU dies');
      const err1 = (inFlight as { error: RpcErrorData }).error;
      assert.equal(err1.code, 'vm_dead', err1.message);
      assert.equal(err1.vm?.state, 'dead');
      assert.match(err1.vm?.deadReason ?? '', /QEMU exited unexpectedly \(exit code 1\)/);
      assert.match(err1.vm?.deadReason ?? '', /stand-in: simulated crash/);

      const err2 = await s.fail('agent.call', { vmId, op: 'exec', data: { argv: ['/bin/echo', 'hi'], env: {}, env_clear: false, stdin: new Uint8Array() } });
      assert.equal(err2.code, 'vm_dead');
      assert.match(err2.message, /is dead: QEMU exited unexpectedly \(exit code 1\)/);
      assert.equal(err2.vm?.state, 'dead');
      assert.equal(err2.vm?.deadReason, err1.vm?.deadReason);

      // The guest went with QEMU: the agent and what it ran.
      assert.equal(alive(standin), false);
      assert.equal(alive(agent), false);
      assert.equal(alive(child.pid), false, 'a process the agent spawned outlived the guest');
      await waitFor('the pool to release the dead VM', () => s.poolUsed().memory_bytes === 0);

      const info = await s.call('vm.info', { vmId });
      assert.equal(info.vm.state, 'dead');
      const down = await s.call('vm.shutdown', { vmId });
      assert.equal(down.vm.state, 'shutdown');
    });
  });

  it(
    'a dead VM that is shut down no longer reports a deadReason',
    async () => {
      await withSeam({}, async (s) => {
        const { vmId } = await s.bootVm('dead-down');
        const { standin } = await s.pids(vmId);
        process.kill(standin, 'SIGUSR2');
        await waitFor('the broker to see the death', () => !alive(standin));
        const err = await s.fail('agent.call', { vmId, op: 'ping', data: { token: 'x' } });
        assert.equal(err.vm?.state, 'dead');
        const down = await s.call('vm.shutdown', { vmId });
        assert.equal(down.vm.state, 'shutdown');
        assert.equal(down.vm.deadReason, undefined);
      });
    },
  );

  it('stream.open tails a host file; the VM view lists the stream until stream.close', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('stream');
      const file = path.join(s.cacheDir, 'tailed.log');
      writeFileSync(file, 'line one\n');
      const { streamId } = await s.call('stream.open', { vmId, op: 'tail_file', data: { path: file, start: 'beginning' } });

      const readUntil = async (want: string): Promise<string> => {
        let text = '';
        const deadline = Date.now() + 5000;
        while (!text.includes(want)) {
          if (Date.now() > deadline) assert.fail(`stream gave ${JSON.stringify(text)}, never ${JSON.stringify(want)}`);
          const chunk = await s.call('stream.read', { streamId, timeoutMs: 1000 });
          assert.equal(chunk.eof, false);
          if (chunk.data) text += Buffer.from(chunk.data).toString('utf8');
        }
        return text;
      };
      assert.equal(await readUntil('line one\n'), 'line one\n');
      assert.deepEqual((await s.call('vm.info', { vmId })).vm.streams, [streamId]);
      appendFileSync(file, 'line two\n');
      assert.equal(await readUntil('line two\n'), 'line two\n');

      await s.call('stream.close', { streamId });
      assert.deepEqual((await s.call('vm.info', { vmId })).vm.streams, []);
    });
  });

  it('closeSession tears down every VM, stream and guest process; the pool is back to zero', async () => {
    await withSeam({}, async (s) => {
      const a = await s.bootVm('close-a');
      const b = await s.bootVm('close-b');
      const pa = await s.pids(a.vmId);
      const pb = await s.pids(b.vmId);
      const file = path.join(s.cacheDir, 'tailed.log');
      writeFileSync(file, 'x\n');
      await s.call('stream.open', { vmId: a.vmId, op: 'tail_file', data: { path: file, start: 'end' } });
      const child = await s.agent(b.vmId, 'spawn', { argv: ['/bin/sleep', '30'], env: {}, env_clear: false, stdin: new Uint8Array() });
      assert.deepEqual(s.poolUsed(), { memory_bytes: 2 * kVmMemory, cpus: 2 });

      await s.closeSession();
      for (const pid of [pa.agent, pa.standin, pb.agent, pb.standin, child.pid]) {
        assert.equal(alive(pid), false, `pid ${pid} (${cmdline(pid).join(' ')}) outlived closeSession`);
      }
      assert.deepEqual(standinsNamed(a.name), []);
      assert.deepEqual(standinsNamed(b.name), []);
      assert.deepEqual(s.poolUsed(), { memory_bytes: 0, cpus: 0 });
      assert.equal(s.events.filter((e) => e.kind === 'vm_shutdown').length, 2);
    });
  });

  it('an agent that never answers fails vm.boot at the profile agent_timeout, leaving nothing running', async () => {
    await withSeam({ profile: { agentTimeoutMs: 1500 } }, async (s) => {
      const { vmId, name } = await s.createVm('noagent');
      const err = await withEnv({ STANDIN_NO_AGENT: '1' }, () => s.fail('vm.boot', { vmId, opts: {} }));
      assert.match(err.message, /failed to boot: the agent did not answer within 1\.50s \(agent_timeout\)/);
      assert.match(err.message, /--- console \(last 4K\) ---\nstand-in console\n/);
      assert.ok(err.ms >= 1500 && err.ms < 1500 + 6000, `boot failed after ${Math.round(err.ms)} ms`);
      assert.equal(err.vm?.state, 'created');
      assert.deepEqual(standinsNamed(name), []);
      assert.deepEqual(s.poolUsed(), { memory_bytes: 0, cpus: 0 });
    });
  });

  it('a QEMU that exits during launch fails vm.boot with its exit code and stderr', async () => {
    await withSeam({}, async (s) => {
      const { vmId, name } = await s.createVm('launch');
      const stderr = "qemu-system-x86_64: -device virtio-foo: 'virtio-foo' is not a valid device model name";
      const err = await withEnv({ STANDIN_FAIL_LAUNCH: '1', STANDIN_STDERR: stderr }, () => s.fail('vm.boot', { vmId, opts: {} }));
      assert.match(err.message, /failed to boot: VM \S+ \(profile minimal\): QEMU exited during launch \(code 1\)/);
      assert.ok(err.message.includes(stderr), err.message);
      assert.equal(err.vm?.state, 'created');
      assert.deepEqual(standinsNamed(name), []);
      assert.deepEqual(s.poolUsed(), { memory_bytes: 0, cpus: 0 });
    });
  });

  it('closing the session while a boot is under way leaves no stand-in behind', async () => {
    await withSeam({}, async (s) => {
      const { vmId, name } = await s.createVm('midboot');
      // The worker gives up after 300 ms; the broker's boot goes on until the file closes.
      const err = await withEnv({ STANDIN_AGENT_DELAY_MS: '800' }, () => s.fail('vm.boot', { vmId, opts: {} }, 300));
      assert.equal(err.code, 'timeout');
      assert.equal(standinsNamed(name).length, 1, 'the stand-in should be booting');
      await s.closeSession();
      assert.deepEqual(standinsNamed(name), []);
      assert.deepEqual(s.poolUsed(), { memory_bytes: 0, cpus: 0 });
    });
  });

  it('pause stops the guest and refuses agent calls; resume lets them through again', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('pause');
      const paused = await s.call('vm.pause', { vmId });
      assert.equal(paused.vm.state, 'paused');
      const refused = await s.fail('agent.call', { vmId, op: 'ping', data: { token: 't' } });
      assert.equal(refused.code, 'usage');
      assert.match(refused.message, /is paused; use resume\(\)/);
      const resumed = await s.call('vm.resume', { vmId });
      assert.equal(resumed.vm.state, 'booted');
      assert.equal((await s.exec(vmId, ['/bin/echo', 'again'])).stdout, 'again\n');
    });
  });

  it('vm.reset brings up a fresh agent on the same link with a higher generation', async () => {
    await withSeam({}, async (s) => {
      const { vmId, vm } = await s.bootVm('reset');
      const before = await s.pids(vmId);
      const child = await s.agent(vmId, 'spawn', { argv: ['/bin/sleep', '30'], env: {}, env_clear: false, stdin: new Uint8Array() });
      const reply = await s.call('vm.reset', { vmId });
      assert.equal(reply.vm.state, 'booted');
      assert.equal(reply.vm.generation, vm.generation + 1);
      const after = await s.pids(vmId);
      assert.equal(after.standin, before.standin, 'a reset keeps the QEMU process');
      assert.notEqual(after.agent, before.agent, 'a reset starts the guest (its agent) over');
      assert.equal(alive(before.agent), false);
      assert.equal(alive(child.pid), false, 'a guest process survived the reset');
    });
  });

  it('boot snapshots: the first boot saves one (migrate), the next boot of the key restores it (-incoming)', async () => {
    await withSeam({ bootSnapshots: true }, async (s) => {
      const first = await s.bootVm('snap-a');
      assert.equal(first.restored, false);
      const snaps = readdirSync(path.join(s.cacheDir, 'boot-snapshots')).filter((n) => n.endsWith('.snap'));
      assert.equal(snaps.length, 1, 'one boot snapshot saved');
      assert.ok(statSync(path.join(s.cacheDir, 'boot-snapshots', snaps[0]!)).size > 0);
      // The saved guest runs on after the save.
      assert.equal((await s.exec(first.vmId, ['/bin/echo', 'after save'])).stdout, 'after save\n');
      const firstPids = await s.pids(first.vmId);

      const second = await s.bootVm('snap-b');
      assert.equal(second.restored, true);
      assertBooted(second.vm, second.vmId, 1);
      assert.equal((await s.exec(second.vmId, ['/bin/echo', 'restored'])).stdout, 'restored\n');
      const secondPids = await s.pids(second.vmId);
      assert.notEqual(secondPids.standin, firstPids.standin);
      // The restore set the guest clock (answered by the stand-in, the host clock untouched).
      const t = await s.agent(second.vmId, 'get_time', {});
      assert.ok(Math.abs(Number(t.sec) - Date.now() / 1000) < 30, `guest time ${t.sec}`);
      const spawned = s.events.filter((e) => e.kind === 'vm_spawned').map((e) => e.kind === 'vm_spawned' && [e.payload.restored, e.payload.boot]);
      assert.deepEqual(spawned, [[false, 'cold'], [true, 'snapshot']]);
    });
  });

  it('vm.snapshot then vm.restore into the same VM after a shutdown', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('snapfile');
      const file = path.join(s.cacheDir, 'vm.snap');
      const snap = await s.call('vm.snapshot', { vmId, path: file });
      assert.equal(snap.path, file);
      assert.ok(snap.bytes > 0 && snap.bytes === statSync(file).size);
      assert.equal(snap.vm.state, 'booted');
      assert.equal((await s.exec(vmId, ['/bin/echo', 'still running'])).stdout, 'still running\n');

      const down = await s.call('vm.shutdown', { vmId });
      const restored = await s.call('vm.restore', { vmId, path: file });
      assert.equal(restored.vm.state, 'booted');
      assert.ok(restored.vm.generation > down.vm.generation);
      assert.equal((await s.exec(vmId, ['/bin/echo', 'restored'])).stdout, 'restored\n');

      await s.call('snapshot.delete', { path: file });
      assert.equal(existsSync(file), false);
    });
  });

  it(
    'stream.read of a closed stream is answered with an error',
    async () => {
      await withSeam({}, async (s) => {
        const err = await s.fail('stream.read', { streamId: 4242, timeoutMs: 100 }, 1000);
        assert.notEqual(err.code, 'timeout', `no reply from the broker: ${err.message}`);
        assert.match(err.message, /stream 4242 is closed/);
      });
    },
  );
  // ---- issue 15: every wait bounded, every death named ----

  /** An exec of `sleep 30` in flight while `fault` happens; its error and how long it took. */
  async function inFlightWhile(s: Seam, vmId: number, fault: () => void): Promise<RpcErrorData & { ms: number }> {
    const running = s.run([{ op: 'agent.call', args: { vmId, op: 'exec', data: { argv: ['/bin/sleep', '30'], env: {}, env_clear: false, stdin: new Uint8Array() } }, timeoutMs: 25_000 }]);
    await new Promise((r) => setTimeout(r, 200));
    fault();
    const [outcome] = await running;
    assert.equal(outcome!.ok, false, 'the exec should fail');
    return { ...(outcome as { error: RpcErrorData }).error, ms: outcome!.ms };
  }

  function died(s: Seam): Extract<AnyEvent, { kind: 'vm_died' }>['payload'][] {
    return s.events.filter((e): e is Extract<AnyEvent, { kind: 'vm_died' }> => e.kind === 'vm_died').map((e) => e.payload);
  }

  it('QEMU killed from outside: the op in flight fails with "QEMU killed by SIGKILL", and vm_died says so', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('sigkill');
      const { standin } = await s.pids(vmId);
      const err = await inFlightWhile(s, vmId, () => process.kill(standin, 'SIGKILL'));
      assert.equal(err.code, 'vm_dead', err.message);
      assert.match(err.message, /is dead: QEMU killed by SIGKILL/);
      assert.ok(err.ms < 5000, `took ${err.ms} ms`);
      assert.deepEqual(died(s).map((d) => d.kind), ['qemu_killed']);
      await s.call('vm.shutdown', { vmId });
      const down = s.events.filter((e) => e.kind === 'vm_shutdown').map((e) => (e.payload as { reason: string }).reason);
      assert.deepEqual(down, ['QEMU killed by SIGKILL']);
    });
  });

  it('a guest kernel panic (pvpanic GUEST_PANICKED) is "kernel panic: <its first line>"', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('panic');
      const { standin } = await s.pids(vmId);
      const err = await inFlightWhile(s, vmId, () => process.kill(standin, 'SIGPWR'));
      assert.equal(err.code, 'vm_dead', err.message);
      assert.match(err.message, /is dead: kernel panic: Kernel panic - not syncing: stand-in: simulated panic/);
      const [death] = died(s);
      assert.equal(death?.kind, 'kernel_panic');
      assert.match(death?.console_excerpt ?? '', /simulated panic/);
    });
  });

  it('a guest that powers itself off is shut down ("guest powered off"), not dead', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('poweroff');
      const { standin } = await s.pids(vmId);
      const err = await inFlightWhile(s, vmId, () => process.kill(standin, 'SIGURG'));
      assert.match(err.message, /guest powered off/);
      await waitFor('the VM to be shut down', () => s.events.some((e) => e.kind === 'vm_shutdown'));
      const info = await s.call('vm.info', { vmId });
      assert.equal(info.vm.state, 'shutdown');
      const next = await s.fail('agent.call', { vmId, op: 'ping', data: { token: 'x' } });
      assert.match(next.message, /state shutdown .*\(guest powered off\)/);
      assert.deepEqual(died(s).map((d) => d.kind), ['poweroff']);
    });
  });

  it('a pause from outside (QMP STOP) fails the op in flight at once, naming it; resume() works again', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('outside-stop');
      const { standin } = await s.pids(vmId);
      const err = await inFlightWhile(s, vmId, () => process.kill(standin, 'SIGWINCH'));
      assert.match(err.message, /was paused from outside the harness \(QMP STOP event/);
      assert.ok(err.ms < 5000, `took ${err.ms} ms`);
      assert.equal(err.vm?.state, 'paused');
      await s.call('vm.resume', { vmId });
      assert.equal((await s.exec(vmId, ['/bin/echo', 'back'])).stdout, 'back\n');
    });
  });

  it('a frozen guest fails the op in flight within 10 s, saying it stopped answering; the VM is dead', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('frozen');
      const { standin } = await s.pids(vmId);
      const err = await inFlightWhile(s, vmId, () => process.kill(standin, 'SIGTTIN'));
      assert.equal(err.code, 'vm_dead', err.message);
      assert.match(err.message, /the guest stopped answering: nothing from the agent for \d+\.\d s \(liveness pings unanswered\)/);
      assert.ok(err.ms < 10_000, `the diagnosis took ${err.ms} ms`);
      assert.deepEqual(died(s).map((d) => d.kind), ['unresponsive']);
    });
  });

  it('the agent port closed inside the guest fails the op in flight within 3 s, naming the channel', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('port-closed');
      const { standin } = await s.pids(vmId);
      const err = await inFlightWhile(s, vmId, () => process.kill(standin, 'SIGTTOU'));
      assert.match(err.message, /the agent's channel was closed inside the guest/);
      assert.ok(err.ms < 3500, `took ${err.ms} ms`);
      assert.deepEqual(died(s).map((d) => d.kind), ['channel_closed']);
    });
  });

  it('an op of its own bound is not lifted by a longer test deadline (timeoutMs) : the default 30 s stays', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('own-bound');
      const { standin } = await s.pids(vmId);
      // Frozen: the liveness check names it before either bound.
      process.kill(standin, 'SIGTTIN');
      const err = await s.fail('agent.call', { vmId, op: 'stat', data: { path: '/' }, timeoutMs: 600_000 }, 20_000);
      assert.match(err.message, /stopped answering/);
      assert.ok(err.ms < 10_000, `took ${err.ms} ms`);
    });
  });

  it('a QEMU that dies while the boot snapshot is saved fails vm.boot instead of booting a dead VM', async () => {
    await withSeam({ bootSnapshots: true }, async (s) => {
      const { vmId } = await s.createVm('dies-saving');
      const err = await withEnv({ STANDIN_CRASH_ON_MIGRATE: '1' }, () => s.fail('vm.boot', { vmId, opts: {} }));
      assert.match(err.message, /failed to boot: QEMU died while the boot snapshot was saved: QEMU exited unexpectedly \(exit code 1\)/);
      assert.equal(err.vm?.state, 'created');
    });
  });

  it('agent.start/agent.await: a blocking syscall stays in flight while other ops run, bounded by its timeout_ms', async () => {
    await withSeam({}, async (s) => {
      const { vmId } = await s.bootVm('async-syscall');
      // pause(2) (34) blocks until a signal: the agent interrupts it at timeout_ms.
      const data = { nr: 34, args: [], bufs: [], ptrs: [], nested: [], timeout_ms: 1500 };
      const outcomes = await s.run([
        { op: 'agent.start', args: { vmId, op: 'syscall', data } },
        { op: 'agent.await', args: { callId: 1, timeoutMs: 100 } },
        { op: 'agent.call', args: { vmId, op: 'ping', data: { token: 'while-blocked' } } },
        { op: 'agent.await', args: { callId: 1 } },
      ]);
      assert.ok(outcomes[0]!.ok);
      assert.deepEqual((outcomes[1] as { reply: unknown }).reply, { done: false });
      assert.ok(outcomes[2]!.ok, 'the agent answered while the syscall blocked');
      assert.ok(outcomes[2]!.ms < 1000, `ping took ${outcomes[2]!.ms} ms`);
      const last = outcomes[3] as { ok: false; error: RpcErrorData };
      assert.equal(last.ok, false);
      assert.equal(last.error.errno, 110);
      assert.match(last.error.message, /syscall did not return within 1500 ms \(timeout_ms\); it was interrupted/);
      // Awaited once: the id is gone.
      const again = await s.fail('agent.await', { callId: 1 });
      assert.match(again.message, /async call 1 is unknown or was already awaited/);
    });
  });
});
