// The worker ↔ broker RPC: every request and reply shape, shared by workers/, src/lua and
// src/broker. A Lua binding calls `caller.call(op, args)` and blocks; the broker answers.
// Units are in the names (…Ms, …Bytes). Values that may pass 2^53 are bigint.

import type { AgentOps, AgentOp, AgentStreamOp, AgentStreamOps } from './agent.js';
import type { FileReport } from './task.js';

export type VmState = 'created' | 'booted' | 'paused' | 'shutdown' | 'dead';

/** Boot options after the Lua layer validated keys and types (seed 001 "Boot opts"). */
export interface BootOptions {
  memoryBytes?: number;
  cpus?: number;
  kernelCmdline?: string;
  kernelCmdlineAppend?: string;
  rngSeed?: bigint;
  /** Seconds since the epoch. */
  initialTime?: number;
  files?: { path: string; content: Uint8Array; mode?: number }[];
  agentTimeoutMs?: number;
  /** Disks the guest sees as /dev/vda, /dev/vdb, … in this order. */
  disks?: DiskSpec[];
}

/** A disk to give a VM (boot option `disks`, vm:attach_disk). */
export interface DiskSpec {
  /** Its name: letters, digits, `_.-`, up to 20 (the guest sees it as the device's serial). */
  id: string;
  /** Bytes; defaults to the image's size. */
  sizeBytes?: number;
  /** A host file used as the backing image: writes go to a per-VM overlay, the file never changes. */
  image?: string;
  readonly?: boolean;
  /** Who serves the guest's I/O; default "nbd". */
  backend?: DiskBackend;
}

/**
 * "nbd": the broker's NBD server, with every fault and a volatile write cache that a power cut
 * empties. "qemu": QEMU reads and writes a raw file itself, at plain-drive speed, with the faults
 * blkdebug can inject (fail_reads, fail_writes, fail_range, fail_after).
 */
export type DiskBackend = 'nbd' | 'qemu';

export function isDiskBackend(v: unknown): v is DiskBackend {
  return v === 'nbd' || v === 'qemu';
}

/** A disk's fault policy as `fault_policy()` shows it (null: off). */
export interface DiskPolicyView {
  fail_reads: boolean;
  fail_writes: boolean;
  fail_after: number | null;
  fail_after_target: 'read' | 'write' | 'any' | null;
  fail_range_sector: number | null;
  fail_range_count: number | null;
  delay_ms: number;
  torn_write: boolean;
  random_eio_rate: number;
}

export interface DiskView {
  id: string;
  backend: DiskBackend;
  sizeBytes: number;
  readonly: boolean;
  /** The guest's device (`/dev/vdb`) while it is plugged into a running guest. */
  device: string | null;
  detached: boolean;
  policy: DiskPolicyView;
}

/** A change to a disk's fault policy; every fault is seen by the guest. */
export type DiskFault =
  | { kind: 'fail_reads' | 'fail_writes' | 'torn_write'; on: boolean }
  | { kind: 'fail_after'; n: number; target: 'read' | 'write' | 'any' }
  | { kind: 'fail_range'; sector: number; count: number }
  | { kind: 'delay'; ms: number }
  | { kind: 'random_eio'; rate: number }
  | { kind: 'clear' };

/**
 * The broker's view of one VM, the only source of its state: every lifecycle reply and every
 * error about a VM carries it, and the Lua `Vm` applies it in one place.
 */
export interface VmView {
  vmId: number;
  state: VmState;
  cid: number | null;
  /** Why the VM is dead, when it is. */
  deadReason?: string;
  /** Why a guest nobody asked to stop ended, while it is shut down (`guest powered off`). */
  endReason?: string;
  /**
   * Bumped each time the guest starts over (boot, restore, reset) or stops (shutdown, death):
   * guest files and processes of an older generation are gone.
   */
  generation: number;
  /** The broker streams of this VM still open. */
  streams: number[];
}

/** Network impairments of a bridge or a direction; they combine (all apply at once). */
export interface NetImpairment {
  /** Added one-way delay. */
  latencyMs: number;
  /** Each frame's delay is latencyMs ± up to jitterMs (uniform), never below 0. */
  jitterMs: number;
  /** Probability in [0, 1] that a frame is dropped. */
  dropRate: number;
  /** Token-bucket rate in bits per second; 0 means unlimited. */
  bandwidthBps: number;
  /** Probability in [0, 1] that a frame is delivered twice. */
  duplicateRate: number;
  /** Probability in [0, 1] that a frame is held back behind the next frame of its direction. */
  reorderRate: number;
}

