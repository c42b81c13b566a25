// The main thread's side of a REPL (issue 14): owns the terminal, answers a worker's `read` with
// the next line of stdin (readline: history and line editing on a TTY; plain lines from a pipe),
// prints what the worker writes, and turns Ctrl-C into an interrupt of the running chunk. stdin is
// not touched until a worker first asks for a line, so a --debug-on-fail run that never fails
// never reads it. On a TTY the line reader exists only during a conversation: outside one, Ctrl-C
// is the run's own (SIGINT), not the REPL's.

import { readFileSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { createInterface, type Interface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { REPL_INTERRUPT_SLOT, REPL_SIGNAL_BUFFER_BYTES, REPL_WAKE_SLOT, type HostToRepl, type ReplChannel, type ReplToHost } from '../protocol/repl.js';
import { SIGNAL_SLOT } from '../protocol/rpc.js';

export interface ReplTerminal {
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable;
}

/** One worker's conversation: its channel, and the session it blocks on (to wake it for Ctrl-C). */
interface Conversation {
  port: MessagePort;
  signal: Int32Array;
  session: Int32Array | undefined;
  /** The worker waits for a line. */
  reading: boolean;
  ended: () => void;
}

const kHistorySize = 500;

export class ReplHost {
  private _rl: Interface | undefined;
  private readonly _queued: string[] = [];
  private _eof = false;
  private _current: Conversation | undefined;
  private readonly _tty: boolean;

  constructor(
    private readonly _io: ReplTerminal,
    private readonly _opts: { historyFile?: string } = {},
  ) {
    this._tty = _io.stdin.isTTY === true && _io.stdout.isTTY === true;
  }

  /**
   * A channel for one worker. `sessionSignal` is the worker's broker session buffer: Ctrl-C
   * wakes the worker from the RPC it waits in. `done` settles when the worker ends the REPL or
   * `close` is called; close it when the worker's task ends.
   */
  open(sessionSignal?: SharedArrayBuffer): { channel: ReplChannel; done: Promise<void>; close(): void } {
    const { port1, port2 } = new MessageChannel();
    const signalBuffer = new SharedArrayBuffer(REPL_SIGNAL_BUFFER_BYTES);
    let resolveDone!: () => void;
    const done = new Promise<void>((resolve) => (resolveDone = resolve));
    const conversation: Conversation = {
      port: port1,
      signal: new Int32Array(signalBuffer),
      session: sessionSignal ? new Int32Array(sessionSignal) : undefined,
      reading: false,
      ended: resolveDone,
    };
    port1.on('message', (message: ReplToHost) => this._onMessage(conversation, message));
    const close = (): void => {
      port1.close();
      this._end(conversation);
    };
    return { channel: { port: port2, signalBuffer }, done, close };
  }

  /** A worker's REPL is open (it reads or runs a chunk). */
  get active(): boolean {
    return this._current !== undefined;
  }

  /** Ctrl-C: interrupts the running chunk, or clears the line at a prompt. */
  interrupt(): void {
    const c = this._current;
    if (!c) return;
    if (c.reading) {
      this._io.stdout.write('^C (Ctrl-D to leave)\n');
      if (this._rl) {
        this._rl.write(null, { ctrl: true, name: 'u' });
        this._rl.prompt();
      }
      return;
    }
    Atomics.store(c.signal, REPL_INTERRUPT_SLOT, 1);
    if (c.session) {
      Atomics.add(c.session, SIGNAL_SLOT, 1);
      Atomics.notify(c.session, SIGNAL_SLOT);
    }
  }

  /** Releases stdin. Idempotent. */
  close(): void {
    this._closeReader();
  }

  private _onMessage(c: Conversation, message: ReplToHost): void {
    switch (message.type) {
      case 'write':
        (message.stream === 'stderr' ? this._io.stderr : this._io.stdout).write(message.text);
        return;
      case 'read':
        this._current = c;
        c.reading = true;
        this._serve(c, message.prompt);
        return;
      case 'end':
        this._end(c);
        return;
    }
  }

  private _end(c: Conversation): void {
    c.reading = false;
    c.ended();
    if (this._current !== c) return;
    this._current = undefined;
    // On a terminal, Ctrl-C goes back to the run (the reader's raw mode would swallow it).
    if (this._tty) this._closeReader();
  }

  private _serve(c: Conversation, prompt: string): void {
    const line = this._queued.shift();
    if (line !== undefined) return this._reply(c, { type: 'line', text: line });
    if (this._eof) return this._reply(c, { type: 'eof' });
    const rl = this._reader();
    if (this._tty) {
      rl.setPrompt(prompt);
      rl.prompt();
    }
  }

  private _reply(c: Conversation, message: HostToRepl): void {
    c.reading = false;
    c.port.postMessage(message);
    Atomics.add(c.signal, REPL_WAKE_SLOT, 1);
    Atomics.notify(c.signal, REPL_WAKE_SLOT);
  }

  private _reader(): Interface {
    if (this._rl) return this._rl;
    const rl = createInterface({
      input: this._io.stdin,
      ...(this._tty ? { output: this._io.stdout, terminal: true, history: this._loadHistory(), historySize: kHistorySize } : { terminal: false }),
    });
    rl.on('line', (line) => {
      const c = this._current;
      if (c?.reading) this._reply(c, { type: 'line', text: line });
      else this._queued.push(line);
      if (this._tty && line.trim() !== '') this._saveHistory(line);
    });
    rl.on('close', () => {
      if (this._rl !== rl) return;
      this._rl = undefined;
      // Ctrl-D on a terminal ends this conversation only; a pipe's end ends them all.
      if (!this._tty) this._eof = true;
      else this._io.stdout.write('\n');
      const c = this._current;
      if (c?.reading) this._reply(c, { type: 'eof' });
    });
    rl.on('SIGINT', () => this.interrupt());
    this._rl = rl;
    return rl;
  }

  private _closeReader(): void {
    const rl = this._rl;
    if (!rl) return;
    // Closed by us, not by EOF: a later conversation opens a new reader.
    this._rl = undefined;
    rl.close();
  }

  private _loadHistory(): string[] {
    if (!this._opts.historyFile) return [];
    try {
      return readFileSync(this._opts.historyFile, 'utf8').split('\n').filter(Boolean).slice(-kHistorySize).reverse();
    } catch {
      return [];
    }
  }

  private _saveHistory(line: string): void {
    if (!this._opts.historyFile) return;
    appendFile(this._opts.historyFile, `${line.replace(/\n/g, ' ')}\n`).catch(() => undefined);
  }
}
