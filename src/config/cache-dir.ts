// The default cache directory (images, downloads, accel verdicts, boot snapshots, timings). A
// `[provium] cache_dir` in provium.toml overrides it: loadConfig then sets PROVIUM_CACHE_DIR, so
// every later cacheDir() call (src/vmm/paths.ts) agrees with the config.

import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** `$PROVIUM_CACHE_DIR`, else `~/.cache/provium` (XDG_CACHE_HOME is honoured when set). */
export function cacheDir(): string {
  const explicit = process.env['PROVIUM_CACHE_DIR'];
  if (explicit) return resolve(explicit);
  const xdg = process.env['XDG_CACHE_HOME'];
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'provium');
}
