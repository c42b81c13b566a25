// The broker owns every external thing a run touches. Workers reach it only through their
// session's RPC channel; the runner opens a session per file and closes it when the file ends.

import type { MessagePort } from 'node:worker_threads';
import type { Profile } from '../config/profiles.js';
import type { EventBus } from '../events/bus.js';
import { killAllQemu } from '../vmm/qemu.js';
import type { Barriers } from './barriers.js';
import type { ResourcePool } from './resources.js';
import { BootCache } from './boot-cache.js';
import { Session } from './session.js';

export interface BrokerOptions {
  bus: EventBus;
  profiles: Record<string, Profile>;
  /** Profiles that exist but cannot be used, with the reason and its fix (e.g. an unbuilt image). */
  unavailableProfiles?: Record<string, string>;
  pool: ResourcePool;
  barriers: Barriers;
  cacheDir: string;
}

export class Broker {
  private readonly _sessions = new Map<number, Session>();
  private _nextSessionId = 1;
  private _closed: Promise<void> | undefined;
  private readonly _bootCache: BootCache;

  constructor(private readonly _opts: BrokerOptions) {
    this._bootCache = new BootCache(_opts.cacheDir);
  }

  /** One per file. Transfer `port` to the worker in the task, with `signalBuffer`. */
  openSession(file: { path: string; displayPath: string }): { sessionId: number; port: MessagePort; signalBuffer: SharedArrayBuffer } {
    if (this._closed) throw new Error('broker is closed');
    const session = new Session(this._nextSessionId++, file.path, file.displayPath, { ...this._opts, bootCache: this._bootCache });
    this._sessions.set(session.id, session);
    return { sessionId: session.id, port: session.channel.workerPort, signalBuffer: session.channel.signalBuffer };
  }

  /** The console tails of a session's VMs (for a file that failed outside any test). */
  consoleExcerpts(sessionId: number): Promise<string> {
    return this._sessions.get(sessionId)?.consoleExcerpts() ?? Promise.resolve('');
  }

  /** Tears down everything the file owns. Idempotent. */
  async closeSession(sessionId: number): Promise<void> {
    const session = this._sessions.get(sessionId);
    if (!session) return;
    await session.close();
    this._sessions.delete(sessionId);
  }

  /** Kills everything (Ctrl-C, end of run). Idempotent. */
  close(): Promise<void> {
    this._closed ??= (async () => {
      await Promise.all([...this._sessions.keys()].map((id) => this.closeSession(id)));
      killAllQemu();
    })();
    return this._closed;
  }
}
