// Fixtures (reference §3.3, DESIGN §4): a `*.fixture.lua` builds guests once and returns their
// snapshot; every file that uses it gets a restored copy. Every entry is a lab snapshot directory
// (a vm fixture is a lab of one VM), so one restore path serves both kinds. The key
// (fixture-key.ts) covers everything the build depends on; the store (fixture-cache.ts) keeps
// entries compressed, locked across processes while one builds, and evicts the least used.
// Builds run in a worker thread of their own, which the runner provides (setBuilder): the file
// that asked is blocked in its own thread meanwhile, and a fixture may use other fixtures.

import { mkdtemp, rm } from 'node:fs/promises';
import fg from 'fast-glob';
import os from 'node:os';
import path from 'node:path';
import { kFixtureSuffix } from '../config/config.js';
import type { Profile } from '../config/profiles.js';
import type { EventBus } from '../events/bus.js';
import { EVENTS_PROTOCOL_VERSION } from '../protocol/events.js';
import { PROTOCOL_VERSION } from '../protocol/agent.js';
import type { LabSnapshotManifest } from '../protocol/rpc.js';
import { kSnapshotFormat } from '../vmm/guest-ram.js';
import { agentOverlayPath } from '../vmm/qemu.js';
import { qemuBinaryPath } from '../vmm/paths.js';
import { FixtureCache, FixtureCorruptError, type FixtureEntry } from './fixture-cache.js';
import { contentHash, keepHashesIn } from '../vmm/file-hash.js';
import { fixtureKey, type FixtureKey } from './fixture-key.js';
import { BrokerError } from './rpc-server.js';
import { readLabManifest } from './snapshot-files.js';

/** A fixture as `provium fixture list` shows it. */
export interface FixtureStatus {
  ref: string;
  display: string;
  key?: string;
  /** The cached entry of the current key; absent: the next use builds it. */
  entry?: FixtureEntry;
  /** Without an entry: which inputs differ from the newest entry built for this ref. */
  changed: string[];
  /** Why its key cannot be computed (a missing dependency, a cycle). */
  error?: string;
}

/** One build: run `file` as a fixture, whose session writes the snapshot into `outDir`. */
export interface FixtureBuildRequest {
  ref: string;
  file: string;
  displayPath: string;
  outDir: string;
}

/** Runs a build; rejects with the builder's errors (file:line) when it fails. */
export type FixtureBuilder = (request: FixtureBuildRequest) => Promise<void>;

export interface FixturesOptions {
  bus: EventBus;
  cacheDir: string;
  cacheMaxBytes: number;
  /** Absolute test roots, in order. */
  roots: string[];
  profiles: Record<string, Profile>;
  /** How reports show a path (relative to the run's cwd). */
  displayPathOf: (file: string) => string;
}

/** The content hashes of large key inputs (kernels, QEMU), remembered across runs (fixture-key.ts). */
const kContentHashesFile = 'content-hashes.json';

export class Fixtures {
  private readonly _cache: FixtureCache;
  private _builder: FixtureBuilder | undefined;
  private _extra: Promise<string[]> | undefined;
  /** Each entry this run restores from, extracted once, by key. */
  private readonly _extracted = new Map<string, Promise<string>>();
  /** Builds that failed in this run, by key: later users fail at once with the same error. */
  private readonly _failed = new Map<string, string>();

  constructor(private readonly _opts: FixturesOptions) {
    this._cache = new FixtureCache({ dir: path.join(_opts.cacheDir, 'fixtures'), maxBytes: _opts.cacheMaxBytes });
    keepHashesIn(path.join(_opts.cacheDir, kContentHashesFile));
  }

  displayPathOf(file: string): string {
    return this._opts.displayPathOf(file);
  }

  setBuilder(builder: FixtureBuilder): void {
    this._builder = builder;
  }

  /** The cache entry of `ref`, built when there is none (`rebuild`: built again regardless). */
  async ensure(ref: string, requestedBy: string, opts: { rebuild?: boolean } = {}): Promise<{ entry: FixtureEntry; key: FixtureKey; built: boolean }> {
    const key = await this._key(ref);
    if (opts.rebuild) await this._cache.remove(key.key);
    const before = await this._lookup(key);
    const entry = before ?? (await this._entry(key, requestedBy));
    return { entry, key, built: before === undefined };
  }

  /**
   * Every `*.fixture.lua` under the roots (the first root wins a ref), with its cache entry when
   * the current key has one, and otherwise what changed since the newest entry built for it.
   */
  async status(): Promise<FixtureStatus[]> {
    const refs = new Map<string, string>();
    for (const root of this._opts.roots) {
      for (const rel of await fg(`**/*${kFixtureSuffix}`, { cwd: root, ignore: ['**/node_modules/**'] })) {
        const ref = rel.slice(0, -kFixtureSuffix.length);
        if (!refs.has(ref)) refs.set(ref, path.join(root, rel));
      }
    }
    const entries = await this._cache.list();
    const out: FixtureStatus[] = [];
    for (const [ref, file] of [...refs].sort(([a], [b]) => a.localeCompare(b))) {
      const display = this._opts.displayPathOf(file);
      let key: FixtureKey;
      try {
        key = await this._key(ref);
      } catch (err) {
        out.push({ ref, display, error: (err as Error).message, changed: [] });
        continue;
      }
      const entry = entries.find((e) => e.key === key.key);
      if (entry) {
        out.push({ ref, display, key: key.key, entry, changed: [] });
        continue;
      }
      const previous = entries.filter((e) => e.meta['path'] === ref).sort((a, b) => b.createdMs - a.createdMs)[0];
      const before = previous?.meta['parts'] as string[] | undefined;
      const changed = before ? key.parts.filter((p) => !before.includes(p)).map((p) => p.split('=')[0]!) : [];
      out.push({ ref, display, key: key.key, changed: [...new Set(changed)] });
    }
    return out;
  }

