// One task = one test file, run by a piscina worker (workers/file-worker.ts) with a fresh Lua
// state. These are the task, its acknowledgement, and the reports the worker posts on its session
// port; all cross the thread boundary by structured clone.

import type { MessagePort } from 'node:worker_threads';
import type { MetaMap } from './events.js';
import type { ReplChannel } from './repl.js';

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
  /** Run the file as a fixture's builder: its chunk returns the snapshot to keep, and it has no tests. */
  fixture?: boolean;
  /** The broker end of this file's session. */
  port: MessagePort;
  signalBuffer: SharedArrayBuffer;
  /** --debug-on-fail: a failed test opens a REPL on this channel before its VMs go. */
  debug?: ReplChannel;
  /** --keep-failed DIR: a failed test leaves its consoles, dmesg, processes and a snapshot here. */
  keepFailed?: string;
}

export interface SourceLocation {
  file: string;
  line: number;
}

/** `not_run`: declared, but the file ended (timeout, crash, interrupt) before the test started. */
export type TestStatus = 'passed' | 'failed' | 'skipped' | 'not_run';

export interface TestResult {
  name: string;
  status: TestStatus;
  /** Failure, skip or not-run reason. */
  message?: string;
  /** Where test() declared it. */
  location?: SourceLocation;
  /** Where it failed (the assertion or error), for failures. */
  failureLocation?: SourceLocation;
  log: string[];
  durationMs: number;
  meta: MetaMap;
  /** The last 4 KiB of each booted VM's console, for failures. */
  consoleExcerpt?: string;
  attempts: number;
  /** Failed at least once, then passed on a retry. */
  flaky: boolean;
  /** The failure message of each earlier attempt, oldest first (the main thread fills it from test_retry). */
  retryFailures?: string[];
}

/** An error outside any test (syntax, top-level code, teardown): the file fails with it. */
export interface FatalError {
  message: string;
  location?: SourceLocation;
}

/** A test as the file declared it, before it runs. */
export interface DeclaredTest {
  name: string;
  meta: MetaMap;
  location: SourceLocation;
  /** Why it will not run (todo, meta.skip, a filter), or null. */
  skipReason: string | null;
}

/**
 * What the worker reports about its file, in order, on the session port: the file's one result
 * channel. `tests_declared` once the top-level chunk ran; per test one `test_begin` (retries send
 * `test_retry`, not a second begin) and one `test_end`; and exactly one `file_done`, sent from a
 * `finally` however the file ended.
 */
export type FileReport =
  | { type: 'tests_declared'; tests: DeclaredTest[] }
  | { type: 'test_begin'; name: string }
  | { type: 'test_retry'; name: string; attempt: number; reason: string }
  | { type: 'test_end'; test: TestResult }
  | { type: 'file_done'; fatalErrors: FatalError[] };

/** piscina's result: only an acknowledgement; the file's results travel as FileReports. */
export interface FileAck {
  file: string;
}

/** A file's results as the main thread assembled them from its reports. */
export interface FileResult {
  file: string;
  displayPath: string;
  /** Errors outside any test; the file fails with them. */
  fatalErrors: FatalError[];
  tests: TestResult[];
  durationMs: number;
}
