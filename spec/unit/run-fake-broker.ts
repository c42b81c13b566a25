// The runner's unit tests use the real broker (its sessions, RPC channels, pool and barriers):
// the fake worker only makes `lab.barrier` and `lab.claim` calls, so no VM ever boots. This
// subclass records what the runner did with sessions.

import { fileURLToPath } from 'node:url';
import { Broker, type BrokerOptions } from '../../src/broker/broker.js';
import type { FileReport } from '../../src/protocol/task.js';
import { createReporters } from '../../src/report/outputs.js';
import type { RunDeps } from '../../src/run/controller.js';
import { createWorkerPool } from '../../src/run/pool.js';

export class RecordingBroker extends Broker {
  readonly opened: string[] = [];
  readonly closed: number[] = [];
  closedBroker = false;

  constructor(opts: BrokerOptions) {
    super(opts);
  }

  override openSession(file: { path: string; displayPath: string }, onReport: (report: FileReport) => void) {
    const session = super.openSession(file, onReport);
    this.opened.push(file.displayPath);
    return session;
  }

  override async closeSession(sessionId: number): Promise<void> {
    if (!this.closed.includes(sessionId)) this.closed.push(sessionId);
    await super.closeSession(sessionId);
  }

  /** No VM boots here; a file that times out still gets a console excerpt to show. */
  override async consoleExcerpts(_sessionId: number): Promise<string> {
    return '--- fake ---\nconsole line 1\nconsole line 2\n';
  }

  override async close(): Promise<void> {
    this.closedBroker = true;
    await super.close();
  }
}

export type FakeBroker = RecordingBroker;

export const kFakeWorkerFile = fileURLToPath(new URL('./run-fake-worker.js', import.meta.url));

/** Deps for runSuite/runCli with the real broker and the fake worker on real piscina threads. */
export function fakeDeps(record: { brokers: RecordingBroker[] } = { brokers: [] }, extra: Partial<RunDeps> = {}): RunDeps {
  return {
    createBroker: (opts) => {
      const broker = new RecordingBroker(opts);
      record.brokers.push(broker);
      return broker;
    },
    createWorkerPool,
    createReporters,
    workerFile: kFakeWorkerFile,
    handleSignals: false,
    host: () => ({ memoryBytes: 8 * 1024 ** 3, cpus: 4 }),
    ...extra,
  };
}
