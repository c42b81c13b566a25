// The REPL's line channel between a worker thread running Lua (`provium repl`, or a failed test
// under --debug-on-fail) and the main thread, which owns the terminal. The worker is synchronous:
// it posts `read` and blocks in Atomics.wait on the wake slot until the main thread answers with
// a line or EOF. Ctrl-C sets the interrupt slot; the worker's count hook and its RPC waits check it.

import type { MessagePort } from 'node:worker_threads';

/** Int32 slots of ReplChannel.signalBuffer. */
export const REPL_WAKE_SLOT = 0;
/** Nonzero while an interrupt (Ctrl-C) waits to be noticed by the running evaluation. */
export const REPL_INTERRUPT_SLOT = 1;
export const REPL_SIGNAL_BUFFER_BYTES = 8;

/** The worker's end, sent in the task (the port is transferred). */
export interface ReplChannel {
  port: MessagePort;
  signalBuffer: SharedArrayBuffer;
}

/** worker → main. */
export type ReplToHost =
  /** The worker waits for the next line; `prompt` is `> ` or `>> ` (a continued chunk). */
  | { type: 'read'; prompt: string }
  | { type: 'write'; stream: 'stdout' | 'stderr'; text: string }
  /** The conversation is over (EOF, or the worker left the REPL); the run may go on. */
  | { type: 'end' };

/** main → worker. */
export type HostToRepl = { type: 'line'; text: string } | { type: 'eof' };

/** What the REPL worker (workers/repl-worker.ts) gets: a session like a file's, plus the line channel. */
export interface ReplTask {
  /** A stand-in path in the invocation's directory: `require` and push_file resolve from its directory. */
  file: string;
  displayPath: string;
  roots: string[];
  /** The broker end of the REPL's session. */
  port: MessagePort;
  signalBuffer: SharedArrayBuffer;
  repl: ReplChannel;
  /** Lua run once before the prompt (binds `vm`); its failure ends the REPL with the message. */
  setup: string;
  /** Printed before the first prompt. */
  banner: string;
}
