// Issue 14 item 5: `provium --watch` re-runs exactly the test files a change affects (touching a
// test file runs that file; changing a required module runs the files requiring it; a new test
// file runs), keeps one --events-socket across the runs, and Ctrl-C ends it with the last run's
// exit code. Pure Lua files, so no guest boots; every wait is bounded.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { utimes, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cliMain } from './cli-run.js';
import { project } from './run-capture.js';

const kSuite = {
  'provium.toml': '[provium]\nroots = ["t"]\n',
  't/a.test.lua': 'test("a", function(t) end)\n',
  't/b.test.lua': 'local h = require("lib.helper")\ntest("b", function(t) t:assert_eq(h.x, 1) end)\n',
  't/lib/helper.lua': 'return {x = 1}\n',
};

/** Lines like `PASS t/a.test.lua (…)` / `FAIL …`, in order. */
function fileLines(out: string): string[] {
  return out.split('\n').filter((l) => /^(PASS|FAIL) t\//.test(l)).map((l) => l.replace(/ \(.*$/, ''));
}

describe('--watch', () => {
  it('re-runs only the affected files, keeps the event socket, and stops on Ctrl-C', async () => {
    const dir = await project(kSuite);
    const socketPath = path.join(dir, 'events.sock');
    const child = spawn(process.execPath, [cliMain, '--watch', '--no-progress', '--no-preflight', '--events-socket', socketPath], { cwd: dir, env: { ...process.env, CI: '1' } });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const watching = async (n: number): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while ((out.match(/^provium: watching /gm) ?? []).length < n) {
        if (Date.now() > deadline) throw new Error(`watch pass ${n} never came:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      // 1. The first run: both files.
      await watching(1);
      assert.deepEqual(fileLines(out).sort(), ['PASS t/a.test.lua', 'PASS t/b.test.lua']);
      const frames: Buffer[] = [];
      const client = connect(socketPath);
      client.on('data', (c: Buffer) => frames.push(c));
      await new Promise<void>((resolve, reject) => client.once('connect', () => resolve()).once('error', reject));

      // 2. Touch a test file: that file alone.
      const later = new Date(Date.now() + 5_000);
      await utimes(path.join(dir, 't/a.test.lua'), later, later);
      await watching(2);
      assert.deepEqual(fileLines(out).slice(2), ['PASS t/a.test.lua']);
      // The socket opened before the first run saw the second run's events.
      assert.ok(Buffer.concat(frames).includes('run_started'), 'no run_started frame on the socket after the second run');

      // 3. Change a required module: the file that requires it, which now fails.
      await writeFile(path.join(dir, 't/lib/helper.lua'), 'return {x = 2}\n');
      await watching(3);
      assert.deepEqual(fileLines(out).slice(3), ['FAIL t/b.test.lua']);

      // 4. A new test file runs by itself.
      await writeFile(path.join(dir, 't/c.test.lua'), 'test("c", function(t) end)\n');
      await watching(4);
      assert.deepEqual(fileLines(out).slice(4), ['PASS t/c.test.lua']);
      client.destroy();

      // 5. Ctrl-C while idle: the last run's code (it passed).
      child.kill('SIGINT');
      assert.equal(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]), 0, out);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
