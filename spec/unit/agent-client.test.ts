// The host agent client against the real agent binary, run on the host in --listen mode, and
// against a fake agent that sends what a broken or hostile guest could.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AgentClient, AgentError, AgentLinkError, AgentProtocolError, kWriteChunkBytes } from '../../src/agent/client.js';
import { decodeBody, encodeFrame, FrameReader } from '../../src/protocol/framing.js';
import { MAX_FRAME_BYTES, type HostFrame } from '../../src/protocol/agent.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
// PROVIUM_AGENT_BIN runs the suite against another build (as agent/test does).
const agentBinary = process.env.PROVIUM_AGENT_BIN ?? path.join(repo, 'agent/build/provium-agent');
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString();
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const noStdin = { env: {}, env_clear: false, stdin: new Uint8Array() };
const MiB = 1024 * 1024;

/** Bytes that differ at every chunk boundary, so a lost, doubled or reordered chunk shows. */
function pattern(bytes: number): Uint8Array {
  const out = Buffer.alloc(bytes);
  for (let at = 0; at < bytes; at += 4096) out.write(`${at.toString(16).padStart(12, '0')}|`.repeat(256).slice(0, Math.min(4096, bytes - at)), at, 'latin1');
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

async function startAgent(dir: string): Promise<{ agent: ChildProcess; socketPath: string }> {
  const socketPath = path.join(dir, 'agent.sock');
  const agent = spawn(agentBinary, ['--listen', socketPath], { stdio: ['ignore', 'ignore', 'inherit'] });
  return { agent, socketPath };
}

/** The agent's descriptor for the host connection: beside stdio, its sockets are the listening one and that one. */
function agentConnFd(pid: number): number {
  const sockets = readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .filter((fd) => {
      if (fd <= 2) return false;
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false;
      }
    })
    .sort((a, b) => a - b);
  assert.equal(sockets.length, 2, `expected the listening socket and the connection, got fds ${sockets.join(', ')}`);
  return sockets[1]!;
}

/** What `write(fd, bytes)` looks like as a syscall request. */
function writeSyscall(fd: number, bytes: Uint8Array) {
  return { nr: 1, args: [fd, 0, bytes.byteLength], bufs: [bytes], ptrs: [[1, 0]] as [number, number][], nested: [] };
}

