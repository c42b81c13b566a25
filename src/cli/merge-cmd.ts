// `provium merge OUT_DIR SHARD_EVENTS...`: the event streams of a sharded run's jobs (each saved
// with --save-events) become one set of reports in OUT_DIR: junit.xml, results.json (the --json
// lines and one summary record), timings.json (for the next run's --timings) and index.html.
// Every shard must be there exactly once: a missing or duplicated shard, a stream cut short, or a
// file run by two shards is reported, and the merge exits 2 (the reports are still written, so
// the jobs that did run can be read). Otherwise it exits as the run would have: 1 on a failure.

import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { readEvents } from '../events/codec.js';
import type { AnyEvent } from '../protocol/events.js';
import { writeHtmlReport } from '../report/html.js';
import { fileToJson, jsonLine, summaryToJson } from '../report/json.js';
import { renderJunit } from '../report/junit.js';
import { replayRun, type ReplayedRun } from '../report/replay.js';
import { writeFileAtomic } from '../run/atomic-write.js';
import { countsLine, ExitCode, summarize, type FileOutcome } from '../run/outcome.js';
import { ReportWriteError } from '../run/reporter.js';
import { mergeTimings, readTimings, writeTimings } from '../run/timings.js';

interface Shard {
  input: string;
  events: AnyEvent[];
  run: ReplayedRun;
}

