#!/usr/bin/env node
// The `provium` binary (package.json "bin"). Everything happens in runCli; this only connects it
// to the process and exits once stdout and stderr have drained (a pipe reader must get every line,
// and a stray handle must not keep a finished run alive).

import { runCli } from './program.js';
import { closeProcessLauncher } from '../vmm/process-launcher.js';

function drain(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.writableLength === 0) resolve();
    else stream.write('', () => resolve());
  });
}

// `provium … | head`: a closed pipe is not an error of the run.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

const code = await runCli(process.argv, {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
});
await Promise.all([drain(process.stdout), drain(process.stderr), closeProcessLauncher()]);
process.exit(code);
