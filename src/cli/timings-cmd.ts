// `provium timings merge OUT IN...`: one record from the --save-timings files of a sharded run,
// so the next run (with --timings OUT) balances every shard by durations from all of them.

import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { combineTimings, readTimings, writeTimings, type TimingRecord } from '../run/timings.js';
import { ExitCode } from '../run/outcome.js';

export async function timingsMergeCommand(out: string, inputs: string[], io: { stdout: Writable; stderr: Writable; cwd: string }): Promise<number> {
  const records: TimingRecord[] = [];
  for (const input of inputs) {
    const problems: string[] = [];
    const record = await readTimings(resolve(io.cwd, input), (m) => problems.push(m));
    if (!record) {
      io.stderr.write(`provium timings merge: ${input}: ${problems[0] ?? 'no such file'}; pass files written with --save-timings\n`);
      return ExitCode.usage;
    }
    records.push(record);
  }
  const merged = combineTimings(records);
  await writeTimings(resolve(io.cwd, out), merged);
  io.stdout.write(`provium timings merge: ${Object.keys(merged.files).length} file(s) from ${inputs.length} record(s) into ${out}\n`);
  return ExitCode.ok;
}
