// Fuzzing both ends of the agent link with random, truncated, oversized and mistyped frames:
// (a) the host's AgentClient against a fake agent whose every reply may be garbage, and (b) the
// real agent binary in --listen mode against a host that sends garbage. Neither may crash or
// hang, memory stays bounded, and each still talks to an honest peer afterwards.
// PROVIUM_FUZZ_SEED=<n> replays a run (the seed is in every failure message).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Prng } from '../../src/net/prng.js';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../../src/agent/client.js';
import { decodeBody, encodeFrame, FrameReader } from '../../src/protocol/framing.js';
import { checkFrame, isMap } from '../../src/agent/validate.js';
import { MAX_FRAME_BYTES, type HostFrame } from '../../src/protocol/agent.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const agentBinary = process.env.PROVIUM_AGENT_BIN ?? path.join(repo, 'agent/build/provium-agent');
const seed = Number(process.env.PROVIUM_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MiB = 1024 * 1024;

/** Iterations of each part; each is bounded in time too (the whole file stays under ~20 s). */
const kClientIterations = 300;
const kAgentIterations = 250;
const kPartBudgetMs = 8000;
/** A request must settle within its timeout plus a resync plus this. */
const kSettleMarginMs = 3000;
const kRequestTimeoutMs = 300;
const kResyncTimeoutMs = 800;
const kMaxRssGrowthBytes = 256 * MiB;
const kMaxAgentRssGrowthKiB = 64 * 1024;

/** The project's seeded PRNG picks the mutations, so PROVIUM_FUZZ_SEED replays a run. */
function prng(s: number): () => number {
  const p = new Prng(s);
  return () => p.float();
}

class Gen {
  readonly next: () => number;
  constructor(s: number) {
    this.next = prng(s);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(0, 255);
    return out;
  }
  string(): string {
    return this.pick(['', 'x', 'ok', 'err', 'hello', '\u0000', 'ünï', 'a'.repeat(this.int(0, 300))]);
  }
  /** Any msgpack value, nested a little. */
  value(depth = 0): unknown {
    const kinds = depth > 2 ? 8 : 10;
    switch (this.int(0, kinds - 1)) {
      case 0:
        return null;
      case 1:
        return this.chance(0.5);
      case 2:
        return this.int(-5, 300);
      case 3:
        return this.pick([2 ** 32, -(2 ** 31) - 1, 2 ** 53, 0.5, -1.25, Number.MAX_VALUE]);
      case 4:
        return this.pick([2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n]);
      case 5:
      case 6:
        return this.string();
      case 7:
        return new Uint8Array(this.bytes(this.int(0, 40)));
      case 8:
        return Array.from({ length: this.int(0, 4) }, () => this.value(depth + 1));
      default: {
        const map: Record<string, unknown> = {};
        for (let i = this.int(0, 4); i > 0; i--) map[this.pick(kFieldNames)] = this.value(depth + 1);
        return map;
      }
    }
  }
}

const kFieldNames = [
  'id', 'kind', 'data', 'worker', 'token', 'path', 'handle', 'len', 'stream', 'bytes', 'ops', 'errno', 'message',
  'status', 'code', 'signal', 'size', 'entries', 'name', 'protocol_version', 'follow', 'results', 'ok', 'err', 'x',
] as const;

/** A frame body that is not a valid encoding of anything, or frames cut or oversized. */
function rawGarbage(g: Gen): Buffer {
  switch (g.int(0, 5)) {
    case 0:
      return g.bytes(g.int(1, 64));
    case 1: {
      const length = Buffer.alloc(4);
      length.writeUInt32BE(g.int(MAX_FRAME_BYTES + 1, 0xffffffff) >>> 0);
      return length;
    }
    case 2: {
      const frame = encodeFrame({ id: g.int(0, 50), kind: 'ok', data: { x: g.string() } });
      return frame.subarray(0, g.int(1, frame.byteLength - 1)); // cut short
    }
    case 3:
      return encodeFrame(g.value());
    case 4: {
      const body = g.bytes(g.int(0, 32));
      const length = Buffer.alloc(4);
      length.writeUInt32BE(body.byteLength);
      return Buffer.concat([length, body]);
    }
    default:
      return Buffer.from('\0\0\x03\x9aabc', 'latin1');
  }
}

describe('fuzz: AgentClient against an agent that answers with anything', { timeout: 60_000 }, () => {
  let dir: string;
  let server: net.Server;
  let socketPath: string;
  let fuzzing = true;
  const g = new Gen(seed);

  /** A fake agent: honest when not fuzzing, else each reply is honest, mangled or garbage. */
  function answer(socket: net.Socket, frame: HostFrame): void {
    const send = (value: unknown): void => void socket.write(encodeFrame(value));
    const honest = (): void => {
      if (frame.kind === 'stream_ack') return;
      if (frame.kind === 'hello') send({ id: frame.id, kind: 'ok', data: { protocol_version: 1, agent_version: 'fuzz', os: 'linux', kernel: 'k', pid: 1, mode: 'listen' } });
      else if (frame.kind === 'ping') send({ id: frame.id, kind: 'ok', data: { token: frame.data.token } });
      else if (frame.kind === 'stat') send({ id: frame.id, kind: 'ok', data: { size: 1, mtime_ns: 2, perm: 0o644, entry_type: 'file', uid: 0, gid: 0, nlink: 1 } });
      else if (frame.kind === 'read_file') send({ id: frame.id, kind: 'ok', data: { data: new Uint8Array(g.int(0, 2000)) } });
      else send({ id: frame.id, kind: 'ok', data: {} });
    };
    // Mostly honest, or nothing would ever succeed: one mangled reply fails all in flight.
    if (!fuzzing || g.chance(frame.kind === 'hello' ? 0.9 : 0.6)) return honest();
    switch (g.int(1, 15)) {
      case 1:
        return honest();
      case 2: {
        // Honest, in pieces, with pauses between them.
        const bytes = encodeFrame({ id: frame.id, kind: 'ok', data: frame.kind === 'ping' ? { token: frame.data.token } : {} });
        let at = 0;
        const more = (): void => {
          if (at >= bytes.byteLength || socket.destroyed) return;
          const n = g.int(1, 8);
          socket.write(bytes.subarray(at, at + n));
          at += n;
          setTimeout(more, g.int(0, 5));
        };
        return more();
      }
      case 3:
        socket.write(rawGarbage(g));
        return honest();
      case 4:
        return void socket.write(rawGarbage(g)); // and nothing more
      case 5:
        return send({ id: frame.id, kind: 'ok', data: g.value() }); // mistyped reply
      case 6: {
        const data: Record<string, unknown> = {};
        for (let i = g.int(1, 6); i > 0; i--) data[g.pick(kFieldNames)] = g.value();
        return send({ id: frame.id, kind: 'ok', data });
      }
      case 7:
        return send({ id: g.pick([frame.id, -1, 2 ** 32, 0.5, 'x', null, frame.id + 1]), kind: g.pick(['ok', 'err', 'okay', 7, null]), data: g.value() });
      case 8:
        return send({ id: frame.id, kind: 'err', data: { errno: g.value(), message: g.value() } });
      case 9:
        return send({ id: g.pick([frame.id, 0, frame.id + 1]), kind: g.pick(['stream_data', 'stream_end']), data: g.pick([{}, { bytes: g.value() }, { errno: g.value() }]) });
      case 10:
        return send({ id: 0, kind: 'worker_exit', data: { worker: g.pick([1, 2, g.value()]), status: g.pick(['exited', 'signalled', g.value()]), code: g.int(0, 3), signal: g.int(0, 9) } });
      case 11:
        send({ id: 0, kind: 'agent_error', data: { message: g.string() } });
        return g.chance(0.5) ? honest() : undefined;
      case 12:
        return; // no answer: the request times out
      case 13:
        honest();
        return honest(); // twice
      case 14:
        return send({ id: frame.id, kind: 'ok', data: { data: new Uint8Array(g.int(0, 4 * MiB)), token: g.value() } });
      default:
        send(g.value());
        return honest();
    }
  }

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'provium-fuzz-'));
    socketPath = path.join(dir, 'fake.sock');
    server = net.createServer((socket) => {
      const reader = new FrameReader(MAX_FRAME_BYTES);
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        for (const body of reader.push(chunk)) answer(socket, decodeBody(body) as HostFrame);
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  after(() => {
    server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`settles every request, throws nothing, stays bounded, and recovers (seed ${seed})`, async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown): void => void uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    const rssBefore = process.memoryUsage().rss;
    // Against this agent a handshake may fail too (a mangled hello reply): that is an answer.
    const connect = async (): Promise<AgentClient> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await AgentClient.connect(socketPath, { timeoutMs: 2000, frameStallMs: 50, resyncTimeoutMs: kResyncTimeoutMs });
        } catch (err) {
          if (attempt === 20) throw err;
        }
      }
    };
    let client = await connect();
    const counts = { ok: 0, failed: 0, reconnects: 0 };
    const started = performance.now();
    try {
      for (let i = 0; i < kClientIterations && performance.now() - started < kPartBudgetMs; i++) {
        if (client.state === 'closed') {
          counts.reconnects++;
          client = await connect();
        }
        const ops = Array.from({ length: g.int(1, 3) }, () => {
          switch (g.int(0, 3)) {
            case 0:
              return client.request('ping', { token: `t${i}` }, { timeoutMs: kRequestTimeoutMs });
            case 1:
              return client.request('stat', { path: '/x' }, { timeoutMs: kRequestTimeoutMs });
            case 2:
              return client.request('read_file', { path: '/x' }, { timeoutMs: kRequestTimeoutMs });
            default:
              return client.openStream('tail_file', { path: '/x', start: 'end' }, { timeoutMs: kRequestTimeoutMs }).then(async (stream) => {
                await stream.read(10);
                // Bounded by its own timeout (10 s), longer than an iteration here.
                void client.closeStream(stream).catch(() => undefined);
                return {};
              });
          }
        });
        const bound = kRequestTimeoutMs + kResyncTimeoutMs + kSettleMarginMs;
        let watchdog: NodeJS.Timeout | undefined;
        const hung = new Promise<'hung'>((resolve) => (watchdog = setTimeout(() => resolve('hung'), bound)));
        const settled = await Promise.race([Promise.allSettled(ops), hung]);
        clearTimeout(watchdog);
        assert.notEqual(settled, 'hung', `iteration ${i}: a request did not settle within ${bound} ms (seed ${seed})`);
        for (const r of settled as PromiseSettledResult<unknown>[]) counts[r.status === 'fulfilled' ? 'ok' : 'failed']++;
      }
      assert.deepEqual(uncaught, [], `seed ${seed}`);
      assert.ok(counts.ok > 0 && counts.failed > 0, `a fuzz that only ${counts.ok ? 'succeeded' : 'failed'} tests little: ${JSON.stringify(counts)} (seed ${seed})`);
      // Honest again: the link recovers (after a resync), or a new one works.
      fuzzing = false;
      if (client.state === 'closed') client = await connect();
      const r = await client.request('ping', { token: 'after' }, { timeoutMs: kResyncTimeoutMs + 2000 });
      assert.deepEqual(r, { token: 'after' });
      const growth = process.memoryUsage().rss - rssBefore;
      assert.ok(growth < kMaxRssGrowthBytes, `rss grew by ${Math.round(growth / MiB)} MiB (seed ${seed})`);
    } finally {
      client.close();
      process.off('uncaughtException', onUncaught);
    }
  });
});

