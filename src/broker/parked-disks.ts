// A warm spare's disks before a file takes it. A restored guest's disks are on its QEMU's argv, so
// they must be served before the spare starts, and the file that will take it is not known yet.
// So each NBD disk of the snapshot gets a copy-on-write clone of the snapshot's contents here,
// served by an NBD server of the spare's own, and each "qemu" disk a sparse copy of them (a
// read-only one, a link) that QEMU opens. The taking file's SessionDisks adopts them
// (adoptParked), and the guest's connection to them never drops. Until then the disks have no
// faults and report to nobody; once taken, they draw their randomness and report their faults as
// the file's own disk of that id.

import { rm } from 'node:fs/promises';
import path from 'node:path';
import { NbdServer } from '../disk/nbd-server.js';
import type { SlotDevice } from '../vmm/cmdline.js';
import { ownedTempDir } from '../vmm/qemu.js';
import { openSavedClone, placeSavedContents, type DiskHandover, type DiskOwner, type HandedDisk } from './disks.js';
import type { ManagedVm } from './managed-vm.js';
import { ParkedBySpare } from './parked.js';

type DiskDevice = Extract<SlotDevice, { kind: 'disk' }>;
/**
 * A parked disk and who it answers to: nobody until a file takes it (it has no faults, so neither
 * is called). A "qemu" disk's file has no owner to change: the taker opens it anew.
 */
interface Parked {
  handed: HandedDisk;
  answersTo: { owner: DiskOwner };
}
/** A parked "qemu" disk runs under no fault rules (blkdebug's empty lists). */
const kNoRules = { 'inject-error': [], 'set-state': [] };
const kNobody: DiskOwner = { random: Math.random, onFault: () => undefined };

/** The parked disks of each spare that has disks, until a file takes it. */
const parkedBySpare = new ParkedBySpare<ParkedDisks>();
/** Export names unique across every spare of the run (a file's server may serve several). */
let nextSpareDisks = 1;

export class ParkedDisks implements DiskHandover {
  private _closed = false;

  private constructor(
    private readonly _dir: string,
    private readonly _server: NbdServer,
    /** The disks as the spare's QEMU plugs them: exports of this object's server, or files in its dir. */
    readonly devices: DiskDevice[],
    /** Untaken disks, by serial. */
    private readonly _disks: Map<string, Parked>,
  ) {}

  /** Clones the contents `snapshot` saved for each disk of `devices`: NBD disks served here, "qemu" disks as files. */
  static async open(devices: DiskDevice[], snapshot: string): Promise<ParkedDisks> {
    // Marked with our pid: a killed run's clones are swept by the next run (temp-dirs.ts).
    const dir = await ownedTempDir('provium-parked-disks-');
    const server = new NbdServer({ socketPath: path.join(dir, 'nbd.sock') });
    const disks = new Map<string, Parked>();
    const parked = new ParkedDisks(dir, server, [], disks);
    try {
      await server.start();
      const tag = nextSpareDisks++;
      for (const d of devices) {
        const answersTo = { owner: kNobody };
        if (d.backend.kind === 'file') {
          const file = path.join(dir, `${d.serial}.img`);
          await placeSavedContents(snapshot, d.serial, file, d.readonly);
          const filterNode = `${d.node}-spare`;
          disks.set(d.serial, { handed: { kind: 'file', path: file, filterNode }, answersTo });
          parked.devices.push({ ...d, backend: { kind: 'file', path: file, filterNode, rules: kNoRules } });
          continue;
        }
        const disk = await openSavedClone(snapshot, d.serial, {
          name: `spare${tag}-${d.serial}`,
          overlayPath: path.join(dir, `${d.serial}.overlay`),
          readOnly: d.readonly,
          owner: { random: () => answersTo.owner.random(), onFault: (event) => answersTo.owner.onFault(event) },
        });
        disks.set(d.serial, { handed: { kind: 'nbd', disk }, answersTo });
        server.addExport(disk);
        parked.devices.push({ ...d, backend: { kind: 'nbd', socketPath: server.socketPath, exportName: disk.name } });
      }
    } catch (err) {
      await parked.close();
      throw err;
    }
    return parked;
  }

  /**
   * Keeps this spare's disks until a file takes it (takeParkedDisks). When the guest's QEMU exits
   * (a spare nobody took, or the taking file's VM), the server and the untaken disks go; a taken
   * NBD disk stays open where its file keeps it, its files already unlinked, and a taken "qemu"
   * disk's file was moved into the taker's own dir.
   */
  holdFor(spare: ManagedVm): void {
    parkedBySpare.hold(spare, this);
  }

  /** Disk `serial`, now answering to `owner`; undefined when the spare had no such disk. */
  take(serial: string, owner: DiskOwner): HandedDisk | undefined {
    const entry = this._disks.get(serial);
    if (!entry) return undefined;
    this._disks.delete(serial);
    entry.answersTo.owner = owner;
    return entry.handed;
  }

  /** The serials still here. */
  serials(): string[] {
    return [...this._disks.keys()];
  }

  /** Ends the server and the untaken disks, and removes the clones' files. Idempotent. */
  async close(): Promise<void> {
    if (this._closed) return;
    this._closed = true;
    await this._server.stop().catch(() => undefined);
    await Promise.all([...this._disks.values()].map(({ handed }) => (handed.kind === 'nbd' ? handed.disk.close({ flush: false }).catch(() => undefined) : undefined)));
    this._disks.clear();
    await rm(this._dir, { recursive: true, force: true });
  }
}

/** The parked disks of `spare`, handed over once. */
export function takeParkedDisks(spare: ManagedVm): ParkedDisks | undefined {
  return parkedBySpare.take(spare);
}
