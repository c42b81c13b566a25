// The real CLI in a child process, for end-to-end tests with real guests: its exit code, its
// output, and the event stream it saved (decoded by `provium events`).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const cliMain = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

export interface CliRun {
  code: number;
  out: string;
  events: { kind: string; payload: Record<string, unknown> }[];
}

/** `provium --no-progress --save-events EVENTS ARGS...` in `cwd`. */
export function runProvium(cwd: string, args: string[], eventsFile: string): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cliMain, '--no-progress', '--save-events', eventsFile, ...args], { cwd, env: { ...process.env, CI: '1' } }, (err, stdout, stderr) => {
      execFile(process.execPath, [cliMain, 'events', eventsFile], { cwd }, (_e, decoded) => {
        const events = decoded.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as CliRun['events'][number]);
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr, events });
      });
    });
  });
}
