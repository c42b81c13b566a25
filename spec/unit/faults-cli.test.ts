// The fault suite's out-of-process cases (issue 15 part 7): the real CLI on real guests, broken
// from outside the way production breaks it (QEMU SIGKILLed mid-test, SIGINT, a second SIGINT
// during teardown, SIGTERM, an endless Lua loop). Each asserts that the run goes on, that the
// other files' results reach JUnit and JSON, and that nothing is left behind: no QEMU, no scratch
// dir, no temp file.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { assertNothingLeft, jsonFiles, kHealthy, kMarker, project, qemusUnder, start, waitForMarker } from './faults-run.js';

/** `stop` through a QMP monitor of our own: the greeting, qmp_capabilities, stop, its return. */
function qmpStop(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    let step = 0;
    sock.setEncoding('utf8');
    sock.on('error', reject);
    sock.on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        if (msg['event']) continue;
        if (msg['error']) return reject(new Error(`QMP: ${JSON.stringify(msg['error'])}`));
        if (step === 0) sock.write('{"execute":"qmp_capabilities"}\n');
        else if (step === 1) sock.write('{"execute":"stop"}\n');
        else {
          sock.end();
          return resolve();
        }
        step++;
      }
    });
  });
}

describe('the fault suite: a run broken from outside goes on and leaves nothing behind (real guests)', () => {
  it('QEMU SIGKILLed mid-test, a syntax error and a healthy file: every result reaches JUnit and JSON', async () => {
    const p = await project({
      'a-victim.test.lua': [
        'local vm = provium:vm("victim", "minimal", {memory = "128M"}):boot()',
        'test("killed", function(t)',
        `  vm:run("${kMarker('victim')}; sleep 60")`,
        'end)',
        'test("the file goes on", function(t) t:assert_eq(1, 1) end)',
        '',
      ].join('\n'),
      'b-syntax.test.lua': 'test("never", function(t)\n  if then\nend)\n',
      'c-healthy.test.lua': kHealthy,
    });
    try {
      const junit = path.join(p.dir, 'junit.xml');
      const run = start(p, ['-j2', '--json', '--junit', junit]);
      const qemu = await waitForMarker(p.tmp, 'FAULT-MARK-victim');
      process.kill(qemu, 'SIGKILL');
      const r = await run.done;
      assert.equal(r.code, 1, r.out);
      const byPath = jsonFiles(r.stdout);
      const victim = byPath['t/a-victim.test.lua'];
      assert.equal(victim?.status, 'failed', r.out);
      assert.match(victim.tests[0].message, /QEMU killed by SIGKILL/);
      assert.equal(victim.tests[1].status, 'passed');
      assert.match(JSON.stringify(byPath['t/b-syntax.test.lua']), /unexpected symbol|syntax/i);
      assert.equal(byPath['t/c-healthy.test.lua']?.status, 'passed');
      const xml = await readFile(junit, 'utf8');
      assert.match(xml, /QEMU killed by SIGKILL/);
      for (const name of ['killed', 'the file goes on', 'healthy']) assert.match(xml, new RegExp(`testcase [^>]*name="${name}"`));
      await assertNothingLeft(p);
    } finally {
      await rm(p.dir, { recursive: true, force: true });
    }
  });

  it('an endless Lua loop under --timeout: its file times out naming file:line, its VM is torn down, the others report', async () => {
    const p = await project({
      'a-spins.test.lua': [
        'local vm = provium:vm("spinner", "minimal", {memory = "128M"}):boot()',
        'test("spins forever", function(t)',
        '  vm:run("true")',
        '  while true do end',
        'end)',
        'test("never reached", function(t) end)',
        '',
      ].join('\n'),
      'b-healthy.test.lua': kHealthy,
    });
    try {
      const junit = path.join(p.dir, 'junit.xml');
      const started = Date.now();
      const r = await start(p, ['-j2', '--timeout', '20s', '--json', '--junit', junit]).done;
      assert.equal(r.code, 1, r.out);
      assert.ok(Date.now() - started < 60_000, `the run took ${Date.now() - started} ms`);
      const byPath = jsonFiles(r.stdout);
      const spins = byPath['t/a-spins.test.lua'];
      assert.equal(spins?.status, 'timed_out', r.out);
      assert.match(spins.tests[0].message, /file timed out after 20s \(--timeout\)/);
      assert.equal(spins.tests[1].status, 'not_run');
      assert.equal(byPath['t/b-healthy.test.lua']?.status, 'passed', r.out);
      const xml = await readFile(junit, 'utf8');
      assert.match(xml, /file timed out after 20s \(--timeout\)[^<]*\nat t\/a-spins\.test\.lua:2/);
      assert.match(xml, /testcase [^>]*name="healthy"/);
      assert.match(r.out, /TIME t\/a-spins\.test\.lua/);
      await assertNothingLeft(p);
    } finally {
      await rm(p.dir, { recursive: true, force: true });
    }
  });

  it('an endless Lua loop without --timeout: the test\'s own timeout names file:line, and the file goes on', async () => {
    const p = await project({
      'a-spins.test.lua': [
        'provium.timeout = "3s"',
        'local vm = provium:vm("spinner", "minimal", {memory = "128M"}):boot()',
        'test("spins forever", function(t)',
        '  local n = 0',
        '  while true do n = n + 1 end',
        'end)',
        'test("the file goes on", function(t) t:assert_eq(vm:run("echo on").stdout, "on\\n") end)',
        '',
      ].join('\n'),
      'b-healthy.test.lua': kHealthy,
    });
    try {
      const junit = path.join(p.dir, 'junit.xml');
      const r = await start(p, ['-j2', '--json', '--junit', junit]).done;
      assert.equal(r.code, 1, r.out);
      const byPath = jsonFiles(r.stdout);
      const spins = byPath['t/a-spins.test.lua'];
      assert.equal(spins?.status, 'failed', r.out);
      assert.equal(spins.tests[0].message, 't/a-spins.test.lua:5: test timed out after 3s');
      assert.equal(spins.tests[1].status, 'passed', r.out);
      assert.equal(byPath['t/b-healthy.test.lua']?.status, 'passed', r.out);
      const xml = await readFile(junit, 'utf8');
      assert.match(xml, /t\/a-spins\.test\.lua:5: test timed out after 3s/);
      for (const name of ['the file goes on', 'healthy']) assert.match(xml, new RegExp(`testcase [^>]*name="${name}"`));
      await assertNothingLeft(p);
    } finally {
      await rm(p.dir, { recursive: true, force: true });
    }
  });

  it('a pause from outside (QMP `stop` on a second monitor of the real QEMU) fails the op in flight within ~10 s, and vm:resume() goes on', async () => {
    // Provium is the only client of its own QMP socket, so "someone else" is a second monitor,
    // added the way an operator would: a wrapper around QEMU (PROVIUM_QEMU) that adds `-qmp` in
    // the VM's scratch dir. Boot snapshots are off: the wrapper is another QEMU binary to the key.
    const p = await project({
      'a-paused.test.lua': [
        'local vm = provium:vm("paused", "minimal", {memory = "128M"}):boot()',
        'test("paused from outside", function(t)',
        '  local started = os.time()',
        `  local err = t:assert_raises(function() vm:run("${kMarker('paused')}; sleep 60") end)`,
        '  t:assert_contains(err, "was paused from outside the harness (QMP STOP event")',
        '  t:assert_contains(err, "call vm:resume() to continue")',
        '  t:assert(os.time() - started <= 12, "the diagnosis took " .. (os.time() - started) .. " s")',
        '  t:assert_eq(vm:state(), "paused")',
        '  vm:resume()',
        '  t:assert_eq(vm:run("echo back").stdout, "back\\n")',
        'end)',
        '',
      ].join('\n'),
    });
    try {
      const wrapper = path.join(p.dir, 'qemu-with-outside-monitor');
      await writeFile(wrapper, [
        '#!/bin/sh',
        'extra=""',
        'for a in "$@"; do',
        '  case "$a" in socket,id=qmp,path=*) p="${a#socket,id=qmp,path=}"; extra="-qmp unix:${p%/*}/outside-qmp.sock,server=on,wait=off";; esac',
        'done',
        'exec qemu-system-x86_64 "$@" $extra',
        '',
      ].join('\n'), { mode: 0o755 });
      const run = start(p, ['-j1', '--json'], { PROVIUM_QEMU: wrapper, PROVIUM_BOOT_SNAPSHOTS: '0' });
      const qemu = await waitForMarker(p.tmp, 'FAULT-MARK-paused');
      const scratch = qemusUnder(p.tmp).find((q) => q.pid === qemu)!.scratch;
      await qmpStop(path.join(scratch, 'outside-qmp.sock'));
      const r = await run.done;
      assert.equal(r.code, 0, r.out);
      assert.equal(jsonFiles(r.stdout)['t/a-paused.test.lua']?.status, 'passed', r.out);
      await assertNothingLeft(p);
    } finally {
      await rm(p.dir, { recursive: true, force: true });
    }
  });

  for (const [what, signals] of [
    ['SIGINT', ['SIGINT']],
    ['SIGTERM', ['SIGTERM']],
    ['a second SIGINT during teardown', ['SIGINT', 'SIGINT']],
  ] as const) {
    it(`${what} mid-test: the finished file's results are reported and nothing is left behind`, async () => {
      const p = await project({
        'a-healthy.test.lua': kHealthy,
        'b-hangs.test.lua': [
          'local vm = provium:vm("hangs", "minimal", {memory = "128M"}):boot()',
          `test("interrupted", function(t) vm:run("${kMarker('hangs')}; sleep 60") end)`,
          '',
        ].join('\n'),
      });
      try {
        const junit = path.join(p.dir, 'junit.xml');
        const run = start(p, ['-j1', '--json', '--junit', junit]);
        await waitForMarker(p.tmp, 'FAULT-MARK-hangs');
        for (const sig of signals) {
          run.child.kill(sig);
          // The second one lands while the first one's teardown runs.
          await new Promise((r) => setTimeout(r, 30));
        }
        const r = await run.done;
        assert.equal(r.code, 130, r.out);
        // A second signal kills at once without waiting for the teardown, but still writes the
        // reports of the files that finished.
        if (signals.length > 1) assert.match(r.out, /SIGINT again: killing everything now; writing the reports/);
        assert.ok(existsSync(junit), `no JUnit after ${what}:\n${r.out}`);
        assert.match(await readFile(junit, 'utf8'), /testcase [^>]*name="healthy"/);
        assert.match(r.stdout, /"path":"t\/a-healthy\.test\.lua"[^\n]*"status":"passed"/);
        await assertNothingLeft(p);
      } finally {
        await rm(p.dir, { recursive: true, force: true });
      }
    });
  }
});
