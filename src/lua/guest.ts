// The path of every agent op: a target (a VM's main agent, or one of its guest workers), a state
// check before anything is sent (a paused guest cannot answer), the `agent.call` relay, and the
// translation of broker errors into messages that name the VM, the op and the guest's errno text.

import type { AgentOp, AgentOps } from '../protocol/agent.js';
import type { AgentCallArgs, VmView } from '../protocol/rpc.js';
import { RpcError } from '../protocol/rpc.js';
import type { BindingRuntime } from './args.js';
import { GuestOpError, LuaError } from './errors.js';
import type { ScopedResource, ScopedVm } from './scope.js';

/** A broker stream a VM holds open (stream.ts's Stream). */
export interface OpenStream extends ScopedResource {
  readonly streamId: number;
}

/**
 * A VM as agent ops and the guest-side bindings see it: itself the target of its main agent.
 * vm.ts's Vm implements it; declared here so that the bindings vm.ts is assembled from (exec,
 * files, worker…) never import vm.ts.
 */
export interface VmHandle extends AgentTarget, ScopedVm {
  readonly name: string;
  readonly deadReason: string | undefined;
  /** The guest's open files and the broker's streams: forgotten when the guest goes away. */
  readonly openFiles: Set<ScopedResource>;
  readonly openStreams: Set<OpenStream>;
  /** Takes the broker's view of the VM (every lifecycle reply and VM error carries one). */
  apply(view: VmView): void;
  /** Its NICs, by bridge name (nic.ts's Nic). */
  readonly nics: Map<string, AttachedNic>;
  /** Its disks, by id (disk.ts's GuestDisk). */
  readonly disks: Map<string, { readonly id: string }>;
}

/** A VM's attachment to a bridge, as the VM keeps it. */
export interface AttachedNic {
  readonly bridge: { readonly name: string };
}

/** Where an agent op goes. */
export interface AgentTarget {
  readonly rt: BindingRuntime;
  readonly vm: VmHandle;
  /** Set for a guest worker process. */
  readonly workerId?: number;
  /** `vm \`a\`` or `worker 2 of vm \`a\``, for messages. */
  readonly label: string;
  /** Throws a LuaError naming the state when the target cannot take ops now. */
  ensureUsable(fn: string): void;
}

export interface CallOptions {
  /** How long the op itself may take (its own timeout); the waits are bounded by this plus a margin. */
  boundMs?: number;
  /** What the op was about (`/etc/passwd`, `` `sleep 1` ``), inserted in messages. */
  context?: string;
}

/** Sends one agent op and returns the agent's `ok` data. Throws LuaError (GuestOpError for errnos). */
export function agentCall<K extends AgentOp>(
  target: AgentTarget,
  fn: string,
  op: K,
  data: AgentOps[K]['req'],
  options: CallOptions = {},
): AgentOps[K]['res'] {
  target.ensureUsable(fn);
  const rpc = target.rt.rpc;
  const timeoutMs = rpc.brokerBound(options.boundMs);
  const args: AgentCallArgs<K> = { vmId: target.vm.vmId, op, data };
  if (target.workerId !== undefined) args.worker = target.workerId;
  if (timeoutMs !== undefined) args.timeoutMs = timeoutMs;
  try {
    return rpc.agent(args, options.boundMs);
  } catch (err) {
    throw translateRpcError(target.vm, err, fn, options.context);
  }
}

/** A broker error as the Lua caller should read it. Non-RPC errors pass through. */
export function translateRpcError(vm: VmHandle, err: unknown, fn: string, context?: string): unknown {
  if (!(err instanceof RpcError)) return err;
  const about = context ? `${context}: ` : '';
  if (err.vm) vm.apply(err.vm);
  // The broker's view says the VM died: its reason is the message, whatever the op was.
  if (vm.state === 'dead') return new LuaError(`${fn}: ${vm.label} is dead: ${vm.deadReason ?? 'unknown reason'}`);
  switch (err.code) {
    case 'agent':
      return new GuestOpError(`${fn}: ${about}${err.message}${err.errno ? ` (errno ${err.errno})` : ''}`, err.errno, err.message);
    case 'timeout':
      return new LuaError(`${fn}: ${about}${err.message}`);
    default:
      return new LuaError(`${fn}: ${about}${err.message}`);
  }
}

/** Lua-visible seconds: 1500 → "1.5s", 30000 → "30s". */
export function showSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))}s`;
}
