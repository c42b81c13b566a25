// provium.reset_between_tests (reference §1.1): the file-scope VMs, as the top-level chunk left
// them, are saved once and put back before every test that runs after another one did. A
// file-scope VM the top level left unbooted is shut down again instead, so what a test booted
// and did in it does not reach the next test.

import { LuaError } from './errors.js';
import { translateRpcError } from './guest.js';
import type { LuaRuntime } from './runtime.js';
import type { Vm } from './vm.js';

const kWhat = 'provium.reset_between_tests';

export class FileReset {
  private constructor(
    private readonly _rt: LuaRuntime,
    private readonly _saved: { vm: Vm; path: string }[],
    /** File-scope VMs not booted at the end of the top level. */
    private readonly _unbooted: Vm[],
  ) {}

  /** Saves every booted file-scope VM. Open streams or a paused VM make the file fail. */
  static prepare(rt: LuaRuntime): FileReset {
    const vms = rt.fileScope.vms.filter((vm) => vm.state !== 'created' && vm.state !== 'shutdown');
    for (const vm of vms) {
      if (vm.openStreams.size > 0) {
        const list = [...vm.openStreams].map((s) => s.describe()).join('; ');
        throw new LuaError(`${kWhat}: ${vm.label} has ${vm.openStreams.size} stream(s) open at file scope (${list}); open streams inside the tests instead`);
      }
      if (vm.state !== 'booted') throw new LuaError(`${kWhat}: ${vm.label} is ${vm.state} at the end of the file's top level; it must be booted to be saved`);
    }
    const saved: { vm: Vm; path: string }[] = [];
    const reset = new FileReset(rt, saved, rt.fileScope.vms.filter((vm) => vm.state === 'created' || vm.state === 'shutdown'));
    try {
      for (const vm of vms) {
        try {
          const reply = rt.rpc.call('vm.snapshot', { vmId: vm.vmId });
          vm.apply(reply.vm);
          saved.push({ vm, path: reply.path });
        } catch (err) {
          throw translateRpcError(vm, err, kWhat);
        }
      }
    } catch (err) {
      reset.dispose();
      throw err;
    }
    return reset;
  }

  /** Puts every saved VM back as it was saved; `again`: a later test will want them back too. */
  restore(again: boolean): void {
    for (const vm of this._unbooted) {
      if (vm.state === 'created' || vm.state === 'shutdown') continue;
      try {
        vm.shutdown(kWhat);
      } catch (err) {
        throw translateRpcError(vm, err, kWhat);
      }
    }
    for (const { vm, path } of this._saved) {
      try {
        vm.shutdown(kWhat);
        vm.apply(this._rt.rpc.call('vm.restore', { vmId: vm.vmId, path, again }).vm);
      } catch (err) {
        throw translateRpcError(vm, err, kWhat);
      }
    }
  }

  /** Deletes the saved snapshots (only the broker touches snapshot files). */
  dispose(): void {
    for (const { path } of this._saved) {
      try {
        this._rt.rpc.call('snapshot.delete', { path });
      } catch {
        // Best effort: the file is in the temp dir, and a failed delete must not fail the file.
      }
    }
  }
}
