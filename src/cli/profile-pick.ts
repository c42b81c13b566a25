// The one profile an interactive command boots (`provium repl PROFILE`, `provium console
// PROFILE`): named, known and usable, its build run when its inputs changed (as a run would).

import type { Writable } from 'node:stream';
import type { ProviumConfig } from '../config/config.js';
import { prepareProfile } from '../config/profile-prepare.js';
import { ProfileError, type Profile } from '../config/profiles.js';
import { UsageError } from '../run/errors.js';
import { FileLockTimeoutError } from '../vmm/file-lock.js';
import { buildOptionsFor } from './wiring.js';

/** Checks `name` and prepares it; every problem is a UsageError naming the profile and the fix. */
export async function pickProfile(config: ProviumConfig, name: string, command: string, stderr: Writable): Promise<Profile> {
  const unavailable = config.unavailableProfiles[name];
  if (unavailable !== undefined) throw new UsageError(`${command}: ${unavailable}`);
  const profile = config.profiles[name];
  if (!profile) {
    const known = Object.keys(config.profiles).sort();
    throw new UsageError(`${command}: unknown profile \`${name}\`; known profiles: ${known.join(', ') || '(none)'}${config.path ? ` (from ${config.path})` : ''}`);
  }
  try {
    await prepareProfile(profile, buildOptionsFor(config, { rebuild: false, stderr }));
  } catch (err) {
    if (err instanceof ProfileError || err instanceof FileLockTimeoutError) {
      throw new UsageError(`${command}: ${err.message}`);
    }
    throw err;
  }
  return profile;
}

/** A Lua string literal for any text (the setup chunks the CLI writes). */
export function luaQuote(text: string): string {
  let out = '"';
  for (const byte of Buffer.from(text, 'utf8')) {
    if (byte === 0x22 || byte === 0x5c) out += `\\${String.fromCharCode(byte)}`;
    else if (byte >= 0x20 && byte < 0x7f) out += String.fromCharCode(byte);
    else out += `\\${byte}`;
  }
  return `${out}"`;
}
