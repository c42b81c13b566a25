import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventBus } from '../../src/events/bus.js';
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
    const bus = new EventBus();
    bus.subscribe((e) => progress.onEvent(e));
    const info = { files: [file('a.test.lua'), file('b.test.lua')], selectedFiles: 2, workers: 2, shard: null, shardMethod: null, startedAt: Date.now(), accel: 'tcg', estimatedMs: null };
    progress.onBegin(info);
    text.onBegin(info);
    bus.emit('file_dispatched', { path: 'a.test.lua', reservation: { memory_bytes: 0, cpus: 0 }, worker: 0 });
    bus.emit('test_started', { path: 'a.test.lua', name: 'boots a guest', meta: {}, attempt: 1 });
    await new Promise((r) => setTimeout(r, 120));
    const frame = tty.text;
    assert.match(frame, /0\/2 files \| 0 passed, 0 failed, 0 skipped \| .* elapsed \| ETA --/);
    assert.match(frame, /w1 a\.test\.lua › boots a guest/);
    assert.match(frame, /w2 idle/);

    bus.emit('test_passed', { path: 'a.test.lua', name: 'boots a guest', duration_ns: 1, meta: {}, attempt: 1 });
    bus.emit('file_completed', { path: 'a.test.lua', status: 'passed', duration_ns: 1 });
    const outcome: FileOutcome = {
      file: file('a.test.lua'),
      status: 'passed',
      result: { file: '/p/a.test.lua', displayPath: 'a.test.lua', tests: [{ name: 'boots a guest', status: 'passed', log: [], durationMs: 1, meta: {}, attempts: 1, flaky: false }], durationMs: 1 },
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
