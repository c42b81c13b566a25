// Issue 13 item 2 in a real terminal: the CLI runs under tmux (Debian's package) with the progress
// display, at 120 and at 60 columns, and the captured pane (scrollback included, wrapped lines
// joined) must hold exactly the lines printed above the bars: no piece of a bar or a worker line,
// no two lines run together, nothing cut short; then the recap of failed tests and the closing line.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cliMain } from './cli-run.js';
import { project } from './run-capture.js';

const kTmux = '/usr/bin/tmux';
const kSocket = `provium-test-${process.pid}`;

function tmux(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(kTmux, ['-L', kSocket, ...args], (err, stdout, stderr) => (err ? reject(new Error(`tmux ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout)));
  });
}

const spin = (s: number) => `local t0 = os.clock() while os.clock() - t0 < ${s} do end`;
const kSuite: Record<string, string> = {
  'provium.toml': '[provium]\nroots = ["t"]\n',
  't/flaky.test.lua': `test("fails with a long block", function(t)\n  ${spin(0.4)}\n  t:log("line one of the log")\n  t:log("line two of the log")\n  error("first line of the failure\\nsecond line\\nthird line")\nend)\n`,
  't/a-file-with-a-rather-long-name-so-that-lines-wrap-at-sixty.test.lua': `test("a test whose name is long as well, to fill the worker line", function(t) ${spin(1.2)} end)\n`,
  't/quick.test.lua': `test("one", function(t) ${spin(0.3)} end)\ntest("two", function(t) t:assert_eq(1, 2, "math") end)\n`,
  't/slow.test.lua': `test("slow", function(t) ${spin(1.5)} end)\n`,
  't/more.test.lua': `test("more", function(t) ${spin(0.6)} end)\n`,
};

/** Runs the CLI in a fresh tmux window of `columns`, waits for it to exit, returns the joined scrollback. */
async function runInTerminal(dir: string, columns: number, args: string, name: string): Promise<string> {
  const command = `cd ${dir} && env -u CI ${process.execPath} ${cliMain} ${args}; echo "EXIT=$?"; sleep 600`;
  await tmux(['new-session', '-d', '-s', name, '-x', String(columns), '-y', '30', command]);
  const deadline = Date.now() + 120_000;
  for (;;) {
    const pane = await tmux(['capture-pane', '-p', '-J', '-S', '-', '-t', name]);
    if (/EXIT=\d+/.test(pane)) {
      await tmux(['kill-session', '-t', name]);
      return pane;
    }
    if (Date.now() > deadline) throw new Error(`the run in tmux did not finish:\n${pane}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Every non-empty line of the pane must be one the reporters print; returns them. */
function checkPane(pane: string): string[] {
  const lines = pane.split('\n').map((l) => l.trimEnd()).filter((l) => l !== '');
  const allowed = [
    /^provium: \d+ files, 2 workers, accel \S+, seed \d+$/,
    /^\[\d\/5\] (PASS|FAIL) t\/[a-z-]+\.test\.lua \(\d passed, \d failed, 0 skipped\) \d+(\.\d+)?m?s$/,
    /^ {4}FAIL (fails with a long block|two)$/,
    /^ {8}(t\/flaky\.test\.lua:5: first line of the failure|second line|third line|t\/quick\.test\.lua:2: math: 1 ~= 2)$/,
    /^ {8}log: line (one|two) of the log$/,
    /^Failed tests \(2\):$/,
    /^ {2}FAIL t\/flaky\.test\.lua:5 › fails with a long block: first line of the failure$/,
    /^ {2}FAIL t\/quick\.test\.lua:2 › two: math: 1 ~= 2$/,
    /^4 passed, 2 failed, 0 skipped$/,
    /^5 files \(2 failed\) in \d+(\.\d+)?m?s$/,
    /^EXIT=1$/,
  ];
  for (const line of lines) {
    assert.ok(allowed.some((re) => re.test(line)), `a line that no reporter prints (a leftover of the bars?): ${JSON.stringify(line)}\n--- pane ---\n${pane}`);
  }
  for (const re of allowed) assert.ok(lines.some((l) => re.test(l)), `missing: ${re}\n--- pane ---\n${pane}`);
  // Each file's line exactly once, nothing run together.
  for (const file of Object.keys(kSuite).filter((f) => f.startsWith('t/'))) {
    assert.equal(lines.filter((l) => l.includes(` ${file} (`)).length, 1, `${file}\n${pane}`);
  }
  return lines;
}

describe('the progress display in a real terminal (tmux)', { skip: existsSync(kTmux) ? false : `${kTmux} is missing: run scripts/setup.sh` }, () => {
  after(() => {
    try {
      execFileSync(kTmux, ['-L', kSocket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
  });

  for (const columns of [120, 60]) {
    it(`leaves only the printed lines at ${columns} columns`, async () => {
      const dir = await project(kSuite);
      const pane = await runInTerminal(dir, columns, '-j 2', `w${columns}`);
      checkPane(pane);
    });
  }

  it('puts progress and human output on stderr when --json owns stdout', async () => {
    const dir = await project(kSuite);
    const pane = await runInTerminal(dir, 120, '-j 2 --json > out.json', 'json');
    // Quiet text under --json: failures, the recap and the summary, on the terminal.
    assert.match(pane, /^\[\d\/5\] FAIL t\/quick\.test\.lua/m);
    assert.match(pane, /^4 passed, 2 failed, 0 skipped$/m);
    assert.doesNotMatch(pane, /[█░]|^ {2}w\d /m);
    const records = (await readFile(join(dir, 'out.json'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(records.length, 6);
    assert.equal(records.at(-1)!['type'], 'summary');
  });
});
