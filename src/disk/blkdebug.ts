// The fault policy of a disk that QEMU serves itself (backend "qemu"), as the rules of QEMU's
// `blkdebug` filter. blkdebug fires an event per request at the format layer (read_aio,
// write_aio) and injects an error when an active rule matches the request's type and covers one
// of its sectors. A rule set cannot change in place: the broker swaps in a new blkdebug node,
// which also restarts the state machine that fail_after counts with. Flushes are never failed:
// the swap itself flushes through the old node, and a failing flush would block every change.
import type { DiskFault } from '../protocol/rpc.js';
import type { FaultPolicyView } from './faults.js';

/** The guest's errno for a failed request. */
const kEio = 5;
/** fail_range places one rule per sector (blkdebug matches one sector per rule); more would slow every request. */
export const kMaxQemuRangeSectors = 1024;
/** fail_after counts with one blkdebug state per request. */
export const kMaxQemuFailAfter = 10_000;

type IoType = 'read' | 'write';
const kEventOf: Record<IoType, string> = { read: 'read_aio', write: 'write_aio' };

export interface InjectErrorRule {
  event: string;
  iotype: IoType;
  errno: number;
  state?: number;
  sector?: number;
}

export interface SetStateRule {
  event: string;
  state: number;
  new_state: number;
}

export interface BlkdebugRules {
  'inject-error': InjectErrorRule[];
  'set-state': SetStateRule[];
}

/**
 * Why `fault` cannot be set on a "qemu" disk, or null when it can. Checked before the policy
 * changes, so a refused fault leaves the disk as it was.
 */
export function qemuBackendRefusal(fault: DiskFault): string | null {
  switch (fault.kind) {
    case 'delay':
      return fault.ms > 0 ? 'cannot delay requests (delay, fault_inject("slow"))' : null;
    case 'torn_write':
      return fault.on ? 'cannot tear a write (torn_write)' : null;
    case 'random_eio':
      return fault.rate > 0 ? 'cannot fail requests at random (random_eio)' : null;
    case 'fail_range':
      return fault.count > kMaxQemuRangeSectors ? `fails at most ${kMaxQemuRangeSectors} sectors with fail_range, got ${fault.count}` : null;
    case 'fail_after':
      return fault.n > kMaxQemuFailAfter ? `counts at most ${kMaxQemuFailAfter} requests with fail_after, got ${fault.n}` : null;
    default:
      return null;
  }
}

/** blkdebug's `inject-error` and `set-state` lists for a policy built from faults qemuBackendRefusal accepts. */
export function blkdebugRules(p: FaultPolicyView): BlkdebugRules {
  const inject: InjectErrorRule[] = [];
  const setState: SetStateRule[] = [];
  const fail = (io: IoType, extra: { state?: number; sector?: number } = {}) => inject.push({ event: kEventOf[io], iotype: io, errno: kEio, ...extra });
  if (p.fail_reads) fail('read');
  if (p.fail_writes) fail('write');
  if (p.fail_range_sector !== null && p.fail_range_count !== null) {
    for (let s = p.fail_range_sector; s < p.fail_range_sector + p.fail_range_count; s++) {
      fail('read', { sector: s });
      fail('write', { sector: s });
    }
  }
  if (p.fail_after !== null) {
    // blkdebug starts in state 1; each counted request moves it one state on, and from state n + 1
    // every counted request fails.
    const counted: IoType[] = p.fail_after_target === 'read' ? ['read'] : p.fail_after_target === 'write' ? ['write'] : ['read', 'write'];
    const n = p.fail_after;
    for (const io of counted) {
      for (let state = 1; state <= n; state++) setState.push({ event: kEventOf[io], state, new_state: state + 1 });
      fail(io, { state: n + 1 });
    }
  }
  return { 'inject-error': inject, 'set-state': setState };
}
