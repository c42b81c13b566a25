// A file's session: the VMs and streams one test file owns, and the RPC handlers it is served
// by. Whatever way the file ends, `close()` tears all of it down. Every reply and error about a
// VM carries the broker's view of it (`VmView`): the Lua side never guesses a VM's state.

import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Profile } from '../config/profiles.js';
import type { EventBus } from '../events/bus.js';
import type { Barriers } from './barriers.js';
import type { SlotDevice } from '../vmm/cmdline.js';
import { ParkedNics, takeParkedNics } from './parked-nics.js';
import { ParkedDisks, takeParkedDisks } from './parked-disks.js';
import { ManagedVm, type SpareSource } from './managed-vm.js';
import type { BootCache } from './boot-cache.js';
import type { Fixtures } from './fixtures.js';
import type { AgentOp } from '../protocol/agent.js';
import type { AgentCallArgs, BootOptions, VmView } from '../protocol/rpc.js';
import type { FileReport } from '../protocol/task.js';
import type { ResourcePool } from './resources.js';
import { BrokerError, RpcChannel, type RpcHandlers } from './rpc-server.js';
import { SessionDisks, slotBackendGone } from './disks.js';
import { SessionNetwork } from './network.js';
import { copyLabSnapshot, copyVmSnapshot, deleteSnapshot, prepareLabDir, readLabManifest, snapshotBytes, transientLabSnapshotDir, transientVmSnapshotPath, writeLabManifest } from './snapshot-files.js';
import { AgentBackedStream, CaptureStream, type BrokerStream } from './streams.js';
import { AsyncCalls } from './async-calls.js';
import type { AgentOps } from '../protocol/agent.js';

/** A warm spare's QEMU connects its parked NICs while it starts; this long is a failed start. */
const kParkedConnectTimeoutMs = 30_000;

export interface SessionDeps {
  bus: EventBus;
  /** The run's seed for random fault decisions. */
  seed: bigint;
  nextSubnetIndex: () => number;
  pool: ResourcePool;
  barriers: Barriers;
  profiles: Record<string, Profile>;
  unavailableProfiles?: Record<string, string>;
  bootCache: BootCache;
  fixtures: Fixtures;
  warm?: SpareSource;
  /** Set for a fixture build's session: where its builder's snapshot goes (fixture.built). */
  fixtureOut?: string;
}

export class Session {
  readonly channel: RpcChannel;
  private readonly _network: SessionNetwork;
  private readonly _disks: SessionDisks;
  /** Snapshots written to the temp dir (vm:snapshot() with no path): transient, gone with the file. */
  private readonly _tempSnapshots = new Set<string>();
  /** Snapshots a file restores again and again (reset_between_tests): the warm pool keeps a spare. */
  private readonly _resets = new Set<string>();
  /** The VM that wrote each snapshot path (a fixture's builder returns one). */
  private readonly _snapshotOwners = new Map<string, ManagedVm>();
  /** Fixture directories this file restores from (the broker's, shared): a restore from one is a `fixture_cache_hit`. */
  private readonly _fixtureDirs = new Map<string, string>();
  private readonly _vms = new Map<number, ManagedVm>();
  private readonly _streams = new Map<number, BrokerStream>();
  /** agent.start's ops until agent.await collects them. */
  private readonly _asyncCalls = new AsyncCalls<AgentOps[AgentOp]['res']>();
  private _nextVmId = 1;
  private _nextStreamId = 1;
  private _closed: Promise<void> | undefined;

  constructor(
    readonly id: number,
    readonly path: string,
    readonly displayPath: string,
    private readonly _deps: SessionDeps,
    onReport: (report: FileReport) => void,
  ) {
    this._network = new SessionNetwork({ bus: _deps.bus, displayPath, seed: _deps.seed, nextSubnetIndex: _deps.nextSubnetIndex });
    this._disks = new SessionDisks({ bus: _deps.bus, displayPath, seed: _deps.seed });
    this.channel = new RpcChannel(this._handlers(), onReport);
  }

  /** After a guest (re)started: its disks (in order: vda, vdb, …) and NICs are plugged before the reply. */
  private async _started<T>(vm: ManagedVm, reply: T): Promise<T> {
    await this._disks.vmStarted(vm);
    await this._network.vmStarted(vm);
    return reply;
  }

