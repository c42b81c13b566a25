// The KVM-or-TCG decision for `accel = "auto"`, given a probe. On some hosts /dev/kvm exists but
// guests abort on an MSR or crawl and then die with "KVM internal error", so only a probe that
// boots to agent-ready in a few seconds counts. The verdict is cached in <cache>/accel.json under
// the host kernel release, QEMU version and CPU model.
//
// The probe boots a VM, which is QemuVm's job: qemu.ts passes it in (it resolves `auto` itself
// when it launches), and accel.ts binds it for everyone else. This file knows nothing of QEMU
// processes, so qemu.ts can depend on it without a cycle.

import { access, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { dirname } from 'node:path';
import { accelCachePath } from './paths.js';
import { hostKey } from './host.js';

/** A working KVM boots the minimal image to the agent in well under a second; TCG takes ~1.5 s. */
export const kKvmProbeTimeoutMs = 5_000;

export interface AccelVerdict {
  accel: 'kvm' | 'tcg';
  reason: string;
  /** The host the verdict holds for (host.ts hostKey); none when there was no KVM to probe. */
  hostKey?: string;
  probedAt: string;
  /** Read from accel.json rather than probed now. */
  cached: boolean;
}

/**
 * What a KVM probe found: KVM booted the minimal image to agent-ready (`ok`), it did not
 * (`failed`, with why), or the probe could not run at all (`skipped`, with why: not cached).
 */
export type KvmProbeResult =
  | { outcome: 'ok' }
  | { outcome: 'failed'; reason: string }
  | { outcome: 'skipped'; reason: string };

export type KvmProbe = () => Promise<KvmProbeResult>;

let autoMemo: Promise<AccelVerdict> | undefined;

/** 'kvm' and 'tcg' are taken as asked ('kvm' fails fast without /dev/kvm); 'auto' probes once. */
export async function resolveAccelWith(requested: 'auto' | 'kvm' | 'tcg', probe: KvmProbe): Promise<'kvm' | 'tcg'> {
  if (requested === 'tcg') return 'tcg';
  if (requested === 'kvm') {
    const why = await kvmUnusable();
    if (why) throw new Error(`accel = "kvm" but ${why} — use accel = "auto" or "tcg"`);
    return 'kvm';
  }
  return (await autoAccelWith({ probe })).accel;
}

/** The verdict behind `auto`, with its reason; one per process unless `reprobe`. */
export function autoAccelWith(opts: { reprobe?: boolean; probe: KvmProbe }): Promise<AccelVerdict> {
  if (opts.reprobe) autoMemo = undefined;
  autoMemo ??= decide(opts.reprobe ?? false, opts.probe).catch((err) => {
    autoMemo = undefined;
    throw err;
  });
  return autoMemo;
}

async function decide(reprobe: boolean, probe: KvmProbe): Promise<AccelVerdict> {
  const now = () => new Date().toISOString();

  // 1. No usable /dev/kvm: nothing to probe, nothing worth caching (it may appear later).
  const unusable = await kvmUnusable();
  if (unusable) return { accel: 'tcg', reason: unusable, probedAt: now(), cached: false };
  const key = await hostKey();

  // 2. A verdict for this host.
  const cache = await readCache();
  const hit = cache[key];
  if (hit && !reprobe) return { ...hit, cached: true };

  // 3. Probe; when it cannot run (no minimal image), we cannot tell, so say TCG and do not cache.
  const found = await probe();
  if (found.outcome === 'skipped') return { accel: 'tcg', reason: found.reason, hostKey: key, probedAt: now(), cached: false };
  const verdict: AccelVerdict = found.outcome === 'ok'
    ? { accel: 'kvm', reason: 'KVM probe booted the minimal image to agent-ready', hostKey: key, probedAt: now(), cached: false }
    : { accel: 'tcg', reason: `KVM probe failed: ${found.reason}`, hostKey: key, probedAt: now(), cached: false };
  cache[key] = { ...verdict };
  await writeCache(cache);
  return verdict;
}

async function kvmUnusable(): Promise<string | undefined> {
  try {
    await access('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? '/dev/kvm does not exist' : `/dev/kvm is not accessible (${code}; join the kvm group)`;
  }
}

type Cache = Record<string, Omit<AccelVerdict, 'cached'>>;

async function readCache(): Promise<Cache> {
  try {
    const c = JSON.parse(await readFile(accelCachePath(), 'utf8')) as unknown;
    return c && typeof c === 'object' && !Array.isArray(c) ? (c as Cache) : {};
  } catch {
    return {};
  }
}

async function writeCache(cache: Cache): Promise<void> {
  const path = accelCachePath();
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}`;
  const clean: Cache = {};
  for (const [k, v] of Object.entries(cache)) clean[k] = { accel: v.accel, reason: v.reason, hostKey: v.hostKey, probedAt: v.probedAt };
  await writeFile(tmp, JSON.stringify(clean, null, 2) + '\n');
  await rename(tmp, path);
}
