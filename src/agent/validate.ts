// Shapes of what the agent sends, checked before the host uses any of it. The agent is a guest
// program: a broken or hostile guest can send anything, so a frame is a claim to verify, not a
// value to trust. Checks name the op, the field and what came instead.

import type { AgentFrame, AgentOp, AgentStreamOp } from '../protocol/agent.js';

/** What one field must hold. `int` is a safe JS integer; `int64` may also be a bigint. */
export type Check =
  | 'any'
  | 'str'
  | 'int'
  | 'uint'
  | 'int64'
  | 'bool'
  | 'bin'
  | 'map'
  | { oneOf: readonly string[] }
  | { arrayOf: Check }
  | { shape: Shape }
  | { optional: Check };

/** Fields of a map. Fields not listed are allowed (a newer agent may add some). */
export type Shape = Readonly<Record<string, Check>>;

const opt = (check: Check): Check => ({ optional: check });

const kExitStatus = { oneOf: ['exited', 'signalled', 'timed_out', 'running'] } as const;
const kEntryType = {
  oneOf: ['file', 'directory', 'symlink', 'fifo', 'socket', 'block_device', 'char_device', 'other'],
} as const;
const kExitInfo: Shape = { status: kExitStatus, code: 'int', signal: 'int' };
const kCaptured: Shape = { stdout: 'bin', stderr: 'bin', stdout_truncated: 'bool', stderr_truncated: 'bool' };
const kErrData: Shape = { errno: 'int', message: 'str' };
const kTime: Shape = { sec: 'int64', nsec: 'int' };

/** The `ok` data of every op, as src/protocol/agent.ts promises it. */
export const kReplyShapes: Readonly<Record<AgentOp | AgentStreamOp, Shape>> = {
  hello: { protocol_version: 'uint', agent_version: 'str', os: 'str', kernel: 'str', pid: 'int', mode: 'str' },
  ping: { token: 'any' },
  exec: { ...kExitInfo, ...kCaptured },
  spawn: { handle: 'uint', pid: 'int' },
  wait: { ...kExitInfo, ...kCaptured },
  proc_status: kExitInfo,
  kill: {},
  get_pid: { pid: 'int' },
  stdin_write: { written: 'uint' },
  stdin_close: {},
  release: {},
  read_file: { data: 'bin' },
  write_file: {},
  stat: { size: 'int64', mtime_ns: 'int64', perm: 'uint', entry_type: kEntryType, uid: 'uint', gid: 'uint', nlink: 'uint' },
  listdir: { entries: { arrayOf: { shape: { name: 'str', entry_type: kEntryType } } } },
  mkdir: {},
  unlink: {},
  rename: {},
  open_file: { handle: 'uint' },
  read: { data: 'bin' },
  write: { written: 'uint' },
  seek: { offset: 'int64' },
  close: {},
  stream_close: {},
  get_time: kTime,
  set_time: {},
  advance_time: kTime,
  sleep: {},
  seed_rng: {},
  syscall: { ret: 'int64', errno: 'int', out_bufs: opt({ arrayOf: 'bin' }) },
  ioctl: { ret: 'int64', errno: 'int', out_data: opt('bin'), out_bufs: opt({ arrayOf: 'bin' }) },
  read_mem: { data: 'bin' },
  batch: { results: { arrayOf: 'map' } },
  spawn_worker: { worker: 'uint', pid: 'int' },
  worker_join: kExitInfo,
  kill_all: { killed: 'uint' },
  exit: {},
  tail_file: {},
  fd_stream: {},
  proc_stream: {},
};

/** Data of the frames that are not `ok` replies. */
const kFrameShapes: Readonly<Record<Exclude<AgentFrame['kind'], 'ok'>, Shape>> = {
  err: kErrData,
  stream_data: { bytes: 'bin' },
  stream_end: { errno: opt('int'), message: opt('str') },
  worker_exit: { worker: 'uint', ...kExitInfo },
  agent_error: { message: 'str' },
};
const kKinds = new Set<string>(['ok', ...Object.keys(kFrameShapes)]);
/** Kinds the agent sends with id 0, and only with id 0. */
const kEventKinds = new Set<string>(['worker_exit', 'agent_error']);
const kMaxId = 0xffff_ffff;