  /** The profile's disks, then the boot option's: new ids are added; an id the VM already has keeps its contents. */
  private async _bootDisks(vm: ManagedVm, opts: BootOptions): Promise<void> {
    const own = new Set((opts.disks ?? []).map((d) => d.id));
    const specs = [...(vm.profile.disks ?? []).filter((d) => !own.has(d.id)), ...(opts.disks ?? [])];
    for (const spec of specs) {
      if (!this._disks.has(vm, spec.id)) await this._disks.attach(vm, spec);
    }
  }

  /** The broker's view of a VM, as every reply and error about it carries. */
  private _view(vm: ManagedVm): VmView {
    const streams: number[] = [];
    for (const [id, stream] of this._streams) if (stream.vmId === vm.id) streams.push(id);
    return { vmId: vm.id, ...vm.info(), streams };
  }

  /** Runs an op on one VM; its reply carries the VM's view, and so does its error. */
  private _onVm<T extends object>(vmId: number, op: (vm: ManagedVm) => Promise<T>): Promise<T & { vm: VmView }> {
    return this._onAgent(vmId, async (vm) => ({ ...(await op(vm)), vm: this._view(vm) }));
  }

  /** An error about a VM, with the VM's view attached. */
  private _aboutVm(vm: ManagedVm, err: unknown): BrokerError {
    const error = err instanceof BrokerError ? err : new BrokerError(`internal broker error: ${(err as Error)?.message ?? String(err)}`, undefined);
    error.vm = this._view(vm);
    return error;
  }

  /** Agent and stream ops: the reply as is, the error with the VM's view. */
  private async _onAgent<T>(vmId: number, op: (vm: ManagedVm) => Promise<T>): Promise<T> {
    const vm = this._vm(vmId);
    try {
      return await op(vm);
    } catch (err) {
      throw this._aboutVm(vm, err);
    }
  }

  private _vm(vmId: number): ManagedVm {
    const vm = this._vms.get(vmId);
    if (!vm) throw new BrokerError(`no VM with id ${vmId} in this file`);
    return vm;
  }

  private _stream(streamId: number): BrokerStream {
    const stream = this._streams.get(streamId);
    if (!stream) throw new BrokerError(`stream ${streamId} is closed`);
    return stream;
  }

  private _addStream(stream: BrokerStream): { streamId: number } {
    const streamId = this._nextStreamId++;
    this._streams.set(streamId, stream);
    return { streamId };
  }

  private async _closeStreamsOf(vmId: number): Promise<void> {
    for (const [id, stream] of this._streams) {
      if (stream.vmId !== vmId) continue;
      this._streams.delete(id);
      await stream.close().catch(() => undefined);
    }
  }

  /** Its streams first: they cannot outlive the guest they read from. */
  private async _shutdownVm(vm: ManagedVm): Promise<void> {
    await this._closeStreamsOf(vm.id);
    await vm.shutdown();
  }

