import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProgressDisplay } from '../../src/report/progress.js';
import { TextReporter } from '../../src/report/text.js';
import { summarize, type FileOutcome } from '../../src/run/outcome.js';
import { Capture } from './run-capture.js';

const file = (path: string) => ({ file: `/p/${path}`, displayPath: path, root: '/p', rootPath: path, key: path });

describe('progress display', () => {
  it('draws the overall bar and one line per worker, prints file lines above them, and clears at the end', async () => {
    const tty = new Capture({ isTTY: true });
    const progress = new ProgressDisplay({ stream: tty, colors: false, fps: 50 });
    const text = new TextReporter({ screen: progress.screen, verbosity: 'normal', cwd: '/p', counterPrefix: true });
    const info = { files: [file('a.test.lua'), file('b.test.lua')], selectedFiles: 2, workers: 2, shard: null, shardMethod: null, startedAt: Date.now(), accel: 'tcg', estimatedMs: null, seed: '7' };
    progress.onBegin(info);
    text.onBegin(info);
    const where = { file: file('a.test.lua'), slot: 0 };
    progress.onFileBegin(where);
    progress.onTestBegin(where, { name: 'boots a guest' });
    await new Promise((r) => setTimeout(r, 120));
    const frame = tty.text;
    assert.match(frame, /0\/2 files \| 0 passed, 0 failed, 0 skipped \| .* elapsed \| ETA --/);
    assert.match(frame, /w1 a\.test\.lua › boots a guest/);
    assert.match(frame, /w2 idle/);

    const passed = { name: 'boots a guest', status: 'passed' as const, log: [], durationMs: 1, meta: {}, attempts: 1, flaky: false };
    progress.onTestEnd(where, passed);
    const outcome: FileOutcome = {
      file: file('a.test.lua'),
      status: 'passed',
      result: { file: '/p/a.test.lua', displayPath: 'a.test.lua', fatalErrors: [], tests: [passed], durationMs: 1 },
      durationMs: 5,
      worker: 0,
    };
    progress.onFileEnd(outcome);
    text.onFileEnd(outcome);
    const summary = summarize([outcome], { plannedFiles: 2, wallMs: 10, interrupted: false, failFastStopped: false });
    progress.onEnd(summary);
    text.onEnd(summary);
    const all = tty.text;
    assert.match(all, /\[1\/2\] PASS a\.test\.lua \(1 passed, 0 failed, 0 skipped\)/);
    // After the bars stop, the summary goes straight to the terminal.
    assert.ok(all.trimEnd().endsWith('1 file, 1 not run (stopped) in 10ms'), JSON.stringify(all.slice(-200)));
    assert.match(all, /\n1 passed, 0 failed, 0 skipped\n/);
  });
});
