// One guest as the broker sees it: its state machine, its QEMU process, its agent link and the
// resources it holds. Every way a VM can end (shutdown, QEMU exit, session teardown) goes
// through `_finish`, which is idempotent.

import { randomBytes } from 'node:crypto';
import { copyFile, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentClient, AgentError, AgentLinkError, type AgentStream } from '../agent/client.js';
import type { AgentOp, AgentOps, AgentStreamOp, AgentStreamOps } from '../protocol/agent.js';
import type { Profile } from '../config/profiles.js';
import { formatMs, formatSize } from '../config/units.js';
import type { EventBus } from '../events/bus.js';
import { consoleLogOf, ownedTempDir, QemuVm, ramImageOf, restoreSnapshot, saveSnapshot, type LaunchSpec } from '../vmm/qemu.js';
import { blkdebugBlockdev, diskBlockdevs, fileNodeOf, kDefaultHotplugSlots, type BlkdebugRuleLists, type DiskBackendSpec, type SlotDevice } from '../vmm/cmdline.js';
import { qemuBinary } from '../vmm/paths.js';
import type { BootCache } from './boot-cache.js';
import { buildFilesCpio, type BootFile } from './boot-files.js';
import { RpcErrorCode, type BootOptions, type VmState, type VmView } from '../protocol/rpc.js';
import type { ResourcePool } from './resources.js';
import { BrokerError } from './rpc-server.js';
import { ConsoleLink } from './streams.js';
import { agentCrash, describeDeath, fateOf } from './vm-fate.js';
import type { VmDeathKind } from '../protocol/events.js';
import type { QemuExit, QmpEvent } from '../vmm/qemu.js';

/** What a VM needs from the session that owns it. */
export interface VmOwner {
  bus: EventBus;
  pool: Pick<ResourcePool, 'acquire'>;
  /** Running spares to take instead of restoring (absent for the pool's own spares). */
  warm?: SpareSource;
  sessionId: number;
  /** The test file, as reports show it. */
  displayPath: string;
  /** The lab the VM belongs to (`provium`, or a sub-lab's path), for vm_spawned. */
  labPath?: string;
  bootCache: BootCache;
}

/** What a boot needs of the warm pool (warm-pool.ts): a running spare of its key, and to say it booted one. */
export interface SpareSource {
  readonly enabled: boolean;
  take(key: string): Promise<ManagedVm | undefined>;
  keep(key: string, profile: Profile, start: (spare: ManagedVm) => Promise<void>, wanted?: number): void;
  drop(key: string): void;
}

const CONSOLE_EXCERPT_BYTES = 4096;
/** Ops that may legitimately run long get no default timeout; the rest get this one. */
const DEFAULT_AGENT_TIMEOUT_MS = 30_000;
/** A guest that does not release an unplugged device within this long is stuck. */
const kUnplugTimeoutMs = 10_000;
const UNBOUNDED_OPS = new Set<string>(['exec', 'wait', 'sleep', 'worker_join', 'stdin_write', 'batch', 'syscall', 'ioctl']);
/** With an op pending and nothing from the agent for this long, it is pinged (liveness). */
const kLivenessPingMs = 2_500;
/** With an op pending and nothing from the agent for this long, the guest is diagnosed. */
const kLivenessSilentMs = 7_000;
/** The guest closed the agent's port: an agent that reopens it does so at once. */
const kPortClosedGraceMs = 2_000;
/** After the port closed, when a systemd unit's death line is on the console (ExecStopPost ran). */
const kAgentExitLineMs = 700;
/** query-status while diagnosing: a QEMU that does not answer this fast is itself stuck. */
const kStatusTimeoutMs = 1_500;

let nextCid = 100;

export class ManagedVm {
  state: VmState = 'created';
  cid: number | null = null;
  private _deadReason: string | undefined;
  /** Bumped whenever the guest starts over or stops: its files and processes are then gone. */
  private _generation = 0;
  private _qemu: QemuVm | undefined;
  private _agent: AgentClient | undefined;
  private _releaseResources: (() => void) | undefined;
  private _bootedAt = 0;
  private _console: ConsoleLink | undefined;
  /** The boot in progress: a shutdown waits for it, or the guest it brings up would outlive its owner. */
  private _booting: Promise<unknown> | undefined;
  /** The launch the running guest came from (for snapshots). */
  private _launched: LaunchSpec | undefined;
  /** Set while we stop QEMU on purpose, so its exit is not a death. */
  private _stopping = false;
  /** QMP stops of our own in progress (a save): their STOP events are not a pause from outside. */
  private _ownStops = 0;
  /** Paused by a STOP we did not ask for: a RESUME we did not ask for makes it usable again. */
  private _pausedFromOutside = false;
  /** How the last guest ended when it was not asked to (a poweroff, a death), for messages. */
  private _endReason: string | undefined;
  /** Telling how QEMU ended (reads the console): callers wait for it before reporting. */
  private _exitHandling: Promise<void> | undefined;
  /** Hot-plug slots (pcie-root-port ids) in use by the running QEMU: slot → NIC or disk node id. */
  private readonly _slots = new Map<string, string>();
  /** What is plugged into them, by device id: a snapshot records it, a restore gives it again. */
  private readonly _devices = new Map<string, SlotDevice>();

  constructor(
    readonly id: number,
    readonly name: string,
    readonly profile: Profile,
    private readonly _owner: VmOwner,
  ) {}

  /** The VM's state as the session reports it (the session adds the id and the streams). */
  info(): Omit<VmView, 'vmId' | 'streams'> {
    const info: Omit<VmView, 'vmId' | 'streams'> = { state: this.state, cid: this.cid, generation: this._generation };
    // The reason belongs to the death: once the VM is shut down or booted again it is history.
    if (this.state === 'dead' && this._deadReason) info.deadReason = this._deadReason;
    if (this.state === 'shutdown' && this._endReason && !this._deadReason) info.endReason = this._endReason;
    return info;
  }

