// A file's session: the VMs and streams one test file owns, and the RPC handlers it is served
// by. Whatever way the file ends, `close()` tears all of it down.

import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Profile } from '../config/profiles.js';
import type { EventBus } from '../events/bus.js';
import type { Barriers } from './barriers.js';
import { ManagedVm } from './managed-vm.js';
import type { BootCache } from './boot-cache.js';
import type { RpcArgs } from '../protocol/rpc.js';
import type { ResourcePool } from './resources.js';
import { BrokerError, RpcChannel, type RpcHandlers, type WorkerEvent } from './rpc-server.js';
import { AgentBackedStream, type BrokerStream } from './streams.js';

export interface SessionDeps {
  bus: EventBus;
  pool: ResourcePool;
  barriers: Barriers;
  profiles: Record<string, Profile>;
  unavailableProfiles?: Record<string, string>;
  bootCache: BootCache;
}

function defaultSnapshotPath(): string {
  return path.join(os.tmpdir(), `provium-snap-${process.pid}-${process.hrtime.bigint()}.bin`);
}

export class Session {
  readonly channel: RpcChannel;
  private readonly _vms = new Map<number, ManagedVm>();
  private readonly _streams = new Map<number, BrokerStream>();
  private _nextVmId = 1;
  private _nextStreamId = 1;
  private _closed: Promise<void> | undefined;

  constructor(
    readonly id: number,
    readonly path: string,
    readonly displayPath: string,
    private readonly _deps: SessionDeps,
  ) {
    this.channel = new RpcChannel(this._handlers(), (event) => this._onWorkerEvent(event));
  }

  private _onWorkerEvent(event: WorkerEvent): void {
    this._deps.bus.emit(event.kind, event.payload as never);
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

  private _handlers(): RpcHandlers {
    const empty = {} as Record<string, never>;
    return {
      'vm.create': async ({ name, profile }) => {
        const resolved = this._deps.profiles[profile];
        if (!resolved) {
          const unavailable = this._deps.unavailableProfiles?.[profile];
          if (unavailable) throw new BrokerError(`vm \`${name}\`: ${unavailable}`);
          const known = Object.keys(this._deps.profiles).sort().join(', ') || '(none)';
          throw new BrokerError(`unknown profile \`${profile}\` for vm \`${name}\`; known profiles: ${known}`);
        }
        const vmId = this._nextVmId++;
        this._vms.set(vmId, new ManagedVm(vmId, name, resolved, { ...this._deps, sessionId: this.id, displayPath: this.displayPath }));
        return { vmId };
      },
      'vm.boot': ({ vmId, opts }) => this._vm(vmId).boot(opts),
      'vm.shutdown': async ({ vmId }) => {
        await this._shutdownVm(this._vm(vmId));
        return empty;
      },
      'vm.pause': async ({ vmId }) => (await this._vm(vmId).pause(), empty),
      'vm.resume': async ({ vmId }) => (await this._vm(vmId).resume(), empty),
      'vm.reset': async ({ vmId }) => {
        await this._closeStreamsOf(vmId);
        await this._vm(vmId).reset();
        return empty;
      },
      'vm.power_button': async ({ vmId }) => {
        await this._closeStreamsOf(vmId);
        return this._vm(vmId).powerButton();
      },
      'vm.info': async ({ vmId }) => this._vm(vmId).info(),
      'vm.snapshot': async ({ vmId, path: file }) => {
        const open = [...this._streams.values()].filter((s) => s.vmId === vmId).length;
        return this._vm(vmId).snapshot(file ?? defaultSnapshotPath(), open);
      },
      'vm.restore': ({ vmId, path: file }) => this._vm(vmId).restore(file),
      'vm.console_tail': async ({ vmId, maxBytes }) => ({ text: await this._vm(vmId).consoleTail(maxBytes) }),
      'vm.console_log': async ({ vmId }) => {
        const qemu = this._vm(vmId).qemu;
        if (!qemu) throw new BrokerError(`vm \`${this._vm(vmId).name}\` has no console: it was never booted`);
        return { data: new Uint8Array(await readFile(qemu.consoleLogPath)) };
      },
      'vm.console_write': async ({ vmId, data, timeoutMs }) => {
        await this._vm(vmId).console().write(data, timeoutMs ?? 0);
        return empty;
      },
      'agent.call': async (args: RpcArgs<'agent.call'>) => {
        const vm = this._vm(args.vmId);
        const result = await vm.callAgent(args.op, args.data as never, args.worker, args.timeoutMs);
        return { result };
      },
      'stream.open': async (args) => {
        const vm = this._vm(args.vmId);
        if (args.op === 'console') return this._addStream(await vm.console().openReader(args.vmId));
        const stream = await vm.openStream(args.op, args.data as never, args.worker);
        return this._addStream(new AgentBackedStream(args.vmId, stream, (s) => vm.closeStream(s)));
      },
      'stream.read': ({ streamId, timeoutMs }) => this._stream(streamId).read(timeoutMs),
      'stream.close': async ({ streamId }) => {
        const stream = this._streams.get(streamId);
        this._streams.delete(streamId);
        await stream?.close();
        return empty;
      },
      'lab.claim': async ({ memoryBytes, cpus }) => {
        await this._deps.pool.claim(this.id, this.displayPath, { memory_bytes: memoryBytes, cpus });
        return empty;
      },
      'lab.barrier': async ({ name, count, timeoutMs }) => {
        await this._deps.barriers.arrive(this.id, this.displayPath, name, count, timeoutMs);
        return { released: true as const };
      },
      'scope.close': async ({ vmIds }) => {
        await Promise.all(vmIds.map((vmId) => this._vms.get(vmId)).map((vm) => vm && this._shutdownVm(vm)));
        return empty;
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
      this._deps.pool.releaseSession(this.id);
      this._deps.barriers.sessionEnded(this.id);
    })();
    return this._closed;
  }
}