  /** Removes every fixture entry. */
  clean(): Promise<void> {
    return this._cache.clean();
  }

  /**
   * The fixture `ref`, built if no valid entry exists, as a lab snapshot directory to restore
   * from. One extraction per entry serves the whole run: restores only read it. `requestedBy` (a
   * file's display path) is shown to other builders who wait.
   */
  async materialize(ref: string, requestedBy: string): Promise<{ dir: string; manifest: LabSnapshotManifest; key: FixtureKey }> {
    const key = await this._key(ref);
    let extracted = this._extracted.get(key.key);
    if (!extracted) {
      extracted = this._extract(key, requestedBy);
      this._extracted.set(key.key, extracted);
      // A failed extraction is not kept: the next user tries again.
      extracted.catch(() => this._extracted.delete(key.key));
    }
    const dir = await extracted;
    return { dir, manifest: await readLabManifest(dir), key };
  }

  /** Removes this run's extracted entries. */
  async close(): Promise<void> {
    const dirs = await Promise.all([...this._extracted.values()].map((p) => p.catch(() => undefined)));
    this._extracted.clear();
    await Promise.all(dirs.map((d) => (d ? rm(d, { recursive: true, force: true }) : undefined)));
  }

  private async _extract(key: FixtureKey, requestedBy: string): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      const entry = await this._entry(key, requestedBy);
      const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-fixture-'));
      try {
        await this._cache.extract(entry, dir);
        return dir;
      } catch (err) {
        await rm(dir, { recursive: true, force: true });
        // A corrupt entry is gone now (the cache removed it): build it again, once.
        if (err instanceof FixtureCorruptError && attempt === 0) {
          process.emitWarning(`fixture \`${key.ref}\`: ${err.message}; rebuilding it`);
          continue;
        }
        throw err;
      }
    }
  }

  private async _key(ref: string): Promise<FixtureKey> {
    try {
      return await fixtureKey(ref, { roots: this._opts.roots, profiles: this._opts.profiles, extra: await this._keyExtra() });
    } catch (err) {
      throw new BrokerError((err as Error).message);
    }
  }

  /** What every key holds besides the fixture's own inputs: the protocols, QEMU and the agent. */
  private _keyExtra(): Promise<string[]> {
    this._extra ??= (async () => {
      const overlay = await agentOverlayPath('fixtures').catch(() => undefined);
      return [
        `protocol=${PROTOCOL_VERSION}`,
        `events=${EVENTS_PROTOCOL_VERSION}`,
        `snapshot-format=${kSnapshotFormat}`,
        `qemu=${await contentHash(await qemuBinaryPath())}`,
        `agent=${overlay ? await contentHash(overlay) : 'none'}`,
      ];
    })();
    return this._extra;
  }

  /** The installed entry of `key`, building it under the cross-process lock when there is none. */
  private async _entry(key: FixtureKey, requestedBy: string): Promise<FixtureEntry> {
    const failed = this._failed.get(key.key);
    if (failed !== undefined) throw new BrokerError(failed);
    const found = await this._lookup(key);
    if (found) {
      return found;
    }
    const display = this._opts.displayPathOf(key.file);
    const release = await this._cache.lock(key.key, {
      holder: requestedBy,
      onWait: (heldBy) => this._opts.bus.emit('fixture_build_waiting', { path: display, held_by_file: heldBy.holder }),
    });
    try {
      // Another builder may have finished while we waited.
      const built = await this._lookup(key);
      if (built) return built;
      return await this._build(key, display);
    } finally {
      await release();
    }
  }

  private async _lookup(key: FixtureKey): Promise<FixtureEntry | undefined> {
    const found = await this._cache.lookup(key.key);
    if (found && 'corrupt' in found) {
      process.emitWarning(`fixture \`${key.ref}\`: its cache entry was corrupt (${found.corrupt}); rebuilding it`);
      return undefined;
    }
    return found;
  }

  private async _build(key: FixtureKey, display: string): Promise<FixtureEntry> {
    if (!this._builder) throw new BrokerError(`fixture \`${key.ref}\` is not built and nothing here can build it (no fixture builder in this run)`);
    const bus = this._opts.bus;
    bus.emit('fixture_build_started', { path: display });
    const started = performance.now();
    const outDir = await mkdtemp(path.join(os.tmpdir(), 'provium-fixture-'));
    let bytes = 0;
    try {
      try {
        await this._builder({ ref: key.ref, file: key.file, displayPath: display, outDir });
        // The build session wrote lab.json last: without it the builder returned no snapshot.
        await readLabManifest(outDir);
      } catch (err) {
        const message = `fixture \`${key.ref}\` (${display}) failed to build: ${(err as Error).message}`;
        this._failed.set(key.key, message);
        throw new BrokerError(message);
      }
      const entry = await this._cache.install(key.key, outDir, { path: key.ref, file: display, built_ms: Math.round(performance.now() - started), parts: key.parts });
      bytes = entry.bytes;
      return entry;
    } finally {
      // Build events come in pairs; a failed build has no snapshot bytes.
      bus.emit('fixture_build_done', { path: display, duration_ns: Math.round((performance.now() - started) * 1e6), snapshot_bytes: bytes });
      await rm(outDir, { recursive: true, force: true });
    }
  }
}
