// Issue 13 items 3 and 4 with the real CLI, the real Lua worker and no VM: a suite run in three
// shards and merged counts exactly as the unsharded run; a missing or duplicated shard is
// reported; and the HTML report (live and merged) opens in headless Chromium with those counts.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { cliMain } from './cli-run.js';
import { dumpDom, kChromium, screenshot } from './chromium.js';
import { project } from './run-capture.js';

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function provium(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cliMain, ...args], { cwd, env: { ...process.env, CI: '1', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const spin = 'local t0 = os.clock() while os.clock() - t0 < 0.15 do end';
const kSuite: Record<string, string> = {
  'provium.toml': '[provium]\nroots = ["t"]\n',
  't/one.test.lua': `test("adds", function(t) ${spin} t:assert_eq(1 + 1, 2) end)\ntest("logs", function(t) t:log("hello from one") end)\n`,
  't/two.test.lua': `test("fails", function(t)\n  t:log("before the failure")\n  t:assert_eq(1, 2, "math")\nend)\ntest("passes", function(t) ${spin} end)\n`,
  't/three.test.lua': `test("skipped", { skip = "not today" }, function(t) end)\ntest("runs", function(t) ${spin} end)\n`,
  't/flaky.test.lua': 'attempts = 0\ntest("second time lucky", function(t)\n  attempts = attempts + 1\n  if attempts < 2 then error("flake") end\nend)\n',
  't/four.test.lua': `test("a", function(t) ${spin} end)\ntest("b", function(t) end)\n`,
  't/five.test.lua': `test("c", function(t) ${spin} end)\n`,
};

type Summary = Record<string, unknown>;
const summaryOf = (text: string): Summary => JSON.parse(text.trim().split('\n').at(-1)!) as Summary;
const counts = (s: Summary) => ({ passed: s['passed'], failed: s['failed'], skipped: s['skipped'], flaky: s['flaky'], not_run: s['not_run'], files: s['files'] });

/** Numbers the report's DOM states, as Chromium parsed it. */
function domCounts(dom: string) {
  const attr = (name: string) => Number(new RegExp(`<section id="summary"[^>]* ${name}="(\\d+)"`).exec(dom)?.[1]);
  const count = (re: RegExp) => (dom.match(re) ?? []).length;
  return {
    passed: attr('data-passed'),
    failed: attr('data-failed'),
    skipped: attr('data-skipped'),
    flaky: attr('data-flaky'),
    files: attr('data-files'),
    failures: count(/<article class="failure"/g),
    lanes: count(/<div class="lane" /g),
    fileBars: count(/class="item file /g),
    testBars: count(/class="item test /g),
    fileRows: count(/<tr class="file-row">/g),
  };
}

describe('sharded runs merged, and the HTML report in a real browser', { skip: existsSync(kChromium) ? false : `${kChromium} is missing: run scripts/setup.sh` }, () => {
  let dir: string;
  let whole: Summary;

  before(async () => {
    dir = await project(kSuite);
    const r = await provium(dir, ['--retries', '1', '-j', '2', '--json', '--html', 'html-whole', '--save-events', 'whole.bin']);
    assert.equal(r.code, 1, r.stderr);
    whole = summaryOf(r.stdout);
  });

  it('3 shards merged count exactly as the unsharded run', async () => {
    assert.deepEqual(counts(whole), { passed: 8, failed: 1, skipped: 1, flaky: 1, not_run: 0, files: 6 });
    const inputs: string[] = [];
    for (const i of [1, 2, 3]) {
      // As a CI matrix job would: the index from the environment.
      const r = await provium(dir, ['--shard', 'auto', '--retries', '1', '--save-events', `shard${i}.bin`, '--json'], { PROVIUM_SHARD: `${i}/3` });
      assert.ok(r.code === 0 || r.code === 1, r.stderr);
      assert.deepEqual(summaryOf(r.stdout)['shard'], { index: i, count: 3 });
      inputs.push(`shard${i}.bin`);
    }
    const m = await provium(dir, ['merge', 'merged', ...inputs]);
    assert.equal(m.code, 1, `a test failed, so the merge exits 1: ${m.stderr}`);
    assert.equal(m.stderr, '');
    const merged = summaryOf(await readFile(join(dir, 'merged/results.json'), 'utf8'));
    assert.deepEqual(counts(merged), counts(whole));
    assert.equal(merged['shards'], 3);
    const junit = await readFile(join(dir, 'merged/junit.xml'), 'utf8');
    assert.match(junit, /<testsuites name="provium" tests="10" failures="1" errors="0"/);
    assert.match(junit, /<testcase name="second time lucky"[^>]*>\s*<flakyFailure message="[^"]*flake" type="failure">/);
    const timings = JSON.parse(await readFile(join(dir, 'merged/timings.json'), 'utf8')) as { files: Record<string, unknown> };
    assert.deepEqual(Object.keys(timings.files).sort(), Object.keys(kSuite).filter((k) => k.startsWith('t/')).sort());
    assert.ok((await stat(join(dir, 'merged/index.html'))).size > 1000);

    // A missing shard and a duplicated one are reported, and the merge fails.
    const missing = await provium(dir, ['merge', 'partial', 'shard1.bin', 'shard3.bin']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /shard 2\/3 is missing: pass the --save-events file of every shard/);
    const twice = await provium(dir, ['merge', 'twice', 'shard1.bin', 'shard2.bin', 'shard2.bin', 'shard3.bin']);
    assert.equal(twice.code, 2);
    assert.match(twice.stderr, /shard 2\/3 is given 2 times \(shard2\.bin, shard2\.bin\); only the first is used/);
    assert.deepEqual(counts(summaryOf(await readFile(join(dir, 'twice/results.json'), 'utf8'))), counts(whole), 'nothing counted twice');
    const gone = await provium(dir, ['merge', 'x', 'nope.bin']);
    assert.equal(gone.code, 2);
    assert.match(gone.stderr, /nope\.bin: no such file; pass the files each shard wrote with --save-events/);
  });

  it('the HTML reports open in Chromium with the run\'s counts, failures first, linked to the timeline', async () => {
    const live = domCounts(await dumpDom(join(dir, 'html-whole/index.html')));
    assert.deepEqual(
      { passed: live.passed, failed: live.failed, skipped: live.skipped, flaky: live.flaky, files: live.files },
      { passed: 8, failed: 1, skipped: 1, flaky: 1, files: 6 },
    );
    assert.equal(live.failures, 1);
    assert.equal(live.fileBars, 6);
    // Every test that ran has a bar (the skipped one never started).
    assert.equal(live.testBars, 9);
    assert.equal(live.lanes, 2, 'one lane per worker (-j 2)');
    assert.equal(live.fileRows, 6);
    const dom = await dumpDom(join(dir, 'html-whole/index.html'));
    const failure = /<article class="failure"[^]*?<\/article>/.exec(dom)![0];
    assert.match(failure, /<h3>fails<\/h3>/);
    assert.match(failure, /t\/two\.test\.lua · t\/two\.test\.lua:3/);
    assert.match(failure, /math: 1 ~= 2/);
    assert.match(failure, /before the failure/);
    const link = /href="#(tl-[0-9a-f]+)"/.exec(failure)![1]!;
    assert.match(dom, new RegExp(`<a class="item test failed" id="${link}"`));
    // Failures come before the timeline.
    assert.ok(dom.indexOf('id="failures"') < dom.indexOf('id="timeline"'));

    const merged = domCounts(await dumpDom(join(dir, 'merged/index.html')));
    assert.deepEqual(
      { passed: merged.passed, failed: merged.failed, skipped: merged.skipped, flaky: merged.flaky, files: merged.files, failures: merged.failures, fileBars: merged.fileBars },
      { passed: 8, failed: 1, skipped: 1, flaky: 1, files: 6, failures: 1, fileBars: 6 },
    );
    const png = join(dir, 'merged/screenshot.png');
    await screenshot(join(dir, 'merged/index.html'), png);
    const bytes = await readFile(png);
    assert.equal(bytes.subarray(1, 4).toString(), 'PNG');
    assert.ok(bytes.length > 5000, `a real rendering, not a blank page (${bytes.length} bytes)`);
    if (process.env['PROVIUM_KEEP_SCREENSHOT']) await import('node:fs/promises').then((fs) => fs.copyFile(png, process.env['PROVIUM_KEEP_SCREENSHOT']!));
  });
});
