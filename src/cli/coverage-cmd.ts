// `provium coverage [--from EVENTS|-] [--by KEY] [--json]` (reference §2.8, issue 14 item 6):
// test outcomes of a saved event stream grouped by a meta key. Exit 1 when a bucket has a failed
// test (so CI can gate on it), 2 when the stream cannot be read. `--coverage` on a run prints the
// same table from the run's own stream.

import type { Readable, Writable } from 'node:stream';
import { CoverageTable } from '../report/coverage.js';
import { ExitCode } from '../run/outcome.js';
import { forEachEvent } from './events-cmd.js';

export interface CoverageFlags {
  from?: string;
  by?: string;
  json?: boolean;
}

export async function coverageCommand(flags: CoverageFlags, io: { stdin: Readable; stdout: Writable; stderr: Writable; cwd: string }): Promise<number> {
  const table = new CoverageTable(flags.by ?? 'spec');
  const read = await forEachEvent('coverage', flags.from ?? '-', io, (event) => table.add(event.kind, event.payload));
  if (read !== ExitCode.ok) return read === ExitCode.failed ? ExitCode.usage : read;
  io.stdout.write(flags.json ? `${JSON.stringify(table.toJson())}\n` : table.render());
  return table.hasFailures ? ExitCode.failed : ExitCode.ok;
}
