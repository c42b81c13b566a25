// The runner end to end on real piscina threads, with a fake worker (run-fake-worker.ts) and the
// real broker (run-fake-broker.ts records its sessions): exit codes, timeouts, crashes, fail-fast, Ctrl-C,
// reports, the event guarantees, rerun state, timings, shards and cross-file barriers.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { runCli } from '../../src/cli/program.js';
import { readEvents, type DecodedEvent } from '../../src/events/codec.js';
import type { RunDeps } from '../../src/run/controller.js';
import { defaultTimingsPath } from '../../src/run/timings.js';
import { Capture, project } from './run-capture.js';
import { fakeDeps, type FakeBroker } from './run-fake-broker.js';
import { parseXml } from './report-xml.js';

const kConfig = '[provium]\nroots = ["t"]\ncache_dir = "cache"\n';

async function suite(files: Record<string, string>): Promise<string> {
  return project({ 'provium.toml': kConfig, ...files });
}

interface Ran {
  code: number;
  out: string;
  err: string;
  brokers: FakeBroker[];
}

async function provium(dir: string, args: string[], extra: Partial<RunDeps> = {}, env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  const stdout = new Capture();
  const stderr = new Capture();
  const record = { brokers: [] as FakeBroker[] };
  const code = await runCli(
    ['node', 'provium', ...args],
    { stdin: Readable.from([]), stdout, stderr, env: { PROVIUM_RERUN_STATE: join(dir, 'rerun.json'), ...env }, cwd: dir },
    () => fakeDeps(record, extra),
  );
  return { code, out: stdout.text, err: stderr.text, brokers: record.brokers };
}

async function events(path: string): Promise<DecodedEvent[]> {
  const out: DecodedEvent[] = [];
  for await (const e of readEvents(Readable.from([await readFile(path)]))) out.push(e);
  return out;
}

const ESC = /\u001b/;
const closing = (text: string) => text.split('\n').find((l) => /^\d+ passed, \d+ failed, \d+ skipped/.test(l));

