// Issue 14 item 3 in a real terminal: `provium --debug-on-fail` under tmux stops at a failed test
// with its VM up and a REPL in the test's scope (its locals, its upvalue `vm`); the VM answers, a
// runaway loop and a blocking call are interrupted with Ctrl-C, and Ctrl-D continues the run,
// whose next test still runs and whose report still has the failure.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { cliMain } from './cli-run.js';
import { project } from './run-capture.js';

const kTmux = '/usr/bin/tmux';
const kSocket = `provium-dbg-${process.pid}`;

function tmux(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(kTmux, ['-L', kSocket, ...args], (err, stdout, stderr) => (err ? reject(new Error(`tmux ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout)));
  });
}

async function pane(): Promise<string> {
  return tmux(['capture-pane', '-p', '-J', '-S', '-', '-t', 'dbg']);
}

/** Waits until the pane matches `re` (bounded), returns it. */
async function waitFor(re: RegExp, what: string, timeoutMs = 90_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await pane();
    if (re.test(text)) return text;
    if (Date.now() > deadline) throw new Error(`waiting for ${what}: ${re} never showed:\n${text}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Types a line at the REPL and waits for the prompt after its answer. */
async function typeLine(line: string, answer: RegExp): Promise<string> {
  await tmux(['send-keys', '-t', 'dbg', '-l', line]);
  await tmux(['send-keys', '-t', 'dbg', 'Enter']);
  return waitFor(answer, `the answer to ${line}`);
}

const kSuite = {
  'provium.toml': '[provium]\nroots = ["t"]\n',
  't/debug.test.lua': [
    'local vm = provium:vm("dbgvm", "minimal"):boot()',
    'test("fails on the guest", function(t)',
    '  local expected = "marker-" .. 6 * 7',
    '  vm:write_file("/tmp/marker", expected)',
    '  t:assert_eq(vm:run("cat /tmp/marker").stdout, "not it")',
    'end)',
    'test("runs after the REPL", function(t) t:log("went on") end)',
    '',
  ].join('\n'),
};

describe('--debug-on-fail in a real terminal (tmux)', { skip: existsSync(kTmux) ? false : `${kTmux} is missing: run scripts/setup.sh` }, () => {
  after(() => {
    try {
      execFileSync(kTmux, ['-L', kSocket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
  });

  it('opens a REPL at the failure where the VM answers, and Ctrl-D continues the run', async () => {
    const dir = await project(kSuite);
    const command = `cd ${dir} && env -u CI ${process.execPath} ${cliMain} --debug-on-fail; echo "EXIT=$?"; sleep 600`;
    await tmux(['new-session', '-d', '-s', 'dbg', '-x', '160', '-y', '50', command]);

    // 1. The failure, what is in scope, and a prompt.
    const opened = await waitFor(/^> $/m, 'the REPL prompt');
    assert.match(opened, /--debug-on-fail: t\/debug\.test\.lua › fails on the guest failed:/);
    assert.match(opened, /t\/debug\.test\.lua:5: assert_eq failed: "marker-42" ~= "not it"/);
    assert.match(opened, /In scope: dbgvm, expected, t, vm\./);
    // 2. The test's local, its VM (still up, with what the test wrote), its `t`.
    await typeLine('expected', /^marker-42$/m);
    await typeLine('vm:run("cat /tmp/marker; echo; echo from-repl").stdout', /^from-repl$/m);
    await typeLine('t.name', /^fails on the guest$/m);
    // 3. An error keeps the REPL; Ctrl-C interrupts a loop and a blocking guest call.
    await typeLine('nosuch()', /repl:1: attempt to call a nil value \(global 'nosuch'\)/);
    await tmux(['send-keys', '-t', 'dbg', '-l', 'while true do end']);
    await tmux(['send-keys', '-t', 'dbg', 'Enter']);
    await new Promise((r) => setTimeout(r, 500));
    await tmux(['send-keys', '-t', 'dbg', 'C-c']);
    await waitFor(/^interrupted \(Ctrl-C\)$/m, 'the loop interrupted');
    await tmux(['send-keys', '-t', 'dbg', '-l', 'vm:run("sleep 60")']);
    await tmux(['send-keys', '-t', 'dbg', 'Enter']);
    await new Promise((r) => setTimeout(r, 500));
    await tmux(['send-keys', '-t', 'dbg', 'C-c']);
    await waitFor(/vm:run: `sleep 60`: interrupted \(Ctrl-C\)/, 'the guest call interrupted', 20_000);
    await typeLine('vm:run("echo still-here").stdout', /^still-here$/m);
    // 4. Ctrl-D: the run goes on to the next test and ends with the failure reported.
    await tmux(['send-keys', '-t', 'dbg', 'C-d']);
    const done = await waitFor(/EXIT=\d+/, 'the end of the run');
    assert.match(done, /^FAIL t\/debug\.test\.lua \(1 passed, 1 failed, 0 skipped\)/m);
    assert.match(done, /^1 passed, 1 failed, 0 skipped$/m);
    assert.match(done, /^EXIT=1$/m);
  });
});
