// Issue 13, items 1, 3 and 5 on the runner with the fake worker (run-fake-worker.ts) and the real
// broker: reports that cannot be written fail the run, the JSON summary record (empty shards too),
// files without tests, the event order and fields CI tools read, `--shard auto`, per-project
// rerun state, `--config` before a subcommand, and mistyped commands.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { runCli } from '../../src/cli/program.js';
import { readEvents, type DecodedEvent } from '../../src/events/codec.js';
import { Capture, project } from './run-capture.js';
import { fakeDeps } from './run-fake-broker.js';

const kConfig = '[provium]\nroots = ["t"]\ncache_dir = "cache"\n';

async function provium(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(['node', 'provium', ...args], { stdin: Readable.from([]), stdout, stderr, env, cwd: dir }, () => fakeDeps());
  return { code, out: stdout.text, err: stderr.text };
}

async function events(path: string): Promise<DecodedEvent[]> {
  const out: DecodedEvent[] = [];
  for await (const e of readEvents(Readable.from([await readFile(path)]))) out.push(e);
  return out;
}

const jsonLines = (text: string) => text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('reports never lie by omission', () => {
  it('a report path that cannot be written fails the run at once with exit 2, naming the path and the OS error', async () => {
    const dir = await project({ 'provium.toml': kConfig, 't/a.test.lua': '-- fake: pass a\n', 'plain.txt': 'not a directory' });
    for (const [flag, value] of [
      ['--junit', 'plain.txt/report.xml'],
      ['--save-events', 'plain.txt/events.bin'],
      ['--html', 'plain.txt/html'],
    ] as const) {
      const r = await provium(dir, [flag, value]);
      assert.equal(r.code, 2, `${flag}: ${r.out}${r.err}`);
      assert.match(r.err, new RegExp(`provium: ${flag} ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/plain\\.txt/[^:]*: cannot write the report: ENOTDIR: not a directory`), flag);
      assert.doesNotMatch(r.err, /internal error|\n\s+at /, flag);
      // Nothing ran: the run failed before its first file.
      assert.doesNotMatch(r.out, /PASS/, flag);
    }
    // A directory where the file should be.
    const r = await provium(dir, ['--junit', 't']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--junit .*\/t: cannot write the report: EISDIR/);
  });

  it('--json ends with one summary record, also for an empty shard, and a file without tests is no silent PASS', async () => {
    const dir = await project({
      'provium.toml': kConfig,
      't/a.test.lua': '-- fake: pass one\n-- fake: flaky two\n',
      't/empty.test.lua': 'local x = 1\n',
    });
    const r = await provium(dir, ['--json', '--seed', '42']);
    assert.equal(r.code, 0, r.err);
    const lines = jsonLines(r.out);
    assert.equal(lines.find((l) => l['path'] === 't/empty.test.lua')!['no_tests'], true);
    assert.equal(lines.find((l) => l['path'] === 't/a.test.lua')!['no_tests'], false);
    const summary = lines.at(-1)!;
    assert.equal(summary['type'], 'summary');
    assert.deepEqual(
      { passed: summary['passed'], failed: summary['failed'], flaky: summary['flaky'], not_run: summary['not_run'], no_tests: summary['no_tests'], files: summary['files'], shard: summary['shard'], seed: summary['seed'] },
      { passed: 2, failed: 0, flaky: 1, not_run: 0, no_tests: 1, files: 2, shard: null, seed: '42' },
    );
    assert.equal(typeof summary['duration_ms'], 'number');
    // Human output went to stderr, with the warning.
    assert.match(r.err, /warning: t\/empty\.test\.lua declares no tests/);
    const text = await provium(dir, []);
    assert.match(text.out, /warning: t\/empty\.test\.lua declares no tests \(no test\(\) call ran\); nothing in it was checked/);
    assert.match(text.out, /2 files, 1 without tests in/);

    // Two files in five shards: some shards are empty, and still say so in every report.
    const empty = [1, 2, 3, 4, 5].map((i) => i);
    let sawEmpty = false;
    for (const i of empty) {
      const s = await provium(dir, ['--json', '--shard', `${i}/5`, '--junit', `j${i}.xml`, '--save-events', `e${i}.bin`]);
      assert.equal(s.code, 0, s.err);
      const last = jsonLines(s.out).at(-1)!;
      assert.equal(last['type'], 'summary');
      assert.deepEqual(last['shard'], { index: i, count: 5 });
      if (last['files'] === 0) {
        sawEmpty = true;
        assert.match(s.err, new RegExp(`shard ${i}/5 has no files`));
        assert.match(await readFile(join(dir, `j${i}.xml`), 'utf8'), /<testsuites name="provium" tests="0"/);
        const ev = await events(join(dir, `e${i}.bin`));
        assert.deepEqual([ev[0]!.kind, ev.at(-1)!.kind], ['run_started', 'run_finished']);
      }
    }
    assert.ok(sawEmpty, 'two files in five shards leave some empty');
  });

  it('events: file_blocked before file_dispatched, the reservation is the claim, t:log lines in test events', async () => {
    const claim = 'provium:claim{memory = "768M", cpus = 1}\n';
    const dir = await project({
      'provium.toml': kConfig,
      't/a.test.lua': `${claim}-- fake: sleep 400\n-- fake: log said hello\n-- fake: pass first\n`,
      't/b.test.lua': `${claim}-- fake: log about to fail\n-- fake: fail second oops\n`,
    });
    const r = await provium(dir, ['-j', '2', '--mem', '1G', '--save-events', 'ev.bin']);
    assert.equal(r.code, 1, r.out + r.err);
    const ev = await events(join(dir, 'ev.bin'));
    const kinds = (path: string) => ev.filter((e) => e.payload['path'] === path).map((e) => e.kind);
    // One of the two waits for the other's claim, before it is dispatched.
    const blocked = ev.filter((e) => e.kind === 'file_blocked');
    assert.equal(blocked.length, 1);
    const waiter = blocked[0]!.payload['path'] as string;
    const order = kinds(waiter);
    assert.ok(order.indexOf('file_blocked') < order.indexOf('file_dispatched'), order.join(' '));
    for (const e of ev.filter((x) => x.kind === 'file_dispatched')) {
      assert.deepEqual(e.payload['reservation'], { memory_bytes: 768 * 1024 * 1024, cpus: 1 });
    }
    assert.deepEqual(ev.filter((e) => e.kind === 'claim_acquired').length, 2);
    assert.deepEqual(ev.filter((e) => e.kind === 'claim_released').length, 2);
    const passed = ev.find((e) => e.kind === 'test_passed')!;
    assert.deepEqual(passed.payload['log'], ['said hello']);
    const failed = ev.find((e) => e.kind === 'test_failed')!;
    assert.deepEqual(failed.payload['log'], ['about to fail']);
    assert.deepEqual(failed.payload['failure_location'], { file: 't/b.test.lua', line: 3 });
    const done = ev.find((e) => e.kind === 'file_discovered')!;
    assert.match(String(done.payload['key']), /^t\/[ab]\.test\.lua$/);
  });
});

