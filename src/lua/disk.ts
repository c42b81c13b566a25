// Disk (reference §1.15, beyond it where the issue says): one virtio-blk disk of a VM, served by
// the broker's NBD server (or by QEMU from a file, with backend = "qemu"), so the test and the
// guest see one disk and every fault is seen by the guest. From vm:attach_disk{...}, vm:disk(id), or the boot option `disks`.

import { lua } from 'fengari';
import type { DiskFault, DiskView } from '../protocol/rpc.js';
import { R, type Args, type LuaClass, type Method } from './args.js';
import { translateRpcError, type VmHandle } from './guest.js';
import { pushBytes, pushIntegral, pushPlain, pushText } from './values.js';

/** The older fault_inject modes, as aliases of the policies. */
const kInjectModes = ['eio_read', 'eio_write', 'slow'] as const;
/** What fault_inject("slow") delays each request by (the reference's SLOW_FAULT_MS). */
const kSlowFaultMs = 50;

export class GuestDisk {
  constructor(
    readonly vm: VmHandle,
    readonly id: string,
    public view: DiskView,
  ) {}

  get label(): string {
    return `disk \`${this.id}\` of ${this.vm.label}`;
  }

  ensureAttached(a: Args): void {
    if (this.view.detached) throw a.error(`${this.label} is detached`);
  }

  fault(a: Args, fault: DiskFault): void {
    this.ensureAttached(a);
    try {
      this.view = a.rt.rpc.call('disk.fault', { vmId: this.vm.vmId, id: this.id, fault }).disk;
    } catch (err) {
      throw translateRpcError(this.vm, err, a.label);
    }
  }

  refresh(a: Args): DiskView {
    try {
      this.view = a.rt.rpc.call('disk.info', { vmId: this.vm.vmId, id: this.id }).disk;
    } catch (err) {
      throw translateRpcError(this.vm, err, a.label);
    }
    return this.view;
  }
}

/** `name(on?)`: on by default; false turns it off. */
function toggle(kind: 'fail_reads' | 'fail_writes' | 'torn_write'): Method<GuestDisk> {
  return (d, a) => {
    d.fault(a, { kind, on: a.isNil(1) ? true : a.read(1, 'on', R.bool) });
    return 0;
  };
}

function activeFaults(view: DiskView): string[] {
  const p = view.policy;
  const active: string[] = [];
  if (p.fail_reads) active.push('eio_read');
  if (p.fail_writes) active.push('eio_write');
  if (p.delay_ms > 0) active.push('slow');
  return active;
}

