import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstat, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { EventBus } from '../../src/events/bus.js';
import { readEvents } from '../../src/events/codec.js';
import { attachFileSink, attachSocketSink, attachStreamSink } from '../../src/events/sinks.js';
import { Capture, project } from './run-capture.js';

async function kinds(bytes: Buffer): Promise<string[]> {
  const out: string[] = [];
  for await (const e of readEvents(Readable.from([bytes]))) out.push(e.kind);
  return out;
}

describe('event sinks', () => {
  it('--save-events writes every frame to a truncated file', async () => {
    const dir = await project({});
    const path = join(dir, 'events.bin');
    await writeFile(path, 'old junk that must go');
    const bus = new EventBus();
    const sink = await attachFileSink(bus, path);
    bus.emit('fixture_cache_hit', { path: 'a' });
    bus.emit('fixture_build_started', { path: 'b' });
    await sink.close();
    bus.emit('fixture_cache_hit', { path: 'after close' });
    assert.deepEqual(await kinds(await readFile(path)), ['fixture_cache_hit', 'fixture_build_started']);
  });

  it('--events-stdout writes raw frames to the stream', async () => {
    const out = new Capture();
    const bus = new EventBus();
    const sink = attachStreamSink(bus, out, '--events-stdout');
    bus.emit('fixture_cache_hit', { path: 'a' });
    await sink.close();
    assert.deepEqual(await kinds(out.bytes), ['fixture_cache_hit']);
  });

  it('--events-socket fans frames out to every client and replaces a stale socket', async () => {
    const dir = await project({});
    const path = join(dir, 'ev.sock');
    const bus = new EventBus();
    // A stale socket file from a dead run: bound, never unlinked, nobody listening.
    const made = spawnSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path]);
    if (made.status === 0) assert.ok((await lstat(path)).isSocket());
    const sink = await attachSocketSink(bus, path);
    const clients = [connect(path), connect(path)];
    const received = clients.map((c) => {
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      return new Promise<Buffer>((resolve) => c.on('end', () => resolve(Buffer.concat(chunks))));
    });
    await Promise.all(clients.map((c) => new Promise((r) => c.once('connect', r))));
    // Let the server register both connections.
    await new Promise((r) => setTimeout(r, 50));
    bus.emit('fixture_cache_hit', { path: 'a' });
    bus.emit('fixture_cache_hit', { path: 'b' });
    await sink.close();
    for (const bytes of await Promise.all(received)) assert.deepEqual(await kinds(bytes), ['fixture_cache_hit', 'fixture_cache_hit']);
  });

  it('refuses a path that is not a socket', async () => {
    const dir = await project({ 'plain.txt': 'x' });
    await assert.rejects(attachSocketSink(new EventBus(), join(dir, 'plain.txt')), /exists and is not a socket/);
  });
});