  /**
   * Restores `vm` from `file` (vm:restore, lab:restore). The NICs and disks the snapshot had come
   * back on their slots, connected to where their bridges and disks are now in this file.
   */
  private async _restoreVm(vm: ManagedVm, file: string, again = false): Promise<void> {
    const started = performance.now();
    const saved = await ManagedVm.snapshotDevices(file);
    let devices = await this._devicesNow(vm, saved, file);
    const nics = devices.flatMap((d) => (d.kind === 'nic' ? [d] : []));
    const disks = devices.flatMap((d) => (d.kind === 'disk' ? [d] : []));
    const serials = disks.map((d) => d.serial);
    // A guest can come from the warm pool: a fixture's VM (while files wait to start), or a
    // reset_between_tests snapshot (while later tests will want it again). Its NICs wait parked
    // until it is taken (parked-nics.ts), and its disks are clones of the snapshot's contents
    // (parked-disks.ts). Not one that reads a user's image in place: its spares would copy it.
    const warm = this._deps.warm;
    const fixture = this._fixtureDirs.has(path.dirname(file));
    const poolable = !serials.some((id) => this._disks.readsImageInPlace(vm, id));
    if (again && poolable) this._resets.add(file);
    const pooled = warm?.enabled && poolable && (fixture || this._resets.has(file)) ? `restore:${file}` : undefined;
    const spare = pooled ? await warm!.take(pooled) : undefined;
    if (pooled && spare) this._deps.bus.emit('pool_hit', { file: this.displayPath, vm_name: vm.name });
    else if (pooled) this._deps.bus.emit('pool_miss', { file: this.displayPath, vm_name: vm.name, reason: 'no spare ready' });
    if (spare) {
      const parkedNics = takeParkedNics(spare);
      const parkedDisks = takeParkedDisks(spare);
      try {
        if (parkedDisks) await this._disks.adoptParked(vm, parkedDisks);
        devices = await this._devicesNow(vm, saved, file);
        await vm.restoreFromSpare(spare, devices);
      } catch (err) {
        await spare.shutdown().catch(() => undefined);
        throw err;
      }
      if (parkedNics) this._network.adoptParked(vm, parkedNics);
    } else {
      await this._disks.loadContents(vm, file, serials);
      devices = await this._devicesNow(vm, saved, file);
      await vm.restore(file, devices);
    }
    this._network.markRestored(vm, nics.map((d) => d.id));
    await this._disks.markRestored(vm, disks);
    // A fixture's spares follow the queue of files; a reset snapshot's, the tests left.
    if (pooled) warm!.keep(pooled, vm.profile, (s) => startSpare(s, file, devices), fixture ? undefined : again ? 1 : 0);
    await this._started(vm, {});
    const restoreNs = Math.round((performance.now() - started) * 1e6);
    this._deps.bus.emit('vm_restored', { file: this.displayPath, vm_name: vm.name, restore_ns: restoreNs, from: file, pooled: spare !== undefined });
  }

  /** The devices `file` saved, on the backends this file has for them now (its bridges' sockets, its disks' media). */
  private async _devicesNow(vm: ManagedVm, saved: SlotDevice[], file: string): Promise<SlotDevice[]> {
    const devices: SlotDevice[] = [];
    for (const d of saved) {
      let device: SlotDevice = d;
      if (d.kind === 'nic') {
        const moved = this._network.nicSocketOf(vm, d.id);
        if (moved !== undefined) device = { ...d, socketPath: moved };
      } else if (this._disks.has(vm, d.serial)) {
        device = { ...d, backend: await this._disks.backendOf(vm, d.serial) };
      }
      if (await slotBackendGone(device)) {
        const what = d.kind === 'nic' ? 'a bridge' : `disk \`${d.serial}\``;
        throw new BrokerError(`vm \`${vm.name}\`: cannot restore ${file}: it was taken on ${what} this file no longer has; restore it while its bridges and disks exist`);
      }
      devices.push(device);
    }
    return devices;
  }

  /** vm:snapshot and each VM of lab:snapshot: refused while the VM has streams open. */
  private _snapshotVm(vm: ManagedVm, file: string): Promise<{ path: string; bytes: number }> {
    const open = [...this._streams.values()].filter((s) => s.vmId === vm.id).length;
    return vm.snapshot(file, open, () => this._disks.saveContents(vm, file));
  }

