// Choosing KVM or TCG. `auto` probes KVM once per host with a real boot of the minimal image to
// agent-ready: on some hosts /dev/kvm exists but guests abort on an MSR or crawl and then die
// with "KVM internal error", so only a boot that reaches the agent in a few seconds counts.
// The verdict is cached in <cache>/accel.json under the host kernel release, QEMU version and
// CPU model.

import { access, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { decode, encode } from '@msgpack/msgpack';
import { accelCachePath } from './paths.js';
import { hostKey } from './host.js';

/** A working KVM boots the minimal image to the agent in well under a second; TCG takes ~1.5 s. */
export const kKvmProbeTimeoutMs = 5_000;
const kMaxHelloFrameBytes = 1024 * 1024;

export interface AccelVerdict {
  accel: 'kvm' | 'tcg';
  reason: string;
  hostKey: string;
  probedAt: string;
  /** Read from accel.json rather than probed now. */
  cached: boolean;
}

let autoMemo: Promise<AccelVerdict> | undefined;

/** 'kvm' and 'tcg' are taken as asked ('kvm' fails fast without /dev/kvm); 'auto' probes once. */
export async function resolveAccel(requested: 'auto' | 'kvm' | 'tcg'): Promise<'kvm' | 'tcg'> {
  if (requested === 'tcg') return 'tcg';
  if (requested === 'kvm') {
    const why = await kvmUnusable();
    if (why) throw new Error(`accel = "kvm" but ${why} — use accel = "auto" or "tcg"`);
    return 'kvm';
  }
  return (await autoAccel()).accel;
}

/** The verdict behind resolveAccel('auto'), with its reason (for `provium doctor`). */
export function autoAccel(opts: { reprobe?: boolean } = {}): Promise<AccelVerdict> {
  if (opts.reprobe) autoMemo = undefined;
  autoMemo ??= decide(opts.reprobe ?? false).catch((err) => {
    autoMemo = undefined;
    throw err;
  });
  return autoMemo;
}

async function decide(reprobe: boolean): Promise<AccelVerdict> {
  const key = await hostKey();
  const now = () => new Date().toISOString();

  // 1. No usable /dev/kvm: nothing to probe, nothing worth caching (it may appear later).
  const unusable = await kvmUnusable();
  if (unusable) return { accel: 'tcg', reason: unusable, hostKey: key, probedAt: now(), cached: false };

  // 2. A verdict for this host.
  const cache = await readCache();
  const hit = cache[key];
  if (hit && !reprobe) return { ...hit, cached: true };

  // 3. Probe with the minimal image; without it we cannot tell, so say TCG and do not cache.
  const { imageInfo } = await import('./image.js');
  const image = await imageInfo();
  if (!image) {
    return { accel: 'tcg', reason: 'the minimal image is not built, so KVM was not probed (run `provium image build`)', hostKey: key, probedAt: now(), cached: false };
  }
  const reason = await probeKvm();
  const verdict: AccelVerdict = reason === undefined
    ? { accel: 'kvm', reason: 'KVM probe booted the minimal image to agent-ready', hostKey: key, probedAt: now(), cached: false }
    : { accel: 'tcg', reason: `KVM probe failed: ${reason}`, hostKey: key, probedAt: now(), cached: false };
  cache[key] = { ...verdict };
  await writeCache(cache);
  return verdict;
}

/** undefined when a KVM boot reached the agent within kKvmProbeTimeoutMs, else why not. */
async function probeKvm(): Promise<string | undefined> {
  const { QemuVm } = await import('./qemu.js');
  const { imageInfo } = await import('./image.js');
  const { builtinProfiles } = await import('../config/profiles.js');
  const profile = (await builtinProfiles(imageInfo))['minimal']!;
  let vm;
  try {
    vm = await QemuVm.launch({ name: 'kvm-probe', profile, memoryBytes: profile.memoryBytes, cpus: 1, accel: 'kvm', hotplugSlots: 0 });
  } catch (err) {
    const tail = (err as { stderrTail?: string }).stderrTail;
    return tail ? `${firstLine((err as Error).message)}: ${lastLine(tail)}` : firstLine((err as Error).message);
  }
  try {
    const exited = vm.exited.then((e) => `QEMU exited (${e.signal ?? `code ${e.code}`}): ${lastLine(e.stderrTail)}`);
    const hello = agentHello(vm.agentSocketPath, kKvmProbeTimeoutMs).then(() => undefined, (e: Error) => e.message);
    return await Promise.race([hello, exited]);
  } finally {
    await vm.stop({ graceMs: 500 });
  }
}

/**
 * The agent-ready check: one `hello` frame (4-byte BE length + msgpack) on the agent socket,
 * resolved with the reply's data when `{id: 1, kind: "ok"}` comes back. The full client is
 * src/agent/client.ts; this is only enough to tell that a guest came up.
 */
export function agentHello(socketPath: string, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(`no agent hello reply within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | undefined, data?: Record<string, unknown>) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err); else resolve(data!);
    };
    sock.on('error', (e) => finish(new Error(`agent socket ${socketPath}: ${e.message}`)));
    sock.on('close', () => finish(new Error('agent socket closed before the hello reply')));
    sock.on('connect', () => {
      const body = encode({ id: 1, kind: 'hello', data: { protocol_version: 1 } });
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length);
      sock.write(Buffer.concat([head, body]));
    });
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len > kMaxHelloFrameBytes) return finish(new Error(`agent sent a ${len}-byte frame during hello`));
        if (buf.length < 4 + len) return;
        const frame = decode(buf.subarray(4, 4 + len)) as { id?: unknown; kind?: unknown; data?: unknown };
        buf = buf.subarray(4 + len);
        if (frame.id !== 1) continue; // id 0: unsolicited agent events.
        if (frame.kind === 'ok') return finish(undefined, (frame.data ?? {}) as Record<string, unknown>);
        return finish(new Error(`agent answered hello with ${String(frame.kind)}: ${JSON.stringify(frame.data)}`));
      }
    });
  });
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

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}

function lastLine(s: string): string {
  return s.trim().split('\n').pop()?.trim() ?? '';
}
