// One task = one test file, run by a piscina worker (workers/file-worker.ts) with a fresh Lua
// state. These are the task's input and output; both cross the thread boundary by structured clone.

import type { MessagePort } from 'node:worker_threads';
import type { MetaMap } from './events.js';

/** Test selection applied inside the worker, where a file's tests become known. */
export interface TestSelection {
  includeSlow: boolean;
  /** --tag (OR); empty = no tag filter. */
  tags: string[];
  /** --no-tag (wins over --tag). */
  noTags: string[];
  /** --tag-meta KEY=VALUE: same key ORs, different keys AND. */
  tagMeta: { key: string; value: string }[];
  noTagMeta: { key: string; value: string }[];
}

export interface FileTask {
  /** Absolute path of the *.test.lua file. */
  file: string;
  /** Path as shown in reports (relative to the cwd). */
  displayPath: string;
  /** Test roots: `require` resolves modules from these. */
  roots: string[];
  selection: TestSelection;
  /** Re-run a failed test up to this many times; a later pass is reported flaky. */
  retries: number;
  /** Collect the file's tests without running them (`provium list`). */
  listOnly: boolean;
  /** The broker end of this file's session. */
  port: MessagePort;
  signalBuffer: SharedArrayBuffer;
}

export interface SourceLocation {
  file: string;
  line: number;
}

export interface TestResult {
  name: string;
  status: 'passed' | 'failed' | 'skipped';
  /** Failure or skip reason. */
  message?: string;
  location?: SourceLocation;
  log: string[];
  durationMs: number;
  meta: MetaMap;
  /** The last 4 KiB of each booted VM's console, for failures. */
  consoleExcerpt?: string;
  attempts: number;
  /** Failed at least once, then passed on a retry. */
  flaky: boolean;
}

export interface FileResult {
  file: string;
  displayPath: string;
  /** A file-scope error (syntax, runtime at top level): the file fails with it. */
  chunkError?: { message: string; location?: SourceLocation };
  tests: TestResult[];
  durationMs: number;
}
