// Per-boot `files` become an extra newc cpio appended after the profile's initrd, so a test's
// file wins over the image's (the kernel unpacks archives in order and replaces existing files).

import path from 'node:path';

export interface BootFile {
  path: string;
  content: Uint8Array;
  mode?: number;
}

const DEFAULT_FILE_MODE = 0o644;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

function header(ino: number, mode: number, size: number, nameBytes: number): string {
  const fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, nameBytes, 0];
  return '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function entry(ino: number, name: string, mode: number, data: Uint8Array): Buffer[] {
  const nameZ = Buffer.from(name + '\0');
  const head = Buffer.from(header(ino, mode, data.byteLength, nameZ.byteLength));
  return [head, nameZ, pad4(head.byteLength + nameZ.byteLength), Buffer.from(data), pad4(data.byteLength)];
}

/** Builds the archive: parent directories first (0755), then each file. */
export function buildFilesCpio(files: BootFile[]): Buffer {
  const parts: Buffer[] = [];
  const dirs = new Set<string>();
  let ino = 1;
  for (const file of files) {
    const rel = path.posix.normalize(file.path).replace(/^\/+/, '');
    for (let dir = path.posix.dirname(rel); dir !== '.' && !dirs.has(dir); dir = path.posix.dirname(dir)) dirs.add(dir);
  }
  for (const dir of [...dirs].sort()) parts.push(...entry(ino++, dir, S_IFDIR | 0o755, new Uint8Array()));
  for (const file of files) {
    const rel = path.posix.normalize(file.path).replace(/^\/+/, '');
    parts.push(...entry(ino++, rel, S_IFREG | (file.mode ?? DEFAULT_FILE_MODE), file.content));
  }
  parts.push(...entry(ino, 'TRAILER!!!', 0, new Uint8Array()));
  return Buffer.concat(parts);
}
