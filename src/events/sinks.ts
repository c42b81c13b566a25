// Event sinks: the bus's events as frames (codec.ts) to a file (--save-events), to stdout
// (--events-stdout) or to every client of a unix socket (--events-socket). A sink never throws
// into the bus: an I/O error detaches that sink with one warning and the run goes on.

import { createWriteStream } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { EventBus } from './bus.js';
import { encodeEvent } from './codec.js';

export interface EventSinkHandle {
  /** Flushes and detaches. Idempotent. */
  close(): Promise<void>;
  /** Why the output stopped early (a write error, e.g. a full disk), or undefined: the run exits 2. */
  failure(): string | undefined;
}

/** A socket client further behind than this is dropped rather than buffering without bound. */
const kMaxClientBacklogBytes = 16 * 1024 * 1024;

function warn(message: string): void {
  process.stderr.write(`provium: warning: ${message}\n`);
}

/** Frames to a writable stream (stdout, or a file stream). `ownsStream` ends it on close. */
export function attachStreamSink(bus: EventBus, stream: Writable, what: string, ownsStream = false): EventSinkHandle {
  let failed = false;
  let failure: string | undefined;
  const onError = (err: Error): void => {
    if (failed) return;
    failed = true;
    failure = `${what}: ${err.message}; event output stopped`;
    unsubscribe();
    warn(failure);
  };
  stream.on('error', onError);
  const unsubscribe = bus.subscribe((event) => {
    if (!failed) stream.write(encodeEvent(event));
  });
  let closed: Promise<void> | undefined;
  return {
    close() {
      closed ??= (async () => {
        unsubscribe();
        if (failed) return;
        await new Promise<void>((resolve) => {
          if (ownsStream) stream.end(resolve);
          else if (stream.writableLength === 0) resolve();
          else stream.write('', () => resolve());
        });
        stream.off('error', onError);
      })();
      return closed;
    },
    failure: () => failure,
  };
}

/** --save-events FILE: truncates the file and writes every frame. */
export async function attachFileSink(bus: EventBus, path: string): Promise<EventSinkHandle> {
  const stream = createWriteStream(path, { flags: 'w' });
  await new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', (err) => reject(err));
  });
  return attachStreamSink(bus, stream, `--save-events ${path}`, true);
}

/**
 * --events-socket PATH: listens on a unix socket and fans every frame out to each connected
 * client (a client sees the events from the moment it connects). A stale socket file left by a
 * dead run is replaced; a live one, or a path that is not a socket, is an error.
 */
export async function attachSocketSink(bus: EventBus, path: string): Promise<EventSinkHandle> {
  await removeStaleSocket(path);
  const clients = new Set<Socket>();
  const server: Server = createServer((socket) => {
    clients.add(socket);
    socket.on('error', () => clients.delete(socket));
    socket.on('close', () => clients.delete(socket));
    // Clients only listen; whatever they send is discarded.
    socket.resume();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`--events-socket ${path}: ${err.message}`)));
    server.listen(path, () => resolve());
  });
  server.on('error', (err) => warn(`--events-socket ${path}: ${err.message}`));
  const unsubscribe = bus.subscribe((event) => {
    if (clients.size === 0) return;
    const frame = encodeEvent(event);
    for (const socket of clients) {
      if (socket.writableLength > kMaxClientBacklogBytes) {
        warn(`--events-socket ${path}: a client fell ${kMaxClientBacklogBytes >> 20} MiB behind and was dropped`);
        clients.delete(socket);
        socket.destroy();
        continue;
      }
      socket.write(frame);
    }
  });
  let closed: Promise<void> | undefined;
  return {
    close() {
      closed ??= (async () => {
        unsubscribe();
        await Promise.all(
          [...clients].map(
            (socket) =>
              new Promise<void>((resolve) => {
                socket.end(() => resolve());
                // A client that never reads must not hold the run open.
                setTimeout(() => {
                  socket.destroy();
                  resolve();
                }, 2000).unref();
              }),
          ),
        );
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await unlink(path).catch(() => undefined);
      })();
      return closed;
    },
    // A client that goes away is its own business, never the run's.
    failure: () => undefined,
  };
}

async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) {
    throw new Error(`--events-socket ${path}: the path exists and is not a socket; choose another path or remove it`);
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) {
    throw new Error(`--events-socket ${path}: another process is listening there; choose another path`);
  }
  await unlink(path);
}