  get qemu(): QemuVm | undefined {
    return this._qemu;
  }

  /** Boots to agent-ready. On failure the VM is back in `created` and the error carries the console tail. */
  boot(opts: BootOptions): Promise<{ bootMs: number; restored: boolean }> {
    if (this._booting) return Promise.reject(new BrokerError(`vm \`${this.name}\`: a boot is already in progress`));
    const booting = this._boot(opts);
    this._booting = booting;
    return booting.finally(() => {
      this._booting = undefined;
    });
  }

  private async _boot(opts: BootOptions): Promise<{ bootMs: number; restored: boolean }> {
    if (this.state !== 'created' && this.state !== 'shutdown') {
      throw this._stateError('boot', ['created', 'shutdown']);
    }
    const started = performance.now();
    // The launch a spare of this boot shares: no per-boot values (seed, time, files).
    const launch = this._launchOf(opts);
    // 1. Wait for room in the resource pool.
    await this._acquire(launch);
    let restored = false;
    let pooled = false;
    try {
      // 2. Build the launch; per-boot files make it uncacheable.
      const spec: LaunchSpec = { ...launch };
      if (opts.rngSeed !== undefined) spec.rngSeed = opts.rngSeed;
      if (opts.initialTime !== undefined) spec.initialTime = opts.initialTime;
      if (opts.files?.length) spec.extraInitrd = await writeFilesArchive(opts.files);
      const timeoutMs = opts.agentTimeoutMs ?? this.profile.agentTimeoutMs;
      const cache = this._owner.bootCache;
      const key = await cache.key(spec, qemuBinary());
      // 3. Take a running spare of this key (the warm pool), else restore the boot snapshot of
      //    this key when there is one, else boot cold and save one. A seeded boot needs its own
      //    QEMU (-seed): never a spare.
      const warm = this._owner.warm;
      const spare = key && warm?.enabled && spec.rngSeed === undefined ? await warm.take(key) : undefined;
      if (warm?.enabled && key) {
        if (spare) this._owner.bus.emit('pool_hit', { file: this._owner.displayPath, vm_name: this.name });
        else this._owner.bus.emit('pool_miss', { file: this._owner.displayPath, vm_name: this.name, reason: spec.rngSeed !== undefined ? 'rng_seed' : 'no spare ready' });
      }
      if (spare) {
        this._adopt(spare);
        pooled = true;
        restored = true;
      }
      const snapshot = key && !spare ? await cache.lookup(key) : undefined;
      const stopAndKeepResources = async () => {
        await this._finish('created');
        await this._acquire(launch);
      };
      if (key && snapshot) {
        try {
          await this._restoreFrom(spec, snapshot, timeoutMs);
          restored = true;
        } catch {
          await stopAndKeepResources();
          await cache.discard(key);
        }
      }
      if (!restored) {
        await this._coldBoot(spec, timeoutMs);
        if (key) await cache.store(key, async (tmp) => void (await this._saveTo(tmp))).catch(() => undefined);
        // A save that QEMU did not survive must not boot a VM that is already gone.
        await this._assertAliveAfterSave();
        // A seeded VM starts from the snapshot even when it just made it: every VM with one
        // rng_seed then reads virtio-rng's stream from the same place.
        const made = key && spec.rngSeed !== undefined ? await cache.lookup(key) : undefined;
        if (made) {
          await stopAndKeepResources();
          await this._restoreFrom(spec, made, timeoutMs);
          restored = true;
        }
      }
      // 4. Clones must not share random state or a stale clock (a spare had both done when it
      //    was restored; its clock has run since). Then spares of this key for the next files.
      if (restored && (!pooled || opts.initialTime !== undefined)) await this._afterRestore(opts);
      this._launched = spec;
      if (key && spec.rngSeed === undefined) warm?.keep(key, this.profile, (spare) => spare.bootSpare(launch, key, timeoutMs));
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const tail = await this._consoleTailSafe();
      await this._finish('created');
      throw new BrokerError(
        `vm \`${this.name}\` (profile ${this.profile.name}) failed to boot: ${reason}\n` +
          `--- console (last ${formatSize(CONSOLE_EXCERPT_BYTES)}) ---\n${tail || '(empty)'}`,
      );
    }
    this._started();
    const bootMs = this._bootedAt - started;
    this._owner.bus.emit('vm_spawned', {
      file: this._owner.displayPath,
      lab: this._owner.labPath ?? 'provium',
      vm_name: this.name,
      profile: this.profile.name,
      memory_bytes: launch.memoryBytes,
      cid: this.cid!,
      boot_ns: Math.round(bootMs * 1e6),
      restored,
      boot: pooled ? 'pool' : restored ? 'snapshot' : 'cold',
    });
    return { bootMs, restored };
  }

  /**
   * A warm-pool spare: restored from the boot snapshot of `key` (never a cold boot), reseeded,
   * its clock set, and one command run so its first real one does not pay for a cold TCG
   * translation cache.
   */
  async bootSpare(launch: LaunchSpec, key: string, timeoutMs: number): Promise<void> {
    const spec: LaunchSpec = { ...launch, name: this.name };
    await this._acquire(spec);
    try {
      const snapshot = await this._owner.bootCache.lookup(key);
      if (!snapshot) throw new Error(`no boot snapshot of key ${key}`);
      await this._restoreFrom(spec, snapshot, timeoutMs);
      await this._afterRestore({});
      this._launched = spec;
    } catch (err) {
      await this._finish('created');
      throw err;
    }
    this._started();
    await this.warmUp();
  }

  /** One command, so the next one does not pay for a restored guest's cold TCG translation cache. */
  async warmUp(): Promise<void> {
    await this.requireAgent('warm up').request('exec', { argv: ['/bin/sh', '-c', 'true'], env: {}, env_clear: false, stdin: new Uint8Array() }, { timeoutMs: 10_000 });
  }