/** Decoded frames as the bus emitted them: ts and wide integers back to numbers. */
function plain(value: unknown): unknown {
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

async function readShard(input: string, cwd: string): Promise<Shard> {
  const events: AnyEvent[] = [];
  try {
    for await (const e of readEvents(createReadStream(resolve(cwd, input)))) {
      events.push({ ts: Number(e.ts), kind: e.kind, payload: plain(e.payload) } as AnyEvent);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new Error(`${input}: no such file; pass the files each shard wrote with --save-events`);
    throw new Error(`${input}: ${e.message} (after ${events.length} events); the shard's job may have been killed while writing it`);
  }
  return { input, events, run: replayRun(events) };
}

/** What is wrong with the set of shards (missing, duplicated, mixed counts, files run twice). */
export function shardProblems(shards: Shard[]): string[] {
  const problems: string[] = [];
  for (const s of shards) {
    if (s.events.length === 0 || !s.events.some((e) => e.kind === 'run_started')) problems.push(`${s.input}: no run_started event; is it a --save-events file of a run?`);
    else if (!s.run.finished) problems.push(`${s.input}: the stream ends before run_finished; that shard's job stopped early and its results are incomplete`);
  }
  const sharded = shards.filter((s) => s.run.shard);
  if (sharded.length > 0 && sharded.length < shards.length) {
    problems.push(`${shards.filter((s) => !s.run.shard).map((s) => s.input).join(', ')}: not a sharded run (no --shard); merge the streams of one sharded run`);
  }
  const counts = [...new Set(sharded.map((s) => s.run.shard!.count))];
  if (counts.length > 1) problems.push(`the streams come from runs with different shard counts (${counts.join(', ')}); merge the shards of one run`);
  const count = counts[0];
  if (count !== undefined && counts.length === 1) {
    const byIndex = new Map<number, string[]>();
    for (const s of sharded) byIndex.set(s.run.shard!.index, [...(byIndex.get(s.run.shard!.index) ?? []), s.input]);
    for (let i = 1; i <= count; i++) {
      const inputs = byIndex.get(i);
      if (!inputs) problems.push(`shard ${i}/${count} is missing: pass the --save-events file of every shard`);
      else if (inputs.length > 1) problems.push(`shard ${i}/${count} is given ${inputs.length} times (${inputs.join(', ')}); only the first is used`);
    }
  }
  const ranBy = new Map<string, string>();
  for (const s of shards) {
    for (const o of s.run.outcomes) {
      const other = ranBy.get(o.file.displayPath);
      if (other && other !== s.input) problems.push(`${o.file.displayPath} ran in two shards (${other} and ${s.input}); did the shards use different timing records?`);
      ranBy.set(o.file.displayPath, s.input);
    }
  }
  return problems;
}

export async function mergeCommand(
  outDir: string,
  inputs: string[],
  opts: { timings?: string },
  io: { stdout: Writable; stderr: Writable; cwd: string },
): Promise<number> {
  const say = (m: string): void => void io.stderr.write(`provium merge: ${m}\n`);
  // 1. Read every stream.
  const shards: Shard[] = [];
  for (const input of inputs) {
    try {
      shards.push(await readShard(input, io.cwd));
    } catch (err) {
      say((err as Error).message);
      return ExitCode.usage;
    }
  }
  // 2. Check the set; a duplicate's second copy is left out so nothing counts twice.
  const problems = shardProblems(shards);
  const seen = new Set<string>();
  const used = shards.filter((s) => {
    if (!s.run.shard) return true;
    const key = `${s.run.shard.index}/${s.run.shard.count}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  used.sort((a, b) => (a.run.shard?.index ?? 0) - (b.run.shard?.index ?? 0));

  // 3. One run from all of them: shards ran side by side, so the wall time is the longest one.
  const outcomes: FileOutcome[] = used.flatMap((s) => s.run.outcomes);
  const planned = used.flatMap((s) => s.run.planned);
  const summary = summarize(outcomes, {
    plannedFiles: planned.length,
    wallMs: Math.max(0, ...used.map((s) => s.run.wallMs)),
    interrupted: used.some((s) => s.run.interrupted),
    failFastStopped: false,
  });
  const startedAt = Math.min(...used.map((s) => s.run.startedAt));
  const count = used[0]?.run.shard?.count;
  const seeds = [...new Set(used.map((s) => s.run.seed))];
  const run = { shard: null, seed: seeds.join(',') };

  // 4. The reports.
  const dir = resolve(io.cwd, outDir);
  try {
    const junit = resolve(dir, 'junit.xml');
    await writeFileAtomic(junit, renderJunit(outcomes, { startedAt, wallMs: summary.wallMs, planned })).catch((err: unknown) => Promise.reject(new ReportWriteError('merge', junit, err)));
    const json = resolve(dir, 'results.json');
    const lines = outcomes.map((o) => jsonLine(fileToJson(o))).join('') + jsonLine({ ...summaryToJson(summary, run), shards: used.length, shard_count: count ?? null });
    await writeFileAtomic(json, lines).catch((err: unknown) => Promise.reject(new ReportWriteError('merge', json, err)));
    const durations = new Map<string, number>();
    for (const o of outcomes) if (o.status !== 'crashed' && o.status !== 'interrupted') durations.set(o.file.key, o.durationMs);
    const base = opts.timings ? await readTimings(resolve(io.cwd, opts.timings), say) : null;
    const timings = resolve(dir, 'timings.json');
    await writeTimings(timings, mergeTimings(base, durations)).catch((err: unknown) => Promise.reject(new ReportWriteError('merge', timings, err)));
    const facts = [`${used.length} event stream${used.length === 1 ? '' : 's'} merged${count ? ` (${count} shards)` : ''}`, `seed ${run.seed}`];
    await writeHtmlReport(dir, {
      summary,
      outcomes,
      planned,
      streams: used.map((s) => ({ label: s.run.shard ? `shard ${s.run.shard.index}/${s.run.shard.count}` : null, events: s.events })),
      facts,
    }, 'merge');
  } catch (err) {
    say((err as Error).message);
    return ExitCode.usage;
  }

  // 5. Say what came of it; problems first, and they decide the exit code.
  for (const p of problems) say(p);
  io.stdout.write(
    `provium merge: ${used.length} stream${used.length === 1 ? '' : 's'}, ${summary.files} files into ${outDir} (junit.xml, results.json, timings.json, index.html)\n` +
      `${countsLine(summary)}\n`,
  );
  return problems.length > 0 ? ExitCode.usage : summary.exitCode;
}