describe('provium run (fake worker)', () => {
  it('exits 0 when everything passes, with plain lines and the closing line', async () => {
    const dir = await suite({
      't/a.test.lua': '-- fake: pass one\n-- fake: pass two\n',
      't/b.test.lua': '-- fake: pass three\n-- fake: skip four skipped (meta.skip)\n',
    });
    const r = await provium(dir, []);
    assert.equal(r.code, 0, r.out + r.err);
    assert.doesNotMatch(r.out, ESC);
    assert.match(r.out, /^PASS t\/a\.test\.lua \(2 passed, 0 failed, 0 skipped\) /m);
    assert.match(r.out, /^PASS t\/b\.test\.lua \(1 passed, 0 failed, 1 skipped\) /m);
    assert.equal(closing(r.out), '3 passed, 0 failed, 1 skipped');
    assert.match(r.out, /\n2 files in \d/);
    // Sessions: one per file, all closed, broker closed.
    assert.equal(r.brokers.length, 1);
    assert.deepEqual([...r.brokers[0]!.opened].sort(), ['t/a.test.lua', 't/b.test.lua']);
    assert.equal(r.brokers[0]!.closed.length, 2);
    assert.ok(r.brokers[0]!.closedBroker);
  });

  it('exits 1 on a failure and shows the message with file:line', async () => {
    const dir = await suite({
      't/a.test.lua': '-- fake: pass one\n',
      't/bad.test.lua': '-- fake: fail broken expected 1 ~= 2\n',
      't/chunk.test.lua': '-- fake: chunk_error t/chunk.test.lua:1: unexpected symbol near \'+\'\n',
    });
    const r = await provium(dir, []);
    assert.equal(r.code, 1);
    assert.match(r.out, /^FAIL t\/bad\.test\.lua \(0 passed, 1 failed, 0 skipped\)/m);
    assert.match(r.out, /^    FAIL broken\n        expected 1 ~= 2\n        at t\/bad\.test\.lua:3$/m);
    assert.match(r.out, /^FAIL t\/chunk\.test\.lua \(0 passed, 1 failed, 0 skipped\).*\n    chunk_error: t\/chunk\.test\.lua:1: unexpected symbol near '\+'$/m);
    assert.equal(closing(r.out), '1 passed, 2 failed, 0 skipped');
  });

  it('a file that times out fails alone; its worker is replaced and the next files run', async () => {
    const dir = await suite({
      't/1-hang.test.lua': '-- fake: pass before\n-- fake: hang\n-- fake: declare after the hang\n',
      't/2-ok.test.lua': '-- fake: pass after\n',
      't/3-ok.test.lua': '-- fake: pass later\n',
    });
    const started = Date.now();
    const r = await provium(dir, ['-j', '1', '--timeout', '700ms', '--save-events', 'ev.bin', '--junit', 'junit.xml']);
    assert.ok(Date.now() - started < 10_000);
    assert.equal(r.code, 1);
    assert.match(r.out, /^TIME t\/1-hang\.test\.lua \(1 passed, 1 failed, 0 skipped, 1 not run\)/m);
    // The test that never started is reported as not run, with the reason, in every report.
    assert.match(r.out, /^    NOT RUN after the hang \(file timed out after 0\.7s \(--timeout\); its worker was replaced\)$/m);
    const junit = parseXml(await readFile(join(dir, 'junit.xml'), 'utf8'));
    const hangCases = junit.children[0]!.children.filter((c) => c.name === 'testcase').map((c) => c.attrs['name']);
    assert.deepEqual(hangCases, ['before', 'hangs', 'after the hang']);
    const notRun = junit.children[0]!.children.find((c) => c.attrs['name'] === 'after the hang')!;
    assert.match(notRun.children[0]!.attrs['message']!, /^not run: file timed out after 0\.7s/);
    assert.match(r.out, /^    FAIL hangs\n        file timed out after 0\.7s \(--timeout\); its worker was replaced/m);
    assert.match(r.out, /console \(last 3 of 3 lines\)/);
    assert.match(r.out, /^PASS t\/2-ok\.test\.lua/m);
    assert.match(r.out, /^PASS t\/3-ok\.test\.lua/m);
    const ev = await events(join(dir, 'ev.bin'));
    const completed = ev.filter((e) => e.kind === 'file_completed').map((e) => [e.payload['path'], e.payload['status']]);
    assert.deepEqual(completed, [['t/1-hang.test.lua', 'timed_out'], ['t/2-ok.test.lua', 'passed'], ['t/3-ok.test.lua', 'passed']]);
    const failed = ev.filter((e) => e.kind === 'test_failed');
    assert.equal(failed.length, 1);
    assert.equal(failed[0]!.payload['name'], 'hangs');
    assert.equal(ev.filter((e) => e.kind === 'worker_replaced').length, 1);
  });

  it('a crashed worker fails only its file', async () => {
    const dir = await suite({
      't/1-crash.test.lua': '-- fake: exit 3\n',
      't/2-ok.test.lua': '-- fake: pass fine\n',
      't/3-throw.test.lua': '-- fake: throw kaboom\n',
    });
    const r = await provium(dir, ['-j', '1']);
    assert.equal(r.code, 1);
    assert.match(r.out, /^FAIL t\/1-crash\.test\.lua[^\n]*\n    FAIL exits\n        the worker exited unexpectedly \(worker exited with code: 3\); it was replaced/m);
    assert.match(r.out, /^PASS t\/2-ok\.test\.lua/m);
    assert.match(r.out, /^FAIL t\/3-throw\.test\.lua[^\n]*\n    the worker crashed: kaboom/m);
    assert.equal(closing(r.out), '1 passed, 2 failed, 0 skipped');
  });

  it('--fail-fast stops starting files after the first failure and reports what ran', async () => {
    const dir = await suite({
      't/1.test.lua': '-- fake: fail first nope\n',
      't/2.test.lua': '-- fake: pass second\n',
      't/3.test.lua': '-- fake: pass third\n',
    });
    const r = await provium(dir, ['-j', '1', '--fail-fast']);
    assert.equal(r.code, 1);
    assert.match(r.out, /--fail-fast: t\/1\.test\.lua failed; not starting the 2 remaining files/);
    assert.doesNotMatch(r.out, /t\/2\.test\.lua/);
    assert.match(r.out, /1 file \(1 failed\), 2 not run \(--fail-fast\) in/);
  });

  it('Ctrl-C tears down, reports what finished and exits 130', async () => {
    const dir = await suite({
      't/1-quick.test.lua': '-- fake: log quick said hello\n-- fake: pass quick\n',
      't/2-slow.test.lua': '-- fake: sleep 5000\n-- fake: pass slow\n',
      't/3-never.test.lua': '-- fake: pass never\n',
    });
    const started = Date.now();
    const r = await provium(dir, ['-j', '1', '--junit', 'junit.xml', '--save-events', 'ev.bin', '--timings', 'times.json'], {
      onStart: (control) => setTimeout(() => control.interrupt(), 800),
    });
    assert.equal(r.code, 130);
    assert.ok(Date.now() - started < 4000, 'the sleeping worker was terminated');
    assert.match(r.out, /interrupted/);
    assert.match(r.out, /^PASS t\/1-quick\.test\.lua/m);
    assert.match(r.out, /^STOP t\/2-slow\.test\.lua \(interrupted: 0 passed, 0 failed, 0 skipped, 1 not run\)/m);
    // JUnit has every file: what finished (with its log), what never ran, and the file never started.
    const junit = parseXml(await readFile(join(dir, 'junit.xml'), 'utf8'));
    assert.deepEqual(junit.children.map((s) => s.attrs['name']), ['t/1-quick.test.lua', 't/2-slow.test.lua', 't/3-never.test.lua']);
    assert.equal(junit.attrs['tests'], '3');
    const never = junit.children[2]!.children.find((c) => c.name === 'testcase')!;
    assert.equal(never.children[0]!.attrs['message'], 'not run: the run was interrupted before this file started');
    const quick = junit.children[0]!.children.find((c) => c.name === 'testcase')!;
    assert.equal(quick.attrs['name'], 'quick');
    assert.equal(quick.children.find((c) => c.name === 'system-out')?.text, 'quick said hello');
    const slow = junit.children[1]!.children.find((c) => c.name === 'testcase')!;
    assert.equal(slow.children.find((c) => c.name === 'skipped')?.attrs['message'], 'not run: the run was interrupted');
    const ev = await events(join(dir, 'ev.bin'));
    assert.equal(ev.at(-1)!.kind, 'run_finished');
    assert.equal(ev.at(-1)!.payload['interrupted'], true);
    assert.ok(r.brokers[0]!.closedBroker);
    const timings = JSON.parse(await readFile(join(dir, 'times.json'), 'utf8')) as { files: Record<string, unknown> };
    assert.deepEqual(Object.keys(timings.files), ['t/1-quick.test.lua']);
  });

  it('keeps the event guarantees: discovered before dispatch, one completion per file, one start and one end per test', async () => {
    const dir = await suite({
      't/a.test.lua': '-- fake: pass a1\n-- fake: skip a2 later\n-- fake: flaky a3\n',
      't/b.test.lua': '-- fake: fail b1 no\n',
      't/c.test.lua': '-- fake: hang\n',
    });
    // The limit only has to stop the hanging file; the others must finish well inside it even on a busy machine.
    const r = await provium(dir, ['-j', '2', '--timeout', '1500ms', '--save-events', 'ev.bin', '--json']);
    assert.equal(r.code, 1);
    const ev = await events(join(dir, 'ev.bin'));
    assert.equal(ev[0]!.kind, 'run_started');
    assert.equal(ev.at(-1)!.kind, 'run_finished');
    const firstDispatch = ev.findIndex((e) => e.kind === 'file_dispatched');
    const discovered = ev.map((e, i) => [e, i] as const).filter(([e]) => e.kind === 'file_discovered');
    assert.equal(discovered.length, 3);
    assert.ok(discovered.every(([, i]) => i < firstDispatch));
    for (const path of ['t/a.test.lua', 't/b.test.lua', 't/c.test.lua']) {
      const of = (kind: string) => ev.filter((e) => e.kind === kind && e.payload['path'] === path);
      assert.equal(of('file_dispatched').length, 1, path);
      assert.equal(of('file_completed').length, 1, path);
      const started = of('test_started').map((e) => e.payload['name']);
      const ended = [...of('test_passed'), ...of('test_failed'), ...of('test_skipped')].map((e) => e.payload['name']);
      assert.deepEqual([...started].sort(), [...ended].sort(), path);
      assert.equal(new Set(started).size, started.length, path);
    }
    // --json: one object per file on stdout, the human summary on stderr.
    const objects = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    // One per file, then the run's summary record.
    assert.equal(objects.length, 4);
    const summary = objects.at(-1)!;
    assert.deepEqual(summary, {
      type: 'summary', passed: 2, failed: 2, skipped: 1, flaky: 1, not_run: 0, no_tests: 0, files: 3, files_failed: 2, files_not_run: 0,
      duration_ms: summary['duration_ms'], shard: null, seed: summary['seed'], interrupted: false,
    });
    assert.match(String(summary['seed']), /^\d+$/);
    const c = objects.find((o) => o['path'] === 't/c.test.lua')!;
    assert.equal(c['timeout'], 'timed_out');
    assert.equal(c['passed'], false);
    const a = objects.find((o) => o['path'] === 't/a.test.lua')!;
    assert.equal(a['passed'], true);
    assert.equal(a['chunk_error'], null);
    assert.deepEqual((a['tests'] as { name: string; status: string }[]).map((t) => [t.name, t.status]), [['a1', 'passed'], ['a2', 'skipped'], ['a3', 'passed']]);
    assert.equal(closing(r.err), '2 passed, 2 failed, 1 skipped, 1 flaky');
  });

  it('records failures for --rerun-failed, atomically, and clears them once everything passes', async () => {
    const dir = await suite({ 't/good.test.lua': '-- fake: pass g\n', 't/bad.test.lua': '-- fake: fail b oops\n' });
    const none = await provium(dir, ['--rerun-failed']);
    assert.equal(none.code, 0);
    assert.match(none.out, /--rerun-failed: no failures recorded .*nothing to rerun/);
    assert.equal((await provium(dir, [])).code, 1);
    const state = JSON.parse(await readFile(join(dir, 'rerun.json'), 'utf8')) as string[];
    assert.equal(state.length, 1);
    assert.match(state[0]!, /\/t\/bad\.test\.lua$/);
    // A run of another subset keeps the recorded failure.
    assert.equal((await provium(dir, ['t/good.test.lua'])).code, 0);
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'rerun.json'), 'utf8')), state);
    await writeFile(join(dir, 't/bad.test.lua'), '-- fake: pass fixed\n');
    const rerun = await provium(dir, ['--rerun-failed']);
    assert.equal(rerun.code, 0);
    assert.match(rerun.out, /PASS t\/bad\.test\.lua/);
    assert.doesNotMatch(rerun.out, /good\.test\.lua/);
    await assert.rejects(readFile(join(dir, 'rerun.json')), /ENOENT/);
  });

  it('writes the timing record and orders the next run longest-first by it', async () => {
    const dir = await suite({
      't/a.test.lua': '-- fake: pass a\n',
      't/b.test.lua': '-- fake: sleep 300\n-- fake: pass b\n',
      't/c.test.lua': '-- fake: sleep 150\n-- fake: pass c\n',
    });
    assert.equal((await provium(dir, ['-j', '1'])).code, 0);
    const record = JSON.parse(await readFile(defaultTimingsPath(join(dir, 'cache'), dir), 'utf8')) as { files: Record<string, { duration_ms: number }> };
    assert.deepEqual(Object.keys(record.files), ['t/a.test.lua', 't/b.test.lua', 't/c.test.lua']);
    assert.ok(record.files['t/b.test.lua']!.duration_ms >= 300);
    const second = await provium(dir, ['-j', '1', '--save-events', 'ev.bin']);
    const order = (await events(join(dir, 'ev.bin'))).filter((e) => e.kind === 'file_dispatched').map((e) => e.payload['path']);
    assert.deepEqual(order, ['t/b.test.lua', 't/c.test.lua', 't/a.test.lua'], second.out);
  });

  it('--shard i/n runs every file in exactly one shard', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 9; i++) files[`t/f${i}.test.lua`] = `-- fake: pass t${i}\n`;
    const dir = await suite(files);
    const runShards = async (extra: string[]): Promise<string[]> => {
      const ran: string[] = [];
      for (let i = 1; i <= 3; i++) {
        const r = await provium(dir, ['--shard', `${i}/3`, ...extra]);
        assert.equal(r.code, 0);
        assert.match(r.out, new RegExp(`shard ${i}/3 of 9 files`));
        ran.push(...r.brokers.flatMap((b) => b.opened));
      }
      return ran.sort();
    };
    // By hash (no record), then balanced by a record; shards never rewrite the record they split
    // by, so running them one after the other on one machine still covers every file once.
    assert.deepEqual(await runShards([]), Object.keys(files).sort());
    await assert.rejects(readFile(defaultTimingsPath(join(dir, 'cache'), dir)), /ENOENT/);
    const record = { version: 1, files: Object.fromEntries(Object.keys(files).map((f, i) => [f, { duration_ms: (i + 1) * 100, runs: 1 }])) };
    await writeFile(join(dir, 'times.json'), JSON.stringify(record));
    assert.deepEqual(await runShards(['--timings', 'times.json']), Object.keys(files).sort());
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'times.json'), 'utf8')), record);
  });

  it('meets at a barrier across files, and fails it at once when it can never fill', async () => {
    const dir = await suite({
      't/a.test.lua': '-- fake: barrier meet 2 20000\n',
      't/b.test.lua': '-- fake: barrier meet 2 20000\n',
    });
    const met = await provium(dir, ['-j', '2']);
    assert.equal(met.code, 0, met.out);
    const started = Date.now();
    const never = await provium(dir, ['-j', '1']);
    assert.ok(Date.now() - started < 5000, 'not after the 20 s timeout');
    assert.equal(never.code, 1);
    assert.match(never.out, /barrier `meet` can never fill: 1 of 2 arrived; it needs 2 files waiting at the same time but at most 1 run at once \(-j 1\)/);
  });

  it('a file waiting at a barrier pulls the queued file that names it ahead of slower files', async () => {
    // The Lua line is what the static scan reads; the fake worker acts on the directive.
    const party = '-- fake: barrier meet 2 20000\nprovium:barrier("meet", 2, "20s")\n';
    const dir = await suite({
      't/a.test.lua': party,
      't/s1.test.lua': '-- fake: sleep 1500\n-- fake: pass slow\n',
      't/s2.test.lua': '-- fake: sleep 1500\n-- fake: pass slow\n',
      't/s3.test.lua': '-- fake: sleep 1500\n-- fake: pass slow\n',
      't/z.test.lua': party,
    });
    const r = await provium(dir, ['-j', '2', '--save-events', 'ev.bin']);
    assert.equal(r.code, 0, r.out);
    const order = (await events(join(dir, 'ev.bin'))).filter((e) => e.kind === 'file_dispatched').map((e) => e.payload['path']);
    // The slot that freed first (s1 done) took z, not s2: a met z after one slow file, not three.
    assert.deepEqual(order.slice(0, 3), ['t/a.test.lua', 't/s1.test.lua', 't/z.test.lua'], order.join(', '));
  });

  it('passes the test selection to the worker', async () => {
    const dir = await suite({ 't/a.test.lua': '-- fake: tagged one net\n-- fake: tagged two disk\n' });
    const r = await provium(dir, ['--no-tag', 'disk', '-v']);
    assert.equal(r.code, 0);
    assert.match(r.out, /PASS one/);
    assert.match(r.out, /SKIP two \(filtered: tag\)/);
  });

  it('exits 2 for usage errors, each naming the fix', async () => {
    const dir = await suite({ 't/a.test.lua': '-- fake: pass a\n' });
    const cases: [string[], RegExp][] = [
      [['--shard', '4/3'], /--shard 4\/3: shard 4 does not exist in 3 shards/],
      [['--shard', 'x'], /--shard "x": expected i\/n/],
      [['--timeout', 'soon'], /--timeout: invalid duration "soon"/],
      [['--json', '--events-stdout'], /--json and --events-stdout both want stdout/],
      [['-j', '0'], /-j\/--jobs "0": expected a whole number from 1/],
      [['--retries', '-1'], /unknown option|--retries/],
      [['nowhere'], /unknown command `nowhere`, and no file or directory of that name; the commands are list, /],
      [['t/nowhere'], /t\/nowhere: no such file or directory/],
      [['--bogus'], /unknown option '--bogus'/],
      [['--tag-meta', 'novalue'], /--tag-meta "novalue": expected KEY=VALUE/],
      [['--config', 'missing.toml'], /missing\.toml: no such file \(given with --config\)/],
    ];
    for (const [args, message] of cases) {
      const r = await provium(dir, args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.out}${r.err}`);
      assert.match(r.err + r.out, message, args.join(' '));
    }
    const empty = await project({ 'provium.toml': kConfig, 't/readme.md': '' });
    const none = await provium(empty, []);
    assert.equal(none.code, 2);
    assert.match(none.out, /no \*\.test\.lua files found under the \[provium\] roots/);
    const json = await provium(empty, ['--json']);
    assert.equal(json.out.trim(), '{"type":"no_files","message":"no *.test.lua files found"}');
  });
});

describe('provium list (fake worker)', () => {
  it('prints the files and tests that would run, with tags, after filters and the shard', async () => {
    const dir = await suite({
      't/a.test.lua': '-- fake: tagged net-test net\n-- fake: tagged disk-test disk\n',
      't/b.test.lua': '-- fake: pass plain\n',
    });
    const r = await provium(dir, ['list', '--no-tag', 'disk']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 't/a.test.lua\n    net-test  [net]\nt/b.test.lua\n    plain\n2 files, 2 tests to run\n');
  });
});

describe('provium events', () => {
  it('decodes a saved stream to JSON lines', async () => {
    const dir = await suite({ 't/a.test.lua': '-- fake: pass a\n' });
    await provium(dir, ['--save-events', 'ev.bin']);
    const r = await provium(dir, ['events', 'ev.bin']);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; ts: number });
    assert.equal(lines[0]!.kind, 'run_started');
    assert.ok(lines.some((l) => l.kind === 'test_passed'));
    const missing = await provium(dir, ['events', 'nope.bin']);
    assert.equal(missing.code, 2);
    assert.match(missing.err, /nope\.bin: no such file/);
  });
});
