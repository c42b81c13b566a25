// The serial console log, capped: a chatty guest must not fill the temp dir. QEMU writes
// console.log itself (the chardev's logfile, opened O_APPEND: cmdline.ts asks for logappend), so
// the cap works under it: past kConsoleLogLimits.maxBytes the log is cut to its first bytes (the
// boot log) and its last few MiB (a ring), with a note between them. QEMU's appends land at the
// new end. What QEMU writes during the cut itself (a few ms) may be lost or land before the tail:
// the note says the log was cut there.

import { open } from 'node:fs/promises';

export interface ConsoleLogLimits {
  /** A log past this is cut. */
  maxBytes: number;
  /** What a cut keeps from the start: the boot log. */
  headBytes: number;
  /** What a cut keeps from the end. */
  tailBytes: number;
}

export const kConsoleLogLimits: ConsoleLogLimits = { maxBytes: 8 * 1024 * 1024, headBytes: 1024 * 1024, tailBytes: 4 * 1024 * 1024 };
/** How often a running VM's log size is looked at. */
export const kConsoleLogCheckMs = 1000;

/** Cuts the log at `file` when it is past the limits; returns the bytes dropped (0 when it was not cut). */
export async function capConsoleLog(file: string, limits: ConsoleLogLimits = kConsoleLogLimits): Promise<number> {
  let fh;
  try {
    // Appending, like QEMU: the note and the tail go after whatever QEMU writes meanwhile.
    fh = await open(file, 'a+');
  } catch {
    return 0; // not written yet, or gone with the scratch dir
  }
  try {
    const { size } = await fh.stat();
    if (size <= limits.maxBytes) return 0;
    // 1. The tail to keep, starting at a line so the log reads well after the note.
    const tail = Buffer.alloc(limits.tailBytes);
    const { bytesRead } = await fh.read(tail, 0, limits.tailBytes, size - limits.tailBytes);
    const nl = tail.subarray(0, bytesRead).indexOf(0x0a);
    const kept = tail.subarray(nl >= 0 && nl < bytesRead - 1 ? nl + 1 : 0, bytesRead);
    // 2. Back to the head, then the note and the tail; QEMU's O_APPEND writes follow them.
    const dropped = size - limits.headBytes - kept.length;
    const note = Buffer.from(`\n[provium: console log capped: ${dropped} bytes dropped here; the log keeps its first ${mib(limits.headBytes)} (the boot) and its last ${mib(limits.tailBytes)}]\n`);
    await fh.truncate(limits.headBytes);
    await fh.write(Buffer.concat([note, kept]), 0, note.length + kept.length, null);
    return dropped;
  } finally {
    await fh.close();
  }
}

/** Checks `file` every kConsoleLogCheckMs until stopped; a failed check is retried next time. */
export function watchConsoleLog(file: string, limits: ConsoleLogLimits = kConsoleLogLimits): { stop(): void } {
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    capConsoleLog(file, limits)
      .catch(() => 0)
      .finally(() => {
        busy = false;
      });
  }, kConsoleLogCheckMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

function mib(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${bytes} bytes`;
}
