// A guest-less QEMU that lends a bridge its user-mode network (slirp): `-machine none`, a
// `user` netdev and a `stream` netdev dialling the bridge's switch, joined by a hub. No root,
// no TAP. Like every QEMU here it must not outlive the harness: it runs under
// `setpriv --pdeathsig KILL` (spawned from the main thread), and an `exit` hook SIGKILLs the
// ones still alive.

import { qemuBinary } from './paths.js';
import { findSetpriv } from './qemu.js';

export interface UplinkQemuSpec {
  /** For messages: the bridge it serves. */
  name: string;
  /** The bridge's subnet, e.g. `10.4.0.0/24`. */
  net: string;
  /** slirp's own address on the subnet: the guests' gateway, and the host seen from them. */
  host: string;
  /** slirp's DNS forwarder on the subnet. */
  dns: string;
  /** The switch port's socket; it must be listening already (a stream client never retries). */
  socketPath: string;
}

export interface UplinkQemuExit {
  code: number | null;
  signal: string | null;
  stderr: string;
}

const kStderrKeepBytes = 4096;
const kStopGraceMs = 2_000;

const live = new Set<UplinkQemu>();
let exitHookInstalled = false;

/** Synchronously SIGKILLs every uplink QEMU still running (also run at process exit). */
export function killAllUplinkQemu(): void {
  for (const q of live) q.kill();
  live.clear();
}

export class UplinkQemu {
  private _exited = false;

  private constructor(
    readonly pid: number,
    /** Settles when the process is reaped, however it ended. */
    readonly exited: Promise<UplinkQemuExit>,
  ) {
    void exited.then(() => {
      this._exited = true;
      live.delete(this);
    });
  }

  static async launch(spec: UplinkQemuSpec): Promise<UplinkQemu> {
    const args = [
      '-machine', 'none', '-nodefaults', '-display', 'none', '-no-user-config',
      '-netdev', `user,id=u0,net=${spec.net},host=${spec.host},dns=${spec.dns},restrict=off`,
      '-netdev', `stream,id=s0,server=off,addr.type=unix,addr.path=${spec.socketPath}`,
      '-netdev', 'hubport,id=h0,hubid=0,netdev=u0',
      '-netdev', 'hubport,id=h1,hubid=0,netdev=s0',
    ];
    const setpriv = await findSetpriv();
    const bin = qemuBinary();
    const argv = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', bin, ...args] : [bin, ...args];
    const { execa } = await import('execa');
    const child = execa(argv[0]!, argv.slice(1), { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', reject: false, cleanup: true, buffer: false });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-kStderrKeepBytes);
    });
    const exited = child.then((r) => ({
      code: r.exitCode ?? null,
      signal: r.signal ?? null,
      stderr: stderr || (r.failed && r.exitCode === undefined ? String(r.shortMessage ?? '') : ''),
    }));
    if (child.pid === undefined) {
      const e = await exited;
      throw new Error(`uplink of bridge \`${spec.name}\`: could not start ${bin}: ${e.stderr}`);
    }
    const q = new UplinkQemu(child.pid, exited);
    live.add(q);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', killAllUplinkQemu);
    }
    return q;
  }

  get running(): boolean {
    return !this._exited;
  }

  kill(): void {
    if (this._exited) return;
    try { process.kill(this.pid, 'SIGKILL'); } catch { /* already gone */ }
  }

  /** SIGTERM, then SIGKILL after a grace; resolves once reaped. Idempotent. */
  async stop(): Promise<void> {
    if (this._exited) return;
    try { process.kill(this.pid, 'SIGTERM'); } catch { /* already gone */ }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise<void>((r) => { timer = setTimeout(r, kStopGraceMs); })]);
    clearTimeout(timer);
    this.kill();
    await this.exited;
  }
}

