// The run's outputs from its options (the cli hands this to the controller): where human text
// goes, the progress display on an interactive terminal, and the text, JSON, JUnit and HTML
// reporters behind one isolating fan-out. Report paths are checked before anything runs: a run
// whose report cannot be written fails at once (exit 2), not after an hour of tests.

import { constants } from 'node:fs';
import { access, mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import type { RunIO, RunOptions } from '../run/controller.js';
import { ReporterFanout, ReportWriteError, type Reporter, type RunOutputs } from '../run/reporter.js';
import { coverageReporter } from './coverage.js';
import { HtmlReporter } from './html.js';
import { kNoFilesJson, JsonReporter } from './json.js';
import { JunitReporter } from './junit.js';
import { ProgressDisplay } from './progress.js';
import { streamScreen, type OutputStream } from './screen.js';
import { TextReporter } from './text.js';

export function createReporters(options: RunOptions, io: RunIO): RunOutputs {
  // Raw frames own stdout under --events-stdout; JSON lines own it under --json.
  const human: Writable & OutputStream = options.eventsStdout || options.json ? io.stderr : io.stdout;
  const interactive = human.isTTY === true && !io.env['CI'] && options.progress;
  const progress = interactive
    ? new ProgressDisplay({ stream: human as OutputStream & NodeJS.WritableStream, colors: streamScreen(human, io.env).colors })
    : undefined;
  const screen = progress ? progress.screen : streamScreen(human, io.env);
  const list: { name: string; reporter: Reporter }[] = [];
  if (progress) list.push({ name: 'progress', reporter: progress });
  list.push({
    name: 'text',
    reporter: new TextReporter({ screen, verbosity: options.json ? 'quiet' : options.verbosity, cwd: io.cwd, counterPrefix: !!progress }),
  });
  if (options.json) list.push({ name: 'json', reporter: new JsonReporter(io.stdout) });
  if (options.junitPath) list.push({ name: 'junit', reporter: new JunitReporter(options.junitPath) });
  if (options.htmlDir) list.push({ name: 'html', reporter: new HtmlReporter(options.htmlDir) });
  if (options.coverageBy) list.push({ name: 'coverage', reporter: coverageReporter(options.coverageBy, screen) });
  return {
    checkPaths: async () => {
      if (options.junitPath) await checkWritable('--junit', options.junitPath);
      if (options.htmlDir) await checkWritable('--html', join(options.htmlDir, 'index.html'));
      if (options.saveEvents) await checkWritable('--save-events', options.saveEvents);
    },
    reporter: new ReporterFanout(list, (m) => io.stderr.write(`provium: ${m}\n`)),
    write: (text) => screen.write(text),
    warn: (message) => screen.write(`provium: warning: ${message}\n`),
    nothing: (reason, message) => {
      if (options.json && reason === 'no_files') io.stdout.write(`${kNoFilesJson}\n`);
      else screen.write(`provium: ${message}\n`);
    },
  };
}

/** The file's directory exists (created when missing) and is writable, and the file is not a directory. */
export async function checkWritable(flag: string, path: string): Promise<void> {
  try {
    const dir = dirname(path);
    // mkdir over a file says EEXIST; the truth is that a parent is not a directory.
    for (let up = dir; ; up = dirname(up)) {
      const st = await stat(up).catch(() => undefined);
      if (st && !st.isDirectory()) throw new Error(`ENOTDIR: not a directory, '${up}'`);
      if (st || dirname(up) === up) break;
    }
    await mkdir(dir, { recursive: true });
    await access(dir, constants.W_OK);
    const st = await stat(path).catch(() => undefined);
    if (st?.isDirectory()) throw new Error(`EISDIR: it is a directory, '${path}'`);
  } catch (err) {
    throw new ReportWriteError(flag, path, err);
  }
}
