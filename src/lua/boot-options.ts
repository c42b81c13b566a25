// Boot options (seed 001 "Boot opts", reference §1.6, DESIGN §10): accepted both by
// `lab:vm(name, profile, opts)` and by `vm:boot(opts)`; they merge, boot-time keys winning.

import path from 'node:path';
import { isDiskBackend, type BootOptions, type DiskSpec } from '../protocol/rpc.js';
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

const kDiskSpec = { id: R.string, size: R.size, image: R.string, readonly: R.bool, backend: R.string };

/** A disk spec `{id =, size =, image =, readonly =, backend =}` (boot option `disks`, vm:attach_disk). */
export const readDiskSpec: Reader<DiskSpec> = (a, idx, what) => {
  const d = readOptions(a, idx, what, kDiskSpec);
  if (d.id === undefined) throw a.error(`${what}: \`id\` is required ({id = "data", size = "64M"})`);
  if (d.size === undefined && d.image === undefined) throw a.error(`${what}: give \`size\` (e.g. "64M") or \`image\` (a host file to start from)`);
  const spec: DiskSpec = { id: d.id };
  if (d.size !== undefined) spec.sizeBytes = d.size;
  // A host input, like push_file's: relative to the test file's directory.
  if (d.image !== undefined) spec.image = path.resolve(path.dirname(a.rt.file), d.image);
  if (d.readonly !== undefined) spec.readonly = d.readonly;
  if (d.backend !== undefined) {
    if (!isDiskBackend(d.backend)) throw a.error(`${what}: \`backend\` must be "nbd" (every fault, the default) or "qemu" (plain-drive speed, blkdebug faults), got ${JSON.stringify(d.backend)}`);
    spec.backend = d.backend;
  }
  return spec;
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
  disks: R.array(readDiskSpec, '{id, size?, image?, readonly?} table'),
};

/** Reads user argument `n` as boot options (nil → {}); `spec` may read some keys differently (seed 002). */
export function readBootOptions(a: Args, n: number, name: string, spec: typeof kBootSpec = kBootSpec): BootOptions {
  const o = a.options(n, name, spec);
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
  if (o.disks !== undefined) out.disks = o.disks;
  if (o.agent_timeout !== undefined) {
    if (o.agent_timeout === 0) throw a.error('option `agent_timeout` must be greater than 0');
    out.agentTimeoutMs = o.agent_timeout;
  }
  return out;
}

/**
 * Creation-time options overlaid with boot-time ones (boot wins key by key), except `files`:
 * both lists go in, the boot's entry winning for a path both name.
 */
export function mergeBootOptions(created: BootOptions, boot: BootOptions): BootOptions {
  const merged = { ...created, ...boot };
  if (created.files && boot.files) {
    const byPath = new Map(created.files.map((f) => [f.path, f] as const));
    for (const f of boot.files) byPath.set(f.path, f);
    merged.files = [...byPath.values()];
  }
  return merged;
}
