// `provium events FILE`: decodes a saved event stream (--save-events, or `-` for stdin, e.g.
// `provium --events-stdout | provium events -`) into one JSON object per line.

import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { eventToJsonLine, readEvents, type DecodedEvent } from '../events/codec.js';
import { ExitCode } from '../run/outcome.js';

interface EventsIO {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  cwd: string;
}

/**
 * Calls `fn` for each event of FILE (or stdin for `-`). Returns an exit code: ok, usage for a
 * missing file, failed for a stream that breaks off (the events before it were delivered).
 */
export async function forEachEvent(command: string, file: string, io: EventsIO, fn: (event: DecodedEvent) => void): Promise<number> {
  const source: Readable = file === '-' ? io.stdin : createReadStream(resolve(io.cwd, file));
  let count = 0;
  try {
    for await (const event of readEvents(source as AsyncIterable<Buffer>)) {
      fn(event);
      count++;
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      io.stderr.write(`provium ${command}: ${file}: no such file; write one with \`provium --save-events ${file}\`\n`);
      return ExitCode.usage;
    }
    io.stderr.write(`provium ${command}: ${file}: ${e.message} (after ${count} event${count === 1 ? '' : 's'})\n`);
    return ExitCode.failed;
  }
  return ExitCode.ok;
}

export function eventsCommand(file: string, io: EventsIO): Promise<number> {
  return forEachEvent('events', file, io, (event) => io.stdout.write(`${eventToJsonLine(event)}\n`));
}
