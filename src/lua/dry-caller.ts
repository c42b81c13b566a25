// The caller used by `provium list`: the file's top level runs so its tests register, but no VM
// boots. Declarations and lifecycle calls succeed with placeholders; anything that would need a
// guest fails with a message saying why.

import type { RpcArgs, RpcOp, RpcReply } from '../protocol/rpc.js';
import { RpcError } from '../protocol/rpc.js';
import type { Settled } from './sync-call.js';
import type { Caller } from './rpc.js';

export class DryCaller implements Caller {
  private _nextVmId = 1;

  call<K extends RpcOp>(op: K, _args: RpcArgs<K>): RpcReply<K> {
    const reply = this._reply(op);
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

  emit(): void {
    // Listing emits no test events.
  }

  private _reply(op: RpcOp): unknown {
    switch (op) {
      case 'vm.create':
        return { vmId: this._nextVmId++ };
      case 'vm.boot':
      case 'vm.restore':
        return { cid: 0, bootMs: 0, restored: false };
      case 'vm.info':
        return { state: 'created', cid: null };
      case 'vm.power_button':
        return { graceful: true };
      case 'vm.shutdown':
      case 'vm.pause':
      case 'vm.resume':
      case 'vm.reset':
      case 'scope.close':
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
