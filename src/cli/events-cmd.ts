// `provium events FILE`: decodes a saved event stream (--save-events, or `-` for stdin, e.g.
// `provium --events-stdout | provium events -`) into one JSON object per line.

import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { eventToJsonLine, readEvents } from '../events/codec.js';
import { ExitCode } from '../run/outcome.js';

export async function eventsCommand(
  file: string,
  io: { stdin: Readable; stdout: Writable; stderr: Writable; cwd: string },
): Promise<number> {
  const source: Readable = file === '-' ? io.stdin : createReadStream(resolve(io.cwd, file));
  let count = 0;
  try {
    for await (const event of readEvents(source as AsyncIterable<Buffer>)) {
      io.stdout.write(`${eventToJsonLine(event)}\n`);
      count++;
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      io.stderr.write(`provium events: ${file}: no such file; write one with \`provium --save-events ${file}\`\n`);
      return ExitCode.usage;
    }
    io.stderr.write(`provium events: ${file}: ${e.message} (after ${count} event${count === 1 ? '' : 's'})\n`);
    return ExitCode.failed;
  }
  return ExitCode.ok;
}
