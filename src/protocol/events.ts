// Every event on the run's bus (reference §4.6, plus Provium's own kinds). Frames on the wire are
// a 4-byte big-endian length + msgpack `{ts, kind, payload}` with `ts` in ns since the epoch.
// Changing a kind or a field changes EVENTS_PROTOCOL_VERSION (pinned by a unit test).

export const EVENTS_PROTOCOL_VERSION = 4;

export interface ResourceAmount {
  memory_bytes: number;
  cpus: number;
}
/** Test metadata as the test file declared it (strings, numbers, bools, arrays, maps). */
export type MetaMap = Record<string, unknown>;

/** `interrupted`: the run was stopped (Ctrl-C) while the file ran; it is reported as not finished. */
export type FileStatus = 'passed' | 'failed' | 'timed_out' | 'crashed' | 'skipped' | 'interrupted';

/** Where a test was declared, or where it failed. */
export interface EventLocation {
  file: string;
  line: number;
}

/**
 * How a VM ended or stopped answering (vm_died): a kernel panic (-device pvpanic or the console),
 * a reboot (QEMU runs with -no-reboot), QEMU killed by a signal or exiting on its own, the agent
 * exiting or crashing, its channel closed inside the guest, or a guest that stopped answering.
 * `poweroff` is the one clean end: the VM is then shut down, not dead.
 */
export type VmDeathKind =
  | 'kernel_panic'
  | 'poweroff'
  | 'reboot'
  | 'qemu_killed'
  | 'qemu_exited'
  | 'agent_exited'
  | 'channel_closed'
  | 'unresponsive'
  | 'other';

/** How a VM came up: a cold boot, a restore of its boot snapshot, or a running spare of the warm pool. */
export type BootSource = 'cold' | 'snapshot' | 'pool';

export interface EventPayloads {
  // Reference kinds.
  /** `key`: the file's stable key (relative to the project), as timing records name it. */
  file_discovered: { path: string; fixture_refs: string[]; declared_claim: ResourceAmount | null; key: string };
  file_dispatched: { path: string; reservation: ResourceAmount; worker: number };
  /** Before dispatch only: the file waits for room for its reservation (its declared claim). */
  file_blocked: { path: string; waiting_for: ResourceAmount; reason: 'pool_full' };
  /** `fatal_errors`: errors outside any test (chunk error, timeout or crash outside a test). */
  file_completed: { path: string; status: FileStatus; duration_ns: number; fatal_errors: { message: string; location: EventLocation | null }[] };
  test_started: { path: string; name: string; meta: MetaMap; attempt: number };
  /** `not_run`: declared but never started (its file ended first); `reason` then starts with "not run: ". */
  test_skipped: { path: string; name: string; reason: string; meta: MetaMap; location: EventLocation | null; not_run: boolean };
  /** `log`: the test's t:log/print lines, as in JSON. */
  test_passed: { path: string; name: string; duration_ns: number; meta: MetaMap; attempt: number; log: string[]; location: EventLocation | null };
  test_failed: {
    path: string;
    name: string;
    duration_ns: number;
    reason: string;
    console_excerpt: string;
    meta: MetaMap;
    attempt: number;
    log: string[];
    location: EventLocation | null;
    /** Where it failed (the assertion or error), when known. */
    failure_location: EventLocation | null;
  };
  /** `file`: the test file; `lab`: the lab path the VM belongs to (`provium`, or a sub-lab's). */
  vm_spawned: {
    file: string;
    lab: string;
    vm_name: string;
    profile: string;
    memory_bytes: number;
    cid: number;
    boot_ns: number;
    restored: boolean;
    boot: BootSource;
  };
  /** `reason`: "shutdown requested", "guest powered off", or the death of a VM that died first. */
  vm_shutdown: { file: string; vm_name: string; duration_ns: number; reason: string };
  /** A running VM died (or powered itself off): `reason` is what its failed calls say. */
  vm_died: { file: string; vm_name: string; kind: VmDeathKind; reason: string; console_excerpt: string };
  pool_state: { used: ResourceAmount; available: ResourceAmount; running_files: number; queued_files: number };
  claim_acquired: { path: string; amount: ResourceAmount };
  claim_released: { path: string; amount: ResourceAmount };
  fixture_build_started: { path: string };
  fixture_build_done: { path: string; duration_ns: number; snapshot_bytes: number };
  fixture_build_waiting: { path: string; held_by_file: string };
  fixture_cache_hit: { path: string };
  // Provium's own kinds.
  /** `seed`: the run's seed for every random fault decision, in decimal (`--seed` replays it). */
  run_started: { version: number; files: number; workers: number; shard: { index: number; count: number } | null; accel: string; seed: string };
  run_finished: {
    passed: number;
    failed: number;
    skipped: number;
    flaky: number;
    not_run: number;
    files: number;
    duration_ns: number;
    interrupted: boolean;
  };
  test_retry: { path: string; name: string; attempt: number; reason: string };
  test_flaky: { path: string; name: string; attempts: number };
  /** vm:restore, lab:restore, a fixture or a reset: `from` the snapshot file, `pooled` when a warm spare served it; `restore_ns` until its disks and NICs were plugged. */
  vm_restored: { file: string; vm_name: string; restore_ns: number; from: string; pooled: boolean };
  /** A boot took a running spare from the warm pool. */
  pool_hit: { file: string; vm_name: string };
  /** A boot the warm pool could have served had none ready (or could not serve: `rng_seed`). */
  pool_miss: { file: string; vm_name: string; reason: string };
  worker_replaced: { path: string; reason: string };
  /** A running file's boot or lab:claim waits for room in the resource pool (file_blocked is before dispatch). */
  resource_wait: { path: string; waiting_for: ResourceAmount; reason: 'pool_full' };
  /** A disk fault changed (a policy set or cleared) or the power was cut. */
  disk_fault: { file: string; vm_name: string; disk: string; kind: string; values: Record<string, unknown> };
  /** A network fault changed: a partition or heal, an impairment set or cleared, a link down or up. */
  net_fault: {
    file: string;
    bridge: string;
    kind: 'partition' | 'heal' | 'impairment' | 'link';
    from: string | null;
    to: string | null;
    values: Record<string, unknown>;
  };
}
export type EventKind = keyof EventPayloads;

export interface EventFrame<K extends EventKind = EventKind> {
  /** Nanoseconds since the epoch. */
  ts: number;
  kind: K;
  payload: EventPayloads[K];
}
export type AnyEvent = { [K in EventKind]: EventFrame<K> }[EventKind];
