// `provium fixture list|stale|build REF|rebuild REF|clean` and `provium list --fixtures`: the
// fixtures under the roots and their cache. A build runs exactly as one a test triggers: its own
// worker thread and broker session, the same key, lock and store.

import path from 'node:path';
import type { Writable } from 'node:stream';
import { Broker, sizePool, type FixtureStatus } from '../broker/broker.js';
import { kFixtureSuffix, type ProviumConfig } from '../config/config.js';
import { EventBus } from '../events/bus.js';
import type { TestSelection } from '../protocol/task.js';
import { formatDuration } from '../report/screen.js';
import { hostResources } from '../run/controller.js';
import { displayPathOf } from '../run/discovery.js';
import { fixtureBuilder } from '../run/fixture-builds.js';
import { ExitCode } from '../run/outcome.js';
import { createWorkerPool, defaultWorkerFile } from '../run/pool.js';

export type FixtureAction = 'list' | 'stale' | 'build' | 'rebuild' | 'clean';

const kNoSelection: TestSelection = { includeSlow: true, tags: [], noTags: [], tagMeta: [], noTagMeta: [] };

export async function fixtureCommand(
  action: FixtureAction,
  target: string | undefined,
  config: ProviumConfig,
  io: { stdout: Writable; stderr: Writable; cwd: string },
): Promise<number> {
  const bus = new EventBus();
  const host = hostResources();
  const broker = new Broker({
    bus,
    profiles: config.profiles,
    unavailableProfiles: config.unavailableProfiles,
    resources: sizePool({ memoryBytes: host.memoryBytes, cpus: host.cpus, cpuOvercommit: 4 }).total,
    cacheDir: config.cacheDir,
    cacheMaxBytes: config.cacheMaxSizeBytes,
    roots: config.roots,
    displayPathOf: (file) => displayPathOf(file, io.cwd),
  });
  broker.setFixtureBuilder(fixtureBuilder({ broker, createWorkerPool, workerFile: defaultWorkerFile(), roots: config.roots, selection: kNoSelection, timeoutMs: 0 }));
  bus.subscribe((e) => {
    if (e.kind === 'fixture_build_waiting') io.stderr.write(`waiting for ${e.payload.held_by_file}, which builds ${e.payload.path}\n`);
  });
  try {
    switch (action) {
      case 'list':
      case 'stale': {
        const all = await broker.fixtures.status();
        const shown = action === 'list' ? all : all.filter((f) => !f.entry);
        if (all.length === 0) io.stdout.write(`no fixtures (*${kFixtureSuffix}) under ${config.roots.join(', ') || 'the roots'}\n`);
        for (const f of shown) io.stdout.write(`${describe(f)}\n`);
        return action === 'stale' && shown.some((f) => f.error) ? ExitCode.failed : ExitCode.ok;
      }
      case 'clean':
        await broker.fixtures.clean();
        io.stdout.write(`fixture cache emptied (${path.join(config.cacheDir, 'fixtures')})\n`);
        return ExitCode.ok;
      case 'build':
      case 'rebuild': {
        const ref = refOf(target!, config.roots, io.cwd);
        const started = performance.now();
        const { entry, built } = await broker.fixtures.ensure(ref, 'provium fixture build', { rebuild: action === 'rebuild' });
        io.stdout.write(built ? `fixture ${ref}: built in ${formatDuration(performance.now() - started)}, ${mib(entry.storedBytes)} stored\n` : `fixture ${ref}: up to date (${mib(entry.storedBytes)} stored)\n`);
        return ExitCode.ok;
      }
    }
  } catch (err) {
    io.stderr.write(`provium fixture ${action}: ${(err as Error).message}\n`);
    return ExitCode.failed;
  } finally {
    await broker.close();
  }
}

function describe(f: FixtureStatus): string {
  if (f.error) return `${f.ref}  error: ${f.error}`;
  if (f.entry) {
    const ago = formatDuration(Date.now() - f.entry.lastUsedMs);
    return `${f.ref}  cached  ${mib(f.entry.storedBytes)}  used ${ago} ago  key ${f.key!.slice(0, 12)}  (${f.display})`;
  }
  const why = f.changed.length > 0 ? `changed since the last build: ${f.changed.join(', ')}` : 'not built with these inputs';
  return `${f.ref}  not built  ${why}  (${f.display})`;
}

/** A ref as given (`db/warm`), or a fixture file's path under one of the roots. */
function refOf(target: string, roots: string[], cwd: string): string {
  if (!target.endsWith(kFixtureSuffix)) return target;
  const file = path.resolve(cwd, target);
  for (const root of roots) {
    const rel = path.relative(root, file);
    if (!rel.startsWith('..') && !path.isAbsolute(rel)) return rel.split(path.sep).join('/').slice(0, -kFixtureSuffix.length);
  }
  return target;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