describe('AgentClient with a real agent', { skip: !existsSync(agentBinary) && 'agent not built (make -C agent)' }, () => {
  let dir: string;
  let socketPath: string;
  let agent: ChildProcess;
  let client: AgentClient;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'provium-agent-test-'));
    socketPath = path.join(dir, 'agent.sock');
    agent = spawn(agentBinary, ['--listen', socketPath], { stdio: ['ignore', 'ignore', 'inherit'] });
    client = await AgentClient.connect(socketPath, { timeoutMs: 5000 });
  });

  after(() => {
    client?.close();
    agent?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs a command and captures its output and exit code', async () => {
    const res = await client.request('exec', { argv: ['/bin/sh', '-c', 'echo out; echo err >&2; exit 3'], env: {}, env_clear: false, stdin: new Uint8Array() });
    assert.equal(res.status, 'exited');
    assert.equal(res.code, 3);
    assert.equal(text(res.stdout), 'out\n');
    assert.equal(text(res.stderr), 'err\n');
  });

  it('keeps requests concurrent: two 1 s sleeps finish in about 1 s', async () => {
    const sleep = { argv: ['sleep', '1'], env: {}, env_clear: false, stdin: new Uint8Array() };
    const started = performance.now();
    await Promise.all([client.request('exec', sleep), client.request('exec', sleep)]);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 1900, `two parallel 1 s sleeps took ${Math.round(elapsed)} ms`);
  });

  it('turns an OS failure into an AgentError with errno and strerror text', async () => {
    await assert.rejects(client.request('read_file', { path: '/nonexistent/x' }), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.errno, 2);
      assert.match(err.message, /No such file or directory/);
      return true;
    });
  });

  it('streams process output in order, paced by credit', async () => {
    const { handle } = await client.request('spawn', {
      argv: ['/bin/sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done'],
      env: {},
      env_clear: false,
      stdin: new Uint8Array(),
    });
    const stream = await client.openStream('proc_stream', { handle, which: 'stdout' });
    const chunks: Buffer[] = [];
    for (;;) {
      const chunk = await stream.read(5000);
      if (!chunk) break;
      chunks.push(Buffer.from(chunk));
    }
    const lines = Buffer.concat(chunks).toString().trimEnd().split('\n');
    assert.equal(lines.length, 2000);
    assert.equal(lines[0], 'line-0');
    assert.equal(lines[1999], 'line-1999');
    await client.request('wait', { handle });
  });

  it('times out a request the agent does not answer in time', async () => {
    await assert.rejects(
      client.request('exec', { argv: ['sleep', '2'], env: {}, env_clear: false, stdin: new Uint8Array() }, { timeoutMs: 100 }),
      (err: unknown) => err instanceof AgentLinkError && err.reason === 'timeout',
    );
  });

  it('resyncs with a fresh token', async () => {
    await client.resync(2000);
  });

  it('writes a 100 MiB file in chunks: the first with the perm, the rest appended', async () => {
    const data = pattern(100 * MiB + 12345);
    const file = path.join(dir, 'big');
    await client.request('write_file', { path: file, data, perm: 0o600 }, { timeoutMs: 30_000 });
    assert.equal(statSync(file).size, data.byteLength);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(sha256(readFileSync(file)), sha256(data));
    // Over an existing file it replaces the contents, and `append` appends every chunk.
    await client.request('write_file', { path: file, data: data.subarray(0, kWriteChunkBytes + 1) }, { timeoutMs: 30_000 });
    await client.request('write_file', { path: file, data: data.subarray(0, kWriteChunkBytes + 1), append: true }, { timeoutMs: 30_000 });
    assert.equal(statSync(file).size, 2 * (kWriteChunkBytes + 1));
  });

  it('writes 100 MiB through a file handle and through stdin', async () => {
    const data = pattern(100 * MiB + 7);
    const file = path.join(dir, 'big-handle');
    const { handle } = await client.request('open_file', { path: file, flags: 2 | 4 | 8 });
    assert.equal((await client.request('write', { handle, data }, { timeoutMs: 30_000 })).written, data.byteLength);
    await client.request('close', { handle });
    assert.equal(sha256(readFileSync(file)), sha256(data));
    const proc = await client.request('spawn', { argv: ['sha256sum'], ...noStdin });
    assert.equal((await client.request('stdin_write', { handle: proc.handle, data }, { timeoutMs: 30_000 })).written, data.byteLength);
    await client.request('stdin_close', { handle: proc.handle });
    const done = await client.request('wait', { handle: proc.handle });
    assert.equal(text(done.stdout).split(' ')[0], sha256(data));
  });

  it('refuses a request too large for a frame at once, and the link goes on', async () => {
    const started = performance.now();
    await assert.rejects(
      client.request('exec', { argv: ['true'], env: {}, env_clear: false, stdin: new Uint8Array(MAX_FRAME_BYTES + 1) }),
      (err: unknown) => err instanceof AgentError && err.errno === 90 && /exceeds the agent's frame limit/.test(err.message),
    );
    assert.ok(performance.now() - started < 5000);
    assert.deepEqual(await client.request('ping', { token: 'still' }, { timeoutMs: 5000 }), { token: 'still' });
  });

  it('fails a request at once when the worker serving it dies', async () => {
    const { worker } = await client.request('spawn_worker', {});
    const started = performance.now();
    await assert.rejects(
      client.request('exec', { argv: ['/bin/sh', '-c', 'kill -9 $PPID; sleep 30'], ...noStdin }, { worker }),
      (err: unknown) => {
        assert.ok(err instanceof AgentError, String(err));
        assert.equal(err.errno, 3);
        assert.match(err.message, new RegExp(`worker ${worker} was killed by signal 9 while \`exec\` was in flight`));
        return true;
      },
    );
    assert.ok(performance.now() - started < 5000, `took ${Math.round(performance.now() - started)} ms`);
    assert.equal((await client.request('worker_join', { worker })).signal, 9);
    await client.request('kill_all', { signal: 9 });
  });
});

