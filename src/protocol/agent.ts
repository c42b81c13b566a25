// Host-side shapes of the agent wire protocol. agent/PROTOCOL.md is the prose; this is the code.
// Both ends ship together: change them together and bump PROTOCOL_VERSION.

export const PROTOCOL_VERSION = 1;
/** Frames larger than this are refused before allocation, on both ends. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** The agent keeps at most this much of each output pipe for a reply. */
export const OUTPUT_CAP_BYTES = 16 * 1024 * 1024;
/** Credit granted to a stream up front, and re-granted as the host consumes it. */
export const STREAM_WINDOW_BYTES = 1024 * 1024;

export const OPEN_MODE = { read: 1, write: 2, create: 4, truncate: 8, append: 16, exclusive: 32 } as const;

export type EntryType =
  | 'file' | 'directory' | 'symlink' | 'fifo' | 'socket' | 'block_device' | 'char_device' | 'other';

/** 64-bit integers arrive as bigint when they do not fit a 32-bit msgpack int (decoder useBigInt64). */
export type Int64 = number | bigint;

export interface ExitInfo {
  status: 'exited' | 'signalled' | 'timed_out' | 'running';
  code: number;
  signal: number;
}
export interface Captured {
  stdout: Uint8Array;
  stderr: Uint8Array;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
}
export interface ExecSpec {
  argv: string[];
  env: Record<string, string>;
  env_clear: boolean;
  cwd?: string;
  stdin: Uint8Array;
}
export type Empty = Record<string, never>;

/** Every agent op: what the host sends (`req`) and what an `ok` reply carries (`res`). */
export interface AgentOps {
  hello: { req: { protocol_version: number }; res: { protocol_version: number; agent_version: string; os: string; kernel: string; pid: number; mode: string } };
  ping: { req: { token: string }; res: { token: string } };
  exec: { req: ExecSpec & { timeout_ms?: number }; res: ExitInfo & Captured };
  spawn: { req: ExecSpec; res: { handle: number; pid: number } };
  wait: { req: { handle: number; timeout_ms?: number }; res: ExitInfo & Captured };
  proc_status: { req: { handle: number }; res: ExitInfo };
  kill: { req: { handle: number; signal: number }; res: Empty };
  get_pid: { req: { handle: number }; res: { pid: number } };
  stdin_write: { req: { handle: number; data: Uint8Array }; res: { written: number } };
  stdin_close: { req: { handle: number }; res: Empty };
  release: { req: { handle: number }; res: Empty };
  read_file: { req: { path: string }; res: { data: Uint8Array } };
  write_file: { req: { path: string; data: Uint8Array; append?: boolean; perm?: number }; res: Empty };
  stat: { req: { path: string; follow?: boolean }; res: { size: Int64; mtime_ns: Int64; perm: number; entry_type: EntryType; uid: number; gid: number; nlink: number } };
  listdir: { req: { path: string }; res: { entries: { name: string; entry_type: EntryType }[] } };
  mkdir: { req: { path: string; parents?: boolean; perm?: number }; res: Empty };
  unlink: { req: { path: string }; res: Empty };
  rename: { req: { from: string; to: string }; res: Empty };
  open_file: { req: { path: string; flags: number; perm?: number }; res: { handle: number } };
  read: { req: { handle: number; len: number }; res: { data: Uint8Array } };
  write: { req: { handle: number; data: Uint8Array }; res: { written: number } };
  seek: { req: { handle: number; offset: Int64; whence: 'set' | 'cur' | 'end' }; res: { offset: Int64 } };
  close: { req: { handle: number }; res: Empty };
  stream_close: { req: { stream: number }; res: Empty };
  get_time: { req: Empty; res: { sec: Int64; nsec: number } };
  set_time: { req: { sec: Int64; nsec: number }; res: Empty };
  advance_time: { req: { ns: Int64 }; res: { sec: Int64; nsec: number } };
  sleep: { req: { ns: Int64 }; res: Empty };
  seed_rng: { req: { seed: Uint8Array }; res: Empty };
  syscall: {
    /** `timeout_ms`: the agent interrupts the call then (EINTR) and answers ETIMEDOUT. */
    req: { nr: Int64; args: Int64[]; bufs: Uint8Array[]; ptrs: [number, number][]; nested: [number, number, number][]; timeout_ms?: number };
    res: { ret: Int64; errno: number; out_bufs?: Uint8Array[] };
  };
  ioctl: {
    req: { fd: Int64; cmd: Int64; data?: Uint8Array; bufs: Uint8Array[]; ptr_offsets: number[]; timeout_ms?: number };
    res: { ret: Int64; errno: number; out_data?: Uint8Array; out_bufs?: Uint8Array[] };
  };
  read_mem: { req: { addr: Int64; len: number }; res: { data: Uint8Array } };
  batch: { req: { ops: BatchOp[] }; res: { results: BatchResult[] } };
  spawn_worker: { req: Empty; res: { worker: number; pid: number } };
  worker_join: { req: { worker: number; timeout_ms?: number }; res: ExitInfo };
  kill_all: { req: { signal: number }; res: { killed: number } };
  exit: { req: Empty; res: Empty };
}
export type AgentOp = keyof AgentOps;

