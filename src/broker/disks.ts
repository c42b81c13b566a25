// A file's disks, in the session's scratch directory. A disk belongs to its VM: it is hot-plugged
// after every boot (so a VM with disks still boots from its boot snapshot), keeps its contents
// across shutdown and boot, and goes when the VM's scope ends. A restore puts a snapshot's
// contents on a new medium: a copy-on-write clone of the file the snapshot saved them in (so a
// restore costs nothing per byte), or, for a warm spare's guest, the clone or copy it was restored
// with (parked-disks.ts). Two backends:
// - "nbd" (the default): one NBD server per session (src/disk) with an export per disk, over a
//   sparse raw image or a copy-on-write overlay of a backing image. The server applies every
//   fault and keeps the disk's volatile write cache, so the guest sees all of them.
// - "qemu": QEMU opens a raw file itself behind a blkdebug filter, at plain -drive speed; faults
//   are blkdebug rules (fail_reads, fail_writes, fail_range, fail_after), swapped in at runtime.

import { open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { qemuBackendRefusal } from '../disk/blkdebug.js';
import { Disk } from '../disk/disk.js';
import { kSectorBytes, type FaultEvent } from '../disk/faults.js';
import { FileDisk } from '../disk/file-disk.js';
import { NbdServer } from '../disk/nbd-server.js';
import type { EventBus } from '../events/bus.js';
import { Prng } from '../net/prng.js';
import type { DiskBackend, DiskFault, DiskSpec, DiskView } from '../protocol/rpc.js';
import type { DiskBackendSpec, SlotDevice } from '../vmm/cmdline.js';
import { copySparse, linkOrCopySparse } from '../vmm/guest-ram.js';
import { ownedTempDir } from '../vmm/qemu.js';
import type { ManagedVm } from './managed-vm.js';
import { runGuestScript, waitForSysfsEntry } from './guest-script.js';
import { BrokerError } from './rpc-server.js';

/** virtio-blk serials are at most 20 bytes; the id is the serial. */
const kId = '[A-Za-z0-9_.-]{1,20}';
const kIdPattern = new RegExp(`^${kId}$`);
/** A disk's contents beside a snapshot (diskFileOf). */
const kDiskFilePattern = new RegExp(`\\.disk-${kId}$`);
/** Sectors per read or write when a snapshot saves or restores a disk (4 MiB). */
const kCopySectors = 8192;
/** How long the guest may take to show a hot-plugged disk in /sys/block. */
const kDeviceTimeoutMs = 15_000;

/** What a disk answers to: its random source for random faults, and who hears of its faults. */
export interface DiskOwner {
  random: () => number;
  onFault: (event: FaultEvent) => void;
}

/**
 * A disk a guest already runs on, handed to a file: an NBD export's Disk, or a "qemu" disk's file
 * and the blkdebug node QEMU runs it under.
 */
export type HandedDisk = { kind: 'nbd'; disk: Disk } | { kind: 'file'; path: string; filterNode: string };

/** Disks a guest already runs on, to be handed to a file (a warm spare's: parked-disks.ts). */
export interface DiskHandover {
  serials(): string[];
  /** Disk `serial`, now answering to `owner`. */
  take(serial: string, owner: DiskOwner): HandedDisk | undefined;
}

interface VmDisk {
  vm: ManagedVm;
  id: string;
  /** The bytes: an NBD export of the session's server, or a raw file QEMU opens (backend "qemu"). */
  disk: Disk | FileDisk;
  readonly: boolean;
  /** QEMU's block node, unique per VM. */
  node: string;
  /** A "qemu" disk's blkdebug node: the one its QEMU has, or gets at its next start. */
  filterNode: string;
  /** A "qemu" disk taken from a warm spare runs under no rules until its policy's are swapped in. */
  rulesPending: boolean;
  device: string | null;
  detached: boolean;
  /** The guest generation it was plugged into. */
  pluggedGeneration: number | null;
  /** Its random source and fault reporter, for whichever medium the disk is on. */
  owner: DiskOwner;
  /** Files of the current medium this session made (removed when a restore replaces it). */
  files: string[];
}

export interface DiskDeps {
  bus: EventBus;
  displayPath: string;
  seed: bigint;
}

export class SessionDisks {
  private readonly _disks = new Map<ManagedVm, VmDisk[]>();
  private _dir: Promise<string> | undefined;
  private _server: Promise<NbdServer> | undefined;
  /** Names each blkdebug node a "qemu" disk gets; QEMU wants them unique. */
  private _filters = 0;
  /** Counts the media a restore or a warm spare puts a disk on (_newMediumName): exports and files stay unique. */
  private _media = 0;

  constructor(private readonly _deps: DiskDeps) {}

  has(vm: ManagedVm, id: string): boolean {
    return this._ids(vm).includes(id);
  }

  /** Adds a disk to `vm`; a running guest gets it at once, others at their next boot. */
  async attach(vm: ManagedVm, spec: DiskSpec): Promise<DiskView> {
    if (!kIdPattern.test(spec.id)) {
      throw new BrokerError(`disk id ${JSON.stringify(spec.id)} must be 1 to 20 letters, digits, '_', '.' or '-'`);
    }
    const list = this._disks.get(vm) ?? [];
    if (list.some((d) => d.id === spec.id && !d.detached)) {
      throw new BrokerError(`vm \`${vm.name}\` already has a disk \`${spec.id}\`; disks: ${this._ids(vm).join(', ')}`);
    }
    const vd = await this._create(vm, spec);
    list.push(vd);
    this._disks.set(vm, list);
    if (vm.state === 'booted') await this._plug(vd);
    return this._view(vd);
  }

  /** A guest started (boot, restore, reset): its disks are plugged, in order (vda, vdb, …). */
  async vmStarted(vm: ManagedVm): Promise<void> {
    for (const vd of this._disks.get(vm) ?? []) {
      if (vd.detached) continue;
      try {
        await this._plug(vd);
      } catch (err) {
        throw new BrokerError(`vm \`${vm.name}\`: disk \`${vd.id}\` could not be attached: ${(err as Error).message}`);
      }
    }
  }

  async detach(vm: ManagedVm, id: string): Promise<DiskView> {
    const vd = this._disk(vm, id);
    if (this._isPlugged(vd)) await vm.unplugDisk(vd.node);
    vd.detached = true;
    vd.device = null;
    return this._view(vd);
  }

  /** The disks of `vm` as specs (a lab snapshot records them; their contents travel with the VM's snapshot). */
  specsOf(vm: ManagedVm): DiskSpec[] {
    return (this._disks.get(vm) ?? []).filter((d) => !d.detached).map((d) => ({ id: d.id, sizeBytes: d.disk.sizeBytes, readonly: d.readonly, backend: backendName(d) }));
  }

  info(vm: ManagedVm, id: string): DiskView {
    return this._view(this._disk(vm, id));
  }

  async read(vm: ManagedVm, id: string, sector: number, count: number): Promise<Uint8Array> {
    const vd = this._disk(vm, id);
    this._checkRange(vd, sector, count);
    return new Uint8Array(await vd.disk.readSectors(sector, count));
  }

  async write(vm: ManagedVm, id: string, sector: number, data: Uint8Array): Promise<void> {
    const vd = this._disk(vm, id);
    if (data.byteLength === 0 || data.byteLength % kSectorBytes !== 0) {
      throw new BrokerError(`disk \`${id}\`: write_sectors data must be a whole number of ${kSectorBytes}-byte sectors, got ${data.byteLength} bytes`);
    }
    if (vd.readonly) throw new BrokerError(`disk \`${id}\` of vm \`${vm.name}\` is read-only`);
    this._checkRange(vd, sector, data.byteLength / kSectorBytes);
    await vd.disk.writeSectors(sector, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  async fault(vm: ManagedVm, id: string, fault: DiskFault): Promise<DiskView> {
    const vd = this._disk(vm, id);
    const refusal = vd.disk instanceof FileDisk ? qemuBackendRefusal(fault) : null;
    if (refusal !== null) {
      throw new BrokerError(`disk \`${id}\` of vm \`${vm.name}\` has backend = "qemu", which ${refusal}; give the disk backend = "nbd" (the default) for every fault`);
    }
    const f = vd.disk.faults;
    switch (fault.kind) {
      case 'fail_reads':
        f.failReads(fault.on);
        break;
      case 'fail_writes':
        f.failWrites(fault.on);
        break;
      case 'torn_write':
        f.tornWrite(fault.on);
        break;
      case 'fail_after':
        f.failAfter(fault.n, fault.target);
        break;
      case 'fail_range':
        this._checkRange(vd, fault.sector, fault.count);
        f.failRange(fault.sector, fault.count);
        break;
      case 'delay':
        f.delay(fault.ms);
        break;
      case 'random_eio':
        f.randomEio(fault.rate);
        break;
      case 'clear':
        f.clear();
        break;
    }
    if (vd.disk instanceof FileDisk && this._isPlugged(vd)) await this._installRules(vd, vd.disk);
    return this._view(vd);
  }

  /** The VM's power goes: QEMU dies at once, and every disk of the VM loses what was not flushed. */
  async powerCut(vm: ManagedVm, id: string): Promise<number> {
    const target = this._disk(vm, id);
    await vm.powerCut();
    let lost = 0;
    for (const vd of this._disks.get(vm) ?? []) {
      const cut = await vd.disk.powerCut();
      if (vd === target) lost = cut.lostBytes;
      vd.device = null;
    }
    return lost;
  }

  /**
   * A snapshot of `vm` at `file`: each plugged disk's contents go to `<file>.disk-<id>`, sparse
   * (zero runs stay holes), and by rename: a disk restored from an earlier snapshot at that path
   * still reads the old file as its backing.
   */
  async saveContents(vm: ManagedVm, file: string): Promise<void> {
    const zeros = Buffer.alloc(kCopySectors * kSectorBytes);
    for (const vd of this._disks.get(vm) ?? []) {
      if (!this._isPlugged(vd)) continue;
      const target = diskFileOf(file, vd.id);
      const partial = `${target}.partial-${process.pid}`;
      const out = await open(partial, 'w');
      try {
        const sectors = vd.disk.sizeBytes / kSectorBytes;
        for (let s = 0; s < sectors; s += kCopySectors) {
          const chunk = await vd.disk.readSectors(s, Math.min(kCopySectors, sectors - s));
          if (!chunk.equals(zeros.subarray(0, chunk.byteLength))) await out.write(chunk, 0, chunk.byteLength, s * kSectorBytes);
        }
        await out.truncate(vd.disk.sizeBytes);
      } catch (err) {
        await out.close();
        await rm(partial, { force: true });
        throw err;
      }
      await out.close();
      await rename(partial, target);
    }
  }

  /**
   * A restore of `vm` from `file`: each disk the snapshot saved gets those contents back before
   * the guest is plugged again. An NBD disk moves to a copy-on-write clone of the saved file; a
   * "qemu" disk, whose file QEMU opens by path, to a sparse copy of it (a read-only one, a link).
   */
  async loadContents(vm: ManagedVm, file: string, serials: string[]): Promise<void> {
    for (const id of serials) {
      const vd = this._disk(vm, id);
      const saved = diskFileOf(file, id);
      await stat(saved).catch((err: Error) => {
        throw new BrokerError(`disk \`${id}\`: the snapshot's contents are missing: ${err.message}`);
      });
      if (vd.disk instanceof Disk) {
        const name = this._newMediumName(vd);
        const overlayPath = path.join(await this._ensureDir(), `${name}.overlay`);
        await this._moveTo(vd, await openSavedClone(file, id, { name, overlayPath, readOnly: vd.readonly, owner: vd.owner }), [overlayPath]);
        continue;
      }
      // A read-only image QEMU reads in place is the user's file, unchanged: read as it is.
      if (!vd.files.includes(vd.disk.path)) continue;
      const medium = path.join(await this._ensureDir(), `${this._newMediumName(vd)}.img`);
      await placeSavedContents(file, id, medium, vd.readonly);
      await this._moveToFile(vd, medium);
    }
  }

  /** `vm` took a warm spare: the disks its guest runs on (the spare's clones) become `vm`'s disks of those ids. */
  async adoptParked(vm: ManagedVm, parked: DiskHandover): Promise<void> {
    for (const id of parked.serials()) {
      const vd = this._disk(vm, id);
      const handed = parked.take(id, vd.owner)!;
      if (handed.kind === 'nbd') await this._moveTo(vd, handed.disk, []);
      else await this._adoptFile(vd, handed.path, handed.filterNode);
    }
  }

  /**
   * Puts "qemu" disk `vd` on the file a spare's QEMU runs it on. The file moves into this session's
   * dir (QEMU keeps its open file; the spare's dir goes with that QEMU) and keeps the disk's policy,
   * whose rules go in once the guest is this file's (markRestored).
   */
  private async _adoptFile(vd: VmDisk, parkedPath: string, filterNode: string): Promise<void> {
    const file = path.join(await this._ensureDir(), `${this._newMediumName(vd)}.img`);
    await rename(parkedPath, file);
    await this._moveToFile(vd, file);
    vd.filterNode = filterNode;
    vd.rulesPending = true;
  }

  /** Puts "qemu" disk `vd` on `file`, which this session made: the disk keeps its policy, and its old medium's files go. */
  private async _moveToFile(vd: VmDisk, file: string): Promise<void> {
    const old = vd.disk as FileDisk;
    const disk = await FileDisk.open({ name: old.name, path: file, readOnly: vd.readonly, onFault: vd.owner.onFault });
    disk.faults.copyFrom(old.faults);
    vd.disk = disk;
    const oldFiles = vd.files;
    vd.files = [file];
    await old.close().catch(() => undefined);
    await Promise.all(oldFiles.map((f) => rm(f, { force: true })));
  }

  /** Puts `vd` on a new medium: its export now serves `disk`, which keeps the disk's fault policy. */
  private async _moveTo(vd: VmDisk, disk: Disk, files: string[]): Promise<void> {
    const old = vd.disk as Disk;
    const server = await this._ensureServer();
    server.removeExport(old.name);
    disk.faults.copyFrom(old.faults);
    server.addExport(disk);
    vd.disk = disk;
    const oldFiles = vd.files;
    vd.files = files;
    await old.close({ flush: false }).catch(() => undefined);
    await Promise.all(oldFiles.map((f) => rm(f, { force: true })));
  }

  /**
   * After a restore that plugged `vm`'s disks itself, on backends from backendOf: a "qemu" disk
   * came back with the rules of its policy now, as an NBD disk (whose policy is the server's) does.
   * Its device is the one the restored guest has (a fixture's disk is new to this file): as the
   * snapshot recorded it, else asked of the guest (a snapshot of an older version).
   */
  async markRestored(vm: ManagedVm, restored: { serial: string; guestDevice?: string }[]): Promise<void> {
    for (const vd of this._disks.get(vm) ?? []) {
      const saved = restored.find((d) => d.serial === vd.id);
      if (!saved) continue;
      vd.pluggedGeneration = vm.info().generation;
      vd.device = saved.guestDevice ?? (await this._findDevice(vd));
      vm.noteDiskDevice(vd.node, vd.device);
      if (vd.rulesPending && vd.disk instanceof FileDisk) {
        vd.rulesPending = false;
        const rules = vd.disk.rules();
        if (rules['inject-error'].length > 0 || rules['set-state'].length > 0) await this._installRules(vd, vd.disk);
      }
    }
  }

  /** VMs gone with their scope: their disks close, and their images are removed. */
  async forget(vms: ManagedVm[]): Promise<void> {
    for (const vm of vms) {
      for (const vd of this._disks.get(vm) ?? []) {
        if (vd.disk instanceof Disk) {
          (await this._server?.catch(() => undefined))?.removeExport(vd.disk.name);
          await vd.disk.close({ flush: false }).catch(() => undefined);
        } else {
          await vd.disk.close().catch(() => undefined);
        }
        await Promise.all(vd.files.map((f) => rm(f, { force: true })));
      }
      this._disks.delete(vm);
    }
  }

  async close(): Promise<void> {
    await this.forget([...this._disks.keys()]);
    await (await this._server?.catch(() => undefined))?.stop().catch(() => undefined);
    const dir = await this._dir?.catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  }

  private async _create(vm: ManagedVm, spec: DiskSpec): Promise<VmDisk> {
    const dir = await this._ensureDir();
    const backend = spec.backend ?? 'nbd';
    const name = `vm${vm.id}-${spec.id}`;
    let sizeBytes = spec.sizeBytes;
    let image = spec.image;
    let converted = false;
    if (image !== undefined) {
      const st = await stat(image).catch((err: Error) => {
        throw new BrokerError(`disk \`${spec.id}\`: image ${spec.image}: ${err.message}`);
      });
      // A qcow2 image is read through a raw copy (qemu-img), so both backends serve plain bytes.
      if (await isQcow2(image)) {
        const raw = path.join(dir, backend === 'nbd' ? `${name}.backing.raw` : `${name}.img`);
        const { execa } = await import('execa');
        await execa('qemu-img', ['convert', '-O', 'raw', image, raw]).catch((err: { stderr?: string; message: string }) => {
          throw new BrokerError(`disk \`${spec.id}\`: converting the qcow2 image ${spec.image} failed: ${(err.stderr ?? err.message).trim()}`);
        });
        image = raw;
        converted = true;
        sizeBytes ??= (await stat(raw)).size;
      }
      sizeBytes ??= st.size;
    }
    if (sizeBytes === undefined || sizeBytes <= 0 || sizeBytes % kSectorBytes !== 0) {
      throw new BrokerError(`disk \`${spec.id}\`: size must be a positive multiple of ${kSectorBytes} bytes (e.g. "64M"), got ${sizeBytes ?? 'none'}`);
    }
    const readonly = spec.readonly === true;
    const onFault = (event: FaultEvent) => this._onFault(vm, spec.id, event);
    const prng = new Prng(this._deps.seed).fork(`disk:${vm.name}:${spec.id}`);
    const owner: DiskOwner = { random: () => prng.float(), onFault };
    const files: string[] = [];
    // A blank read-only disk reads zeros: its sparse file is made here (read-only images must exist).
    if (image === undefined && readonly) {
      const blank = await open(path.join(dir, `${name}.img`), 'wx', 0o600);
      await blank.truncate(sizeBytes).finally(() => blank.close());
    }
    let disk: Disk | FileDisk;
    if (backend === 'qemu') {
      // QEMU writes the file itself, so a writable disk gets its own copy of the image; a
      // read-only one reads the image (or its raw conversion) in place.
      const own = image === undefined || converted || !readonly ? path.join(dir, `${name}.img`) : image;
      if (own !== image) files.push(own);
      if (image !== undefined && !converted && own !== image) await copySparse(image, own);
      disk = await FileDisk.open({ name, path: own, sizeBytes, readOnly: readonly, onFault });
    } else {
      const medium = image !== undefined ? path.join(dir, `${name}.overlay`) : path.join(dir, `${name}.img`);
      files.push(medium);
      disk = await Disk.open({
        name,
        image: image !== undefined ? { kind: 'overlay', backingPath: image, overlayPath: medium, sizeBytes } : { kind: 'raw', path: medium, sizeBytes },
        readOnly: readonly,
        random: owner.random,
        onFault,
      });
      (await this._ensureServer()).addExport(disk);
    }
    const node = `disk-${spec.id}`;
    return { vm, id: spec.id, disk, readonly, node, filterNode: this._filterName(node), rulesPending: false, device: null, detached: false, pluggedGeneration: null, owner, files };
  }

  /**
   * Whether disk `id` of `vm` is a "qemu" disk that reads the user's image in place (read-only): a
   * restore copies nothing for it, where a warm spare would copy the whole image.
   */
  readsImageInPlace(vm: ManagedVm, id: string): boolean {
    if (!this.has(vm, id)) return false;
    const vd = this._disk(vm, id);
    return vd.disk instanceof FileDisk && !vd.files.includes(vd.disk.path);
  }

  /** Where disk `id` of `vm` is served now: a restore gives it to the new QEMU in place of the snapshot's. */
  async backendOf(vm: ManagedVm, id: string): Promise<DiskBackendSpec> {
    return this._backend(this._disk(vm, id));
  }

  private async _backend(vd: VmDisk): Promise<DiskBackendSpec> {
    if (vd.disk instanceof FileDisk) return { kind: 'file', path: vd.disk.path, filterNode: vd.filterNode, rules: vd.disk.rules() };
    return { kind: 'nbd', socketPath: (await this._ensureServer()).socketPath, exportName: vd.disk.name };
  }

  private async _plug(vd: VmDisk): Promise<void> {
    if (this._isPlugged(vd)) return;
    const backend = await this._backend(vd);
    await vd.vm.plugDisk({ node: vd.node, backend, readonly: vd.readonly, serial: vd.id });
    vd.pluggedGeneration = vd.vm.info().generation;
    vd.device = await this._findDevice(vd);
    vd.vm.noteDiskDevice(vd.node, vd.device);
  }

  /** The current policy's rules, in the running QEMU, under a new blkdebug node. */
  private async _installRules(vd: VmDisk, disk: FileDisk): Promise<void> {
    const next = this._filterName(vd.node);
    await vd.vm.swapDiskFilter(vd.node, next, disk.rules());
    vd.filterNode = next;
  }

  /** A name no medium of this session had: an export's, and its files' stem. */
  private _newMediumName(vd: VmDisk): string {
    return `vm${vd.vm.id}-${vd.id}.${++this._media}`;
  }

  private _filterName(node: string): string {
    return `${node}-f${++this._filters}`;
  }

  /** The /dev/vdX whose serial is the disk's id, once the guest shows it. */
  private async _findDevice(vd: VmDisk): Promise<string> {
    const script = [...waitForSysfsEntry('/sys/block', 'serial', vd.id, 'DEV', 300, `no block device with serial ${vd.id} appeared`), 'echo "/dev/$DEV"'];
    return runGuestScript(vd.vm, script.join('\n'), kDeviceTimeoutMs, 'the guest did not show the disk');
  }

  private _ensureDir(): Promise<string> {
    // Marked with our pid: a killed run's disks are swept by the next run (temp-dirs.ts).
    this._dir ??= ownedTempDir('provium-disks-');
    return this._dir;
  }

  private _ensureServer(): Promise<NbdServer> {
    this._server ??= (async () => {
      const server = new NbdServer({ socketPath: path.join(await this._ensureDir(), 'nbd.sock') });
      await server.start();
      return server;
    })();
    return this._server;
  }

  private _isPlugged(vd: VmDisk): boolean {
    const vm = vd.vm;
    return !vd.detached && vd.pluggedGeneration !== null && vd.pluggedGeneration === vm.info().generation && (vm.state === 'booted' || vm.state === 'paused');
  }

  private _checkRange(vd: VmDisk, sector: number, count: number): void {
    const sectors = vd.disk.sizeBytes / kSectorBytes;
    if (!Number.isInteger(sector) || sector < 0 || sector >= sectors) {
      throw new BrokerError(`disk \`${vd.id}\`: sector ${sector} is outside the disk (sectors 0 to ${sectors - 1})`);
    }
    if (!Number.isInteger(count) || count < 1 || sector + count > sectors) {
      throw new BrokerError(`disk \`${vd.id}\`: count ${count} from sector ${sector} must be 1 to ${sectors - sector}`);
    }
  }

  private _disk(vm: ManagedVm, id: string): VmDisk {
    const vd = (this._disks.get(vm) ?? []).find((d) => d.id === id && !d.detached);
    if (!vd) throw new BrokerError(`vm \`${vm.name}\` has no disk \`${id}\`; disks: ${this._ids(vm).join(', ') || '(none)'}`);
    return vd;
  }

  private _ids(vm: ManagedVm): string[] {
    return (this._disks.get(vm) ?? []).filter((d) => !d.detached).map((d) => d.id);
  }

  private _view(vd: VmDisk): DiskView {
    return {
      id: vd.id,
      backend: backendName(vd),
      sizeBytes: vd.disk.sizeBytes,
      readonly: vd.readonly,
      device: this._isPlugged(vd) ? vd.device : null,
      detached: vd.detached,
      policy: { ...vd.disk.faults.describe() },
    };
  }

  private _onFault(vm: ManagedVm, id: string, event: FaultEvent): void {
    this._deps.bus.emit('disk_fault', { file: this._deps.displayPath, vm_name: vm.name, disk: id, kind: event.kind, values: event.values });
  }
}

/** qcow2's magic, "QFI\xfb", at the start of the file. */
async function isQcow2(file: string): Promise<boolean> {
  const handle = await open(file, 'r');
  try {
    const head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    return head.equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]));
  } finally {
    await handle.close();
  }
}