  /**
   * A restore served by a spare already restored from the same snapshot (a fixture's VM, warm):
   * its guest becomes this VM's. `devices` are the spare's hot-plugged devices as this VM has them
   * (its NICs on this VM's bridges).
   */
  async restoreFromSpare(spare: ManagedVm, devices: SlotDevice[] = []): Promise<void> {
    if (this.state !== 'created' && this.state !== 'shutdown') throw this._stateError('restore', ['created', 'shutdown']);
    const launched = spare._launched!;
    await this._acquire(launched);
    this._adopt(spare);
    for (const d of devices) this._record(d);
    this._launched = { ...launched, name: this.name, ...(devices.length > 0 ? { slotDevices: devices } : {}) };
    this._started();
  }

  /** Takes a spare's running guest over: its QEMU, agent link and console become this VM's. */
  private _adopt(spare: ManagedVm): void {
    const qemu = spare._qemu!;
    const agent = spare._agent!;
    // The spare lets go first: its exit and link watchers then ignore this guest.
    spare._qemu = undefined;
    spare._agent = undefined;
    spare.state = 'shutdown';
    spare.dropResources();
    this._stopping = false;
    this._qemu = qemu;
    this._agent = agent;
    qemu.rename(this.name);
    this._watchExit(qemu);
    agent.on('closed', (reason: string) => void this._onAgentClosed(qemu, reason));
  }

  /** After the boot-snapshot save: QEMU and the agent link must still be there. */
  private async _assertAliveAfterSave(): Promise<void> {
    const qemu = this._qemu;
    if (!qemu) throw new Error('QEMU went away while the boot snapshot was saved');
    const exit = qemu.state === 'exited' || this._agent?.state === 'closed' ? await exitSoon(qemu) : undefined;
    if (exit) {
      const death = describeDeath(fateOf(qemu), exit, await qemu.consoleTail(16_384).catch(() => ''));
      throw new Error(`QEMU died while the boot snapshot was saved: ${death.reason}`);
    }
    if (this._agent?.state === 'closed') throw new Error('the agent link closed while the boot snapshot was saved (QEMU still runs)');
  }

  /** What `opts` launch, without the per-boot values (seed, time, files). */
  private _launchOf(opts: BootOptions): LaunchSpec {
    const launch: LaunchSpec = { name: this.name, profile: this.profile, memoryBytes: opts.memoryBytes ?? this.profile.memoryBytes, cpus: opts.cpus ?? this.profile.cpus };
    if (opts.kernelCmdline !== undefined) launch.cmdlineReplace = opts.kernelCmdline;
    if (opts.kernelCmdlineAppend !== undefined) launch.cmdlineAppend = opts.kernelCmdlineAppend;
    return launch;
  }

  /** Waits for room in the resource pool for a guest of `launch`'s size; shutdown gives it back. */
  private async _acquire(launch: Pick<LaunchSpec, 'memoryBytes' | 'cpus'>): Promise<void> {
    this._releaseResources = await this._owner.pool.acquire(this._owner.sessionId, this._owner.displayPath, { memory_bytes: launch.memoryBytes, cpus: launch.cpus });
  }

  /** Gives the VM's pool room back now (a spare being reclaimed: a file waits for that room). */
  dropResources(): void {
    const release = this._releaseResources;
    this._releaseResources = undefined;
    release?.();
  }

  /** A new guest runs: a new cid and generation, nothing of the previous one survives. */
  private _started(): void {
    this.state = 'booted';
    this.cid = nextCid++;
    this._generation++;
    this._deadReason = undefined;
    this._endReason = undefined;
    this._bootedAt = performance.now();
    const qemu = this._qemu;
    const agent = this._agent;
    if (qemu && agent) {
      agent.pauseLiveness(false);
      agent.watchLiveness({ pingAfterMs: kLivenessPingMs, silentAfterMs: kLivenessSilentMs, onSilent: (ms) => void this._onSilent(qemu, agent, ms) });
    }
  }

  private async _coldBoot(spec: LaunchSpec, timeoutMs: number): Promise<void> {
    this._stopping = false;
    try {
      this._qemu = await QemuVm.launch({ ...spec, sharedRam: true });
    } finally {
      // QEMU has read the initrd into guest memory by the time launch resolves.
      if (spec.extraInitrd) await rm(path.dirname(spec.extraInitrd), { recursive: true, force: true });
    }
    this._watchExit(this._qemu);
    this._agent = await this._connectAgent(timeoutMs);
  }

  private async _restoreFrom(spec: LaunchSpec, snapshotFile: string, timeoutMs: number): Promise<void> {
    this._stopping = false;
    // A snapshot with a RAM image beside it restores onto a copy of that (guest-ram.ts).
    const image = ramImageOf(snapshotFile);
    const ramImage = (await stat(image).then(() => true, () => false)) ? image : undefined;
    // A whole-stream snapshot loads into anonymous memory: QEMU's load reads every page, and in a
    // tmpfs each read would allocate one.
    const ram = ramImage ? { sharedRam: true, ramImage } : {};
    this._qemu = await QemuVm.launch({ ...spec, incomingSnapshot: true, consoleReplay: consoleLogOf(snapshotFile), ...ram });
    this._watchExit(this._qemu);
    await restoreSnapshot(this._qemu, snapshotFile);
    this._agent = await this._connectAgent(timeoutMs);
    await this._agent.resync(timeoutMs);
  }

  /** Saves the running guest to `file` and lets it run on. */
  private async _saveTo(file: string, whileStopped?: () => Promise<void>): Promise<number> {
    const qemu = this._qemu!;
    this._ownStops++;
    try {
      const bytes = (await saveSnapshot(qemu, file)).bytes;
      // The log so far goes with it: a restore starts its console log with it.
      await copyFile(qemu.consoleLogPath, consoleLogOf(file)).catch(() => undefined);
      // The guest is still stopped: what else belongs to this instant (its disks) is saved now.
      await whileStopped?.();
      return bytes;
    } finally {
      await qemu.qmp.execute('cont').catch(() => undefined);
      this._ownStops--;
    }
  }