/** Ops that open a stream: an `ok` reply, then `stream_data` frames under the same id. */
export interface AgentStreamOps {
  tail_file: { path: string; start: 'beginning' | 'end' | Int64; window: number };
  fd_stream: { handle: number; window: number };
  proc_stream: { handle: number; which: 'stdout' | 'stderr'; window: number };
}
export type AgentStreamOp = keyof AgentStreamOps;

export type BatchableOp = 'exec' | 'read_file' | 'write_file' | 'stat' | 'listdir' | 'mkdir' | 'unlink' | 'rename' | 'syscall';
export type BatchOp = { [K in BatchableOp]: { kind: K; data: AgentOps[K]['req'] } }[BatchableOp];
export type BatchResult = { ok: Record<string, unknown> } | { err: AgentErrorData };

export interface AgentErrorData {
  errno: number;
  message: string;
}

/** Frames as they travel. `worker` routes a request to a worker process inside the guest. */
export interface HostFrame {
  id: number;
  kind: string;
  data: Record<string, unknown>;
  worker?: number;
}
export type AgentFrame =
  | { id: number; kind: 'ok'; data: Record<string, unknown> }
  | { id: number; kind: 'err'; data: AgentErrorData }
  | { id: number; kind: 'stream_data'; data: { bytes: Uint8Array } }
  | { id: number; kind: 'stream_end'; data: Partial<AgentErrorData> }
  | { id: 0; kind: 'worker_exit'; data: ExitInfo & { worker: number } }
  | { id: 0; kind: 'agent_error'; data: { message: string } };

/**
 * Every op the host sends, once, at run time: requests with a reply, ops that open a stream, and
 * `stream_ack` (credit, no reply). A unit test checks this list against agent/PROTOCOL.md and the
 * agent's op table (agent/req.c), so the three cannot drift; the types below tie it to AgentOps.
 */
export const AGENT_REQUEST_OPS = [
  'hello', 'ping', 'exec', 'spawn', 'wait', 'proc_status', 'kill', 'get_pid', 'stdin_write', 'stdin_close',
  'release', 'read_file', 'write_file', 'stat', 'listdir', 'mkdir', 'unlink', 'rename', 'open_file', 'read',
  'write', 'seek', 'close', 'stream_close', 'get_time', 'set_time', 'advance_time', 'sleep', 'seed_rng',
  'syscall', 'ioctl', 'read_mem', 'batch', 'spawn_worker', 'worker_join', 'kill_all', 'exit',
] as const satisfies readonly AgentOp[];
export const AGENT_STREAM_OPS = ['tail_file', 'fd_stream', 'proc_stream'] as const satisfies readonly AgentStreamOp[];
export const AGENT_NOTICE_OPS = ['stream_ack'] as const;

/** Compile-time: the lists name every op of AgentOps and AgentStreamOps (an omission fails here). */
type Missing<All, Listed> = Exclude<All, Listed>;
const kEveryRequestListed: Missing<AgentOp, (typeof AGENT_REQUEST_OPS)[number]> extends never ? true : never = true;
const kEveryStreamListed: Missing<AgentStreamOp, (typeof AGENT_STREAM_OPS)[number]> extends never ? true : never = true;
void kEveryRequestListed;
void kEveryStreamListed;
