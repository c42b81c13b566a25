import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { QmpClient, QmpConnectionError, QmpError, QmpState } from '../../src/vmm/qmp.js';

/** A fake QEMU monitor: greets, acknowledges qmp_capabilities, then lets each test script replies. */
interface FakeQmp {
  path: string;
  server: Server;
  /** Commands received after negotiation, in order. */
  received: any[];
  /** How to answer a command (default: `{return: {}}` echoing the id). */
  reply: (msg: any, sock: Socket) => void;
  greet: boolean;
  sockets: Socket[];
}

let dir: string;
let counter = 0;

async function fake(): Promise<FakeQmp> {
  const path = join(dir, `qmp${counter++}.sock`);
  const f: FakeQmp = {
    path,
    server: createServer(),
    received: [],
    reply: (msg, sock) => sock.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n'),
    greet: true,
    sockets: [],
  };
  f.server.on('connection', (sock) => {
    f.sockets.push(sock);
    if (f.greet) sock.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: '' }, capabilities: [] } }) + '\r\n');
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (msg.execute === 'qmp_capabilities') {
          sock.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n');
          continue;
        }
        f.received.push(msg);
        f.reply(msg, sock);
      }
    });
  });
  await new Promise<void>((resolve) => f.server.listen(path, resolve));
  return f;
}

function stop(f: FakeQmp): void {
  for (const s of f.sockets) s.destroy();
  f.server.close();
}

