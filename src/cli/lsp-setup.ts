// `provium lsp-setup [DIR] [--force]` (reference §2.1, issue 14 item 4): writes
// DIR/.provium-meta/provium.lua (lsp-types.ts: the whole API as lua-language-server annotations)
// and DIR/.luarc.json, which loads them as a library, declares the test globals and sets Lua 5.3
// (fengari). A .luarc.json of the user's own (one that does not load .provium-meta) is left alone
// unless --force.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { UsageError } from '../run/errors.js';
import { ExitCode } from '../run/outcome.js';

export const kMetaDir = '.provium-meta';
export const kTypesFile = 'provium.lua';

/** The .luarc.json lua-language-server reads: our library, our globals, fengari's Lua. */
export function luarc(kLuaGlobals: string[]): Record<string, unknown> {
  return {
    'runtime.version': 'Lua 5.3',
    'workspace.library': [kMetaDir],
    'workspace.ignoreDir': [kMetaDir],
    'diagnostics.globals': kLuaGlobals,
  };
}

async function writeAtomic(file: string, text: string): Promise<void> {
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

export async function lspSetupCommand(dir: string, opts: { force: boolean }, io: { stdout: Writable; cwd: string }): Promise<number> {
  const root = path.resolve(io.cwd, dir);
  const luarcPath = path.join(root, '.luarc.json');
  // 1. A .luarc.json that is not ours stays unless --force.
  const existing = await readFile(luarcPath, 'utf8').catch(() => undefined);
  if (existing !== undefined && !opts.force) {
    let ours = false;
    try {
      const library = (JSON.parse(existing) as Record<string, unknown>)['workspace.library'];
      ours = Array.isArray(library) && library.includes(kMetaDir);
    } catch {
      // Not JSON: not ours.
    }
    if (!ours) throw new UsageError(`lsp-setup: ${luarcPath} exists and was not written by provium; add "${kMetaDir}" to its workspace.library yourself, or run with --force to replace it`);
  }
  // 2. The definitions, then the config that loads them.
  // Loaded here only: the bindings it reads are not needed by any other command.
  const { kLuaGlobals, luaTypeDefinitions } = await import('./lsp-types.js');
  await mkdir(path.join(root, kMetaDir), { recursive: true });
  const typesPath = path.join(root, kMetaDir, kTypesFile);
  await writeAtomic(typesPath, luaTypeDefinitions());
  await writeAtomic(luarcPath, `${JSON.stringify(luarc(kLuaGlobals), null, 2)}\n`);
  io.stdout.write(`wrote ${path.relative(io.cwd, typesPath) || typesPath}\nwrote ${path.relative(io.cwd, luarcPath) || luarcPath}\n`);
  return ExitCode.ok;
}
