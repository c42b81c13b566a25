// A warm spare's NICs before a file takes it. A restored guest's NICs are on its QEMU's argv, and
// QEMU connects them once, at start (`-netdev stream,server=off` never retries), but a spare has
// no bridge yet: the file that takes it does. So the spare's NICs connect to sockets of their own
// here, which hold each connection unread; the taking file's bridge ports then adopt them
// (Port.adopt), and the guest's link was never down. Frames the guest sent meanwhile wait in the
// socket and reach the bridge first, as they would have on a link nobody listened on.

import { createServer, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { SlotDevice } from '../vmm/cmdline.js';
import { ownedTempDir } from '../vmm/qemu.js';
import type { ManagedVm } from './managed-vm.js';
import { ParkedBySpare } from './parked.js';

type NicDevice = Extract<SlotDevice, { kind: 'nic' }>;

/** The parked connections of each spare that has NICs, until a file takes it. */
const parkedBySpare = new ParkedBySpare<ParkedNics>();

export class ParkedNics {
  private readonly _accepted: Promise<void>;

  private constructor(
    private readonly _dir: string,
    private readonly _servers: Server[],
    /** The NICs as the spare's QEMU plugs them: on this object's sockets. */
    readonly devices: NicDevice[],
    /** The accepted connections, by NIC id (filled as QEMU connects). */
    private readonly _live: Map<string, Socket>,
    accepted: Promise<void>[],
  ) {
    this._accepted = Promise.all(accepted).then(() => undefined);
  }

  /** Listens for each NIC of `devices` (before the spare's QEMU starts: it connects once). */
  static async listen(devices: NicDevice[]): Promise<ParkedNics> {
    // Marked with our pid: a killed run's sockets are swept by the next run (temp-dirs.ts).
    const dir = await ownedTempDir('provium-parked-');
    const servers: Server[] = [];
    const accepted: Promise<void>[] = [];
    const parkedDevices: NicDevice[] = [];
    const sockets = new Map<string, Socket>();
    try {
      for (const d of devices) {
        const socketPath = path.join(dir, `${d.id}.sock`);
        const server = createServer({ pauseOnConnect: true });
        servers.push(server);
        accepted.push(
          new Promise<void>((resolve) => {
            server.once('connection', (socket) => {
              socket.on('error', () => undefined);
              sockets.set(d.id, socket);
              server.close();
              resolve();
            });
          }),
        );
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(socketPath, () => {
            server.off('error', reject);
            resolve();
          });
        });
        parkedDevices.push({ ...d, socketPath });
      }
    } catch (err) {
      for (const s of servers) s.close();
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return new ParkedNics(dir, servers, parkedDevices, sockets, accepted);
  }

  /** Resolves once every NIC is connected (QEMU connects them while it starts). */
  async connected(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this._accepted,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`the spare's NICs did not connect within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      await this._removeSocketFiles();
    }
  }

  /**
   * Keeps this spare's connections until a file takes it (takeParkedNics). A paused socket never
   * reads QEMU's end, so the ones nobody took close when the spare's QEMU exits.
   */
  holdFor(spare: ManagedVm): void {
    parkedBySpare.hold(spare, this);
  }

  /** The connection of NIC `id`, now the caller's. */
  take(id: string): Socket | undefined {
    const socket = this._live.get(id);
    this._live.delete(id);
    return socket;
  }

  /** Ends everything: a spare that failed to start. */
  async close(): Promise<void> {
    for (const s of this._servers) s.close();
    for (const socket of this._live.values()) socket.destroy();
    this._live.clear();
    await this._removeSocketFiles();
  }

  private async _removeSocketFiles(): Promise<void> {
    await rm(this._dir, { recursive: true, force: true });
  }
}

/** The parked NIC connections of `spare`, handed over once. */
export function takeParkedNics(spare: ManagedVm): ParkedNics | undefined {
  return parkedBySpare.take(spare);
}
