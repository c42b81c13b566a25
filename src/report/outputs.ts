// The run's outputs from its options (the cli hands this to the controller): where human text
// goes, the progress display on an interactive terminal, and the text, JSON and JUnit reporters
// behind one isolating fan-out.

import type { Writable } from 'node:stream';
import type { RunIO, RunOptions } from '../run/controller.js';
import { ReporterFanout, type Reporter, type RunOutputs } from '../run/reporter.js';
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
  return {
    reporter: new ReporterFanout(list, (m) => io.stderr.write(`provium: ${m}\n`)),
    write: (text) => screen.write(text),
    warn: (message) => screen.write(`provium: warning: ${message}\n`),
    nothing: (reason, message) => {
      if (options.json && reason === 'no_files') io.stdout.write(`${kNoFilesJson}\n`);
      else screen.write(`provium: ${message}\n`);
    },
  };
}