/** A bridge (one userspace switch) as the broker sees it. */
export interface BridgeView {
  name: string;
  /** `10.N.0.0/24` by default. */
  subnet: string;
  members: string[];
  /** The whole-bridge impairment. */
  impairment: NetImpairment;
  /** Cut directions (a symmetric partition is two). */
  partitions: { from: string; to: string }[];
  isolated: string[];
  /** Outbound access through QEMU's user-mode networking, when enabled. */
  uplink: { gateway: string; dns: string } | null;
  /** The bridges this one routes to (names), both ways. */
  routes: string[];
  /** The broker's router address on this subnet (the next hop guests use for routed bridges). */
  router: string;
}

/** A bridge's switch rules, as a lab snapshot keeps them: every impairment rule, cut and isolation. */
export interface BridgePolicy {
  impairments: { from?: string; to?: string; values: NetImpairment }[];
  /** Cut directions (partitionAll is `allCut`). */
  cut: { from: string; to: string }[];
  allCut: boolean;
  isolated: string[];
}

/** `lab.json` of a lab snapshot: what lab:restore needs to bring the lab back. */
export interface LabSnapshotManifest {
  version: 1;
  lab: string;
  /** Set in a fixture's entry: what its builder returned (vm:snapshot() or provium:snapshot()). */
  fixture?: 'vm' | 'lab';
  /** Every direct VM; `file` (beside lab.json) is null for a VM that was not running. */
  vms: { name: string; profile: string; state: VmState; file: string | null; disks: DiskSpec[] }[];
  bridges: {
    name: string;
    subnet: string;
    addressing: 'auto' | 'manual';
    uplink: boolean;
    /** Names of the bridges it routes to. */
    routes: string[];
    policy: BridgePolicy;
    /** Each member's NIC as the guests know it (their RAM holds these MACs and addresses). */
    nics: { vm: string; id: string; mac: string; host: number; linkUp: boolean }[];
  }[];
}

/** One VM's NIC on one bridge. */
export interface NicView {
  bridge: string;
  vm: string;
  mac: string;
  /** The guest's address on the bridge's subnet (null with addressing = "manual"). */
  ip: string | null;
  prefixLength: number;
  /** The guest's interface name once the NIC is plugged into a running guest. */
  ifname: string | null;
  plugged: boolean;
  linkUp: boolean;
}

/** Counters of a NIC from the guest's point of view (its tx is what the switch received). */
export interface NicCounters {
  rx_bytes: number;
  tx_bytes: number;
  rx_packets: number;
  tx_packets: number;
  errors: number;
  dropped: number;
}

/** A change to a bridge's faults. VMs are named by their VM name. */
export type BridgeFault =
  | { kind: 'partition' | 'unpartition'; from: string; to: string; symmetric: boolean }
  | { kind: 'partition_all' | 'restore_all' | 'reset' }
  | { kind: 'isolate' | 'unisolate'; vm: string }
  | { kind: 'impair'; values: Partial<NetImpairment>; from?: string; to?: string }
  /** Applied in the background; `bridge.info` waits for it and reports its failure. */
  | { kind: 'uplink'; enabled: boolean }
  /** Routes to (or stops routing to) other bridges, by bridge id; also applied in the background. */
  | { kind: 'route' | 'unroute'; peers: number[] };

/** The args of one agent op relayed through the broker. */
export interface AgentCallArgs<K extends AgentOp = AgentOp> {
  vmId: number;
  /** Routes the op to a guest worker process. */
  worker?: number;
  op: K;
  data: AgentOps[K]['req'];
  /** Bounds the broker's wait for the agent. */
  timeoutMs?: number;
}

export interface StreamChunk {
  /** null when nothing arrived before the timeout or the stream ended. */
  data: Uint8Array | null;
  /** The transport has ended and nothing is buffered. */
  eof: boolean;
}