/** Whether a snapshot's device can no longer be given to a new QEMU: its bridge or disk went. */
export async function slotBackendGone(d: SlotDevice): Promise<boolean> {
  const file = d.kind === 'nic' ? d.socketPath : d.backend.kind === 'nbd' ? d.backend.socketPath : d.backend.path;
  return stat(file).then(() => false, () => true);
}

/** Where a snapshot keeps a disk's contents. */
export function diskFileOf(snapshot: string, id: string): string {
  return `${snapshot}.disk-${id}`;
}

/**
 * A disk on a copy-on-write clone of the contents `snapshot` saved for disk `id` (saveContents:
 * the whole disk, sparse), its writes going to `overlayPath`.
 */
export function openSavedClone(snapshot: string, id: string, opts: { name: string; overlayPath: string; readOnly: boolean; owner: DiskOwner }): Promise<Disk> {
  return Disk.open({
    name: opts.name,
    image: { kind: 'overlay', backingPath: diskFileOf(snapshot, id), overlayPath: opts.overlayPath },
    readOnly: opts.readOnly,
    random: opts.owner.random,
    onFault: opts.owner.onFault,
  });
}

/**
 * A "qemu" disk's file at `to` with the contents `snapshot` saved for disk `id`: a sparse copy of
 * its own, or, for a read-only disk (nothing writes either file), a link where one can be made.
 */
export function placeSavedContents(snapshot: string, id: string, to: string, readOnly: boolean): Promise<void> {
  return (readOnly ? linkOrCopySparse : copySparse)(diskFileOf(snapshot, id), to);
}

/** Whether `file` is a disk's contents beside a snapshot (diskFileOf). */
export function isDiskFile(file: string): boolean {
  return kDiskFilePattern.test(file);
}

function backendName(vd: VmDisk): DiskBackend {
  return vd.disk instanceof FileDisk ? 'qemu' : 'nbd';
}
