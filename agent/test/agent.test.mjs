// Host-side tests of provium-agent in --listen mode: every op of agent/PROTOCOL.md over a real
// unix socket. Build first (`make -C agent`), then run `node --test agent/test/`.
// Runs as root on the host: set_time/advance_time touch the host clock and are restored.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode, encode } from '@msgpack/msgpack';

// PROVIUM_AGENT_BIN runs the suite against another build (e.g. one with sanitizers).
const AGENT = process.env.PROVIUM_AGENT_BIN ?? fileURLToPath(new URL('../build/provium-agent', import.meta.url));
const ENOENT = 2, ESRCH = 3, EBADF = 9, EEXIST = 17, EINVAL = 22, EPIPE = 32, EFAULT = 14, ENOTEMPTY = 39;
const EPROTO = 71, ENOTTY = 25, EBUSY = 16;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (b) => Buffer.from(b).toString('utf8');

class AgentError extends Error {
  constructor(kind, data) {
    super(`${kind}: errno ${data.errno}: ${data.message}`);
    this.errno = data.errno;
    this.agentMessage = data.message;
  }
}

// Collects one stream's frames. Credit is tracked so the test can check the agent never
// exceeds it.
class Stream {
  constructor(client, id, worker, window) {
    this.client = client;
    this.id = id;
    this.worker = worker;
    this.credit = window;
    this.chunks = [];
    this.total = 0;
    this.ended = null;
    this.maxFrame = 0;
    this.onData = null;
    this._waiters = [];
  }
  _push(m) {
    if (m.kind === 'stream_data') {
      const b = Buffer.from(m.data.bytes);
      this.maxFrame = Math.max(this.maxFrame, b.length);
      this.credit -= b.length;
      if (this.credit < 0) this.creditViolated = true;
      if (this.ended) this.dataAfterEnd = true;
      if (this.onData) this.onData(b);
      else this.chunks.push(b);
      this.total += b.length;
    } else {
      this.ended = m.data;
    }
    for (const w of this._waiters.splice(0)) w();
  }
  bytes() { return Buffer.concat(this.chunks); }
  ack(n) {
    this.credit += n;
    this.client.send({ id: this.client.nextId++, kind: 'stream_ack', data: { stream: this.id, bytes: n }, ...this._w() });
  }
  close() { return this.client.call('stream_close', { stream: this.id }, { worker: this.worker }); }
  _w() { return this.worker === undefined ? {} : { worker: this.worker }; }
  async until(pred, timeoutMs = 5000, what = 'stream condition') {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what} (stream ${this.id}, ${this.total} bytes)`);
      await new Promise((r) => { this._waiters.push(r); setTimeout(r, Math.min(left, 100)); });
    }
  }
}

class Client {
  constructor(sock) {
    this.sock = sock;
    this.nextId = 1;
    this.pending = new Map();
    this.streams = new Map();
    this.events = [];
    this.stray = []; // frames nobody waited for
    this.buf = Buffer.alloc(0);
    this.closed = false;
    sock.on('data', (d) => this._onData(d));
    sock.on('close', () => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new Error('connection closed'));
      this.pending.clear();
    });
    sock.on('error', () => {});
  }
  static connect(p) {
    return new Promise((resolve, reject) => {
      const s = net.connect(p);
      s.once('connect', () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }
  _onData(d) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 4) {
      const n = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + n) break;
      const m = decode(this.buf.subarray(4, 4 + n), { useBigInt64: true });
      this.buf = this.buf.subarray(4 + n);
      this._frame(m);
    }
  }
  _frame(m) {
    if (m.id === 0) {
      this.events.push(m);
      return;
    }
    if (m.kind === 'stream_data' || m.kind === 'stream_end') {
      const s = this.streams.get(m.id);
      if (s) s._push(m);
      else this.stray.push(m);
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) {
      this.stray.push(m);
      return;
    }
    this.pending.delete(m.id);
    p.resolve(m);
  }
  sendRaw(buf) {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(buf.length);
    this.sock.write(Buffer.concat([h, buf]));
  }
  send(obj) { this.sendRaw(Buffer.from(encode(obj, { useBigInt64: true }))); }
  request(kind, data = {}, opts = {}) {
    const id = this.nextId++;
    const msg = { id, kind, data };
    if (opts.worker !== undefined) msg.worker = opts.worker;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.send(msg);
    return p;
  }
  async call(kind, data = {}, opts = {}) {
    const m = await this.request(kind, data, opts);
    if (m.kind === 'ok') return m.data;
    throw new AgentError(kind, m.data);
  }
  async openStream(kind, data, opts = {}) {
    const id = this.nextId++;
    const s = new Stream(this, id, opts.worker, Number(data.window ?? 0));
    // Set before sending: the first stream_data may arrive in the same read as the reply.
    if (opts.onData) s.onData = opts.onData.bind(null, s);
    this.streams.set(id, s);
    const msg = { id, kind, data };
    if (opts.worker !== undefined) msg.worker = opts.worker;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.send(msg);
    const m = await p;
    if (m.kind !== 'ok') throw new AgentError(kind, m.data);
    return s;
  }
  async event(pred, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex(pred);
      if (i >= 0) return this.events.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error('timed out waiting for an event');
      await sleep(10);
    }
  }
  close() {
    this.sock.end();
    return new Promise((r) => (this.closed ? r() : this.sock.once('close', r)));
  }
}

async function rejectsWith(promise, errno, messageRe) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof AgentError, `expected an agent error, got ${e}`);
    assert.equal(e.errno, errno, `errno: ${e.message}`);
    if (messageRe) assert.match(e.agentMessage, messageRe);
    return true;
  });
}

const exec = (c, argv, extra = {}, opts = {}) =>
  c.call('exec', { argv, env: {}, env_clear: false, stdin: new Uint8Array(), ...extra }, opts);
const sh = (c, cmd, extra = {}, opts = {}) => exec(c, ['/bin/sh', '-c', cmd], extra, opts);

describe('provium-agent --listen', () => {
  let agent, agentStderr = '', sock, tmp, c;
  const clock = { wall: 0, mono: 0n };

  before(async () => {
    assert.ok(fs.existsSync(AGENT), `${AGENT} is missing: run make -C agent first`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'provium-agent-test-'));
    sock = path.join(tmp, 'agent.sock');
    agent = spawn(AGENT, ['--listen', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise((resolve, reject) => {
      agent.stderr.on('data', (d) => {
        agentStderr += d;
        if (agentStderr.includes('provium-agent: ready')) resolve();
      });
      agent.once('exit', (code) => reject(new Error(`agent exited (${code}): ${agentStderr}`)));
      setTimeout(() => reject(new Error('agent not ready')), 5000);
    });
    c = await Client.connect(sock);
    clock.wall = Date.now();
    clock.mono = process.hrtime.bigint();
  });

  after(async () => {
    try {
      if (c && !c.closed) {
        await c.call('kill_all', { signal: 9 });
        await c.close();
      }
    } finally {
      agent?.kill('SIGKILL');
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('ready line names the mode and the socket', () => {
    assert.match(agentStderr, new RegExp(`provium-agent: ready \\(mode=listen, port=${sock}\\)`));
  });

  test('hello, version mismatch, ping', async () => {
    const h = await c.call('hello', { protocol_version: 1 });
    assert.equal(h.protocol_version, 1);
    assert.equal(h.os, 'linux');
    assert.equal(h.kernel, os.release());
    assert.equal(h.pid, agent.pid);
    assert.equal(h.mode, 'listen');
    assert.equal(typeof h.agent_version, 'string');
    await rejectsWith(c.call('hello', { protocol_version: 2 }), EPROTO, /host speaks 2, agent speaks 1/);
    assert.deepEqual(await c.call('ping', { token: 'resync-42' }), { token: 'resync-42' });
  });

  test('protocol errors: unknown op, missing and mistyped fields', async () => {
    await rejectsWith(c.call('frobnicate', {}), EINVAL, /^unknown op `frobnicate`$/);
    await rejectsWith(c.call('read_file', {}), EINVAL, /^missing field `path`$/);
    await rejectsWith(c.call('read_file', { path: 7 }), EINVAL, /field `path` must be a string/);
    await rejectsWith(c.call('exit', {}), EINVAL, /only valid in a worker/);
    // any int format and an integral float are accepted where an int is expected
    const f = path.join(tmp, 'ints');
    fs.writeFileSync(f, '0123456789');
    const fd = (await c.call('open_file', { path: f, flags: 1.0 })).handle;
    assert.equal(text((await c.call('read', { handle: BigInt(fd), len: 3n })).data), '012');
    await rejectsWith(c.call('read', { handle: fd, len: 1.5 }), EINVAL, /unsigned integer/);
    await c.call('close', { handle: fd });
  });

  describe('exec', () => {
    test('exit code, stdout, stderr', async () => {
      const r = await sh(c, 'echo out; echo err >&2; exit 3');
      assert.equal(r.status, 'exited');
      assert.equal(r.code, 3);
      assert.equal(r.signal, 0);
      assert.equal(text(r.stdout), 'out\n');
      assert.equal(text(r.stderr), 'err\n');
      assert.equal(r.stdout_truncated, false);
      assert.equal(r.stderr_truncated, false);
    });

    test('signalled', async () => {
      const r = await sh(c, 'kill -9 $$');
      assert.equal(r.status, 'signalled');
      assert.equal(r.signal, 9);
      assert.equal(r.code, 0);
    });

    test('a missing program is ENOENT, not exit 127', async () => {
      await rejectsWith(exec(c, ['/nonexistent/prog']), ENOENT, /^No such file or directory$/);
      await rejectsWith(exec(c, ['no-such-program-anywhere']), ENOENT);
      await rejectsWith(exec(c, ['true'], { cwd: '/nonexistent-dir' }), ENOENT);
      await rejectsWith(exec(c, []), EINVAL, /argv/);
    });

    test('PATH lookup, env, env_clear, cwd, stdin', async () => {
      assert.equal(text((await exec(c, ['echo', 'hi'])).stdout), 'hi\n');
      assert.equal(text((await sh(c, 'echo $FOO', { env: { FOO: 'bar' } })).stdout), 'bar\n');
      const r = await exec(c, ['/usr/bin/env'], { env_clear: true, env: { A: '1', B: 'two' } });
      assert.deepEqual(text(r.stdout).trim().split('\n').sort(), ['A=1', 'B=two']);
      assert.equal(text((await exec(c, ['pwd'], { cwd: tmp })).stdout), `${tmp}\n`);
      const input = randomBytes(1 << 20);
      const cat = await exec(c, ['cat'], { stdin: input });
      assert.ok(Buffer.from(cat.stdout).equals(input));
    });

    test('two sleeps in flight finish together', async () => {
      const t0 = Date.now();
      const [a, b] = await Promise.all([exec(c, ['sleep', '1']), exec(c, ['sleep', '1'])]);
      const dt = Date.now() - t0;
      assert.equal(a.code, 0);
      assert.equal(b.code, 0);
      assert.ok(dt >= 950 && dt < 1700, `took ${dt} ms`);
    });

    test('replies come out of order', async () => {
      const order = [];
      await Promise.all([
        exec(c, ['sleep', '0.4']).then(() => order.push('slow')),
        c.call('ping', { token: 'fast' }).then(() => order.push('fast')),
      ]);
      assert.deepEqual(order, ['fast', 'slow']);
    });

    test('timeout_ms kills the process group', async () => {
      const t0 = Date.now();
      const r = await sh(c, 'sleep 30 & sleep 30', { timeout_ms: 300 });
      const dt = Date.now() - t0;
      assert.equal(r.status, 'timed_out');
      assert.equal(r.signal, 9);
      assert.ok(dt >= 280 && dt < 1500, `took ${dt} ms`);
    });

    test('a backgrounded grandchild does not hold the reply', async () => {
      const t0 = Date.now();
      const r = await sh(c, 'sleep 100 & echo $!');
      const dt = Date.now() - t0;
      assert.ok(dt < 1000, `took ${dt} ms`);
      assert.equal(r.status, 'exited');
      const pid = Number(text(r.stdout).trim());
      assert.ok(pid > 0);
      process.kill(pid, 'SIGKILL');
    });

    test('output beyond 16 MiB is drained and flagged', async () => {
      const r = await exec(c, ['head', '-c', String(17 << 20), '/dev/zero']);
      assert.equal(r.code, 0); // not blocked on a full pipe
      assert.equal(r.stdout.length, 16 << 20);
      assert.equal(r.stdout_truncated, true);
      assert.equal(r.stderr_truncated, false);
    });
  });

  describe('spawned processes', () => {
    test('stdin_write, stdin_close, wait', async () => {
      const p = await c.call('spawn', { argv: ['cat'], env: {}, env_clear: false, stdin: Buffer.from('first ') });
      assert.ok(p.handle > 0 && p.pid > 0);
      assert.deepEqual(await c.call('stdin_write', { handle: p.handle, data: Buffer.from('second') }), { written: 6 });
      assert.deepEqual(await c.call('stdin_write', { handle: p.handle, data: new Uint8Array() }), { written: 0 });
      assert.deepEqual(await c.call('stdin_close', { handle: p.handle }), {});
      await rejectsWith(c.call('stdin_write', { handle: p.handle, data: Buffer.from('x') }), EPIPE);
      const r = await c.call('wait', { handle: p.handle });
      assert.equal(r.status, 'exited');
      assert.equal(text(r.stdout), 'first second');
      // the handle is gone once wait returned
      await rejectsWith(c.call('proc_status', { handle: p.handle }), ESRCH, /^No such process$/);
      await rejectsWith(c.call('wait', { handle: p.handle }), ESRCH);
    });

    test('a large stdin_write replies once all bytes are in the pipe', async () => {
      const p = await c.call('spawn', { argv: ['sh', '-c', 'sleep 0.3; wc -c'], env: {}, stdin: new Uint8Array() });
      const data = randomBytes(3 << 20);
      const t0 = Date.now();
      assert.deepEqual(await c.call('stdin_write', { handle: p.handle, data }), { written: data.length });
      assert.ok(Date.now() - t0 >= 250, 'replied before the reader drained the pipe');
      await c.call('stdin_close', { handle: p.handle });
      const r = await c.call('wait', { handle: p.handle });
      assert.equal(text(r.stdout).trim(), String(data.length));
    });

    test('proc_status, get_pid, kill', async () => {
      const p = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() });
      assert.deepEqual(await c.call('proc_status', { handle: p.handle }), { status: 'running', code: 0, signal: 0 });
      assert.deepEqual(await c.call('get_pid', { handle: p.handle }), { pid: p.pid });
      assert.match(fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8'), /^sleep\x0030\x00$/);
      // own process group
      const stat = fs.readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      assert.equal(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]), p.pid);
      assert.deepEqual(await c.call('kill', { handle: p.handle, signal: 15 }), {});
      const r = await c.call('wait', { handle: p.handle });
      assert.equal(r.status, 'signalled');
      assert.equal(r.signal, 15);
      await rejectsWith(c.call('kill', { handle: 99999, signal: 15 }), ESRCH);
    });

    test('proc_status after exit, then release', async () => {
      const p = await c.call('spawn', { argv: ['sh', '-c', 'exit 7'], env: {}, stdin: new Uint8Array() });
      await sleep(200);
      assert.deepEqual(await c.call('proc_status', { handle: p.handle }), { status: 'exited', code: 7, signal: 0 });
      await rejectsWith(c.call('kill', { handle: p.handle, signal: 15 }), ESRCH);
      assert.deepEqual(await c.call('release', { handle: p.handle }), {});
      await rejectsWith(c.call('proc_status', { handle: p.handle }), ESRCH);
    });

    test('release of a running process forgets it without killing it', async () => {
      const p = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() });
      await c.call('release', { handle: p.handle });
      await rejectsWith(c.call('get_pid', { handle: p.handle }), ESRCH);
      assert.ok(fs.existsSync(`/proc/${p.pid}`));
      process.kill(p.pid, 'SIGKILL');
    });

    test('wait timeout_ms kills and reports timed_out', async () => {
      const p = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() });
      const t0 = Date.now();
      const r = await c.call('wait', { handle: p.handle, timeout_ms: 200 });
      assert.equal(r.status, 'timed_out');
      assert.ok(Date.now() - t0 < 1500);
    });

    test('kill_all signals every spawned process', async () => {
      const a = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() });
      const b = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() });
      const { killed } = await c.call('kill_all', { signal: 9 });
      assert.ok(killed >= 2, `killed ${killed}`);
      for (const p of [a, b]) assert.equal((await c.call('wait', { handle: p.handle })).signal, 9);
    });
  });

  describe('streams', () => {
    test('proc_stream: 50 MiB flood arrives complete and in order, within credit', async () => {
      const N = 6_800_000; // `seq 1 N` is ~53 MB
      const expected = createHash('sha256');
      let expectedLen = 0;
      let lines = [];
      for (let i = 1; i <= N; i++) {
        lines.push(i);
        if (lines.length === 100000 || i === N) {
          const s = lines.join('\n') + '\n';
          expected.update(s);
          expectedLen += s.length;
          lines = [];
        }
      }
      assert.ok(expectedLen >= 50 * 1024 * 1024);
      const p = await c.call('spawn', { argv: ['seq', '1', String(N)], env: {}, stdin: new Uint8Array() });
      const WINDOW = 256 * 1024;
      const got = createHash('sha256');
      const s = await c.openStream('proc_stream', { handle: p.handle, which: 'stdout', window: WINDOW }, {
        onData: (st, b) => {
          got.update(b);
          st.ack(b.length); // the consumer keeps the window full
        },
      });
      const t0 = Date.now();
      await s.until(() => s.ended, 60000, 'stream_end');
      assert.deepEqual(s.ended, {});
      assert.equal(s.total, expectedLen);
      assert.equal(got.digest('hex'), expected.digest('hex'));
      assert.ok(s.maxFrame <= 65536, `frame of ${s.maxFrame} bytes`);
      assert.ok(!s.creditViolated, 'agent sent beyond the credit');
      const r = await c.call('wait', { handle: p.handle });
      assert.equal(r.code, 0);
      assert.equal(r.stdout.length, 0); // streamed bytes are not also captured
      console.log(`# flood: ${expectedLen} bytes in ${Date.now() - t0} ms`);
    });

    test('proc_stream without credit blocks the writer (backpressure), then drains', async () => {
      const p = await c.call('spawn', { argv: ['head', '-c', String(1 << 20), '/dev/zero'], env: {}, stdin: new Uint8Array() });
      const s = await c.openStream('proc_stream', { handle: p.handle, which: 'stdout', window: 1000 });
      await s.until(() => s.total === 1000, 3000);
      await sleep(300);
      assert.equal(s.total, 1000, 'exceeded the window');
      assert.equal((await c.call('proc_status', { handle: p.handle })).status, 'running');
      s.ack(2 << 20);
      await s.until(() => s.ended, 5000);
      assert.equal(s.total, 1 << 20);
      assert.ok(!s.creditViolated);
      assert.equal((await c.call('wait', { handle: p.handle })).code, 0);
    });

    test('proc_stream carries what was captured before, stderr too; EBUSY twice', async () => {
      const p = await c.call('spawn', { argv: ['sh', '-c', 'echo early >&2; read x; echo late-$x >&2'], env: {}, stdin: new Uint8Array() });
      await sleep(200);
      const s = await c.openStream('proc_stream', { handle: p.handle, which: 'stderr', window: 1 << 20 });
      await rejectsWith(c.openStream('proc_stream', { handle: p.handle, which: 'stderr', window: 10 }), EBUSY);
      await rejectsWith(c.openStream('proc_stream', { handle: p.handle, which: 'bogus', window: 10 }), EINVAL);
      await s.until(() => s.total >= 6);
      await c.call('stdin_write', { handle: p.handle, data: Buffer.from('z\n') });
      await s.until(() => s.ended);
      assert.equal(text(s.bytes()), 'early\nlate-z\n');
      await c.call('wait', { handle: p.handle });
    });

    test('stream_close stops a process stream and gives the pipe back', async () => {
      const p = await c.call('spawn', { argv: ['sh', '-c', 'echo a; read x; echo b'], env: {}, stdin: new Uint8Array() });
      const s = await c.openStream('proc_stream', { handle: p.handle, which: 'stdout', window: 1 << 20 });
      await s.until(() => s.total === 2);
      assert.deepEqual(await s.close(), {});
      const before = s.total;
      await c.call('stdin_write', { handle: p.handle, data: Buffer.from('\n') });
      const r = await c.call('wait', { handle: p.handle });
      assert.equal(r.status, 'exited'); // not killed by SIGPIPE
      assert.equal(text(r.stdout), 'b\n'); // captured again after the stream went away
      assert.equal(s.total, before);
      assert.equal(s.ended, null); // stream_close sends no stream_end
      assert.deepEqual(await c.call('stream_close', { stream: 424242 }), {}); // unknown: fine
    });

    test('tail_file from the beginning, the end and an offset; stream_close', async () => {
      const f = path.join(tmp, 'log.txt');
      fs.writeFileSync(f, 'line1\n');
      const s = await c.openStream('tail_file', { path: f, start: 'beginning', window: 1 << 20 });
      const e = await c.openStream('tail_file', { path: f, start: 'end', window: 1 << 20 });
      const o = await c.openStream('tail_file', { path: f, start: 3n, window: 1 << 20 });
      const n = await c.openStream('tail_file', { path: f, start: -2, window: 1 << 20 });
      const all = await c.openStream('tail_file', { path: f, start: -1000, window: 1 << 20 });
      await s.until(() => s.total === 6);
      fs.appendFileSync(f, 'line2\n');
      await s.until(() => s.total === 12);
      await e.until(() => e.total === 6);
      await o.until(() => o.total === 9);
      assert.equal(text(s.bytes()), 'line1\nline2\n');
      assert.equal(text(e.bytes()), 'line2\n');
      assert.equal(text(o.bytes()), 'e1\nline2\n');
      await n.until(() => n.total === 8);
      assert.equal(text(n.bytes()), '1\nline2\n'); // 2 bytes before the end, then growth
      await all.until(() => all.total === 12);
      assert.equal(text(all.bytes()), 'line1\nline2\n'); // clamped at the beginning
      assert.equal(s.ended, null); // tails do not end at EOF
      for (const t of [s, e, o, n, all]) assert.deepEqual(await t.close(), {});
      fs.appendFileSync(f, 'line3\n');
      await sleep(150);
      assert.equal(s.total, 12);
      assert.equal(c.stray.filter((m) => m.kind.startsWith('stream')).length, 0);
      await rejectsWith(c.openStream('tail_file', { path: path.join(tmp, 'nope'), window: 10 }), ENOENT);
    });

    test('tail_file credit: small window, then acks', async () => {
      const f = path.join(tmp, 'big.bin');
      const data = randomBytes(300000);
      fs.writeFileSync(f, data);
      const s = await c.openStream('tail_file', { path: f, start: 'beginning', window: 100000 });
      await s.until(() => s.total === 100000);
      await sleep(100);
      assert.equal(s.total, 100000);
      s.ack(200000);
      await s.until(() => s.total === 300000);
      assert.ok(s.bytes().equals(data));
      assert.ok(s.maxFrame <= 65536 && !s.creditViolated);
      await s.close();
    });

    test('tail_file on a FIFO ends at EOF', async () => {
      const fifo = path.join(tmp, 'fifo');
      await exec(c, ['mkfifo', fifo]);
      const s = await c.openStream('tail_file', { path: fifo, window: 1 << 20 });
      await sh(c, `echo through-the-fifo > ${fifo}`);
      await s.until(() => s.ended);
      assert.equal(text(s.bytes()), 'through-the-fifo\n');
      assert.deepEqual(s.ended, {});
    });

    test('fd_stream starts at the fd position and follows growth', async () => {
      const f = path.join(tmp, 'fdstream.txt');
      fs.writeFileSync(f, 'abcdef');
      const fd = (await c.call('open_file', { path: f, flags: 1 })).handle;
      await c.call('seek', { handle: fd, offset: 2, whence: 'set' });
      const s = await c.openStream('fd_stream', { handle: fd, window: 1 << 20 });
      await s.until(() => s.total === 4);
      fs.appendFileSync(f, 'gh');
      await s.until(() => s.total === 6);
      assert.equal(text(s.bytes()), 'cdefgh');
      await s.close();
      // the handle's own position is untouched by the stream
      assert.equal(text((await c.call('read', { handle: fd, len: 2 })).data), 'cd');
      await c.call('close', { handle: fd });
      await rejectsWith(c.openStream('fd_stream', { handle: fd, window: 10 }), EBADF);
    });
  });

  describe('files', () => {
    test('write_file, read_file, append, perm', async () => {
      const f = path.join(tmp, 'a.txt');
      assert.deepEqual(await c.call('write_file', { path: f, data: Buffer.from('hello') }), {});
      assert.equal(text((await c.call('read_file', { path: f })).data), 'hello');
      await c.call('write_file', { path: f, data: 'ab', append: true }); // str accepted as bytes
      assert.equal(fs.readFileSync(f, 'utf8'), 'helloab');
      await c.call('write_file', { path: f, data: Buffer.from('x') });
      assert.equal(fs.readFileSync(f, 'utf8'), 'x');
      assert.equal(fs.statSync(f).mode & 0o777, 0o644);
      const g = path.join(tmp, 'secret');
      await c.call('write_file', { path: g, data: Buffer.from('s'), perm: 0o600 });
      assert.equal(fs.statSync(g).mode & 0o7777, 0o600);
      const big = randomBytes(5 << 20);
      await c.call('write_file', { path: g, data: big });
      assert.ok(Buffer.from((await c.call('read_file', { path: g })).data).equals(big));
      await rejectsWith(c.call('read_file', { path: path.join(tmp, 'missing') }), ENOENT, /^No such file or directory$/);
      await rejectsWith(c.call('read_file', { path: tmp }), 21 /* EISDIR */);
      assert.match(text((await c.call('read_file', { path: '/proc/self/status' })).data), /^Name:/);
    });

    test('stat, follow', async () => {
      const f = path.join(tmp, 'st.txt');
      fs.writeFileSync(f, '12345');
      fs.symlinkSync(f, path.join(tmp, 'link'));
      const st = await c.call('stat', { path: f });
      const ref = fs.statSync(f, { bigint: true });
      assert.equal(st.size, 5);
      assert.equal(BigInt(st.mtime_ns), ref.mtimeNs);
      assert.equal(st.perm, Number(ref.mode) & 0o7777);
      assert.equal(st.entry_type, 'file');
      assert.equal(st.uid, Number(ref.uid));
      assert.equal(st.gid, Number(ref.gid));
      assert.equal(st.nlink, 1);
      assert.equal((await c.call('stat', { path: path.join(tmp, 'link') })).entry_type, 'file');
      assert.equal((await c.call('stat', { path: path.join(tmp, 'link'), follow: false })).entry_type, 'symlink');
      assert.equal((await c.call('stat', { path: tmp })).entry_type, 'directory');
      assert.equal((await c.call('stat', { path: '/dev/null' })).entry_type, 'char_device');
      await rejectsWith(c.call('stat', { path: path.join(tmp, 'nope') }), ENOENT);
    });

    test('mkdir, listdir, unlink, rename', async () => {
      const d = path.join(tmp, 'dir');
      await c.call('mkdir', { path: d });
      await rejectsWith(c.call('mkdir', { path: d }), EEXIST);
      await c.call('mkdir', { path: d, parents: true }); // existing is fine with parents
      await c.call('mkdir', { path: path.join(d, 'x/y/z'), parents: true, perm: 0o700 });
      assert.equal(fs.statSync(path.join(d, 'x/y/z')).mode & 0o777, 0o700);
      await rejectsWith(c.call('mkdir', { path: path.join(d, 'p/q') }), ENOENT);
      fs.writeFileSync(path.join(d, 'b.txt'), '');
      fs.writeFileSync(path.join(d, 'a.txt'), '');
      fs.symlinkSync('a.txt', path.join(d, 'c'));
      const { entries } = await c.call('listdir', { path: d });
      assert.deepEqual(entries, [
        { name: 'a.txt', entry_type: 'file' },
        { name: 'b.txt', entry_type: 'file' },
        { name: 'c', entry_type: 'symlink' },
        { name: 'x', entry_type: 'directory' },
      ]);
      await rejectsWith(c.call('listdir', { path: path.join(tmp, 'nope') }), ENOENT);
      await c.call('rename', { from: path.join(d, 'a.txt'), to: path.join(d, 'renamed') });
      assert.ok(fs.existsSync(path.join(d, 'renamed')));
      await rejectsWith(c.call('rename', { from: path.join(d, 'a.txt'), to: path.join(d, 'r2') }), ENOENT);
      await c.call('unlink', { path: path.join(d, 'renamed') });
      assert.ok(!fs.existsSync(path.join(d, 'renamed')));
      await c.call('unlink', { path: path.join(d, 'x/y/z') }); // an empty directory
      assert.ok(!fs.existsSync(path.join(d, 'x/y/z')));
      await rejectsWith(c.call('unlink', { path: path.join(d, 'x') }), ENOTEMPTY);
      await rejectsWith(c.call('unlink', { path: path.join(d, 'gone') }), ENOENT);
    });

    test('open_file, read, write, seek, close', async () => {
      const f = path.join(tmp, 'open.txt');
      const RD = 1, WR = 2, CREATE = 4, TRUNC = 8, APPEND = 16, EXCL = 32;
      const h = (await c.call('open_file', { path: f, flags: RD | WR | CREATE | TRUNC, perm: 0o640 })).handle;
      assert.ok(h > 2);
      assert.equal(fs.statSync(f).mode & 0o777, 0o640);
      assert.deepEqual(await c.call('write', { handle: h, data: Buffer.from('hello world') }), { written: 11 });
      assert.deepEqual(await c.call('seek', { handle: h, offset: 0, whence: 'cur' }), { offset: 11 });
      assert.deepEqual(await c.call('seek', { handle: h, offset: -5, whence: 'end' }), { offset: 6 });
      assert.equal(text((await c.call('read', { handle: h, len: 100 })).data), 'world');
      assert.equal((await c.call('read', { handle: h, len: 100 })).data.length, 0); // EOF
      await c.call('seek', { handle: h, offset: 0, whence: 'set' });
      assert.equal(text((await c.call('read', { handle: h, len: 5 })).data), 'hello');
      await rejectsWith(c.call('seek', { handle: h, offset: -100, whence: 'set' }), EINVAL);
      await rejectsWith(c.call('seek', { handle: h, offset: 0, whence: 'middle' }), EINVAL);
      assert.deepEqual(await c.call('close', { handle: h }), {});
      await rejectsWith(c.call('read', { handle: h, len: 1 }), EBADF);
      await rejectsWith(c.call('close', { handle: h }), EBADF);
      await rejectsWith(c.call('open_file', { path: f, flags: WR | EXCL }), EEXIST);
      await rejectsWith(c.call('open_file', { path: path.join(tmp, 'nope'), flags: RD }), ENOENT);
      await rejectsWith(c.call('open_file', { path: f, flags: 0 }), EINVAL);
      await rejectsWith(c.call('open_file', { path: f, flags: 64 | RD }), EINVAL);
      const a = (await c.call('open_file', { path: f, flags: APPEND })).handle;
      await c.call('write', { handle: a, data: Buffer.from('!') });
      await c.call('close', { handle: a });
      assert.equal(fs.readFileSync(f, 'utf8'), 'hello world!');
      // the agent's own descriptors and stdio are not handles
      for (const fd of [0, 1, 2]) await rejectsWith(c.call('close', { handle: fd }), EBADF);
    });

    test('read on a FIFO waits without blocking the agent', async () => {
      const fifo = path.join(tmp, 'fifo2');
      await exec(c, ['mkfifo', fifo]);
      const h = (await c.call('open_file', { path: fifo, flags: 1 | 2 })).handle; // O_RDWR: no EOF
      const pending = c.call('read', { handle: h, len: 100 });
      assert.deepEqual(await c.call('ping', { token: 'still-serving' }), { token: 'still-serving' });
      await sh(c, `printf fifo-bytes > ${fifo}`);
      assert.equal(text((await pending).data), 'fifo-bytes');
      await c.call('close', { handle: h });
    });
  });

  describe('clock and rng', () => {
    test('get_time matches the host clock', async () => {
      const t = await c.call('get_time', {});
      const agentMs = Number(t.sec) * 1000 + t.nsec / 1e6;
      assert.ok(Math.abs(agentMs - Date.now()) < 1000);
      assert.ok(t.nsec >= 0 && t.nsec < 1e9);
    });

    // Moves the host clock (restored afterwards); the Lua specs cover the clock inside guests.
    test('advance_time and set_time (restored afterwards)', { skip: process.env.PROVIUM_TEST_HOST_CLOCK !== '1' && 'set PROVIUM_TEST_HOST_CLOCK=1 to move the host clock' }, async () => {
      const wallNow = () => clock.wall + Number((process.hrtime.bigint() - clock.mono) / 1000000n);
      try {
        const t0 = await c.call('get_time', {});
        const t1 = await c.call('advance_time', { ns: 2_500_000_000n });
        const d = (Number(t1.sec) - Number(t0.sec)) * 1e3 + (t1.nsec - t0.nsec) / 1e6;
        assert.ok(d >= 2500 && d < 3000, `advanced ${d} ms`);
        const t2 = await c.call('advance_time', { ns: -2_500_000_000 });
        assert.ok(Math.abs(Number(t2.sec) * 1e3 + t2.nsec / 1e6 - wallNow()) < 1000);
        const target = BigInt(Math.floor(wallNow() / 1000) + 2);
        assert.deepEqual(await c.call('set_time', { sec: target, nsec: 5 }), {});
        const t3 = await c.call('get_time', {});
        assert.ok(BigInt(t3.sec) === target || BigInt(t3.sec) === target + 1n);
        await rejectsWith(c.call('set_time', { sec: 1, nsec: 1e9 }), EINVAL);
      } finally {
        const ms = wallNow();
        await c.call('set_time', { sec: BigInt(Math.floor(ms / 1000)), nsec: (ms % 1000) * 1e6 });
      }
      const t = await c.call('get_time', {});
      assert.ok(Math.abs(Number(t.sec) * 1000 + t.nsec / 1e6 - wallNow()) < 1000);
    });

    test('sleep replies after the delay and does not block the loop', async () => {
      const t0 = Date.now();
      const slow = c.call('sleep', { ns: 300_000_000 });
      assert.deepEqual(await c.call('ping', { token: 'p' }), { token: 'p' });
      assert.ok(Date.now() - t0 < 200);
      assert.deepEqual(await slow, {});
      assert.ok(Date.now() - t0 >= 295);
      await rejectsWith(c.call('sleep', { ns: -1 }), EINVAL);
      assert.deepEqual(await c.call('sleep', { ns: 0 }), {});
    });

    test('seed_rng', async () => {
      assert.deepEqual(await c.call('seed_rng', { seed: randomBytes(32) }), {});
      assert.deepEqual(await c.call('seed_rng', { seed: new Uint8Array() }), {});
      await rejectsWith(c.call('seed_rng', {}), EINVAL, /missing field `seed`/);
    });
  });

  describe('layer 0', () => {
    const SYS_write = 1, SYS_close = 3, SYS_writev = 20, SYS_getpid = 39, SYS_uname = 63;

    test('syscall: plain, with buffers, ptrs and nested pointers, failures', async () => {
      const pid = await c.call('syscall', { nr: SYS_getpid, args: [], bufs: [], ptrs: [], nested: [] });
      assert.deepEqual(pid, { ret: agent.pid, errno: 0, out_bufs: [] });
      const u = await c.call('syscall', { nr: SYS_uname, args: [0], bufs: [new Uint8Array(390)], ptrs: [[0, 0]], nested: [] });
      assert.equal(u.ret, 0);
      assert.equal(text(u.out_bufs[0].subarray(0, 5)), 'Linux');
      const bad = await c.call('syscall', { nr: SYS_close, args: [999999] });
      assert.equal(bad.ret, -1);
      assert.equal(bad.errno, EBADF);
      // writev(fd, &iov, 1) with iov = {base: &bufs[1], len: 5}: nested puts the address in.
      const f = path.join(tmp, 'writev.txt');
      const fd = (await c.call('open_file', { path: f, flags: 2 | 4 | 8 })).handle;
      const iov = Buffer.alloc(16);
      iov.writeBigUInt64LE(5n, 8);
      const w = await c.call('syscall', {
        nr: SYS_writev, args: [fd, 0, 1n], bufs: [iov, Buffer.from('hello')], ptrs: [[1, 0]], nested: [[0, 1, 0]],
      });
      assert.equal(w.ret, 5);
      assert.equal(Buffer.from(w.out_bufs[0]).readBigUInt64LE(0) > 0n, true);
      await c.call('close', { handle: fd });
      assert.equal(fs.readFileSync(f, 'utf8'), 'hello');
      const wr = await c.call('syscall', { nr: SYS_write, args: [-1n, 0, 0] });
      assert.deepEqual([wr.ret, wr.errno], [-1, EBADF]);
      await rejectsWith(c.call('syscall', { nr: SYS_getpid, args: [1, 2, 3, 4, 5, 6, 7] }), EINVAL);
      await rejectsWith(c.call('syscall', { nr: SYS_getpid, bufs: [Buffer.alloc(4)], nested: [[0, 0, 0]] }), EINVAL);
      await rejectsWith(c.call('syscall', { nr: SYS_getpid, ptrs: [[6, 0]], bufs: [Buffer.alloc(1)] }), EINVAL);
    });

    test('ioctl: FIONREAD, ENOTTY, pointer offsets', async () => {
      const f = path.join(tmp, 'ioctl.txt');
      fs.writeFileSync(f, '0123456789');
      const fd = (await c.call('open_file', { path: f, flags: 1 })).handle;
      const r = await c.call('ioctl', { fd, cmd: 0x541bn, data: Buffer.alloc(4), bufs: [], ptr_offsets: [] });
      assert.equal(r.ret, 0);
      assert.equal(Buffer.from(r.out_data).readInt32LE(0), 10);
      assert.deepEqual(r.out_bufs, []);
      const t = await c.call('ioctl', { fd, cmd: 0x5401, data: Buffer.alloc(16), bufs: [Buffer.from('xyzw')], ptr_offsets: [8] });
      assert.deepEqual([t.ret, t.errno], [-1, ENOTTY]);
      assert.ok(Buffer.from(t.out_data).readBigUInt64LE(8) > 0n); // the address of bufs[0]
      assert.equal(text(t.out_bufs[0]), 'xyzw');
      const n = await c.call('ioctl', { fd: 999999, cmd: 0x541b });
      assert.deepEqual([n.ret, n.errno, n.out_data], [-1, EBADF, undefined]);
      await rejectsWith(c.call('ioctl', { fd, cmd: 0x5401, data: Buffer.alloc(4), bufs: [Buffer.alloc(1)], ptr_offsets: [0] }), EINVAL);
      await c.call('close', { handle: fd });
    });

    test('read_mem', async () => {
      const maps = text((await c.call('read_file', { path: `/proc/${agent.pid}/maps` })).data);
      const first = maps.split('\n').find((l) => l.includes('provium-agent'));
      const addr = BigInt('0x' + first.split('-')[0]);
      const m = await c.call('read_mem', { addr, len: 4 });
      assert.deepEqual(Buffer.from(m.data), Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
      await rejectsWith(c.call('read_mem', { addr: 0, len: 8 }), EFAULT);
      await rejectsWith(c.call('read_mem', { addr: 0xffffffffffff0000n, len: 8 }), EFAULT);
      assert.equal((await c.call('read_mem', { addr, len: 0 })).data.length, 0);
    });
  });

  test('batch: in order, failures do not stop it, exec does not block the loop', async () => {
    const f = path.join(tmp, 'batch.txt');
    const t0 = Date.now();
    const pending = c.call('batch', {
      ops: [
        { kind: 'write_file', data: { path: f, data: Buffer.from('batched') } },
        { kind: 'read_file', data: { path: f } },
        { kind: 'exec', data: { argv: ['sh', '-c', 'sleep 0.3; cat ' + f], env: {}, stdin: new Uint8Array() } },
        { kind: 'stat', data: { path: path.join(tmp, 'nope') } },
        { kind: 'sleep', data: { ns: 10_000_000 } },
        { kind: 'proc_stream', data: {} },
        { kind: 'bogus', data: {} },
        { kind: 'syscall', data: { nr: 39 } },
      ],
    });
    assert.deepEqual(await c.call('ping', { token: 'during-batch' }), { token: 'during-batch' });
    assert.ok(Date.now() - t0 < 250);
    const { results } = await pending;
    assert.equal(results.length, 8);
    assert.deepEqual(results[0], { ok: {} });
    assert.equal(text(results[1].ok.data), 'batched');
    assert.equal(text(results[2].ok.stdout), 'batched');
    assert.equal(results[3].err.errno, ENOENT);
    assert.deepEqual(results[4], { ok: {} });
    assert.match(results[5].err.message, /not allowed in a batch/);
    assert.match(results[6].err.message, /unknown op `bogus`/);
    assert.equal(results[7].ok.ret, agent.pid);
    assert.deepEqual(await c.call('batch', { ops: [] }), { results: [] });
  });

  describe('workers', () => {
    test('spawn_worker, exec and syscall in the worker, kill_all, exit, worker_join', async () => {
      const w = await c.call('spawn_worker', {});
      assert.ok(w.worker > 0 && w.pid > 0 && w.pid !== agent.pid);
      const opt = { worker: w.worker };
      assert.equal((await c.call('hello', { protocol_version: 1 }, opt)).mode, 'worker');
      assert.equal((await c.call('hello', { protocol_version: 1 }, opt)).pid, w.pid);
      const r = await sh(c, 'echo $PPID', {}, opt);
      assert.equal(Number(text(r.stdout)), w.pid);
      assert.equal((await c.call('syscall', { nr: 39 }, opt)).ret, w.pid);
      // its own state: the main agent's handles are unknown there
      const mainProc = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() });
      const wp = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() }, opt);
      assert.equal(wp.handle, 1);
      assert.equal((await c.call('get_pid', { handle: wp.handle }, opt)).pid, wp.pid);
      assert.deepEqual(await c.call('kill_all', { signal: 9 }, opt), { killed: 1 });
      assert.equal((await c.call('wait', { handle: wp.handle }, opt)).signal, 9);
      assert.equal((await c.call('proc_status', { handle: mainProc.handle })).status, 'running');
      await c.call('kill', { handle: mainProc.handle, signal: 9 });
      await c.call('wait', { handle: mainProc.handle });
      // streams through a worker
      const sp = await c.call('spawn', { argv: ['seq', '1', '20000'], env: {}, stdin: new Uint8Array() }, opt);
      const s = await c.openStream('proc_stream', { handle: sp.handle, which: 'stdout', window: 4096 }, {
        ...opt, onData: (st, b) => { st.chunks.push(b); st.ack(b.length); },
      });
      await s.until(() => s.ended, 5000);
      const seqOut = Array.from({ length: 20000 }, (_, i) => i + 1).join('\n') + '\n';
      assert.equal(text(s.bytes()), seqOut);
      assert.ok(!s.creditViolated);
      await c.call('wait', { handle: sp.handle }, opt);
      // main-only ops are refused in a worker
      await rejectsWith(c.call('spawn_worker', {}, opt), EINVAL, /only valid on the main agent/);
      // exit: reply first, then worker_exit, then join
      assert.deepEqual(await c.call('exit', {}, opt), {});
      const ev = await c.event((m) => m.kind === 'worker_exit' && m.data.worker === w.worker);
      assert.deepEqual(ev.data, { worker: w.worker, status: 'exited', code: 0, signal: 0 });
      assert.deepEqual(await c.call('worker_join', { worker: w.worker }), { status: 'exited', code: 0, signal: 0 });
      await rejectsWith(c.call('worker_join', { worker: w.worker }), ESRCH);
      await rejectsWith(c.call('ping', { token: 'x' }, { worker: w.worker }), ESRCH);
      await rejectsWith(c.call('ping', { token: 'x' }, { worker: 999 }), ESRCH);
    });

    test('worker_join with a timeout kills the worker', async () => {
      const w = await c.call('spawn_worker', {});
      const t0 = Date.now();
      const j = await c.call('worker_join', { worker: w.worker, timeout_ms: 200 });
      assert.deepEqual(j, { status: 'timed_out', code: 0, signal: 9 });
      assert.ok(Date.now() - t0 < 1500);
      const ev = await c.event((m) => m.kind === 'worker_exit' && m.data.worker === w.worker);
      assert.equal(ev.data.status, 'timed_out');
    });

    test('a blocking syscall in a worker does not block the main agent', async () => {
      const w = await c.call('spawn_worker', {});
      const opt = { worker: w.worker };
      // nanosleep({1, 0}) inline in the worker
      const ts = Buffer.alloc(16);
      ts.writeBigInt64LE(1n, 0);
      const t0 = Date.now();
      const slow = c.call('syscall', { nr: 35, args: [0, 0], bufs: [ts], ptrs: [[0, 0]] }, opt);
      assert.deepEqual(await c.call('ping', { token: 'main' }), { token: 'main' });
      assert.ok(Date.now() - t0 < 500);
      assert.equal((await slow).ret, 0);
      assert.ok(Date.now() - t0 >= 950);
      await c.call('exit', {}, opt);
      await c.call('worker_join', { worker: w.worker });
    });
  });

  describe('connection', () => {
    test('disconnect keeps processes and files; stale replies are not delivered', async () => {
      const w = await c.call('spawn_worker', {});
      const p = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() });
      const wp = await c.call('spawn', { argv: ['sleep', '30'], env: {}, stdin: new Uint8Array() }, { worker: w.worker });
      const f = path.join(tmp, 'persist.txt');
      fs.writeFileSync(f, 'persisted');
      const fd = (await c.call('open_file', { path: f, flags: 1 })).handle;
      const tf = await c.openStream('tail_file', { path: f, window: 1 << 20 });
      await tf.until(() => tf.total === 9);
      // requests in flight when the host goes away
      c.request('exec', { argv: ['sleep', '0.3'], env: {}, stdin: new Uint8Array() }).catch(() => {});
      c.request('sleep', { ns: 300_000_000 }, { worker: w.worker }).catch(() => {});
      await c.close();

      c = await Client.connect(sock);
      const h = await c.call('hello', { protocol_version: 1 });
      assert.equal(h.pid, agent.pid);
      assert.equal((await c.call('proc_status', { handle: p.handle })).status, 'running');
      assert.equal((await c.call('proc_status', { handle: wp.handle }, { worker: w.worker })).status, 'running');
      assert.equal(text((await c.call('read', { handle: fd, len: 100 })).data), 'persisted');
      fs.appendFileSync(f, 'more');
      await sleep(700); // the old exec, sleep and tail would have answered by now
      assert.deepEqual(c.stray, []);
      // Notices may still come for workers of earlier tests dying late; none for this one, and no protocol error.
      const mine = c.events.filter((e) => e.kind === 'agent_error' || e.data?.worker === w.worker);
      assert.deepEqual(mine, []);
      await c.call('kill', { handle: p.handle, signal: 9 });
      assert.equal((await c.call('wait', { handle: p.handle })).signal, 9);
      await c.call('kill_all', { signal: 9 }, { worker: w.worker });
      await c.call('exit', {}, { worker: w.worker });
      await c.call('worker_join', { worker: w.worker });
      await c.call('close', { handle: fd });
    });

    test('a bad frame gets agent_error; input is dropped until the host reconnects', async () => {
      c.sendRaw(Buffer.from(encode(42)));
      const ev = await c.event((m) => m.kind === 'agent_error');
      assert.match(ev.data.message, /not a map/);
      const lost = c.request('ping', { token: 'lost' });
      lost.catch(() => {});
      await sleep(300);
      assert.equal(c.pending.size, 1, 'a request after a bad frame was answered');
      await c.close();
      c = await Client.connect(sock);
      assert.equal((await c.call('hello', { protocol_version: 1 })).mode, 'listen');
    });

    test('after a bad frame a hello resynchronises without a disconnect', async () => {
      // garbage, then a hello in the same write: the hello is found and answered
      const junk = Buffer.from([0, 0, 0, 3, 0xc1, 0xc1, 0xc1, 0xff, 0xff]);
      const hello = Buffer.from(encode({ id: 77, kind: 'hello', data: { protocol_version: 1 } }));
      const h = Buffer.alloc(4);
      h.writeUInt32BE(hello.length);
      const p = new Promise((resolve, reject) => c.pending.set(77, { resolve, reject }));
      c.sock.write(Buffer.concat([junk, h, hello]));
      assert.equal((await p).kind, 'ok');
      assert.match((await c.event((m) => m.kind === 'agent_error')).data.message, /not valid msgpack/);
      // a frame that is not a hello does not end the discarding
      c.send({ kind: 'nope' });
      await c.event((m) => m.kind === 'agent_error');
      const lost = c.request('ping', { token: 'lost' });
      lost.catch(() => {});
      await sleep(200);
      assert.equal(c.pending.size, 1);
      c.pending.clear();
      assert.equal((await c.call('hello', { protocol_version: 1 })).mode, 'listen');
      assert.deepEqual(await c.call('ping', { token: 'again' }), { token: 'again' });
    });

    test('a frame left half-sent is dropped after 5 s', async () => {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(100);
      c.sock.write(Buffer.concat([h, Buffer.from([0x83, 0xa2])]));
      const t0 = Date.now();
      const ev = await c.event((m) => m.kind === 'agent_error', 8000);
      assert.match(ev.data.message, /incomplete/);
      assert.ok(Date.now() - t0 >= 4500);
      assert.equal((await c.call('hello', { protocol_version: 1 })).mode, 'listen');
    });

    test('an oversized frame length is rejected before allocation', async () => {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(0x7fffffff);
      c.sock.write(h);
      const ev = await c.event((m) => m.kind === 'agent_error');
      assert.match(ev.data.message, /exceeds the limit of 67108864 bytes/);
      await c.close();
      c = await Client.connect(sock);
      assert.deepEqual(await c.call('ping', { token: 'back' }), { token: 'back' });
    });

    test('a blocking syscall runs off the loop: the agent answers meanwhile, and timeout_ms interrupts it', async () => {
      const ts = Buffer.alloc(16);
      ts.writeBigInt64LE(1n, 0); // nanosleep 1 s
      const started = Date.now();
      const slow = c.call('syscall', { nr: 35, args: [0, 0], bufs: [ts], ptrs: [[0, 0]] });
      assert.deepEqual(await c.call('ping', { token: 'meanwhile' }), { token: 'meanwhile' });
      assert.ok(Date.now() - started < 500, `ping waited ${Date.now() - started} ms behind the syscall`);
      assert.equal((await slow).ret, 0);
      // pause(2) returns only on a signal: the agent interrupts it at timeout_ms.
      const t0 = Date.now();
      const err = await c.call('syscall', { nr: 34, args: [], timeout_ms: 300 }).then(() => undefined, (e) => e);
      assert.equal(err?.errno, 110, String(err?.message));
      assert.match(err.message, /syscall did not return within 300 ms \(timeout_ms\); it was interrupted/);
      assert.ok(Date.now() - t0 < 2000);
      // Per-thread calls stay on the agent's own thread: gettid is its pid.
      assert.equal((await c.call('syscall', { nr: 186 })).ret, (await c.call('syscall', { nr: 39 })).ret);
      assert.equal(c.events.length, 0);
    });

    // Layer-0 calls can hit the agent's own channel to the host; it must notice before the
    // descriptor's number names anything else.
    const socketFds = (pid) => fs.readdirSync(`/proc/${pid}/fd`).map(Number).filter((fd) => {
      try {
        return fd > 2 && fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false;
      }
    }).sort((a, b) => a - b);

    test('a dup2 over the host connection: no reply goes into the file, the next host is served', async () => {
      const [, conn, ...more] = socketFds(agent.pid); // the listening socket comes first
      assert.ok(conn !== undefined && more.length === 0, `agent sockets: ${socketFds(agent.pid)}`);
      const f = path.join(tmp, 'dup2-target');
      const fd = (await c.call('open_file', { path: f, flags: 2 | 4 | 8 })).handle;
      c.request('syscall', { nr: 33, args: [fd, conn] }).catch(() => {}); // dup2(fd, conn)
      await new Promise((r) => (c.closed ? r() : c.sock.once('close', r)));
      c = await Client.connect(sock);
      assert.deepEqual(await c.call('ping', { token: 'after dup2' }), { token: 'after dup2' });
      assert.equal(fs.readFileSync(f, 'utf8'), '', 'the agent wrote frames into the file');
      assert.match(agentStderr, /the host connection \(fd \d+\) was replaced by another file; waiting for the next host/);
      await c.call('close', { handle: fd });
    });

    test('a close(2) of the host connection: the next host is served', async () => {
      const [, conn] = socketFds(agent.pid);
      c.request('syscall', { nr: 3, args: [conn] }).catch(() => {});
      await new Promise((r) => (c.closed ? r() : c.sock.once('close', r)));
      c = await Client.connect(sock);
      assert.deepEqual(await c.call('ping', { token: 'after close' }), { token: 'after close' });
    });

    test('a worker whose channel is closed under it exits with code 75, and says why', async () => {
      const w = await c.call('spawn_worker', {});
      await c.call('ping', { token: 'settled' }, { worker: w.worker }); // it has closed what it inherited
      const [wsock, ...more] = socketFds(w.pid);
      assert.ok(wsock !== undefined && more.length === 0, `worker sockets: ${socketFds(w.pid)}`);
      c.request('syscall', { nr: 3, args: [wsock] }, { worker: w.worker }).catch(() => {});
      const ev = await c.event((m) => m.kind === 'worker_exit' && m.data.worker === w.worker);
      assert.deepEqual(ev.data, { worker: w.worker, status: 'exited', code: 75, signal: 0 });
      assert.match(agentStderr, new RegExp(`worker ${w.pid}: its channel to the main agent \\(fd ${wsock}\\) was closed; exiting`));
      await c.call('worker_join', { worker: w.worker });
      c.pending.clear();
    });

    test('a close(2) of a worker\'s socket in the main agent: the worker is ended and reported', async () => {
      const before = socketFds(agent.pid);
      const w = await c.call('spawn_worker', {});
      const [wsock, ...more] = socketFds(agent.pid).filter((fd) => !before.includes(fd));
      assert.ok(wsock !== undefined && more.length === 0, `new agent sockets: ${wsock}, ${more}`);
      assert.equal((await c.call('syscall', { nr: 3, args: [wsock] })).ret, 0);
      const ev = await c.event((m) => m.kind === 'worker_exit' && m.data.worker === w.worker, 3000);
      assert.ok(['exited', 'signalled'].includes(ev.data.status));
      await c.call('worker_join', { worker: w.worker });
      assert.deepEqual(await c.call('ping', { token: 'main' }), { token: 'main' });
    });

    test('frames without id or kind, and id 0, are bad frames', async () => {
      for (const bad of [{ kind: 'ping', data: {} }, { id: 5, data: {} }, { id: 0, kind: 'ping', data: {} }]) {
        c.send(bad);
        const ev = await c.event((m) => m.kind === 'agent_error');
        assert.ok(ev.data.message.length > 0);
        await c.close();
        c = await Client.connect(sock);
      }
      assert.deepEqual(await c.call('ping', { token: 'ok' }), { token: 'ok' });
    });
  });
});