/** Every RPC op: `args` from the worker, `reply` from the broker. */
export interface RpcOps {
  /** Declare a VM (state created). Validates the profile; the error lists known profiles. */
  'vm.create': { args: { name: string; profile: string; labPath: string }; reply: { vmId: number } };
  'vm.boot': { args: { vmId: number; opts: BootOptions }; reply: { vm: VmView; bootMs: number; restored: boolean } };
  'vm.shutdown': { args: { vmId: number }; reply: { vm: VmView } };
  /** QEMU is killed at once (no guest shutdown, unflushed disk writes lost), then the VM is shut down. */
  'vm.kill': { args: { vmId: number }; reply: { vm: VmView } };
  'vm.pause': { args: { vmId: number }; reply: { vm: VmView } };
  'vm.resume': { args: { vmId: number }; reply: { vm: VmView } };
  'vm.reset': { args: { vmId: number }; reply: { vm: VmView } };
  /** `graceful`: the guest powered itself off within the grace; otherwise the broker stopped it. */
  'vm.power_button': { args: { vmId: number }; reply: { vm: VmView; graceful: boolean } };
  'vm.info': { args: { vmId: number }; reply: { vm: VmView } };
  /** QMP system_wakeup: a guest that suspended itself (ACPI sleep) runs again. */
  'vm.wakeup': { args: { vmId: number }; reply: { vm: VmView } };
  'vm.snapshot': { args: { vmId: number; path?: string }; reply: { vm: VmView; path: string; bytes: number } };
  /** `again`: this snapshot will be restored again (reset_between_tests): keep a spare of it ready. */
  'vm.restore': { args: { vmId: number; path: string; again?: boolean }; reply: { vm: VmView } };
  /** A snapshot file's size now (0 once it is gone). Only the broker touches snapshot files. */
  'snapshot.size': { args: { path: string }; reply: { bytes: number } };
  /** Deletes a snapshot vm:snapshot wrote, with its sidecar. Idempotent. */
  'snapshot.delete': { args: { path: string }; reply: Record<string, never> };
  /** Last bytes of the console log (default 4 KiB). */
  'vm.console_tail': { args: { vmId: number; maxBytes?: number }; reply: { text: string } };
  'vm.console_log': { args: { vmId: number }; reply: { data: Uint8Array } };
  'vm.console_write': { args: { vmId: number; data: Uint8Array; timeoutMs?: number }; reply: Record<string, never> };
  /** Relay one agent op. `worker` routes it to a guest worker process. `timeoutMs` bounds the wait. */
  'agent.call': {
    args: { [K in AgentOp]: AgentCallArgs<K> }[AgentOp];
    /** Typed per op by AgentCallReply; the channel cannot correlate a union. */
    reply: { result: AgentOps[AgentOp]['res'] };
  };
  /** Starts an agent op without waiting for it (syscall_async); `callId` names it for agent.await. */
  'agent.start': { args: RpcOps['agent.call']['args']; reply: { callId: number } };
  /**
   * Waits up to `timeoutMs` (absent: until it ends) for an op agent.start began. `done` false:
   * still running (await again). Its failure is this call's error; once answered the id is gone.
   */
  'agent.await': { args: { callId: number; timeoutMs?: number }; reply: { done: boolean; result?: AgentOps[AgentOp]['res'] } };
  /** Open a stream through the agent (tail, fd, process output) or on the console. */
  'stream.open': {
    args:
      | { [K in AgentStreamOp]: { vmId: number; worker?: number; op: K; data: Omit<AgentStreamOps[K], 'window'> } }[AgentStreamOp]
      | { vmId: number; op: 'console' };
    reply: { streamId: number };
  };
  /** A packet capture of a bridge (or of one VM's NIC on it) as a stream of pcap bytes, and to `file` if given. */
  'capture.open': { args: { bridgeId: number; vmId?: number; file?: string }; reply: { streamId: number } };
  'stream.read': { args: { streamId: number; timeoutMs: number }; reply: StreamChunk };
  'stream.close': { args: { streamId: number }; reply: Record<string, never> };
  /** File-level reservation from the resource pool (reference §1.5). */
  'lab.claim': { args: { memoryBytes: number; cpus: number }; reply: Record<string, never> };
  /** Cross-file barrier named per run. Raises on timeout or when it can never fill. */
  'lab.barrier': { args: { name: string; count: number; timeoutMs: number }; reply: { released: true } };
  /** A bridge of a lab (a userspace switch). `subnet` is a /24 like `192.168.5.0/24`. */
  'bridge.create': { args: { name: string; labPath: string; subnet?: string; addressing?: 'auto' | 'manual' }; reply: { bridgeId: number; bridge: BridgeView } };
  /** Puts a VM on the bridge; a booted VM gets its NIC hot-plugged and configured at once, others at boot. */
  'bridge.attach': { args: { bridgeId: number; vmId: number }; reply: { nic: NicView; bridge: BridgeView } };
  'bridge.detach': { args: { bridgeId: number; vmId: number }; reply: { bridge: BridgeView } };
  'bridge.fault': { args: { bridgeId: number; fault: BridgeFault }; reply: { bridge: BridgeView } };
  'bridge.info': { args: { bridgeId: number; from?: string; to?: string }; reply: { bridge: BridgeView; effective?: NetImpairment } };
  'nic.info': { args: { bridgeId: number; vmId: number }; reply: { nic: NicView; counters: NicCounters } };
  /** Link down or up, seen by the guest (its carrier) and by the switch. */
  'nic.link': { args: { bridgeId: number; vmId: number; up: boolean }; reply: { nic: NicView } };
  /** Hot-plugs a disk into a booted VM (the guest sees it within a second), or adds it for the next boot. */
  'disk.attach': { args: { vmId: number; disk: DiskSpec }; reply: { disk: DiskView } };
  'disk.detach': { args: { vmId: number; id: string }; reply: { disk: DiskView } };
  'disk.info': { args: { vmId: number; id: string }; reply: { disk: DiskView } };
  /** 512-byte sectors, through the same server the guest uses (faults do not apply to the test). */
  'disk.read': { args: { vmId: number; id: string; sector: number; count: number }; reply: { data: Uint8Array } };
  'disk.write': { args: { vmId: number; id: string; sector: number; data: Uint8Array }; reply: Record<string, never> };
  'disk.fault': { args: { vmId: number; id: string; fault: DiskFault }; reply: { disk: DiskView } };
  /** Every write the guest has not flushed is lost, and the VM is powered off at that instant. */
  'disk.power_cut': { args: { vmId: number; id: string }; reply: { vm: VmView; lostBytes: number } };
  /** Saves every running VM of a lab (concurrently) and its bridges into `dir` (a temp dir when absent). */
  'lab.snapshot': { args: { lab: string; dir?: string; vmIds: number[]; bridgeIds: number[] }; reply: { path: string; bytes: number; vms: VmView[] } };
  'lab.snapshot_info': { args: { path: string }; reply: { manifest: LabSnapshotManifest } };
  /** Restores a lab snapshot onto these VMs and bridges (by name; the Lua side creates missing ones first). */
  'lab.restore': {
    args: { path: string; vms: { name: string; vmId: number }[]; bridges: { name: string; bridgeId: number }[] };
    reply: { vms: VmView[]; bridges: { bridgeId: number; bridge: BridgeView; nics: { vmId: number; nic: NicView }[] }[] };
  };
  /** A fixture's builder returned this snapshot (only in a fixture build's session). */
  'fixture.built': { args: { kind: 'vm' | 'lab'; path: string }; reply: Record<string, never> };
  /** The fixture `ref`, built when needed, as a lab snapshot directory of this file's to restore. */
  'fixture.prepare': { args: { ref: string; kind: 'vm' | 'lab' }; reply: { path: string; manifest: LabSnapshotManifest } };
  /** Tear down everything the given VMs and bridges own (scope end). */
  'scope.close': { args: { vmIds: number[]; bridgeIds?: number[] }; reply: { vms: VmView[] } };
}
export type RpcOp = keyof RpcOps;
export type RpcArgs<K extends RpcOp> = RpcOps[K]['args'];
export type RpcReply<K extends RpcOp> = RpcOps[K]['reply'];