  private async _afterRestore(opts: BootOptions): Promise<void> {
    const agent = this._agent!;
    const seed = opts.rngSeed !== undefined ? seedBytes(opts.rngSeed) : randomBytes(32);
    const nowMs = opts.initialTime !== undefined ? opts.initialTime * 1000 : Date.now();
    await Promise.all([
      agent.request('seed_rng', { seed }, { timeoutMs: 10_000 }),
      agent.request('set_time', { sec: Math.floor(nowMs / 1000), nsec: Math.round((nowMs % 1000) * 1e6) }, { timeoutMs: 10_000 }),
    ]);
  }

  /** vm:snapshot: the guest keeps running; a sidecar records how to launch it again. */
  async snapshot(file: string, openStreams: number, whileStopped?: () => Promise<void>): Promise<{ path: string; bytes: number }> {
    this.requireAgent('snapshot');
    if (openStreams > 0) {
      throw new BrokerError(`vm \`${this.name}\`: cannot snapshot with ${openStreams} stream(s) open; close them first`);
    }
    const bytes = await this._saveTo(file, whileStopped);
    const meta: SnapshotMeta = {
      profile: this.profile.name,
      memoryBytes: this._launched!.memoryBytes,
      cpus: this._launched!.cpus,
      devices: [...this._devices.values()],
    };
    if (this._launched!.cmdlineReplace !== undefined) meta.cmdlineReplace = this._launched!.cmdlineReplace;
    if (this._launched!.cmdlineAppend !== undefined) meta.cmdlineAppend = this._launched!.cmdlineAppend;
    await writeFile(`${file}.json`, JSON.stringify(meta));
    return { path: file, bytes };
  }

  /** The devices a snapshot file says its guest had plugged (a restore needs their backends). */
  static async snapshotDevices(file: string): Promise<SlotDevice[]> {
    try {
      return (JSON.parse(await readFile(`${file}.json`, 'utf8')) as SnapshotMeta).devices ?? [];
    } catch {
      return [];
    }
  }

  /**
   * vm:restore: from created or shutdown, into a new QEMU that streams the snapshot in. `devices`
   * replaces the hot-plugged devices the snapshot recorded (the same slots, with their backends
   * where they are now).
   */
  async restore(file: string, devices?: SlotDevice[]): Promise<void> {
    if (this.state !== 'created' && this.state !== 'shutdown') throw this._stateError('restore', ['created', 'shutdown']);
    let meta: SnapshotMeta;
    try {
      await stat(file);
      meta = JSON.parse(await readFile(`${file}.json`, 'utf8')) as SnapshotMeta;
    } catch (err) {
      throw new BrokerError(`vm \`${this.name}\`: cannot restore from ${file}: ${(err as Error).message} (was it written by vm:snapshot?)`);
    }
    if (meta.profile !== this.profile.name) {
      throw new BrokerError(`vm \`${this.name}\` has profile ${this.profile.name} but snapshot ${file} was taken with profile ${meta.profile}`);
    }
    await this._acquire(meta);
    const spec: LaunchSpec = { name: this.name, profile: this.profile, memoryBytes: meta.memoryBytes, cpus: meta.cpus };
    if (meta.cmdlineReplace !== undefined) spec.cmdlineReplace = meta.cmdlineReplace;
    if (meta.cmdlineAppend !== undefined) spec.cmdlineAppend = meta.cmdlineAppend;
    devices ??= meta.devices ?? [];
    if (devices.length > 0) spec.slotDevices = devices;
    try {
      await this._restoreFrom(spec, file, this.profile.agentTimeoutMs);
      // The saved machine's devices are plugged again, on their slots.
      for (const d of devices) this._record(d);
      await this._afterRestore({});
    } catch (err) {
      const tail = await this._consoleTailSafe();
      await this._finish('created');
      throw new BrokerError(`vm \`${this.name}\`: restore from ${file} failed: ${(err as Error).message}\n--- console ---\n${tail}`);
    }
    this._launched = spec;
    this._started();
  }

  private async _connectAgent(timeoutMs: number): Promise<AgentClient> {
    const qemu = this._qemu!;
    try {
      const agent = await AgentClient.connect(qemu.agentSocketPath, {
        timeoutMs,
        isAlive: () => qemu.state === 'running',
      });
      agent.on('closed', (reason: string) => void this._onAgentClosed(qemu, reason));
      return agent;
    } catch (err) {
      if (err instanceof AgentLinkError && err.reason === 'timeout') {
        throw new Error(`the agent did not answer within ${formatMs(timeoutMs)} (agent_timeout)`);
      }
      const exit = await exitSoon(qemu);
      if (exit) throw new Error(`QEMU exited during boot (${describeExit(exit)})${exit.stderrTail ? `: ${exit.stderrTail.trim()}` : ''}`);
      throw err;
    }
  }

  /** The link drops first when QEMU dies, so the death is told by QEMU's exit when there is one. */
  private async _onAgentClosed(qemu: QemuVm, reason: string): Promise<void> {
    if (this.state !== 'booted' && this.state !== 'paused') return;
    const exit = await exitSoon(qemu);
    if (this._qemu !== qemu) return;
    if (exit) await this._exitHandling;
    else this._markDead(`the agent link closed while QEMU kept running: ${reason}`, 'channel_closed');
  }

  /** QEMU's exit and events: how the guest ended, a pause from outside, its port closed inside. */
  private _watchExit(qemu: QemuVm): void {
    fateOf(qemu);
    try {
      qemu.qmp.on('event', (ev) => this._onQmpEvent(qemu, ev));
    } catch {
      // QMP already gone: the exit below tells the rest.
    }
    void qemu.exited.then((exit) => {
      if (this._stopping || this._qemu !== qemu) return;
      this._exitHandling ??= this._onQemuExit(qemu, exit);
    });
  }

