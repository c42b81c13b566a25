// Boot options (seed 001 "Boot opts", reference §1.6, DESIGN §10): accepted both by
// `lab:vm(name, profile, opts)` and by `vm:boot(opts)`; they merge, boot-time keys winning.

import type { BootOptions } from '../protocol/rpc.js';
import { R, readOptions, type Args, type Reader } from './args.js';

type BootFile = NonNullable<BootOptions['files']>[number];

const kFileSpec = { path: R.string, content: R.bytes, mode: R.int(0, 0o7777) };

const readFile: Reader<BootFile> = (a, idx, what) => {
  const f = readOptions(a, idx, what, kFileSpec);
  if (f.path === undefined) throw a.error(`${what}: \`path\` is required ({path = "/etc/x", content = "...", mode = 420})`);
  if (!f.path.startsWith('/')) throw a.error(`${what}: \`path\` must be absolute, got ${JSON.stringify(f.path)}`);
  if (f.content === undefined) throw a.error(`${what}: \`content\` is required`);
  return f.mode === undefined ? { path: f.path, content: f.content } : { path: f.path, content: f.content, mode: f.mode };
};

export const kBootSpec = {
  memory: R.size,
  cpus: R.int(1, 64),
  kernel_cmdline: R.string,
  kernel_cmdline_append: R.string,
  rng_seed: R.int64('unsigned'),
  initial_time: R.number,
  files: R.array(readFile, '{path, content, mode?} table'),
  agent_timeout: R.duration,
};

/** Reads user argument `n` as boot options (nil → {}). */
export function readBootOptions(a: Args, n: number, name: string): BootOptions {
  const o = a.options(n, name, kBootSpec);
  const out: BootOptions = {};
  if (o.memory !== undefined) {
    if (o.memory < 16 * 1024 * 1024) throw a.error(`option \`memory\` must be at least 16M, got ${o.memory} bytes`);
    out.memoryBytes = o.memory;
  }
  if (o.cpus !== undefined) out.cpus = o.cpus;
  if (o.kernel_cmdline !== undefined) out.kernelCmdline = o.kernel_cmdline;
  if (o.kernel_cmdline_append !== undefined) out.kernelCmdlineAppend = o.kernel_cmdline_append;
  if (o.rng_seed !== undefined) out.rngSeed = o.rng_seed;
  if (o.initial_time !== undefined) out.initialTime = o.initial_time;
  if (o.files !== undefined) out.files = o.files;
  if (o.agent_timeout !== undefined) {
    if (o.agent_timeout === 0) throw a.error('option `agent_timeout` must be greater than 0');
    out.agentTimeoutMs = o.agent_timeout;
  }
  return out;
}

/** Creation-time options overlaid with boot-time ones (boot wins key by key). */
export function mergeBootOptions(created: BootOptions, boot: BootOptions): BootOptions {
  return { ...created, ...boot };
}