describe('AgentClient with a real agent whose guest writes into its own channel', { timeout: 60_000, skip: !existsSync(agentBinary) && 'agent not built (make -C agent)' }, () => {
  let dir: string;
  let agent: ChildProcess;
  let client: AgentClient;
  const resyncs: string[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'provium-agent-test-'));
    const started = await startAgent(dir);
    agent = started.agent;
    client = await AgentClient.connect(started.socketPath, { timeoutMs: 5000, frameStallMs: 300, resyncTimeoutMs: 3000 });
    client.on('resync', (cause: string) => resyncs.push(cause));
  });

  after(() => {
    client?.close();
    agent?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    resyncs.length = 0;
  });

  it('a length prefix and then silence: the stalled frame is dropped, the link resynchronised', async () => {
    const fd = agentConnFd(agent.pid!);
    const started = performance.now();
    // The agent's own reply to this write lands inside the 922-byte frame the garbage announced.
    await assert.rejects(client.request('syscall', writeSyscall(fd, Buffer.from('\0\0\x03\x9aabc', 'latin1')), { timeoutMs: 10_000 }), (err: unknown) => {
      assert.ok(err instanceof AgentProtocolError, String(err));
      assert.match(err.message, /stayed incomplete for over 300 ms/);
      assert.match(err.message, /`syscall` was in flight/);
      return true;
    });
    assert.ok(performance.now() - started < 5000, `took ${Math.round(performance.now() - started)} ms`);
    assert.equal(resyncs.length, 1);
    assert.deepEqual(await client.request('ping', { token: 'after' }, { timeoutMs: 2000 }), { token: 'after' });
    assert.equal(client.state, 'ready');
  });

  it('an undecodable or oversized frame resynchronises rather than closing the link', async () => {
    const fd = agentConnFd(agent.pid!);
    for (const garbage of ['\0\0\0\x05\xc1\xc1', '\xff\xff\xff\xff', '\0\0\0\x01\x2a']) {
      const call = client.request('syscall', writeSyscall(fd, Buffer.from(garbage, 'latin1')), { timeoutMs: 10_000 });
      // Its reply may be lost with the garbage or come after: either way it settles.
      await call.catch((err: unknown) => assert.ok(err instanceof AgentProtocolError, String(err)));
      assert.deepEqual(await client.request('ping', { token: garbage }, { timeoutMs: 5000 }), { token: garbage });
    }
    assert.equal(client.state, 'ready');
    assert.ok(resyncs.length >= 2, resyncs.join('\n'));
  });
});

/** One connection to the fake agent: frames in, frames or raw bytes out. */
class FakePeer {
  readonly received: HostFrame[] = [];
  private readonly _reader = new FrameReader(MAX_FRAME_BYTES);

  constructor(
    readonly socket: net.Socket,
    private readonly _agent: FakeAgent,
  ) {
    socket.on('data', (chunk: Buffer) => {
      for (const body of this._reader.push(chunk)) {
        const frame = decodeFrame(body);
        this.received.push(frame);
        if (!this._agent.handle(frame, this)) this.answer(frame);
      }
    });
    socket.on('error', () => undefined);
  }

  send(frame: Record<string, unknown>): void {
    this.socket.write(encodeFrame(frame));
  }

  sendRaw(bytes: Buffer | string): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  ok(frame: HostFrame, data: Record<string, unknown>): void {
    this.send({ id: frame.id, kind: 'ok', data });
  }

  /** What an honest agent says to hello and ping; other ops get `{}`. */
  answer(frame: HostFrame): void {
    if (frame.kind === 'stream_ack') return;
    if (frame.kind === 'hello') this.ok(frame, { protocol_version: 1, agent_version: 'fake', os: 'linux', kernel: 'fake', pid: 1, mode: 'listen' });
    else if (frame.kind === 'ping') this.ok(frame, { token: frame.data.token });
    else this.ok(frame, {});
  }
}

function decodeFrame(body: Buffer): HostFrame {
  return decodeBody(body) as HostFrame;
}

/** A fake agent on a unix socket: honest by default; `handle` lets a test say something else. */
class FakeAgent {
  readonly peers: FakePeer[] = [];
  /** Return true when the frame was handled (the default answer is skipped). */
  handle: (frame: HostFrame, peer: FakePeer) => boolean = () => false;
  private readonly _server = net.createServer((socket) => this.peers.push(new FakePeer(socket, this)));

  constructor(readonly socketPath: string) {}

  listen(): Promise<void> {
    return new Promise((resolve) => this._server.listen(this.socketPath, resolve));
  }

  close(): void {
    for (const peer of this.peers) peer.socket.destroy();
    this._server.close();
  }
}