  /** Names the death from QEMU's events, its exit and the console; a clean poweroff is a shutdown. */
  private async _onQemuExit(qemu: QemuVm, exit: QemuExit): Promise<void> {
    const consoleText = await qemu.consoleTail(16_384).catch(() => '');
    if (this._stopping || this._qemu !== qemu) return;
    const death = describeDeath(fateOf(qemu), exit, consoleText);
    if (!death.clean) return this._markDead(death.reason, death.kind, consoleText);
    if (this.state !== 'booted' && this.state !== 'paused') return;
    this._endReason = death.reason;
    this._emitDied('poweroff', death.reason, consoleText);
    this._agent?.close(`vm \`${this.name}\`: ${death.reason}`);
    await this.shutdown(death.reason);
  }

  private _onQmpEvent(qemu: QemuVm, ev: QmpEvent): void {
    if (this._qemu !== qemu || this._stopping) return;
    switch (ev.event) {
      case 'STOP':
        if (this.state === 'booted' && this._ownStops === 0) void this._onOutsideStop(qemu);
        return;
      case 'RESUME':
        // Resumed from outside after a pause from outside: usable again.
        if (this.state === 'paused' && this._ownStops === 0 && this._pausedFromOutside) {
          this._pausedFromOutside = false;
          this.state = 'booted';
          this._agent?.pauseLiveness(false);
        }
        return;
      case 'VSERPORT_CHANGE':
        if (fateOf(qemu).portOpen === false && this.state === 'booted') {
          // An agent under systemd that died says so on the console (its unit's ExecStopPost)
          // before systemd starts a new one, which opens the port again.
          setTimeout(() => void this._onAgentUnitExit(qemu), kAgentExitLineMs).unref();
          setTimeout(() => void this._onPortClosed(qemu), kPortClosedGraceMs).unref();
        }
        return;
    }
  }

  /** A STOP we did not ask for: the guest is paused (from outside, a disk error, a watchdog). */
  private async _onOutsideStop(qemu: QemuVm): Promise<void> {
    const status = await this._queryStatus(qemu);
    if (this._qemu !== qemu || this.state !== 'booted' || this._ownStops > 0 || status === 'running') return;
    const why = status === 'io-error' ? 'QEMU paused it after a disk I/O error' : status === undefined ? 'QEMU stopped it' : `QEMU status \`${status}\``;
    this.state = 'paused';
    this._pausedFromOutside = true;
    this._agent?.pauseLiveness(true);
    this._agent?.failPending(`vm \`${this.name}\` was paused from outside the harness (QMP STOP event; ${why}); call vm:resume() to continue`);
  }

  /**
   * The agent's port closed: a death line on the console names it (the agent as a systemd unit,
   * which systemd restarts). A port open again without one is a new agent all the same: the
   * harness's session, processes and streams in the guest are gone, and what waits would hang.
   */
  private async _onAgentUnitExit(qemu: QemuVm): Promise<void> {
    if (this._qemu !== qemu || this.state !== 'booted') return;
    const consoleText = await qemu.consoleTail(16_384).catch(() => '');
    if (this._qemu !== qemu || this.state !== 'booted') return;
    const crash = agentCrash(consoleText);
    if (crash) return this._markDead(crash, 'agent_exited', consoleText);
    if (fateOf(qemu).portOpen === true) {
      this._markDead('the agent exited and a new one opened its port (systemd restarted the unit?): what the harness had open in the guest is gone', 'agent_exited', consoleText);
    }
  }

  /** The guest closed the agent's port and did not open it again (a sleeping guest closes it too). */
  private async _onPortClosed(qemu: QemuVm): Promise<void> {
    if (this._qemu !== qemu || this.state !== 'booted' || fateOf(qemu).portOpen !== false || qemu.state !== 'running') return;
    const status = await this._queryStatus(qemu);
    if (this._qemu !== qemu || this.state !== 'booted' || fateOf(qemu).portOpen !== false) return;
    if (status === 'suspended') return this._onSuspended();
    if (status !== undefined && status !== 'running') return this._onOutsideStop(qemu);
    this._markDead(`the agent's channel was closed inside the guest (its virtio port org.provium.agent stayed closed for ${kPortClosedGraceMs / 1000} s)`, 'channel_closed');
  }

  /** The guest put itself to sleep (ACPI S3): what waits fails, the VM stays booted for vm:wakeup(). */
  private _onSuspended(): void {
    this._agent?.failPending(`vm \`${this.name}\`: the guest suspended itself (ACPI sleep; QEMU status \`suspended\`) while the op waited; vm:wakeup() resumes it`);
  }