  private _handlers(): RpcHandlers {
    const empty = {} as Record<string, never>;
    return {
      'vm.create': async ({ name, profile, labPath }) => {
        const resolved = this._deps.profiles[profile];
        if (!resolved) {
          const unavailable = this._deps.unavailableProfiles?.[profile];
          if (unavailable) throw new BrokerError(`vm \`${name}\`: ${unavailable}`);
          const known = Object.keys(this._deps.profiles).sort().join(', ') || '(none)';
          throw new BrokerError(`unknown profile \`${profile}\` for vm \`${name}\`; known profiles: ${known}`);
        }
        const vmId = this._nextVmId++;
        this._vms.set(vmId, new ManagedVm(vmId, name, resolved, { ...this._deps, sessionId: this.id, displayPath: this.displayPath, labPath }));
        return { vmId };
      },
      'vm.boot': ({ vmId, opts }) =>
        this._onVm(vmId, async (vm) => {
          await this._bootDisks(vm, opts);
          return this._started(vm, await vm.boot(opts));
        }),
      'vm.shutdown': ({ vmId }) => this._onVm(vmId, async (vm) => (await this._shutdownVm(vm), {})),
      'vm.kill': ({ vmId }) =>
        this._onVm(vmId, async (vm) => {
          await this._closeStreamsOf(vmId);
          await vm.powerCut();
          await vm.shutdown();
          return {};
        }),
      'vm.pause': ({ vmId }) => this._onVm(vmId, async (vm) => (await vm.pause(), {})),
      'vm.resume': ({ vmId }) => this._onVm(vmId, async (vm) => (await vm.resume(), {})),
      'vm.reset': ({ vmId }) =>
        this._onVm(vmId, async (vm) => {
          await this._closeStreamsOf(vmId);
          await vm.reset();
          return this._started(vm, {});
        }),
      'vm.power_button': ({ vmId }) =>
        this._onVm(vmId, async (vm) => {
          await this._closeStreamsOf(vmId);
          return vm.powerButton();
        }),
      'vm.info': ({ vmId }) => this._onVm(vmId, async () => ({})),
      'vm.wakeup': ({ vmId }) => this._onVm(vmId, async (vm) => (await vm.wakeup(), {})),
      'vm.snapshot': ({ vmId, path: file }) =>
        this._onVm(vmId, async (vm) => {
          const target = file ?? transientVmSnapshotPath();
          if (file === undefined) this._tempSnapshots.add(target);
          this._snapshotOwners.set(target, vm);
          return this._snapshotVm(vm, target);
        }),
      'vm.restore': ({ vmId, path: file, again }) => this._onVm(vmId, async (vm) => (await this._restoreVm(vm, file, again === true), {})),
      'snapshot.size': async ({ path: file }) => ({ bytes: await snapshotBytes(file) }),
      'lab.snapshot': async ({ lab, dir, vmIds, bridgeIds }) => {
        const vms = vmIds.map((id) => this._vm(id));
        const target = dir ?? (await transientLabSnapshotDir());
        if (dir === undefined) this._tempSnapshots.add(target);
        else await prepareLabDir(dir);
        const running = vms.filter((vm) => vm.state === 'booted' || vm.state === 'paused');
        const saved = await settleAll(running, (vm) => this._snapshotVm(vm, path.join(target, `${vm.name}.snap`)));
        await writeLabManifest(target, {
          version: 1,
          lab,
          vms: vms.map((vm) => ({ name: vm.name, profile: vm.profile.name, state: vm.state, file: running.includes(vm) ? `${vm.name}.snap` : null, disks: this._disks.specsOf(vm) })),
          bridges: bridgeIds.map((id) => this._network.exportBridge(id)),
        });
        return { path: target, bytes: saved.reduce((sum, r) => sum + r.bytes, 0), vms: vms.map((vm) => this._view(vm)) };
      },
      'lab.snapshot_info': async ({ path: dir }) => ({ manifest: await readLabManifest(dir) }),
      'fixture.prepare': async ({ ref, kind }) => {
        const { dir, manifest, key } = await this._deps.fixtures.materialize(ref, this.displayPath);
        this._fixtureDirs.set(dir, this._deps.fixtures.displayPathOf(key.file));
        if (manifest.fixture !== kind) {
          const other = kind === 'vm' ? `provium:lab_fixture("${ref}"): its builder returned provium:snapshot()` : `provium:vm_fixture("${ref}"): its builder returned vm:snapshot()`;
          throw new BrokerError(`fixture \`${ref}\` is a ${manifest.fixture ?? 'lab'} fixture; use ${other}`);
        }
        return { path: dir, manifest };
      },
      'fixture.built': async ({ kind, path: snap }) => {
        const out = this._deps.fixtureOut;
        if (out === undefined) throw new BrokerError('only a *.fixture.lua returns a snapshot to keep; a test file cannot');
        if (kind === 'lab') {
          await copyLabSnapshot(snap, out);
          const manifest = await readLabManifest(out);
          await writeLabManifest(out, { ...manifest, fixture: 'lab' });
          return empty;
        }
        const vm = this._snapshotOwners.get(snap);
        if (!vm) throw new BrokerError(`${snap} was not written by vm:snapshot() in this fixture; return the Snapshot it gave`);
        if (this._network.hasNics(vm)) {
          throw new BrokerError(`vm \`${vm.name}\` is on a bridge: a vm fixture is one VM alone; return provium:snapshot() for a lab fixture with its bridges`);
        }
        const file = `${vm.name}.snap`;
        const disks = this._disks.specsOf(vm);
        await copyVmSnapshot(snap, path.join(out, file), disks.map((d) => d.id));
        await writeLabManifest(out, {
          version: 1,
          lab: 'fixture',
          fixture: 'vm',
          vms: [{ name: vm.name, profile: vm.profile.name, state: 'booted', file, disks }],
          bridges: [],
        });
        return empty;
      },
      'lab.restore': async ({ path: dir, vms, bridges }) => {
        const manifest = await readLabManifest(dir);
        const vmOf = new Map(vms.map((v) => [v.name, this._vm(v.vmId)]));
        const bridgeOf = new Map(bridges.map((b) => [b.name, b.bridgeId]));
        const missing = [...manifest.vms.map((v) => v.name).filter((n) => !vmOf.has(n)), ...manifest.bridges.map((b) => b.name).filter((n) => !bridgeOf.has(n))];
        if (missing.length > 0) throw new BrokerError(`lab:restore ${dir}: the lab has nothing named ${missing.map((n) => `\`${n}\``).join(', ')} to restore into`);
        // 1. The lab's VMs go down: their NICs come back from the snapshot.
        await settleAll([...vmOf.values()].filter((vm) => vm.state !== 'created' && vm.state !== 'shutdown'), (vm) => this._shutdownVm(vm));
        // 2. Disks a VM lacks (a fresh lab) are made; the snapshot fills them.
        for (const v of manifest.vms) {
          const vm = vmOf.get(v.name)!;
          for (const spec of v.disks ?? []) if (!this._disks.has(vm, spec.id)) await this._disks.attach(vm, spec);
        }
        // 3. Bridges, with the NICs the guests remember; routes once every bridge is back.
        for (const b of manifest.bridges) {
          await this._network.importBridge(bridgeOf.get(b.name)!, b, (name) => {
            const vm = vmOf.get(name);
            if (!vm) throw new BrokerError(`lab:restore ${dir}: bridge \`${b.name}\` had vm \`${name}\`, which the snapshot does not list`);
            return vm;
          });
        }
        await this._network.importRoutes(new Map(manifest.bridges.map((b) => [bridgeOf.get(b.name)!, b.routes.flatMap((r) => (bridgeOf.has(r) ? [bridgeOf.get(r)!] : []))])));
        // 4. Every VM at once.
        await settleAll(manifest.vms.filter((v) => v.file !== null), async (v) => {
          const vm = vmOf.get(v.name)!;
          await this._restoreVm(vm, path.join(dir, v.file!));
          if (v.state === 'paused') await vm.pause();
        });
        const fixture = this._fixtureDirs.get(dir);
        if (fixture !== undefined) this._deps.bus.emit('fixture_cache_hit', { path: fixture });
        const bridgeViews = await Promise.all(
          [...bridgeOf.values()].map(async (bridgeId) => ({ bridgeId, bridge: (await this._network.info(bridgeId)).bridge, nics: this._network.nicViews(bridgeId) })),
        );
        return { vms: [...vmOf.values()].map((vm) => this._view(vm)), bridges: bridgeViews };
      },
      'snapshot.delete': async ({ path: file }) => {
        if (this._resets.delete(file)) this._deps.warm?.drop(`restore:${file}`);
        await deleteSnapshot(file);
        this._tempSnapshots.delete(file);
        return empty;
      },
      'vm.console_tail': ({ vmId, maxBytes }) => this._onAgent(vmId, async (vm) => ({ text: await vm.consoleTail(maxBytes) })),
      'vm.console_log': ({ vmId }) =>
        this._onAgent(vmId, async (vm) => {
          const qemu = vm.qemu;
          if (!qemu) throw new BrokerError(`vm \`${vm.name}\` has no console: it was never booted`);
          return { data: new Uint8Array(await readFile(qemu.consoleLogPath)) };
        }),
      'vm.console_write': ({ vmId, data, timeoutMs }) =>
        this._onAgent(vmId, async (vm) => {
          await vm.console().write(data, timeoutMs ?? 0);
          return empty;
        }),
      'agent.call': <K extends AgentOp>(args: AgentCallArgs<K>) =>
        this._onAgent(args.vmId, async (vm) => ({ result: await vm.callAgent(args.op, args.data, args.worker, args.timeoutMs) })),
      'agent.start': async <K extends AgentOp>(args: AgentCallArgs<K>) => {
        this._vm(args.vmId);
        const callId = this._asyncCalls.start(this._onAgent(args.vmId, (vm) => vm.callAgent(args.op, args.data, args.worker, args.timeoutMs)));
        return { callId };
      },
      'agent.await': async ({ callId, timeoutMs }) => {
        const result = await this._asyncCalls.await(callId, timeoutMs);
        return result === undefined ? { done: false } : { done: true, result };
      },
      'stream.open': (args) =>
        this._onAgent(args.vmId, async (vm) => {
          if (args.op === 'console') return this._addStream(await vm.console().openReader(args.vmId));
          const stream = await vm.openStream(args.op, args.data as never, args.worker);
          return this._addStream(new AgentBackedStream(args.vmId, stream, (s) => vm.closeStream(s)));
        }),
      'capture.open': async ({ bridgeId, vmId, file }) => {
        const { sw, port } = this._network.captureSource(bridgeId, vmId !== undefined ? this._vm(vmId) : undefined);
        if (file !== undefined) {
          await access(path.dirname(file), constants.W_OK).catch((err: Error) => {
            throw new BrokerError(`capture: cannot write ${file}: ${err.message}`);
          });
        }
        let stream: CaptureStream;
        try {
          stream = new CaptureStream(sw, port, file);
        } catch (err) {
          throw new BrokerError(`capture: ${(err as Error).message}`);
        }
        const opened = this._addStream(stream);
        this._network.onClose(bridgeId, async () => {
          this._streams.delete(opened.streamId);
          await stream.close();
        });
        return opened;
      },
      'stream.read': ({ streamId, timeoutMs }) => this._stream(streamId).read(timeoutMs),
      'stream.close': async ({ streamId }) => {
        const stream = this._streams.get(streamId);
        this._streams.delete(streamId);
        await stream?.close();
        return empty;
      },
      'bridge.create': ({ name, subnet, addressing }) => this._network.create(name, subnet, addressing),
      'bridge.attach': ({ bridgeId, vmId }) => this._onAgent(vmId, (vm) => this._network.attach(bridgeId, vm)),
      'bridge.detach': async ({ bridgeId, vmId }) => ({ bridge: await this._network.detach(bridgeId, this._vm(vmId)) }),
      'bridge.fault': async ({ bridgeId, fault }) => ({ bridge: await this._network.fault(bridgeId, fault) }),
      'bridge.info': async ({ bridgeId, from, to }) => this._network.info(bridgeId, from, to),
      'nic.info': async ({ bridgeId, vmId }) => this._network.nicInfo(bridgeId, this._vm(vmId)),
      'nic.link': async ({ bridgeId, vmId, up }) => ({ nic: await this._network.setLink(bridgeId, this._vm(vmId), up) }),
      'disk.attach': ({ vmId, disk }) => this._onAgent(vmId, async (vm) => ({ disk: await this._disks.attach(vm, disk) })),
      'disk.detach': ({ vmId, id }) => this._onAgent(vmId, async (vm) => ({ disk: await this._disks.detach(vm, id) })),
      'disk.info': async ({ vmId, id }) => ({ disk: this._disks.info(this._vm(vmId), id) }),
      'disk.read': async ({ vmId, id, sector, count }) => ({ data: await this._disks.read(this._vm(vmId), id, sector, count) }),
      'disk.write': async ({ vmId, id, sector, data }) => {
        await this._disks.write(this._vm(vmId), id, sector, data);
        return empty;
      },
      'disk.fault': async ({ vmId, id, fault }) => ({ disk: await this._disks.fault(this._vm(vmId), id, fault) }),
      'disk.power_cut': ({ vmId, id }) =>
        this._onVm(vmId, async (vm) => {
          await this._closeStreamsOf(vmId);
          return { lostBytes: await this._disks.powerCut(vm, id) };
        }),
      'lab.claim': async ({ memoryBytes, cpus }) => {
        await this._deps.pool.claim(this.id, this.displayPath, { memory_bytes: memoryBytes, cpus });
        return empty;
      },
      'lab.barrier': async ({ name, count, timeoutMs }) => {
        await this._deps.barriers.arrive(this.id, this.displayPath, name, count, timeoutMs);
        return { released: true as const };
      },
      'scope.close': async ({ vmIds, bridgeIds }) => {
        const vms = vmIds.map((vmId) => this._vms.get(vmId)).filter((vm): vm is ManagedVm => vm !== undefined);
        await Promise.all(vms.map((vm) => this._shutdownVm(vm)));
        await this._network.forget(vms);
        await this._disks.forget(vms);
        await Promise.all((bridgeIds ?? []).map((id) => this._network.closeBridge(id)));
        return { vms: vms.map((vm) => this._view(vm)) };
      },
    };
  }

  /** Every booted VM's console tail, for failure reports. */
  async consoleExcerpts(): Promise<string> {
    const parts: string[] = [];
    for (const vm of this._vms.values()) {
      if (vm.state === 'booted' || vm.state === 'paused' || vm.state === 'dead') {
        parts.push(`--- ${vm.name} ---\n${await vm.consoleTail()}`);
      }
    }
    return parts.join('\n');
  }

  /** Tears everything down. Idempotent; safe while calls are still in flight. */
  close(): Promise<void> {
    this._closed ??= (async () => {
      this.channel.close();
      await Promise.all([...this._streams.values()].map((s) => s.close().catch(() => undefined)));
      this._streams.clear();
      await Promise.all([...this._vms.values()].map((vm) => vm.shutdown().catch(() => undefined)));
      this._asyncCalls.clear();
      // After the VMs: nothing is left to unplug, the switches just close.
      await this._network.close().catch(() => undefined);
      await this._disks.close().catch(() => undefined);
      for (const file of this._resets) this._deps.warm?.drop(`restore:${file}`);
      await Promise.all([...this._tempSnapshots].map((f) => deleteSnapshot(f).catch(() => undefined)));
      this._deps.pool.releaseSession(this.id);
      this._deps.barriers.sessionEnded(this.id);
    })();
    return this._closed;
  }
}

