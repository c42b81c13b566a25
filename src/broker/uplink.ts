// A bridge's uplink: a switch port `@uplink` (a name no VM can have) and, dialling it, a
// guest-less QEMU whose user-mode network (slirp) gives the bridge a gateway and a DNS
// forwarder. Guests reach the host's networks through it (outbound only) and the host itself at
// the gateway address; nothing outside can reach the guests.

import path from 'node:path';
import type { Switch } from '../net/switch.js';
import { UplinkQemu } from '../vmm/uplink-qemu.js';

export const kUplinkPort = '@uplink';
/** How long slirp's QEMU may take to start and dial the switch. */
const kUplinkConnectTimeoutMs = 15_000;

export interface UplinkAddresses {
  /** `10.4.0.0/24` */
  subnet: string;
  gateway: string;
  dns: string;
}

export class BridgeUplink {
  private constructor(
    private readonly _sw: Switch,
    private readonly _qemu: UplinkQemu,
  ) {}

  /** Adds the port, starts QEMU on it, and resolves once QEMU is connected. */
  static async start(sw: Switch, dir: string, addresses: UplinkAddresses): Promise<BridgeUplink> {
    const socketPath = path.join(dir, 'uplink.sock');
    // 1. The port listens first: QEMU's stream client dials once and never retries.
    await sw.addPort(kUplinkPort, socketPath);
    let qemu: UplinkQemu | undefined;
    try {
      // 2. QEMU, then its connection or its exit, whichever comes first.
      qemu = await UplinkQemu.launch({ name: sw.name, net: addresses.subnet, host: addresses.gateway, dns: addresses.dns, socketPath, stderrPath: path.join(dir, 'uplink.stderr') });
      const started = qemu;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        sw.whenConnected(kUplinkPort, kUplinkConnectTimeoutMs),
        started.exited.then((e) => {
          throw new Error(`its QEMU exited (${e.signal ?? `code ${e.code}`}): ${e.stderr.trim() || 'no message'}`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`its QEMU did not connect within ${kUplinkConnectTimeoutMs} ms`)), kUplinkConnectTimeoutMs + 1000);
        }),
      ]).finally(() => clearTimeout(timer));
      return new BridgeUplink(sw, started);
    } catch (err) {
      await qemu?.stop();
      await sw.removePort(kUplinkPort).catch(() => undefined);
      throw new Error(`the uplink of bridge \`${sw.name}\` did not start: ${(err as Error).message}`);
    }
  }

  get running(): boolean {
    return this._qemu.running;
  }

  /** Stops QEMU and removes the port. Idempotent. */
  async stop(): Promise<void> {
    await this._qemu.stop();
    if (this._sw.hasPort(kUplinkPort)) await this._sw.removePort(kUplinkPort);
  }
}
