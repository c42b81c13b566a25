// A guest-less QEMU that lends a bridge its user-mode network (slirp): `-machine none`, a
// `user` netdev and a `stream` netdev dialling the bridge's switch, joined by a hub. No root,
// no TAP. Like every QEMU here it must not outlive the harness: the process launcher starts it
// (dying with the harness, it takes its children along), and an `exit` hook SIGKILLs the ones
// still alive.

import { qemuBinary } from './paths.js';
import { launchProcess, type LaunchError } from './process-launcher.js';
import { qemuEnv, tailFile } from './qemu.js';

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
  /** Where QEMU's stderr goes (the bridge's directory): its last bytes explain an exit. */
  stderrPath: string;
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
    const bin = qemuBinary();
    const launched = await launchProcess([bin, ...args], { env: qemuEnv(), stderrPath: spec.stderrPath }).catch((err: LaunchError) => {
      throw new Error(`uplink of bridge \`${spec.name}\`: could not start ${bin}: ${err.message}`);
    });
    const exited = launched.exit.then(async (e) => ({ code: e.code, signal: e.signal, stderr: await tailFile(spec.stderrPath, kStderrKeepBytes) }));
    const q = new UplinkQemu(launched.pid, exited);
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