/** The safe ops a fuzzed request may name: none runs programs, writes files or moves clocks. */
const kSafeKinds = ['hello', 'ping', 'stat', 'read_file', 'listdir', 'get_time', 'proc_status', 'get_pid', 'wait', 'release', 'stream_ack', 'stream_close', 'read', 'batch'] as const;

describe('fuzz: the real agent against a host that sends anything', { timeout: 60_000, skip: !existsSync(agentBinary) && 'agent not built (make -C agent)' }, () => {
  let dir: string;
  let agent: ChildProcess;
  let socketPath: string;
  let stderr = '';
  const g = new Gen(seed ^ 0x5eed);

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'provium-fuzz-agent-'));
    socketPath = path.join(dir, 'agent.sock');
    agent = spawn(agentBinary, ['--listen', socketPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      agent.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('provium-agent: ready')) resolve();
      });
      agent.once('exit', (code) => reject(new Error(`agent exited (${code}): ${stderr}`)));
    });
  });

  after(() => {
    agent?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A path that names nothing, or something harmless to stat or list. */
  const somePath = (): unknown => g.pick([dir, `${dir}/none-${g.int(0, 9)}`, '/nonexistent/x', '', 'rel', g.value()]);

  function request(): Record<string, unknown> {
    const kind = g.chance(0.1) ? g.string() : g.pick(kSafeKinds);
    const data: Record<string, unknown> = {};
    for (let i = g.int(0, 4); i > 0; i--) data[g.pick(kFieldNames)] = g.value();
    if (g.chance(0.5)) data.path = somePath();
    if (kind === 'batch') {
      data.ops = Array.from({ length: g.int(0, 5) }, () => (g.chance(0.8) ? { kind: g.pick(kSafeKinds), data: { path: somePath(), token: g.value(), handle: g.value() } } : g.value()));
    }
    if (kind === 'read_file' || kind === 'listdir' || kind === 'stat') data.path = somePath(); // never a random device
    if (kind === 'read') data.len = g.int(0, 64); // a random fd names nothing here, and is refused when it is the agent's
    const frame: Record<string, unknown> = { id: g.pick([g.int(1, 1000), g.int(1, 1000), 0, -1, 2 ** 32, 'x', null, 1.5]), kind, data: g.chance(0.9) ? data : g.value() };
    if (g.chance(0.05)) frame.worker = g.value();
    if (g.chance(0.05)) delete frame.kind;
    return frame;
  }

  /** Opens a connection that collects and checks what the agent sends. */
  async function open(): Promise<{ socket: net.Socket; frames: Record<string, unknown>[]; bad: string[] }> {
    const socket = net.createConnection(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const frames: Record<string, unknown>[] = [];
    const bad: string[] = [];
    const reader = new FrameReader(MAX_FRAME_BYTES);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const body of reader.push(chunk)) {
          const value = decodeBody(body);
          // Whatever it is sent, the agent only ever answers with well-formed frames.
          const check = checkFrame(value);
          if (!check.ok) bad.push(check.problem);
          if (isMap(value)) frames.push(value);
        }
      } catch (err) {
        bad.push(String(err));
      }
    });
    return { socket, frames, bad };
  }

  async function close(socket: net.Socket): Promise<void> {
    socket.end();
    await new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())));
  }

  /** A fresh connection says hello and pings; the agent answers both within a second. */
  async function stillAnswers(what: string): Promise<void> {
    const conn = await open();
    conn.socket.write(Buffer.concat([encodeFrame({ id: 1, kind: 'hello', data: { protocol_version: 1 } }), encodeFrame({ id: 2, kind: 'ping', data: { token: what } })]));
    const deadline = Date.now() + 2000;
    while (!conn.frames.some((f) => f.id === 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await close(conn.socket);
    const pong = conn.frames.find((f) => f.id === 2);
    assert.deepEqual(pong, { id: 2, kind: 'ok', data: { token: what } }, `${what}: the agent did not answer a valid ping (seed ${seed})\n${stderr.slice(-2000)}`);
    assert.deepEqual(conn.bad, [], `seed ${seed}`);
  }

  const agentRssKiB = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, 'utf8'))?.[1]);

  it(`survives random, truncated, oversized and mistyped frames (seed ${seed})`, async () => {
    await stillAnswers('before');
    const rssBefore = agentRssKiB();
    const started = performance.now();
    let frames = 0;
    for (let i = 0; i < kAgentIterations && performance.now() - started < kPartBudgetMs; i++) {
      const conn = await open();
      for (let n = g.int(1, 6); n > 0; n--) {
        frames++;
        switch (g.int(0, 9)) {
          case 0:
            conn.socket.write(rawGarbage(g));
            break;
          case 1: {
            // A large frame of junk: allocated (under the limit), checked, refused.
            const body = g.bytes(g.int(1, 4) * MiB);
            const length = Buffer.alloc(4);
            length.writeUInt32BE(body.byteLength);
            conn.socket.write(Buffer.concat([length, body]));
            break;
          }
          case 2:
            // After garbage a hello resynchronises without a disconnect.
            conn.socket.write(encodeFrame({ id: g.int(1, 1000), kind: 'hello', data: { protocol_version: g.pick([1, 1, 2, g.value()]) } }));
            break;
          default:
            conn.socket.write(encodeFrame(request()));
        }
      }
      await new Promise((r) => setTimeout(r, g.int(0, 10)));
      // Sometimes leave in the middle of a frame.
      if (g.chance(0.2)) conn.socket.write(encodeFrame({ id: 5, kind: 'ping', data: { token: 'cut' } }).subarray(0, g.int(1, 10)));
      await close(conn.socket);
      assert.deepEqual(conn.bad, [], `iteration ${i}: the agent sent a malformed frame (seed ${seed})`);
      assert.equal(agent.exitCode, null, `iteration ${i}: the agent exited (seed ${seed})\n${stderr.slice(-2000)}`);
      if (i % 25 === 0) await stillAnswers(`iteration ${i}`);
    }
    await stillAnswers('after');
    assert.ok(frames > 100, `only ${frames} frames were sent (seed ${seed})`);
    const growth = agentRssKiB() - rssBefore;
    assert.ok(growth < kMaxAgentRssGrowthKiB, `the agent's rss grew by ${growth} KiB (seed ${seed})`);
  });
});
