// A stand-in broker for the runner's unit tests: real RPC channels (src/broker/rpc-server.ts) and
// the real pool and barriers, but no VMs. It serves `lab.barrier` and `lab.claim`, relays worker
// events onto the bus, and records what the runner did with sessions.

import { fileURLToPath } from 'node:url';
import type { BrokerOptions } from '../../src/broker/broker.js';
import { RpcChannel, type RpcHandlers } from '../../src/broker/rpc-server.js';
import type { RunDeps } from '../../src/run/controller.js';
import type { SessionBroker } from '../../src/run/dispatcher.js';
import { createWorkerPool } from '../../src/run/pool.js';

export class FakeBroker implements SessionBroker {
  readonly opened: string[] = [];
  readonly closed: number[] = [];
  closedBroker = false;
  private readonly _channels = new Map<number, RpcChannel>();
  private _next = 1;

  constructor(private readonly _opts: BrokerOptions) {}

  openSession(file: { path: string; displayPath: string }) {
    const sessionId = this._next++;
    const handlers = {
      'lab.barrier': async ({ name, count, timeoutMs }: { name: string; count: number; timeoutMs: number }) => {
        await this._opts.barriers.arrive(sessionId, file.displayPath, name, count, timeoutMs);
        return { released: true as const };
      },
      'lab.claim': async ({ memoryBytes, cpus }: { memoryBytes: number; cpus: number }) => {
        await this._opts.pool.claim(sessionId, file.displayPath, { memory_bytes: memoryBytes, cpus });
        return {};
      },
    } as unknown as RpcHandlers;
    const channel = new RpcChannel(handlers, (event) => this._opts.bus.emit(event.kind, event.payload as never));
    this._channels.set(sessionId, channel);
    this.opened.push(file.displayPath);
    return { sessionId, port: channel.workerPort, signalBuffer: channel.signalBuffer };
  }

  async consoleExcerpts(_sessionId: number): Promise<string> {
    return '--- fake ---\nconsole line 1\nconsole line 2\n';
  }

  async closeSession(sessionId: number): Promise<void> {
    const channel = this._channels.get(sessionId);
    if (!channel) return;
    this._channels.delete(sessionId);
    channel.close();
    this._opts.pool.releaseSession(sessionId);
    this._opts.barriers.sessionEnded(sessionId);
    this.closed.push(sessionId);
  }

  async close(): Promise<void> {
    this.closedBroker = true;
    await Promise.all([...this._channels.keys()].map((id) => this.closeSession(id)));
  }
}

export const kFakeWorkerFile = fileURLToPath(new URL('./run-fake-worker.js', import.meta.url));

/** Deps for runSuite/runCli with the fake broker and the fake worker on real piscina threads. */
export function fakeDeps(record: { brokers: FakeBroker[] } = { brokers: [] }, extra: Partial<RunDeps> = {}): RunDeps {
  return {
    createBroker: (opts) => {
      const broker = new FakeBroker(opts);
      record.brokers.push(broker);
      return broker;
    },
    createWorkerPool,
    workerFile: kFakeWorkerFile,
    handleSignals: false,
    host: () => ({ memoryBytes: 8 * 1024 ** 3, cpus: 4 }),
    ...extra,
  };
}