describe('AgentClient against a fake agent', { timeout: 30_000 }, () => {
  let dir: string;
  let fake: FakeAgent;
  let client: AgentClient;
  let events: { kind: string; arg: unknown }[];

  beforeEach(async () => {
    dir ??= mkdtempSync(path.join(os.tmpdir(), 'provium-fake-agent-'));
    fake?.close();
    client?.close();
    fake = new FakeAgent(path.join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`));
    await fake.listen();
    client = await AgentClient.connect(fake.socketPath, { timeoutMs: 5000, frameStallMs: 200, resyncTimeoutMs: 1500 });
    events = [];
    for (const kind of ['closed', 'resync', 'protocol_error', 'agent_error', 'worker_exit']) {
      client.on(kind, (arg: unknown) => events.push({ kind, arg }));
    }
  });

  after(() => {
    client?.close();
    fake?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const peer = (): FakePeer => fake.peers.at(-1)!;
  /** Answers the next request of `op` with `reply` (a frame body, or raw bytes). */
  const onNext = (op: string, reply: (frame: HostFrame, peer: FakePeer) => void): void => {
    let done = false;
    fake.handle = (frame, p) => {
      if (done || frame.kind !== op) return false;
      done = true;
      reply(frame, p);
      return true;
    };
  };
  const stillUp = async (): Promise<void> => {
    assert.deepEqual(await client.request('ping', { token: 'up' }, { timeoutMs: 2000 }), { token: 'up' });
    assert.notEqual(client.state, 'closed');
  };

  it('a stream_data without bytes fails that stream, not the run', async () => {
    const stream = await client.openStream('tail_file', { path: '/x', start: 'beginning' });
    peer().send({ id: stream.id, kind: 'stream_data', data: {} });
    assert.equal(await stream.read(1000), null);
    assert.ok(stream.ended);
    assert.match(stream.failure ?? '', /field `data.bytes`/);
    assert.match(String(events.find((e) => e.kind === 'protocol_error')?.arg), /`stream_data` frame: missing field `data.bytes`/);
    await stillUp();
    assert.ok(peer().received.some((f) => f.kind === 'stream_close' && f.data.stream === stream.id), 'the agent was asked to stop the stream');
  });

  it('an ok reply without a promised field, or with the wrong type, fails that request naming op, field and value', async () => {
    onNext('stat', (f, p) => p.ok(f, { size: '12', mtime_ns: 0, perm: 0o644, entry_type: 'file', uid: 0, gid: 0, nlink: 1 }));
    await assert.rejects(client.request('stat', { path: '/x' }), (err: unknown) => {
      assert.ok(err instanceof AgentProtocolError);
      assert.equal(err.errno, 71);
      assert.match(err.message, /`stat`: agent sent a malformed frame: reply to `stat`: field `size` must be a 64-bit integer, got string "12"/);
      return true;
    });
    onNext('exec', (f, p) => p.ok(f, { status: 'exited', code: 0, signal: 0, stdout: new Uint8Array(), stderr: new Uint8Array(), stdout_truncated: false }));
    await assert.rejects(client.request('exec', { argv: ['x'], ...noStdin }), /missing field `stderr_truncated`/);
    onNext('exec', (f, p) => p.ok(f, { status: 'zombie', code: 0, signal: 0, stdout: new Uint8Array(), stderr: new Uint8Array(), stdout_truncated: false, stderr_truncated: false }));
    await assert.rejects(client.request('exec', { argv: ['x'], ...noStdin }), /field `status` must be one of exited, signalled, timed_out, running, got string "zombie"/);
    onNext('listdir', (f, p) => p.ok(f, { entries: [{ name: 'a', entry_type: 'file' }, { name: 7, entry_type: 'file' }] }));
    await assert.rejects(client.request('listdir', { path: '/' }), /field `entries\[1\].name` must be a string, got integer 7/);
    onNext('batch', (f, p) => p.ok(f, { results: [{ ok: {} }, { err: { errno: 'x', message: 'm' } }] }));
    await assert.rejects(client.request('batch', { ops: [] }), /field `results\[1\].err.errno` must be an integer/);
    onNext('read_file', (f, p) => p.send({ id: f.id, kind: 'err', data: { errno: 2 } }));
    await assert.rejects(client.request('read_file', { path: '/x' }), /`err` frame: missing field `data.message`/);
    onNext('read_file', (f, p) => p.send({ id: f.id, kind: 'ok', data: [1, 2] }));
    await assert.rejects(client.request('read_file', { path: '/x' }), /field `data` of a `ok` frame must be a map, got an array of 2/);
    await stillUp();
    assert.equal(events.filter((e) => e.kind === 'closed').length, 0);
  });

  it('a malformed reply to a request nobody waits for any more is ignored', async () => {
    onNext('read_file', () => undefined);
    const abandoned = client.request('read_file', { path: '/slow' }, { timeoutMs: 50 });
    await assert.rejects(abandoned, AgentLinkError);
    const late = peer().received.find((f) => f.kind === 'read_file')!;
    peer().send({ id: late.id, kind: 'ok', data: { data: 'not bytes' } });
    await stillUp();
  });

  it('a frame that names no request of ours fails the link with the reason', async () => {
    const closed = new Promise<string>((resolve) => client.once('closed', resolve));
    const inFlight = client.request('sleep', { ns: 1 });
    onNext('ping', () => undefined);
    peer().send({ id: 'seven', kind: 'ok', data: {} });
    assert.match(await closed, /agent sent a malformed frame: field `id` must be an integer in \[0, 4294967295\], got string "seven"/);
    await assert.rejects(inFlight, (err: unknown) => err instanceof AgentLinkError && /got string "seven"/.test(err.message));
  });

  it('unknown kinds and malformed events fail the link', async () => {
    for (const frame of [
      { id: 0, kind: 'worker_exit', data: { worker: 1, status: 'exited', code: '0', signal: 0 } },
      { id: 12, kind: 'surprise', data: {} },
      { id: 0, kind: 'ok', data: {} },
      { id: 0, kind: 'agent_error', data: { message: 42 } },
    ]) {
      const closed = new Promise<string>((resolve) => client.once('closed', resolve));
      peer().send(frame);
      assert.match(await closed, /agent sent a malformed frame/);
      assert.equal(client.state, 'closed');
      fake.close();
      fake = new FakeAgent(path.join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`));
      await fake.listen();
      client = await AgentClient.connect(fake.socketPath, { timeoutMs: 5000 });
    }
  });

  it('agent_error: what was in flight fails with the agent\'s message, and a fresh hello resynchronises', async () => {
    onNext('exec', (_f, p) => {
      p.send({ id: 0, kind: 'agent_error', data: { message: 'frame is not valid msgpack' } });
    });
    const helloCount = (): number => peer().received.filter((f) => f.kind === 'hello').length;
    const before = helloCount();
    await assert.rejects(client.request('exec', { argv: ['x'], ...noStdin }), (err: unknown) => {
      assert.ok(err instanceof AgentProtocolError, String(err));
      assert.match(err.message, /the agent reported a protocol error: frame is not valid msgpack; `exec` was in flight/);
      return true;
    });
    await stillUp();
    assert.equal(helloCount(), before + 1);
    assert.deepEqual(events.map((e) => e.kind), ['agent_error', 'resync']);
  });

  it('agent_error and then no answer to the hello: the link closes with the reason, within the bound', async () => {
    fake.handle = (frame, p) => {
      if (frame.kind === 'exec') p.send({ id: 0, kind: 'agent_error', data: { message: 'frame incomplete for 5000 ms; dropping it' } });
      return frame.kind === 'exec' || frame.kind === 'hello';
    };
    const started = performance.now();
    const closed = new Promise<string>((resolve) => client.once('closed', resolve));
    await assert.rejects(client.request('exec', { argv: ['x'], ...noStdin }), /frame incomplete for 5000 ms/);
    // Requests made meanwhile wait for the resync, then fail with it.
    const waiting = client.request('ping', { token: 'held' });
    assert.match(await closed, /the agent reported a protocol error: frame incomplete for 5000 ms; dropping it; resynchronising the link failed: agent did not answer hello in time/);
    await assert.rejects(waiting, AgentLinkError);
    assert.ok(performance.now() - started < 3000);
    assert.ok(!peer().received.some((f) => f.kind === 'ping' && f.data.token === 'held'), 'a held request went out before the resync');
  });

  it('requests made during a resync wait for it, and survive a second protocol error meanwhile', async () => {
    let hellos = 0;
    fake.handle = (f, p) => {
      if (f.kind === 'exec') p.send({ id: 0, kind: 'agent_error', data: { message: 'first' } });
      if (f.kind === 'hello' && ++hellos === 1) {
        // Slow to answer, and another error before the answer: the handshake starts over.
        setTimeout(() => p.send({ id: 0, kind: 'agent_error', data: { message: 'second' } }), 100);
        setTimeout(() => p.answer(f), 200);
        return true;
      }
      return f.kind === 'exec';
    };
    await assert.rejects(client.request('exec', { argv: ['x'], ...noStdin }), /protocol error: first/);
    const held = client.request('ping', { token: 'held' }, { timeoutMs: 3000 });
    assert.deepEqual(await held, { token: 'held' });
    assert.ok(hellos >= 2, `hellos: ${hellos}`);
    const sent = peer().received.map((f) => f.kind);
    assert.ok(sent.lastIndexOf('hello') < sent.indexOf('ping'), `the held ping went out before the last hello: ${sent.join(' ')}`);
    assert.deepEqual(events.filter((e) => e.kind === 'resync').map((e) => e.arg), ['the agent reported a protocol error: first', 'the agent reported a protocol error: second']);
  });

  it('a partial frame, then the agent\'s replies: dropped after the stall, the link resynchronised', async () => {
    onNext('sleep', (_f, p) => p.sendRaw('\0\0\x03\x9aabc'));
    await assert.rejects(client.request('sleep', { ns: 1 }), /stayed incomplete for over 200 ms while later replies arrived inside it/);
    await stillUp();
    assert.equal(events.filter((e) => e.kind === 'resync').length, 1);
  });

  it('a partial frame and then silence (a paused guest) loses nothing: the frame completes later', async () => {
    // A paused guest sends nothing at all, the stall probe's answer included, until it resumes.
    fake.handle = (f, p) => {
      if (f.kind === 'read_file') {
        const frame = encodeFrame({ id: f.id, kind: 'ok', data: { data: new Uint8Array(1000) } });
        p.sendRaw(frame.subarray(0, 100));
        setTimeout(() => p.sendRaw(frame.subarray(100)), 800); // four stall periods of silence
        return true;
      }
      if (f.kind === 'ping') {
        setTimeout(() => p.answer(f), 850);
        return true;
      }
      return false;
    };
    assert.equal((await client.request('read_file', { path: '/x' }, { timeoutMs: 5000 })).data.byteLength, 1000);
    assert.ok(peer().received.some((f) => f.kind === 'ping'), 'the stall was probed');
    fake.handle = () => false;
    await stillUp();
    assert.equal(events.filter((e) => e.kind === 'resync').length, 0);
  });

  it('frames that lose their boundaries (not a map, undecodable, oversized) resynchronise', async () => {
    for (const raw of [encodeFrame(42), Buffer.from('\0\0\0\x02\xc1\xc1', 'latin1'), Buffer.from('\x7f\xff\xff\xff', 'latin1')]) {
      onNext('sleep', (_f, p) => p.sendRaw(raw));
      await assert.rejects(client.request('sleep', { ns: 1 }), AgentProtocolError);
      await stillUp();
    }
    assert.equal(events.filter((e) => e.kind === 'resync').length, 3);
    assert.equal(events.filter((e) => e.kind === 'closed').length, 0);
  });

  it('worker_exit fails that worker\'s requests and streams, not the others', async () => {
    // Worker 4 acknowledges its stream and then never answers; `sleep` is never answered either.
    fake.handle = (frame, p) => {
      if (frame.kind === 'tail_file') p.ok(frame, {});
      return frame.worker === 4 || frame.kind === 'sleep';
    };
    const inWorker = client.request('exec', { argv: ['x'], ...noStdin }, { worker: 4 });
    const stream = await client.openStream('tail_file', { path: '/x', start: 'end' }, { worker: 4 });
    const onMain = client.request('sleep', { ns: 1 }, { timeoutMs: 1000 });
    peer().send({ id: 0, kind: 'worker_exit', data: { worker: 4, status: 'signalled', code: 0, signal: 9 } });
    await assert.rejects(inWorker, (err: unknown) => err instanceof AgentError && err.errno === 3 && /worker 4 was killed by signal 9 while `exec` was in flight/.test(err.message));
    assert.equal(await stream.read(100), null);
    assert.match(stream.failure ?? '', /worker 4 was killed by signal 9/);
    await assert.rejects(onMain, /did not answer `sleep`/);
    assert.deepEqual(events.find((e) => e.kind === 'worker_exit')?.arg, { worker: 4, status: 'signalled', code: 0, signal: 9 });
  });
});