describe('QmpClient', () => {
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'provium-qmp-test-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('negotiates, then matches replies to commands by id, even out of order', async () => {
    const f = await fake();
    const held: [any, Socket][] = [];
    f.reply = (msg, sock) => {
      held.push([msg, sock]);
      if (held.length === 2) {
        // Answer the second command first.
        for (const [m, s] of held.reverse()) s.write(JSON.stringify({ return: { echo: m.arguments?.n }, id: m.id }) + '\n');
      }
    };
    const qmp = await QmpClient.connect(f.path);
    assert.equal(qmp.state, QmpState.Ready);
    assert.deepEqual(qmp.version, { major: 7, minor: 2, micro: 22 });
    const [a, b] = await Promise.all([qmp.execute('one', { n: 1 }), qmp.execute('two', { n: 2 })]);
    assert.deepEqual(a, { echo: 1 });
    assert.deepEqual(b, { echo: 2 });
    assert.equal(f.received[0].execute, 'one');
    assert.deepEqual(f.received[0].arguments, { n: 1 });
    assert.deepEqual(f.received[1].arguments, { n: 2 });
    qmp.close();
    stop(f);
  });

  it('omits arguments when none are given', async () => {
    const f = await fake();
    const qmp = await QmpClient.connect(f.path);
    await qmp.execute('query-status');
    assert.equal('arguments' in f.received[0], false);
    qmp.close();
    stop(f);
  });

  it('rejects an error reply with the QMP class and desc', async () => {
    const f = await fake();
    f.reply = (msg, sock) => sock.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: "The command bogus has not been found" }, id: msg.id }) + '\n');
    const qmp = await QmpClient.connect(f.path);
    await assert.rejects(qmp.execute('bogus'), (err: Error) => {
      assert.ok(err instanceof QmpError);
      assert.equal(err.qmpClass, 'CommandNotFound');
      assert.equal(err.desc, 'The command bogus has not been found');
      assert.equal(err.command, 'bogus');
      assert.match(err.message, /QMP bogus failed: CommandNotFound: The command bogus has not been found/);
      return true;
    });
    // The connection stays usable after an error reply.
    f.reply = (msg, sock) => sock.write(JSON.stringify({ return: 7, id: msg.id }) + '\n');
    assert.equal(await qmp.execute('ok'), 7);
    qmp.close();
    stop(f);
  });

  it('delivers events and waitEvent filters them', async () => {
    const f = await fake();
    f.reply = (msg, sock) => {
      sock.write(JSON.stringify({ event: 'MIGRATION', data: { status: 'active' }, timestamp: { seconds: 1, microseconds: 0 } }) + '\n');
      sock.write(JSON.stringify({ return: {}, id: msg.id }) + '\n');
      sock.write(JSON.stringify({ event: 'MIGRATION', data: { status: 'completed' }, timestamp: { seconds: 2, microseconds: 0 } }) + '\n');
    };
    const qmp = await QmpClient.connect(f.path);
    const seen: string[] = [];
    qmp.on('event', (ev) => seen.push(String(ev.data?.['status'])));
    const done = qmp.waitEvent('MIGRATION', (ev) => ev.data?.['status'] === 'completed', 2000);
    await qmp.execute('migrate', { uri: 'unix:/x' });
    const ev = await done;
    assert.equal(ev.timestamp?.seconds, 2);
    assert.deepEqual(seen, ['active', 'completed']);
    qmp.close();
    stop(f);
  });

  it('times out a command with a named error, and ignores the late reply', async () => {
    const f = await fake();
    let late: (() => void) | undefined;
    f.reply = (msg, sock) => { late = () => sock.write(JSON.stringify({ return: 'late', id: msg.id }) + '\n'); };
    const qmp = await QmpClient.connect(f.path);
    await assert.rejects(qmp.execute('slow', undefined, { timeoutMs: 50 }), (err: Error) => {
      assert.ok(err instanceof QmpConnectionError);
      assert.match(err.message, /QMP slow: no reply within 50 ms/);
      return true;
    });
    late!();
    f.reply = (msg, sock) => sock.write(JSON.stringify({ return: 'fresh', id: msg.id }) + '\n');
    assert.equal(await qmp.execute('next'), 'fresh');
    qmp.close();
    stop(f);
  });

  it('rejects pending commands when QEMU closes the connection', async () => {
    const f = await fake();
    f.reply = (_msg, sock) => sock.destroy();
    const qmp = await QmpClient.connect(f.path);
    const closed = new Promise((resolve) => qmp.once('close', resolve));
    await assert.rejects(qmp.execute('quit'), (err: Error) => {
      assert.ok(err instanceof QmpConnectionError);
      assert.match(err.message, /QMP quit: .*closed by QEMU/);
      return true;
    });
    await closed;
    assert.equal(qmp.state, QmpState.Closed);
    await assert.rejects(qmp.execute('after'), /QMP after: .*closed by QEMU/);
    stop(f);
  });

  it('close() is idempotent and rejects what is pending', async () => {
    const f = await fake();
    f.reply = () => {};
    const qmp = await QmpClient.connect(f.path);
    const pending = qmp.execute('hang');
    qmp.close();
    qmp.close();
    await assert.rejects(pending, /client closed/);
    await assert.rejects(qmp.execute('x'), /client closed/);
    await assert.rejects(qmp.waitEvent('X', undefined, 1000), /client closed/);
    stop(f);
  });

  it('fails the handshake when no greeting comes', async () => {
    const f = await fake();
    f.greet = false;
    await assert.rejects(QmpClient.connect(f.path, 100), /no greeting within 100 ms/);
    stop(f);
  });

  it('fails on a line that is not JSON', async () => {
    const f = await fake();
    f.reply = (_msg, sock) => sock.write('this is not json\n');
    const qmp = await QmpClient.connect(f.path);
    await assert.rejects(qmp.execute('x'), /not JSON: this is not json/);
    assert.equal(qmp.state, QmpState.Closed);
    stop(f);
  });

  it('reports a socket that does not exist', async () => {
    await assert.rejects(QmpClient.connect(join(dir, 'absent.sock')), (err: Error) => {
      assert.ok(err instanceof QmpConnectionError);
      assert.match(err.message, /QMP connect .*absent\.sock: .*ENOENT/);
      return true;
    });
  });

  it('accept() wraps a socket QEMU dialled', async () => {
    // The launch path: we listen, QEMU connects and greets.
    const path = join(dir, `accept${counter++}.sock`);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    const { createConnection } = await import('node:net');
    const qemuSide = createConnection(path);
    qemuSide.setEncoding('utf8');
    qemuSide.on('data', (chunk: string) => {
      for (const line of chunk.split('\n').filter(Boolean)) {
        const msg = JSON.parse(line);
        qemuSide.write(JSON.stringify({ return: msg.execute === 'qmp_capabilities' ? {} : { running: true, status: 'running' }, id: msg.id }) + '\n');
      }
    });
    qemuSide.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + '\n');
    const qmp = await QmpClient.accept(await accepted, 'test');
    assert.deepEqual(await qmp.execute('query-status'), { running: true, status: 'running' });
    qmp.close();
    qemuSide.destroy();
    server.close();
  });
});
