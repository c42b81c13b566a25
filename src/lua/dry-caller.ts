// The caller used by `provium list`: the file's top level runs so its tests register, but no VM
// boots. Declarations and lifecycle calls succeed with placeholders; anything that would need a
// guest fails with a message saying why.

import type { RpcArgs, RpcOp, RpcReply, VmState, VmView } from '../protocol/rpc.js';
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
        return { vm: view('booted') };
      case 'vm.info':
        return { vm: view('created') };
      case 'vm.pause':
        return { vm: view('paused') };
      case 'vm.shutdown':
        return { vm: view('shutdown') };
      case 'vm.power_button':
        return { vm: view('shutdown'), graceful: true };
      case 'scope.close':
        return { vms: [] };
      case 'lab.claim':
      case 'stream.close':
        return {};
      case 'lab.barrier':
        return { released: true };
      default:
        return undefined;
    }
  }
}