export const DiskClass: LuaClass<GuestDisk> = {
  typeName: 'Disk',
  selfName: 'disk',
  toString: (d) => `disk(${d.id} ${d.view.sizeBytes} bytes${d.view.device ? ` ${d.view.device}` : ''})`,
  methods: {
    id(d, a) {
      pushText(a.L, d.id);
      return 1;
    },
    size(d, a) {
      pushIntegral(a.L, d.view.sizeBytes);
      return 1;
    },
    /** "nbd" (the broker's server: every fault) or "qemu" (QEMU serves the file: plain-drive speed). */
    backend(d, a) {
      pushText(a.L, d.view.backend);
      return 1;
    },
    /** The guest's device (`/dev/vdb`) while plugged into a running guest, else nil. */
    device(d, a) {
      const device = d.refresh(a).device;
      if (device === null) lua.lua_pushnil(a.L);
      else pushText(a.L, device);
      return 1;
    },
    is_detached(d, a) {
      lua.lua_pushboolean(a.L, d.view.detached);
      return 1;
    },
    detach(d, a) {
      if (d.view.detached) return 0;
      try {
        d.view = a.rt.rpc.call('disk.detach', { vmId: d.vm.vmId, id: d.id }).disk;
      } catch (err) {
        throw translateRpcError(d.vm, err, a.label);
      }
      d.vm.disks.delete(d.id);
      return 0;
    },
    read_sectors(d, a) {
      d.ensureAttached(a);
      const sector = a.read(1, 'sector', R.int(0));
      const count = a.read(2, 'count', R.int());
      try {
        pushBytes(a.L, a.rt.rpc.call('disk.read', { vmId: d.vm.vmId, id: d.id, sector, count }).data);
      } catch (err) {
        throw translateRpcError(d.vm, err, a.label);
      }
      return 1;
    },
    write_sectors(d, a) {
      d.ensureAttached(a);
      const sector = a.read(1, 'sector', R.int(0));
      const data = a.bytes(2, 'data');
      try {
        a.rt.rpc.call('disk.write', { vmId: d.vm.vmId, id: d.id, sector, data });
      } catch (err) {
        throw translateRpcError(d.vm, err, a.label);
      }
      return 0;
    },
    fail_reads: toggle('fail_reads'),
    fail_writes: toggle('fail_writes'),
    torn_write: toggle('torn_write'),
    /** fail_after(n, target?): the n+1-th and later guest requests fail (target "read", "write" or "any"). */
    fail_after(d, a) {
      const n = a.read(1, 'n', R.int(1));
      const target = a.isNil(2) ? 'any' : a.string(2, 'target');
      if (target !== 'read' && target !== 'write' && target !== 'any') throw a.error(`argument #2 (target) must be "read", "write" or "any", got ${JSON.stringify(target)}`);
      d.fault(a, { kind: 'fail_after', n, target });
      return 0;
    },
    fail_range(d, a) {
      d.fault(a, { kind: 'fail_range', sector: a.read(1, 'sector', R.int(0)), count: a.read(2, 'count', R.int(1)) });
      return 0;
    },
    delay(d, a) {
      const ms = a.read(1, 'ms', R.number);
      if (ms < 0 || ms > 600_000) throw a.error(`argument #1 (ms) must be from 0 to 600000, got ${ms}`);
      d.fault(a, { kind: 'delay', ms });
      return 0;
    },
    /** random_faults({eio_rate = 0.01}): each guest request fails with that probability (seeded by the run). */
    random_faults(d, a) {
      const o = a.options(1, 'opts', { eio_rate: R.number });
      const rate = o.eio_rate ?? 0;
      if (rate < 0 || rate > 1) throw a.error(`eio_rate must be from 0 to 1, got ${rate}`);
      d.fault(a, { kind: 'random_eio', rate });
      return 0;
    },
    clear_policy(d, a) {
      d.fault(a, { kind: 'clear' });
      return 0;
    },
    fault_policy(d, a) {
      pushPlain(a.L, d.refresh(a).policy);
      return 1;
    },
    fault_inject(d, a) {
      const mode = a.string(1, 'mode');
      if (mode === 'eio_read') d.fault(a, { kind: 'fail_reads', on: true });
      else if (mode === 'eio_write') d.fault(a, { kind: 'fail_writes', on: true });
      else if (mode === 'slow') d.fault(a, { kind: 'delay', ms: kSlowFaultMs });
      else throw a.error(`unknown fault mode ${JSON.stringify(mode)}; modes: ${kInjectModes.join(', ')}`);
      return 0;
    },
    clear_faults(d, a) {
      d.fault(a, { kind: 'clear' });
      return 0;
    },
    active_faults(d, a) {
      pushPlain(a.L, activeFaults(d.refresh(a)));
      return 1;
    },
    /** Every write the guest has not flushed is lost, and the VM powers off at that instant. */
    power_cut(d, a) {
      d.ensureAttached(a);
      let reply;
      try {
        reply = a.rt.rpc.call('disk.power_cut', { vmId: d.vm.vmId, id: d.id });
      } catch (err) {
        throw translateRpcError(d.vm, err, a.label);
      }
      d.vm.apply(reply.vm);
      pushIntegral(a.L, reply.lostBytes);
      return 1;
    },
  },
};