  private async _queryStatus(qemu: QemuVm): Promise<string | undefined> {
    try {
      const r = await qemu.qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: kStatusTimeoutMs });
      return r.status;
    } catch {
      return undefined;
    }
  }

  /**
   * The agent sent nothing for `silentMs` while ops waited on it (pings included): find out why
   * and fail what is pending with it, within ~10 s of the last sign of life.
   */
  private async _onSilent(qemu: QemuVm, agent: AgentClient, silentMs: number): Promise<void> {
    if (this._qemu !== qemu || this._agent !== agent || this.state !== 'booted') return;
    const status = await this._queryStatus(qemu);
    if (this._qemu !== qemu || this._agent !== agent || this.state !== 'booted') return;
    const secs = (silentMs / 1000).toFixed(1);
    if (status === undefined) {
      return this._markDead(`the guest stopped answering: nothing from the agent for ${secs} s and QEMU does not answer QMP either (its process stopped or hung?)`, 'unresponsive');
    }
    if (status === 'suspended') return this._onSuspended();
    if (status !== 'running') return this._onOutsideStop(qemu);
    const consoleText = await qemu.consoleTail(16_384).catch(() => '');
    if (this._qemu !== qemu || this.state !== 'booted') return;
    const crash = agentCrash(consoleText);
    if (crash) return this._markDead(crash, 'agent_exited', consoleText);
    if (fateOf(qemu).portOpen === false) return this._onPortClosed(qemu);
    this._markDead(
      `the guest stopped answering: nothing from the agent for ${secs} s (liveness pings unanswered) while QEMU runs it (a kernel hang, or the agent is frozen)`,
      'unresponsive',
      consoleText,
    );
  }

  private _markDead(reason: string, kind: VmDeathKind = 'other', consoleText?: string): void {
    if (this.state === 'dead' || this.state === 'shutdown' || this.state === 'created') return;
    this._deadReason = reason;
    this._endReason = reason;
    this.state = 'dead';
    this._emitDied(kind, reason, consoleText);
    this._agent?.close(reason);
    void this._finish('dead');
  }

  private _emitDied(kind: VmDeathKind, reason: string, consoleText = ''): void {
    this._owner.bus.emit('vm_died', {
      file: this._owner.displayPath,
      vm_name: this.name,
      kind,
      reason,
      console_excerpt: consoleText.slice(-CONSOLE_EXCERPT_BYTES),
    });
  }

  /** The agent link, or an error naming the state. */
  requireAgent(op: string): AgentClient {
    if (this.state === 'booted' && this._agent) return this._agent;
    if (this.state === 'paused') throw new BrokerError(`vm \`${this.name}\` is paused; use resume() before ${op}`);
    throw this._stateError(op, ['booted']);
  }

  async callAgent<K extends AgentOp>(op: K, data: AgentOps[K]['req'], worker?: number, timeoutMs?: number): Promise<AgentOps[K]['res']> {
    const agent = this.requireAgent(op);
    // A test's remaining time (timeoutMs) never lifts an op's own bound.
    const own = UNBOUNDED_OPS.has(op) ? undefined : DEFAULT_AGENT_TIMEOUT_MS;
    const limit = timeoutMs === undefined ? own : own === undefined ? timeoutMs : Math.min(timeoutMs, own);
    try {
      return await agent.request(op, data, { worker, timeoutMs: limit });
    } catch (err) {
      throw await this._agentFailure(err);
    }
  }

  async openStream<K extends AgentStreamOp>(op: K, data: Omit<AgentStreamOps[K], 'window'>, worker?: number): Promise<AgentStream> {
    const agent = this.requireAgent(op);
    try {
      return await agent.openStream(op, data, { worker, timeoutMs: DEFAULT_AGENT_TIMEOUT_MS });
    } catch (err) {
      throw await this._agentFailure(err);
    }
  }

  async closeStream(stream: AgentStream): Promise<void> {
    if (this._agent && this._agent.state !== 'closed') await this._agent.closeStream(stream).catch(() => undefined);
  }

  private async _agentFailure(err: unknown): Promise<BrokerError> {
    if (err instanceof AgentError) return new BrokerError(err.message, RpcErrorCode.agent, err.errno);
    if (err instanceof AgentLinkError && err.reason === 'timeout') {
      return new BrokerError(`vm \`${this.name}\`: ${err.message}`, RpcErrorCode.timeout);
    }
    // Failed on purpose while the link lives on (a pause from outside, a suspended guest).
    if (err instanceof AgentLinkError && err.reason === 'stalled') return new BrokerError(err.message, RpcErrorCode.timeout);
    // The link dropped: answer once the VM's fate is known, so the caller gets the real reason.
    if (this._qemu && this.state !== 'dead') {
      const exit = await exitSoon(this._qemu);
      if (exit) await this._exitHandling;
    }
    if (this.state === 'shutdown' && this._endReason) return new BrokerError(`vm \`${this.name}\`: ${this._endReason}`, RpcErrorCode.vmDead);
    // QEMU lives on but the link is gone for good: the guest is unreachable, so it is dead.
    if (this.state !== 'dead' && this._agent?.state === 'closed') this._markDead(`the agent link closed: ${(err as Error).message}`);
    if (this.state === 'dead') return this.deadError();
    return new BrokerError(`vm \`${this.name}\`: ${(err as Error).message}`, RpcErrorCode.agent);
  }

  deadError(): BrokerError {
    return new BrokerError(`vm \`${this.name}\` is dead: ${this._deadReason ?? 'unknown reason'}`, RpcErrorCode.vmDead);
  }

  async pause(): Promise<void> {
    if (this.state !== 'booted') throw this._stateError('pause', ['booted']);
    // Our own STOP: its event must not read as a pause from outside, whenever it arrives.
    this.state = 'paused';
    this._agent?.pauseLiveness(true);
    this._ownStops++;
    try {
      await this._qemu!.qmp.execute('stop');
    } catch (err) {
      if (this.state === 'paused') {
        this.state = 'booted';
        this._agent?.pauseLiveness(false);
      }
      throw err;
    } finally {
      this._ownStops--;
    }
  }

  async resume(): Promise<void> {
    if (this.state !== 'paused') throw this._stateError('resume', ['paused']);
    await this._qemu!.qmp.execute('cont');
    this.state = 'booted';
    this._pausedFromOutside = false;
    this._agent?.pauseLiveness(false);
  }

  /** QMP system_wakeup: a guest that suspended itself (ACPI S3) runs again. */
  async wakeup(): Promise<void> {
    if (this.state !== 'booted') throw this._stateError('wakeup', ['booted']);
    await this._qemu!.qmp.execute('system_wakeup');
  }

  /** Warm reboot: the guest runs its boot path again and the agent is greeted anew. */
  async reset(): Promise<void> {
    if (this.state !== 'booted') throw this._stateError('reset', ['booted']);
    this.state = 'created'; // so a failure below is reported as a failed reset, not a death
    try {
      // QEMU runs with -no-reboot so a guest that reboots itself (a panic) ends. That setting
      // would turn this reset into a shutdown, and a PVH guest goes through a burst of resets of
      // its own before it boots again, so lift it until the new agent has answered.
      const qmp = this._qemu!.qmp;
      await qmp.execute('set-action', { reboot: 'reset' });
      await qmp.execute('system_reset');
      await this._agent!.rehandshake(`vm \`${this.name}\` was reset`, this.profile.agentTimeoutMs);
      await qmp.execute('set-action', { reboot: 'shutdown' });
      this.state = 'booted';
      this._generation++;
    } catch (err) {
      this.state = 'booted';
      this._markDead(`reset failed: ${(err as Error).message}`);
      throw this.deadError();
    }
  }

  /** ACPI power button: the guest shuts itself down; if it does not within the grace, it is stopped. */
  async powerButton(graceMs = 10_000): Promise<{ graceful: boolean }> {
    if (this.state !== 'booted') throw this._stateError('power_button', ['booted']);
    const qemu = this._qemu!;
    this._stopping = true;
    await qemu.qmp.execute('system_powerdown');
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)));
    const graceful = await Promise.race([qemu.exited.then(() => true), grace]);
    // A pending grace timer would keep the process alive after the run.
    clearTimeout(timer);
    await this.shutdown();
    return { graceful };
  }

  /**
   * Hot-plugs a virtio-net NIC whose netdev dials `socketPath` (the bridge's switch, already
   * listening) into a free pcie-root-port. NICs are plugged after boot, so a VM with NICs still
   * boots from its boot snapshot.
   */
  async plugNic(nic: { id: string; socketPath: string; mac: string }): Promise<void> {
    const qmp = this._requireQmp('plug a NIC');
    const slot = this._freeSlot(nic.id);
    await qmp.execute('netdev_add', { type: 'stream', id: nic.id, server: false, addr: { type: 'unix', path: nic.socketPath } });
    try {
      await qmp.execute('device_add', { driver: 'virtio-net-pci', id: `${nic.id}-dev`, netdev: nic.id, mac: nic.mac, bus: slot });
      this._devices.set(nic.id, { kind: 'nic', slot, ...nic });
    } catch (err) {
      this._slots.delete(slot);
      await qmp.execute('netdev_del', { id: nic.id }).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Unplugs a NIC: the link goes down at once, and the guest releases the device in the
   * background (PCIe hot-unplug waits ~5 s for the guest), after which its slot is free again.
   * A VM that is not running has nothing to unplug.
   */
  async unplugNic(id: string): Promise<void> {
    await this._unplug(id, (qmp) => qmp.execute('set_link', { name: `${id}-dev`, up: false }), (qmp) => qmp.execute('netdev_del', { id }));
  }

  /**
   * Unplugs device `<id>-dev` (after `before`): the guest releases it in the background (native
   * PCIe hot-unplug waits ~5 s), then `after` drops its backend and the slot is free again.
   */
  private async _unplug(id: string, before: ((qmp: QemuVm['qmp']) => Promise<unknown>) | undefined, after: (qmp: QemuVm['qmp']) => Promise<unknown>): Promise<void> {
    const qemu = this._qemu;
    const slot = [...this._slots].find(([, deviceId]) => deviceId === id)?.[0];
    if (!qemu || slot === undefined || (this.state !== 'booted' && this.state !== 'paused')) return;
    const qmp = qemu.qmp;
    await before?.(qmp);
    this._devices.delete(id);
    const deleted = qmp.waitEvent('DEVICE_DELETED', (ev) => (ev.data as { device?: string })?.device === `${id}-dev`, kUnplugTimeoutMs);
    await qmp.execute('device_del', { id: `${id}-dev` });
    void deleted
      .then(() => after(qmp))
      .then(() => {
        if (this._qemu === qemu && this._slots.get(slot) === id) this._slots.delete(slot);
      })
      .catch(() => undefined);
  }

  /**
   * Hot-plugs a virtio-blk disk whose block nodes `diskBlockdevs` describes; `serial` lets the
   * guest side find which /dev/vdX it became.
   */
  async plugDisk(disk: { node: string; backend: DiskBackendSpec; readonly: boolean; serial: string }): Promise<void> {
    const qmp = this._requireQmp('plug a disk');
    const slot = this._freeSlot(disk.node);
    const added: string[] = [];
    try {
      for (const node of diskBlockdevs(disk.node, disk.backend, disk.readonly)) {
        await qmp.execute('blockdev-add', node);
        added.unshift(node['node-name'] as string);
      }
      await qmp.execute('device_add', { driver: 'virtio-blk-pci', id: `${disk.node}-dev`, drive: disk.node, bus: slot, serial: disk.serial });
      this._devices.set(disk.node, { kind: 'disk', slot, ...disk });
    } catch (err) {
      this._slots.delete(slot);
      for (const node of added) await qmp.execute('blockdev-del', { 'node-name': node }).catch(() => undefined);
      throw err;
    }
  }

  /** The guest's name for a plugged disk, kept with the device: a snapshot of this guest carries it. */
  noteDiskDevice(node: string, guestDevice: string): void {
    const device = this._devices.get(node);
    if (device?.kind === 'disk') device.guestDevice = guestDevice;
  }

  /** Unplugs a disk; the guest releases it in the background, then its nodes go and its slot is free. */
  async unplugDisk(node: string): Promise<void> {
    const device = this._devices.get(node);
    if (device?.kind !== 'disk') return;
    const nodes = diskBlockdevs(node, device.backend, device.readonly).map((n) => n['node-name'] as string).reverse();
    await this._unplug(node, undefined, async (qmp) => {
      for (const n of nodes) await qmp.execute('blockdev-del', { 'node-name': n });
    });
  }

  /**
   * New fault rules for a plugged file disk: a new blkdebug node goes in under the disk's raw
   * node (blockdev-reopen), and the old one is removed. Guest requests in flight finish first.
   */
  async swapDiskFilter(node: string, filterNode: string, rules: BlkdebugRuleLists): Promise<void> {
    const qmp = this._requireQmp('change a disk\'s faults');
    const device = this._devices.get(node);
    if (device?.kind !== 'disk' || device.backend.kind !== 'file') throw new BrokerError(`vm \`${this.name}\`: ${node} is not a plugged file disk`);
    const old = device.backend.filterNode;
    await qmp.execute('blockdev-add', blkdebugBlockdev(filterNode, fileNodeOf(node), rules, device.readonly));
    try {
      await qmp.execute('blockdev-reopen', { options: [{ driver: 'raw', 'node-name': node, file: filterNode, 'read-only': device.readonly }] });
    } catch (err) {
      await qmp.execute('blockdev-del', { 'node-name': filterNode }).catch(() => undefined);
      throw new BrokerError(`vm \`${this.name}\`: QEMU kept the old fault rules of disk \`${device.serial}\`: ${(err as Error).message}`);
    }
    device.backend = { ...device.backend, filterNode, rules };
    await qmp.execute('blockdev-del', { 'node-name': old });
  }

  /** The power goes: QEMU is killed at once (nothing more reaches the disks), then the VM is shut down. */
  async powerCut(): Promise<void> {
    if (this.state !== 'booted' && this.state !== 'paused') return;
    this._stopping = true;
    this._qemu?.kill();
    await this.shutdown();
  }

  /** Link down or up on a plugged NIC: the guest sees its carrier change. */
  async setNicLink(id: string, up: boolean): Promise<void> {
    await this._requireQmp('set a NIC link').execute('set_link', { name: `${id}-dev`, up });
  }

  private _requireQmp(what: string): QemuVm['qmp'] {
    if (!this._qemu || (this.state !== 'booted' && this.state !== 'paused')) throw this._stateError(what, ['booted', 'paused']);
    return this._qemu.qmp;
  }

  private _record(device: SlotDevice): void {
    const id = device.kind === 'nic' ? device.id : device.node;
    this._slots.set(device.slot, id);
    this._devices.set(id, device);
  }

  private _freeSlot(deviceId: string): string {
    for (let i = 0; i < kDefaultHotplugSlots; i++) {
      const slot = `hp${i}`;
      if (!this._slots.has(slot)) {
        this._slots.set(slot, deviceId);
        return slot;
      }
    }
    throw new BrokerError(`vm \`${this.name}\`: all ${kDefaultHotplugSlots} hot-plug slots are in use (NICs and disks share them)`);
  }


  /** The serial console link (one per VM: QEMU's chardev takes one client). */
  console(): ConsoleLink {
    if (!this._qemu || (this.state !== 'booted' && this.state !== 'paused')) throw this._stateError('use the console', ['booted', 'paused']);
    this._console ??= new ConsoleLink(this._qemu.consoleSocketPath);
    return this._console;
  }

  async consoleTail(maxBytes = CONSOLE_EXCERPT_BYTES): Promise<string> {
    return this._qemu ? this._qemu.consoleTail(maxBytes) : '';
  }

  private async _consoleTailSafe(): Promise<string> {
    try {
      return await this.consoleTail();
    } catch {
      return '';
    }
  }

  /** Any state → shutdown. Emits vm_shutdown when a guest was running, with why it ended. */
  async shutdown(reason?: string): Promise<void> {
    await this._booting?.catch(() => undefined);
    if (this.state === 'shutdown') return;
    const wasRunning = this.state === 'booted' || this.state === 'paused' || this.state === 'dead';
    const why = reason ?? (this.state === 'dead' ? this._deadReason ?? 'died' : 'shutdown requested');
    await this._finish('shutdown');
    if (wasRunning) {
      this._owner.bus.emit('vm_shutdown', {
        file: this._owner.displayPath,
        vm_name: this.name,
        duration_ns: Math.round((performance.now() - this._bootedAt) * 1e6),
        reason: why,
      });
    }
  }

  private async _finish(next: VmState): Promise<void> {
    if (next !== 'dead') this.state = next;
    if (this._qemu) this._generation++;
    this._slots.clear();
    this._devices.clear();
    this._stopping = true;
    const agent = this._agent;
    this._agent = undefined;
    agent?.close(`vm \`${this.name}\` was shut down`);
    this._console?.close();
    this._console = undefined;
    const qemu = this._qemu;
    if (next !== 'dead') this._qemu = undefined;
    const release = this._releaseResources;
    this._releaseResources = undefined;
    try {
      await qemu?.stop();
    } finally {
      release?.();
    }
  }

  private _stateError(op: string, allowed: VmState[]): BrokerError {
    if (this.state === 'dead') return this.deadError();
    const hint = this.state === 'created' ? '; call boot() first' : this.state === 'shutdown' && this._endReason ? ` (${this._endReason})` : '';
    return new BrokerError(
      `vm \`${this.name}\`: cannot ${op} in state ${this.state} (allowed: ${allowed.join(', ')})${hint}`,
      RpcErrorCode.usage,
    );
  }
}

function describeExit(exit: { code: number | null; signal: string | null }): string {
  return exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

/** QEMU's exit if it comes within a second (a closed socket usually means it is on its way). */
async function exitSoon(qemu: QemuVm): Promise<{ code: number | null; signal: string | null; stderrTail: string } | undefined> {
  return Promise.race([qemu.exited, sleep(1000).then(() => undefined)]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface SnapshotMeta {
  profile: string;
  memoryBytes: number;
  cpus: number;
  cmdlineReplace?: string;
  cmdlineAppend?: string;
  /** Hot-plugged NICs and disks, on their slots. */
  devices?: SlotDevice[];
}


/** The 8 little-endian bytes of a u64 seed. */
function seedBytes(seed: bigint): Uint8Array {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt.asUintN(64, seed));
  return bytes;
}

async function writeFilesArchive(files: BootFile[]): Promise<string> {
  // Marked with our pid: a killed run's archive is swept by the next run (temp-dirs.ts).
  const dir = await ownedTempDir('provium-files-');
  const file = path.join(dir, 'files.cpio');
  await writeFile(file, buildFilesCpio(files), { mode: 0o600 });
  return file;
}
