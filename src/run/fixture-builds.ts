// Fixture builds, as the broker asks for them (src/broker/fixtures.ts): the fixture file runs in a
// worker thread of its own (a one-thread pool per build, so a build never waits for a test slot:
// the file that asked holds one, blocked on the answer, and a fixture may use another fixture),
// in a broker session whose `fixture.built` puts the returned snapshot into the build's directory.

import type { FixtureBuilder } from '../broker/broker.js';
import type { FatalError, TestSelection } from '../protocol/task.js';
import type { SessionBroker, WorkerPool } from './dispatcher.js';

export interface FixtureBuildOptions {
  broker: Pick<SessionBroker, 'openSession' | 'drainSession' | 'closeSession'>;
  createWorkerPool(opts: { threads: number; workerFile: string }): WorkerPool;
  workerFile: string;
  roots: string[];
  selection: TestSelection;
  /** The per-file limit applies to a build too; 0 disables. */
  timeoutMs: number;
}

export function fixtureBuilder(opts: FixtureBuildOptions): FixtureBuilder {
  return async ({ file, displayPath, outDir }) => {
    const fatal: FatalError[] = [];
    const session = opts.broker.openSession({ path: file, displayPath, fixtureOut: outDir }, (report) => {
      if (report.type === 'file_done') fatal.push(...report.fatalErrors);
    });
    const pool = opts.createWorkerPool({ threads: 1, workerFile: opts.workerFile });
    const abort = new AbortController();
    const timer = opts.timeoutMs > 0 ? setTimeout(() => abort.abort(), opts.timeoutMs) : undefined;
    try {
      await pool.run(
        {
          file,
          displayPath,
          roots: opts.roots,
          selection: opts.selection,
          retries: 0,
          listOnly: false,
          fixture: true,
          port: session.port,
          signalBuffer: session.signalBuffer,
        },
        { transferList: [session.port], signal: abort.signal },
      );
    } catch (err) {
      fatal.push({ message: abort.signal.aborted ? `the build timed out after ${opts.timeoutMs / 1000}s (--timeout)` : `its worker crashed: ${(err as Error).message}` });
    } finally {
      if (timer) clearTimeout(timer);
      opts.broker.drainSession(session.sessionId);
      await opts.broker.closeSession(session.sessionId).catch(() => undefined);
      await pool.destroy().catch(() => undefined);
    }
    if (fatal.length > 0) {
      throw new Error(fatal.map((e) => (e.location && !e.message.startsWith(`${e.location.file}:`) ? `${e.location.file}:${e.location.line}: ${e.message}` : e.message)).join('\n'));
    }
  };
}
