// The broker owns every external thing a run touches: VMs, the resource pool, the barriers.
// This file is its public interface: the runner opens a session per file, hands the session's
// port to the worker, and closes the session when the file ends; it reaches the pool and the
// barriers only through the methods here.

import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { MessagePort } from 'node:worker_threads';
import type { Profile } from '../config/profiles.js';
import type { EventBus } from '../events/bus.js';
import type { ResourceAmount } from '../protocol/events.js';
import type { FileReport } from '../protocol/task.js';
import { Barriers, type SchedulerView } from './barriers.js';
import { BootCache } from './boot-cache.js';
import { ResourcePool } from './resources.js';
import { Fixtures, type FixtureBuilder } from './fixtures.js';
import { Session } from './session.js';
import { kWarmKeys, WarmPool } from './warm-pool.js';
import { parkedClosed } from './parked.js';
import type { LaunchSpec } from '../vmm/cmdline.js';
import { qemuBinary } from '../vmm/paths.js';
import { startProcessLauncher } from '../vmm/process-launcher.js';

export { sizePool, type PoolSizing } from './resources.js';
export type { SchedulerView } from './barriers.js';
export type { FixtureBuilder, FixtureBuildRequest, FixtureStatus, Fixtures } from './fixtures.js';

/** `cache_max_size`'s default, when the runner gives none. */
const kDefaultFixtureCacheBytes = 20 * 1024 ** 3;

export interface BrokerOptions {
  bus: EventBus;
  profiles: Record<string, Profile>;
  /** Profiles that exist but cannot be used, with the reason and its fix (e.g. an unbuilt image). */
  unavailableProfiles?: Record<string, string>;
  /** The resource pool's whole budget (sizePool's `total`). */
  resources: ResourceAmount;
  cacheDir: string;
  /** The fixture cache's budget (`cache_max_size`); least-used entries are evicted past it. */
  cacheMaxBytes?: number;
  /** Absolute test roots: where fixtures are found. */
  roots?: string[];
  /** How reports show a path; defaults to relative to the cwd. */
  displayPathOf?: (file: string) => string;
  /** Keep restored spares running for the next boots (default true; --no-warm-pool). */
  warmPool?: boolean;
  /** The run's seed for every random fault decision (network drops, jitter); printed so `--seed` replays it. */
  seed?: bigint;
  /** One line for the user about the cache (a corrupt boot snapshot removed, one not saved); default process.emitWarning. */
  warn?: (message: string) => void;
}

/** A file's session as the runner holds it. */
export interface OpenedSession {
  sessionId: number;
  /** Transfer to the worker in the task, with `signalBuffer`. */
  port: MessagePort;
  signalBuffer: SharedArrayBuffer;
}

export class Broker {
  private readonly _sessions = new Map<number, Session>();
  private _nextSessionId = 1;
  private _closed: Promise<void> | undefined;
  private readonly _bootCache: BootCache;
  private readonly _pool: ResourcePool;
  private readonly _barriers = new Barriers();
  private readonly _fixtures: Fixtures;
  private readonly _warm: WarmPool;
  private _scheduler: SchedulerView = { slots: 1, queued: () => 0 };
  private _subnets = 0;
  /** The run's seed (given, or drawn at random). */
  readonly seed: bigint;

  constructor(private readonly _opts: BrokerOptions) {
    startProcessLauncher();
    this._bootCache = new BootCache(_opts.cacheDir, _opts.warn);
    this._pool = new ResourcePool(_opts.resources, _opts.bus);
    this.seed = _opts.seed ?? randomBytes(8).readBigUInt64BE();
    this._warm = new WarmPool({
      pool: this._pool,
      bootCache: this._bootCache,
      enabled: _opts.warmPool ?? true,
      demand: () => ({ queued: this._scheduler.queued(), slots: this._scheduler.slots }),
    });
    this._pool.setReclaimer(() => this._warm.reclaim());
    this._fixtures = new Fixtures({
      bus: _opts.bus,
      cacheDir: _opts.cacheDir,
      cacheMaxBytes: _opts.cacheMaxBytes ?? kDefaultFixtureCacheBytes,
      roots: _opts.roots ?? [],
      profiles: _opts.profiles,
      displayPathOf: _opts.displayPathOf ?? ((file) => path.relative(process.cwd(), file) || file),
    });
  }

  /** The fixtures of the roots and their cache (`provium fixture …`). */
  get fixtures(): Fixtures {
    return this._fixtures;
  }

  /** Runs fixture builds (the runner's, in a worker thread of their own). */
  setFixtureBuilder(builder: FixtureBuilder): void {
    this._fixtures.setBuilder(builder);
  }