/**
 * Restores `spare` from `file` for whichever file takes it: `devices`' NICs connect to parked
 * sockets, and their disks are parked clones of the snapshot's contents.
 */
async function startSpare(spare: ManagedVm, file: string, devices: SlotDevice[]): Promise<void> {
  const nics = devices.flatMap((d) => (d.kind === 'nic' ? [d] : []));
  const disks = devices.flatMap((d) => (d.kind === 'disk' ? [d] : []));
  const parkedNics = nics.length > 0 ? await ParkedNics.listen(nics) : undefined;
  let parkedDisks: ParkedDisks | undefined;
  try {
    parkedDisks = disks.length > 0 ? await ParkedDisks.open(disks, file) : undefined;
    const parked = devices.map((d) => (d.kind === 'nic' ? parkedNics!.devices.find((n) => n.id === d.id)! : parkedDisks!.devices.find((x) => x.serial === d.serial)!));
    await spare.restore(file, parked);
    await parkedNics?.connected(kParkedConnectTimeoutMs);
  } catch (err) {
    await parkedNics?.close();
    await parkedDisks?.close();
    throw err;
  }
  parkedNics?.holdFor(spare);
  parkedDisks?.holdFor(spare);
  await spare.warmUp();
}

/**
 * Runs `fn` on every item at once and waits for all of them; when some fail, one error names each
 * failure (a lab's VMs are independent: one that fails must not hide the others').
 */
async function settleAll<T, R>(items: T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = await Promise.allSettled(items.map(fn));
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error)?.message ?? String(r.reason)] : []));
  if (failures.length > 0) throw new BrokerError(failures.join('\n'));
  return results.map((r) => (r as PromiseFulfilledResult<R>).value);
}
