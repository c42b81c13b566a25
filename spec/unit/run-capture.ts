// Test helpers: a writable that records what was written (optionally pretending to be a TTY),
// and a temporary project directory with test files.

import { rmSync } from 'node:fs';
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';

export class Capture extends Writable {
  chunks: Buffer[] = [];
  isTTY: boolean;
  columns = 120;

  constructor(opts: { isTTY?: boolean } = {}) {
    super();
    this.isTTY = opts.isTTY ?? false;
  }

  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
    cb();
  }

  get text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

const created: string[] = [];
// Test processes are short: remove every temp project when this one exits.
process.once('exit', () => {
  for (const dir of created) rmSync(dir, { recursive: true, force: true });
});

/** A temp dir holding `files` (path → content), removed when the process exits; returns its path. */
export async function project(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'provium-unit-'));
  created.push(dir);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}
