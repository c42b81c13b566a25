// Resource scopes. Everything a test creates (VMs, processes, streams, files, workers) is
// registered with the running test's scope and closed when the test ends, however it ends; what
// file-scope code creates is closed at file end. Closing order: streams, files, processes,
// workers, then every VM of the scope in one `scope.close` call. Resources living on a VM that is
// about to be torn down are not closed one by one: the VM's teardown takes them.

import { RpcError, type VmState } from '../protocol/rpc.js';
import type { Rpc } from './rpc.js';

export type ResourceKind = 'stream' | 'file' | 'process' | 'worker';
const kCloseOrder: ResourceKind[] = ['stream', 'file', 'process', 'worker'];

/** What a scope needs of a VM (vm.ts's Vm); declared here so scope.ts stays below the bindings. */
export interface ScopedVm {
  readonly vmId: number;
  readonly label: string;
  readonly state: VmState;
  /** Torn down by its scope's `scope.close`. */
  readonly released: boolean;
  markReleased(): void;
}

/** A bridge a scope closes at its end (bridge.ts's Bridge). */
export interface ScopedBridge {
  readonly bridgeId: number;
  readonly closed: boolean;
  markClosed(): void;
}

/** The runtime members a scope uses. */
export interface ScopeRuntime {
  readonly rpc: Rpc;
}

export interface ScopedResource {
  readonly resourceKind: ResourceKind;
  /** The VM it lives on (null for what lives on a bridge, like a capture). */
  readonly vm: ScopedVm | null;
  isClosed(): boolean;
  /** Closes; throws on failure (the scope collects the message). */
  close(): void;
  /** Marks it closed without talking to the guest (its VM is gone or going). */
  forget(): void;
  /** For messages: `process \`sleep 100\``. */
  describe(): string;
}

/** `V`: the VM type its owner keeps (the runtime's scopes hold vm.ts's Vm). */
export class ResourceScope<V extends ScopedVm = ScopedVm> {
  private readonly _resources: ScopedResource[] = [];
  readonly vms: V[] = [];
  readonly bridges: ScopedBridge[] = [];
  private _closed = false;

  constructor(
    readonly rt: ScopeRuntime,
    /** `file` or `test \`name\``, for messages. */
    readonly name: string,
  ) {}

  get closed(): boolean {
    return this._closed;
  }

  add(resource: ScopedResource): void {
    this._resources.push(resource);
  }

  addVm(vm: V): void {
    this.vms.push(vm);
  }

  /** VMs of this scope that are up (booted or paused). */
  liveVms(): V[] {
    return this.vms.filter((vm) => vm.state === 'booted' || vm.state === 'paused');
  }

  /** VMs whose console a failure shows: the live ones and the dead (a panic is told by its console). */
  excerptVms(): V[] {
    return this.vms.filter((vm) => vm.state === 'booted' || vm.state === 'paused' || vm.state === 'dead');
  }

  /** Closes everything; returns one message per failure (never throws). */
  close(): string[] {
    if (this._closed) return [];
    this._closed = true;
    const errors: string[] = [];
    const dying = new Set<ScopedVm>(this.vms.filter((vm) => vm.state !== 'shutdown'));
    // 1. Per-resource closes, skipping what a VM teardown takes anyway or what cannot answer.
    for (const kind of kCloseOrder) {
      for (const r of this._resources) {
        if (r.resourceKind !== kind || r.isClosed()) continue;
        if (r.vm && (dying.has(r.vm) || (r.vm.state !== 'booted' && r.resourceKind !== 'stream'))) {
          r.forget();
          continue;
        }
        try {
          r.close();
        } catch (err) {
          errors.push(`closing ${r.describe()}: ${messageOf(err)}`);
          r.forget();
        }
      }
    }
    // 2. The scope's VMs and bridges, in one call so the broker tears them down together.
    const vms = this.vms.filter((vm) => !vm.released);
    const bridges = this.bridges.filter((b) => !b.closed);
    if (vms.length > 0 || bridges.length > 0) {
      try {
        this.rt.rpc.call('scope.close', { vmIds: vms.map((vm) => vm.vmId), bridgeIds: bridges.map((b) => b.bridgeId) });
      } catch (err) {
        errors.push(`tearing down ${[...vms.map((vm) => vm.label), ...bridges.map((b) => `bridge ${b.bridgeId}`)].join(', ')}: ${messageOf(err)}`);
      }
      for (const vm of vms) vm.markReleased();
      for (const b of bridges) b.markClosed();
    }
    for (const r of this._resources) if (!r.isClosed()) r.forget();
    return errors;
  }
}

export function messageOf(err: unknown): string {
  if (err instanceof RpcError || err instanceof Error) return err.message;
  return String(err);
}