export type FrameCheck =
  | { ok: true; frame: AgentFrame }
  /**
   * `id` is set when the frame has a valid one (so the request it names can be failed on its
   * own); `kindKnown` when its kind is one the agent sends (a reply to an abandoned request).
   */
  | { ok: false; id?: number; kindKnown?: boolean; problem: string };

/**
 * Checks the envelope `{id, kind, data}` and, for every kind but `ok`, the data. An `ok` is
 * checked against its op with checkReply() once the request it answers is known.
 */
export function checkFrame(value: unknown): FrameCheck {
  if (!isMap(value)) return { ok: false, problem: `a frame must be a map, got ${describe(value)}` };
  const { id, kind } = value;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > kMaxId) {
    return { ok: false, problem: `field \`id\` must be an integer in [0, ${kMaxId}], got ${describe(id)}` };
  }
  if (typeof kind !== 'string' || !kKinds.has(kind)) {
    return { ok: false, id, problem: `field \`kind\` must be one of ${[...kKinds].join(', ')}, got ${describe(kind)}` };
  }
  if (kEventKinds.has(kind) !== (id === 0)) {
    return { ok: false, id, kindKnown: true, problem: `a \`${kind}\` frame must have id ${kEventKinds.has(kind) ? '0' : 'other than 0'}, got ${id}` };
  }
  // A missing or nil `data` is `{}` (as in the other direction).
  const data = value.data ?? {};
  if (!isMap(data)) return { ok: false, id, kindKnown: true, problem: `field \`data\` of a \`${kind}\` frame must be a map, got ${describe(data)}` };
  if (kind !== 'ok') {
    const problem = checkShape(data, kFrameShapes[kind as keyof typeof kFrameShapes], 'data.');
    if (problem) return { ok: false, id, kindKnown: true, problem: `\`${kind}\` frame: ${problem}` };
  }
  return { ok: true, frame: { id, kind, data } as AgentFrame };
}

/** The problem with an `ok` reply to `op`, or undefined when it has what the op promises. */
export function checkReply(op: string, data: Record<string, unknown>): string | undefined {
  const shape = (kReplyShapes as Record<string, Shape | undefined>)[op];
  if (!shape) return undefined; // an op the host does not model: nothing is promised
  if (op === 'batch') return checkBatch(data);
  return checkShape(data, shape, '');
}

function checkBatch(data: Record<string, unknown>): string | undefined {
  const problem = checkShape(data, kReplyShapes.batch, '');
  if (problem) return problem;
  const results = data.results as Record<string, unknown>[];
  for (let i = 0; i < results.length; i++) {
    const entry = results[i]!;
    const path = `results[${i}]`;
    if (isMap(entry.ok)) continue;
    if (entry.ok !== undefined) return `field \`${path}.ok\` must be a map, got ${describe(entry.ok)}`;
    if (!isMap(entry.err)) return `field \`${path}\` must hold \`ok\` or \`err\`, got ${describe(entry)}`;
    const errProblem = checkShape(entry.err, kErrData, `${path}.err.`);
    if (errProblem) return errProblem;
  }
  return undefined;
}

function checkShape(map: Record<string, unknown>, shape: Shape, prefix: string): string | undefined {
  // Every reply passes through here: the common case (it fits) builds no strings at all.
  if (fits(map, shape)) return undefined;
  for (const [field, check] of Object.entries(shape)) {
    const problem = checkValue(map[field], check, `${prefix}${field}`);
    if (problem) return problem;
  }
  return undefined;
}

