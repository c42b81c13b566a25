// What a warm spare holds for the file that will take it (its NICs' connections: parked-nics.ts;
// its disks: parked-disks.ts). Each is kept by spare until a file takes it, and closed when the
// guest's QEMU exits (a spare nobody took, or the taking file's VM); the broker waits for those
// closes before it ends, so nothing they made outlives the run.

import type { ManagedVm } from './managed-vm.js';

interface Closable {
  close(): Promise<void>;
}

/** Closes started by a QEMU's exit, until they are done. */
const closing = new Set<Promise<void>>();

export class ParkedBySpare<T extends Closable> {
  private readonly _held = new WeakMap<ManagedVm, T>();

  /** Keeps `item` for whoever takes `spare`; it closes when the spare's guest ends, taken or not. */
  hold(spare: ManagedVm, item: T): void {
    this._held.set(spare, item);
    void spare.qemu?.exited.then(() => {
      const closed = item.close().catch(() => undefined);
      closing.add(closed);
      void closed.finally(() => closing.delete(closed));
    });
  }

  /** What `spare` holds, handed over once. */
  take(spare: ManagedVm): T | undefined {
    const item = this._held.get(spare);
    this._held.delete(spare);
    return item;
  }
}

/** Resolves once every close a guest's exit started is done (the broker's last step). */
export async function parkedClosed(): Promise<void> {
  while (closing.size > 0) await Promise.all(closing);
}