describe('shards from the CI environment', () => {
  const cases: [NodeJS.ProcessEnv, { index: number; count: number }][] = [
    [{ PROVIUM_SHARD: '2/3' }, { index: 2, count: 3 }],
    [{ CI_NODE_INDEX: '3', CI_NODE_TOTAL: '3' }, { index: 3, count: 3 }],
    [{ BUILDKITE_PARALLEL_JOB: '0', BUILDKITE_PARALLEL_JOB_COUNT: '2' }, { index: 1, count: 2 }],
    [{ CIRCLE_NODE_INDEX: '1', CIRCLE_NODE_TOTAL: '4' }, { index: 2, count: 4 }],
  ];
  it('--shard auto reads PROVIUM_SHARD, GitLab, Buildkite and CircleCI (their 0-based indexes made 1-based)', async () => {
    const dir = await project({ 'provium.toml': kConfig, 't/a.test.lua': '-- fake: pass a\n', 't/b.test.lua': '-- fake: pass b\n' });
    for (const [env, shard] of cases) {
      const r = await provium(dir, ['--shard', 'auto', '--json'], env);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(jsonLines(r.out).at(-1)!['shard'], shard, JSON.stringify(env));
    }
    const none = await provium(dir, ['--shard', 'auto']);
    assert.equal(none.code, 2);
    assert.match(none.err, /--shard auto: no CI shard variables are set \(looked for PROVIUM_SHARD=i\/n, CI_NODE_INDEX\/CI_NODE_TOTAL, BUILDKITE_PARALLEL_JOB\/BUILDKITE_PARALLEL_JOB_COUNT, CIRCLE_NODE_INDEX\/CIRCLE_NODE_TOTAL\)/);
    const bad = await provium(dir, ['--shard', 'auto'], { CIRCLE_NODE_INDEX: '4', CIRCLE_NODE_TOTAL: '4' });
    assert.equal(bad.code, 2);
    assert.match(bad.err, /CIRCLE_NODE_INDEX=4, CIRCLE_NODE_TOTAL=4 give shard 5\/4: shard 5 does not exist in 4 shards/);
  });
});

describe('state per project and the command line', () => {
  it('keeps the rerun state per project in a shared cache', async () => {
    const cache = await project({});
    const config = `[provium]\nroots = ["t"]\ncache_dir = "${cache}"\n`;
    const a = await project({ 'provium.toml': config, 't/bad.test.lua': '-- fake: fail b oops\n' });
    const b = await project({ 'provium.toml': config, 't/good.test.lua': '-- fake: pass g\n' });
    assert.equal((await provium(a, [])).code, 1);
    assert.equal((await provium(b, [])).code, 0);
    // B never failed: it has nothing to rerun, whatever A recorded in the same cache.
    const rb = await provium(b, ['--rerun-failed']);
    assert.equal(rb.code, 0);
    assert.match(rb.out, /--rerun-failed: no failures recorded \(.*\/rerun\/.*\.json\); nothing to rerun/);
    const ra = await provium(a, ['--rerun-failed']);
    assert.equal(ra.code, 1);
    assert.match(ra.out, /FAIL t\/bad\.test\.lua/);
  });

  it('`provium --config X list` reads X, and a mistyped command names the nearest', async () => {
    const dir = await project({
      'provium.toml': kConfig,
      'other/provium.toml': '[provium]\nroots = ["u"]\n',
      'other/u/only.test.lua': '-- fake: pass only\n',
      't/a.test.lua': '-- fake: pass a\n',
    });
    const r = await provium(dir, ['--config', 'other/provium.toml', 'list']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /only\.test\.lua/);
    assert.doesNotMatch(r.out, /a\.test\.lua/);
    const typo = await provium(dir, ['lsit']);
    assert.equal(typo.code, 2);
    assert.equal(typo.err, 'provium: unknown command `lsit`; did you mean `list`?\n');
    const merge = await provium(dir, ['mrege']);
    assert.match(merge.err, /did you mean `merge`\?/);
  });
});