/** Messages on the task's MessagePort, worker → broker. */
export type WorkerMessage =
  | { type: 'call'; seq: number; op: RpcOp; args: unknown }
  /** Fire-and-forget: what the file's tests came to (the one result channel, see task.ts). */
  | { type: 'report'; report: FileReport };

/** broker → worker. */
export type BrokerMessage =
  | { type: 'reply'; seq: number; ok: true; reply: unknown }
  | { type: 'reply'; seq: number; ok: false; error: RpcErrorData };

export interface RpcErrorData {
  message: string;
  code?: (typeof RpcErrorCode)[keyof typeof RpcErrorCode];
  /** Set when an agent op failed with an OS error. */
  errno?: number;
  /** The broker's view of the VM the failed call was about. */
  vm?: VmView;
}

/** SharedArrayBuffer layout: one Int32 slot the broker bumps and notifies after each reply. */
export const SIGNAL_SLOT = 0;
export const SIGNAL_BUFFER_BYTES = 4;

/** Error codes a binding may act on. */
export const RpcErrorCode = {
  /** The VM is dead (QEMU exited or the agent is gone). */
  vmDead: 'vm_dead',
  /** A call waited longer than its timeout. */
  timeout: 'timeout',
  /** An agent op failed with an errno; `message` is the agent's. */
  agent: 'agent',
  /** Bad arguments: the message names the thing, the value and the fix. */
  usage: 'usage',
} as const;

/** A failed call as the worker sees it: the broker's message, its code and errno. */
export class RpcError extends Error {
  override name = 'RpcError';
  readonly code: RpcErrorData['code'];
  readonly errno: number | undefined;
  readonly vm: VmView | undefined;
  constructor(data: RpcErrorData) {
    super(data.message);
    this.code = data.code;
    this.errno = data.errno;
    this.vm = data.vm;
  }
}