  /**
   * One per file, announced to the barriers at once (the caller dequeued the file in the same
   * step, so they never see a file that is neither queued nor running). `onReport` receives the
   * file's results: the session port is its one result channel.
   */
  openSession(file: { path: string; displayPath: string; fixtureOut?: string }, onReport: (report: FileReport) => void): OpenedSession {
    if (this._closed) throw new Error('broker is closed');
    const deps = {
      bus: this._opts.bus,
      profiles: this._opts.profiles,
      unavailableProfiles: this._opts.unavailableProfiles ?? {},
      pool: this._pool,
      barriers: this._barriers,
      bootCache: this._bootCache,
      seed: this.seed,
      nextSubnetIndex: () => this._subnets++,
      fixtures: this._fixtures,
      warm: this._warm,
      ...(file.fixtureOut !== undefined ? { fixtureOut: file.fixtureOut } : {}),
    };
    const session = new Session(this._nextSessionId++, file.path, file.displayPath, deps, onReport);
    this._sessions.set(session.id, session);
    this._barriers.sessionStarted(session.id, file.displayPath);
    return { sessionId: session.id, port: session.channel.workerPort, signalBuffer: session.channel.signalBuffer };
  }

  /**
   * Before dispatch: spares for the plain boot (`provium:vm(name, profile):boot()`) of the
   * profiles the queued files name, most used first, when its boot snapshot is there. A boot with
   * other options has another key: the pool learns it from that boot.
   */
  async prewarm(profileNames: string[]): Promise<void> {
    if (!this._warm.enabled) return;
    const chosen = profileNames.filter((name) => this._opts.profiles[name]).slice(0, kWarmKeys);
    // keep() favours the key it saw last: the most used goes last.
    for (const name of chosen.reverse()) {
      const profile = this._opts.profiles[name]!;
      const launch: LaunchSpec = { name: `${name}-spare`, profile, memoryBytes: profile.memoryBytes, cpus: profile.cpus };
      const key = await this._bootCache.key(launch, qemuBinary()).catch(() => undefined);
      if (!key || !(await this._bootCache.lookup(key))) continue;
      this._warm.keep(key, profile, (spare) => spare.bootSpare(launch, key, profile.agentTimeoutMs));
    }
  }

  /**
   * Before dispatch: reserves the file's literal lab:claim, waiting (file_blocked) while the pool
   * is full. Rejects when it can never fit (the file's own lab:claim then says why) or on abort.
   */
  reserve(sessionId: number, amount: ResourceAmount, signal?: AbortSignal): Promise<void> {
    const session = this._sessions.get(sessionId);
    if (!session) return Promise.reject(new Error(`no session ${sessionId}`));
    return this._pool.reserve(sessionId, session.displayPath, amount, signal);
  }

  /** The file was handed to its worker: later waits for room are its own (resource_wait). */
  dispatched(sessionId: number): void {
    const session = this._sessions.get(sessionId);
    if (session) this._pool.dispatched(sessionId, session.displayPath);
  }

  /** Delivers the reports the session's worker posted and the event loop has not yet. */
  drainSession(sessionId: number): void {
    this._sessions.get(sessionId)?.channel.drain();
  }

  /** The console tails of a session's VMs (for a file that failed outside any test). */
  consoleExcerpts(sessionId: number): Promise<string> {
    return this._sessions.get(sessionId)?.consoleExcerpts() ?? Promise.resolve('');
  }

  /** Tears down everything the file owns (VMs, streams, claims, barrier waits). Idempotent. */
  async closeSession(sessionId: number): Promise<void> {
    const session = this._sessions.get(sessionId);
    if (!session) return;
    await session.close();
    this._sessions.delete(sessionId);
  }

  /** What the scheduler still plans to run, for the barriers' never-fill checks. */
  setScheduler(view: SchedulerView): void {
    this._scheduler = view;
    this._barriers.setScheduler(view);
  }

  /** Names of the barriers files wait at now (the dispatcher starts files that name them first). */
  waitingBarriers(): string[] {
    return this._barriers.waiting().map((b) => b.name);
  }

  /** The scheduler's plan shrank (it stopped dispatching): barriers re-check. */
  scheduleChanged(): void {
    this._barriers.scheduleChanged();
  }

  /** The resource pool's use, for `pool_state`. */
  poolState(): { used: ResourceAmount; available: ResourceAmount } {
    return this._pool.state();
  }

  /**
   * Tears down every session (Ctrl-C, end of run). Idempotent. Only this broker's VMs: a QEMU
   * that escaped its session is still killed at process exit (src/vmm/qemu.ts).
   */
  close(): Promise<void> {
    this._closed ??= (async () => {
      await this._warm.close();
      await Promise.all([...this._sessions.keys()].map((id) => this.closeSession(id)));
      await this._fixtures.close();
      await parkedClosed();
    })();
    return this._closed;
  }
}
