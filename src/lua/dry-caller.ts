// The caller used by `provium list`: the file's top level runs so its tests register, but no VM
// boots. Declarations and lifecycle calls succeed with placeholders; anything that would need a
// guest fails with a message saying why.

import type { BridgeView, DiskView, NicView, RpcArgs, RpcOp, RpcReply, VmState, VmView } from '../protocol/rpc.js';

const kZeroCounters = { rx_bytes: 0, tx_bytes: 0, rx_packets: 0, tx_packets: 0, errors: 0, dropped: 0 };
import { RpcError } from '../protocol/rpc.js';
import type { Settled } from './sync-call.js';
import type { Caller } from './rpc.js';

export class DryCaller implements Caller {
  private _nextVmId = 1;

  call<K extends RpcOp>(op: K, args: RpcArgs<K>): RpcReply<K> {
    const reply = this._reply(op, args);
    if (reply === undefined) {
      throw new RpcError({ message: `\`${op}\` is not available while listing tests (nothing is booted)`, code: 'usage' });
    }
    return reply as RpcReply<K>;
  }

  callMany<K extends RpcOp>(op: K, argsList: readonly RpcArgs<K>[]): Settled<RpcReply<K>>[] {
    return argsList.map((args) => {
      try {
        return { ok: true, reply: this.call(op, args) };
      } catch (err) {
        return { ok: false, error: err as RpcError };
      }
    });
  }

  // Placeholders for declarations at the top level: a listing never reads them back.
  private _bridge(name: string): BridgeView {
    const none = { latencyMs: 0, jitterMs: 0, dropRate: 0, bandwidthBps: 0, duplicateRate: 0, reorderRate: 0 };
    return { name, subnet: '10.0.0.0/24', members: [], impairment: none, partitions: [], isolated: [], uplink: null, routes: [], router: '10.0.0.254' };
  }

  private _nic(): NicView {
    return { bridge: 'dry', vm: 'dry', mac: '52:54:00:00:00:00', ip: null, prefixLength: 24, ifname: null, plugged: false, linkUp: true };
  }

  private _disk(id: string): DiskView {
    const policy = { fail_reads: false, fail_writes: false, fail_after: null, fail_after_target: null, fail_range_sector: null, fail_range_count: null, delay_ms: 0, torn_write: false, random_eio_rate: 0 };
    return { id, backend: 'nbd', sizeBytes: 0, readonly: false, device: null, detached: false, policy };
  }

  private _reply(op: RpcOp, args: unknown): unknown {
    const vmId = (args as { vmId?: number }).vmId ?? 0;
    // A placeholder view: listing never changes a VM's generation, so nothing is forgotten.
    const view = (state: VmState): VmView => ({ vmId, state, cid: state === 'booted' ? 0 : null, generation: 0, streams: [] });
    switch (op) {
      case 'vm.create':
        return { vmId: this._nextVmId++ };
      case 'vm.boot':
        return { vm: view('booted'), bootMs: 0, restored: false };
      case 'vm.restore':
      case 'vm.resume':
      case 'vm.reset':
      case 'vm.wakeup':
        return { vm: view('booted') };
      case 'vm.info':
        return { vm: view('created') };
      case 'vm.pause':
        return { vm: view('paused') };
      case 'vm.shutdown':
      case 'vm.kill':
        return { vm: view('shutdown') };
      case 'vm.power_button':
        return { vm: view('shutdown'), graceful: true };
      case 'scope.close':
        return { vms: [] };
      case 'bridge.create':
        return { bridgeId: this._nextVmId++, bridge: this._bridge((args as { name: string }).name) };
      case 'bridge.attach':
      case 'nic.info':
      case 'nic.link':
        return { nic: this._nic(), bridge: this._bridge('dry'), counters: kZeroCounters };
      case 'bridge.detach':
      case 'bridge.fault':
      case 'bridge.info':
        return { bridge: this._bridge('dry') };
      case 'disk.attach':
      case 'disk.info':
      case 'disk.detach':
      case 'disk.fault':
        return { disk: this._disk((args as { id?: string; disk?: { id: string } }).id ?? (args as { disk: { id: string } }).disk.id) };
      case 'lab.claim':
      case 'stream.close':
        return {};
      case 'lab.barrier':
        return { released: true };
      case 'fixture.prepare': {
        // Listing runs no build: a placeholder of the kind asked for, with one VM to hand back.
        const kind = (args as { kind: 'vm' | 'lab' }).kind;
        return { path: '', manifest: { version: 1, lab: 'dry', fixture: kind, vms: kind === 'vm' ? [{ name: 'fixture', profile: 'minimal', state: 'booted', file: null, disks: [] }] : [], bridges: [] } };
      }
      case 'lab.restore':
        return { vms: [], bridges: [] };
      case 'lab.snapshot':
        return { path: '', bytes: 0, vms: [] };
      case 'lab.snapshot_info':
        return { manifest: { version: 1, lab: 'dry', vms: [], bridges: [] } };
      default:
        return undefined;
    }
  }
}