function checkValue(value: unknown, check: Check, path: string): string | undefined {
  if (typeof check === 'object' && 'optional' in check) {
    return value === undefined || value === null ? undefined : checkValue(value, check.optional, path);
  }
  if (value === undefined || value === null) return check === 'any' && value === null ? undefined : `missing field \`${path}\``;
  const wrong = (what: string): string => `field \`${path}\` must be ${what}, got ${describe(value)}`;
  switch (check) {
    case 'any':
      return undefined;
    case 'str':
      return typeof value === 'string' ? undefined : wrong('a string');
    case 'bool':
      return typeof value === 'boolean' ? undefined : wrong('a boolean');
    case 'bin':
      return value instanceof Uint8Array ? undefined : wrong('bytes (bin)');
    case 'map':
      return isMap(value) ? undefined : wrong('a map');
    case 'int':
      return Number.isSafeInteger(value) ? undefined : wrong('an integer');
    case 'uint':
      return Number.isSafeInteger(value) && (value as number) >= 0 ? undefined : wrong('an unsigned integer');
    case 'int64':
      return Number.isSafeInteger(value) || typeof value === 'bigint' ? undefined : wrong('a 64-bit integer');
  }
  if ('oneOf' in check) {
    return typeof value === 'string' && check.oneOf.includes(value) ? undefined : wrong(`one of ${check.oneOf.join(', ')}`);
  }
  if ('arrayOf' in check) {
    if (!Array.isArray(value)) return wrong('an array');
    for (let i = 0; i < value.length; i++) {
      const problem = checkValue(value[i], check.arrayOf, `${path}[${i}]`);
      if (problem) return problem;
    }
    return undefined;
  }
  if (!isMap(value)) return wrong('a map');
  return checkShape(value, check.shape, `${path}.`);
}

/** checkShape's answer without its message: true when every field fits its check. */
function fits(map: Record<string, unknown>, shape: Shape): boolean {
  for (const field in shape) if (!fitsValue(map[field], shape[field]!)) return false;
  return true;
}

function fitsValue(value: unknown, check: Check): boolean {
  if (typeof check === 'object' && 'optional' in check) return value === undefined || value === null || fitsValue(value, check.optional);
  if (value === undefined || value === null) return check === 'any' && value === null;
  switch (check) {
    case 'any':
      return true;
    case 'str':
      return typeof value === 'string';
    case 'bool':
      return typeof value === 'boolean';
    case 'bin':
      return value instanceof Uint8Array;
    case 'map':
      return isMap(value);
    case 'int':
      return Number.isSafeInteger(value);
    case 'uint':
      return Number.isSafeInteger(value) && (value as number) >= 0;
    case 'int64':
      return Number.isSafeInteger(value) || typeof value === 'bigint';
  }
  if ('oneOf' in check) return typeof value === 'string' && check.oneOf.includes(value);
  if ('arrayOf' in check) return Array.isArray(value) && value.every((item) => fitsValue(item, check.arrayOf));
  return isMap(value) && fits(value, check.shape);
}

/** A msgpack map as the decoder gives it: a plain object. */
export function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

const kDescribeMaxChars = 40;

/** A short, printable account of a value that came from the guest (never the whole of it). */
export function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'nil';
  if (value instanceof Uint8Array) return `bin (${value.byteLength} bytes)`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  switch (typeof value) {
    case 'string': {
      const shown = value.length > kDescribeMaxChars ? `${value.slice(0, kDescribeMaxChars)}…` : value;
      return `string ${JSON.stringify(shown)}`;
    }
    case 'number':
      return Number.isInteger(value) ? `integer ${value}` : `float ${value}`;
    case 'bigint':
      return `integer ${value}`;
    case 'boolean':
      return `boolean ${value}`;
    case 'object': {
      const keys = Object.keys(value);
      const shown = keys.slice(0, 6).map((k) => (k.length > 20 ? `${k.slice(0, 20)}…` : k));
      return `a map {${shown.join(', ')}${keys.length > 6 ? ', …' : ''}}`;
    }
    default:
      return typeof value;
  }
}
