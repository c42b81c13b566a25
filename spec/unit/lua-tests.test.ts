// The test framework: t assertions and their messages, the sticky failure flag, skip/todo,
// selection filters, retries and flaky reporting, per-test timeouts (hook and RPC), events, list.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runLua } from './lua-fake-broker.js';

test('assertion messages and the sticky failure flag', async () => {
  const { result } = await runLua(String.raw`
test("eq", function(t) t:assert_eq("a\n", "b", "strings") end)
test("eq default", function(t) t:assert_eq(1, 2) end)
test("neq", function(t) t:assert_neq(1, 1, "same") end)
test("assert default", function(t) t:assert(false) end)
test("assert msg", function(t) t:assert(nil, "custom") end)
test("contains", function(t) t:assert_contains("haystack", "needle") end)
test("contains types", function(t) t:assert_contains(1, "x") end)
test("fail default", function(t) t:fail() end)
test("sticky", function(t)
  pcall(function() t:assert_eq(1, 2, "swallowed") end)
  t:log("still running")
end)
test("assert_raises restores the flag", function(t)
  local err = t:assert_raises(function() t:assert(false, "inner") end)
  t:assert_contains(err, "inner")
  local e2 = t:assert_raises(function() error({code = 7}) end)
  t:assert_eq(e2.code, 7)
end)
test("assert_raises without an error", function(t) t:assert_raises(function() end, "expected boom") end)
test("runtime error", function(t) local x = nil; return x.y end)
test("error object", function(t) error(setmetatable({}, {__tostring = function() return "custom object" end})) end)
test("passes", function(t) t:assert_eq(1, 1.0); t:assert_neq("1", 1); t:assert_contains("abc", "b") end)
`);
  const m = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  assert.equal(m['eq']!.message, 'spec/sample.test.lua:2: strings: "a\\n" ~= "b"');
  assert.equal(m['eq default']!.message, 'spec/sample.test.lua:3: assert_eq failed: 1 ~= 2');
  assert.equal(m['neq']!.message, 'spec/sample.test.lua:4: same: 1 == 1');
  assert.equal(m['assert default']!.message, 'spec/sample.test.lua:5: assertion failed');
  assert.equal(m['assert msg']!.message, 'spec/sample.test.lua:6: custom');
  assert.equal(m['contains']!.message, 'spec/sample.test.lua:7: assert_contains failed: "haystack" does not contain "needle"');
  assert.match(m['contains types']!.message!, /t:assert_contains: argument #1 \(haystack\) must be a string \(bytes\), got integer/);
  assert.equal(m['fail default']!.message, 'spec/sample.test.lua:9: explicit failure (t:fail)');
  assert.equal(m['sticky']!.status, 'failed');
  assert.equal(m['sticky']!.message, 'spec/sample.test.lua:11: swallowed: 1 ~= 2');
  assert.deepEqual(m['sticky']!.log, ['still running']);
  // Where it failed, and where it was declared (JUnit's `line`).
  assert.deepEqual(m['sticky']!.failureLocation, { file: 'spec/sample.test.lua', line: 11 });
  assert.deepEqual(m['sticky']!.location, { file: 'spec/sample.test.lua', line: 10 });
  assert.deepEqual(m['passes']!.location, { file: 'spec/sample.test.lua', line: 23 });
  assert.equal(m['assert_raises restores the flag']!.status, 'passed', m['assert_raises restores the flag']!.message);
  assert.equal(m['assert_raises without an error']!.message, 'spec/sample.test.lua:20: expected boom: the function did not raise an error');
  assert.match(m['runtime error']!.message!, /^spec\/sample\.test\.lua:21: attempt to index a nil value/);
  assert.equal(m['error object']!.message, 'custom object\nstack traceback:\n' + m['error object']!.message!.split('stack traceback:\n')[1]);
  assert.deepEqual(m['error object']!.failureLocation, { file: 'spec/sample.test.lua', line: 22 });
  assert.equal(m['passes']!.status, 'passed', m['passes']!.message);
});

test('t fields, skip, todo, meta.skip', async () => {
  const { result, broker } = await runLua(String.raw`
test("fields", {spec = "x.y", tags = "a"}, function(t)
  t:assert_eq(t.name, "fields")
  t:assert_eq(t.meta.spec, "x.y")
  t:assert_eq(t.attempt, 1)
end)
test("skips", function(t) t:skip("not today"); error("unreachable") end)
test("skip swallowed", function(t) pcall(t.skip, t, "quiet") end)
test("meta skip", {skip = true}, function(t) error("no") end)
test("meta skip reason", {skip = "broken upstream"}, function(t) error("no") end)
test("meta skip zero", {skip = 0}, function(t) end)
`);
  const m = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  assert.equal(m['fields']!.status, 'passed', m['fields']!.message);
  assert.deepEqual(m['fields']!.meta, { spec: 'x.y', tags: 'a' });
  assert.equal(m['skips']!.status, 'skipped');
  assert.equal(m['skips']!.message, 'not today');
  assert.equal(m['skip swallowed']!.status, 'skipped');
  assert.equal(m['meta skip']!.message, 'skipped (meta.skip)');
  assert.equal(m['meta skip reason']!.message, 'skipped: broken upstream');
  assert.equal(m['meta skip zero']!.status, 'passed');
  const kinds = broker.events.map((e) => `${e.kind}:${e.payload.name}`);
  // Exactly one test_started and one terminal event per test, skipped ones included.
  assert.equal(kinds.filter((k) => k === 'test_started:meta skip').length, 1);
  assert.equal(kinds.filter((k) => k === 'test_skipped:meta skip').length, 1);
  assert.ok(kinds.indexOf('test_started:meta skip') < kinds.indexOf('test_skipped:meta skip'));

  const todo = await runLua('todo("later")\ntest("a", function() error("x") end)\ntest("b", function() end)\n');
  assert.deepEqual(todo.result.tests.map((t) => [t.status, t.message]), [['skipped', 'later'], ['skipped', 'later']]);
});

test('selection: slow, tags, no-tags, tag-meta (same key ORs, keys AND), no-tag-meta', async () => {
  const source = String.raw`
test("plain", function() end)
test("slow", {slow = true}, function() end)
test("net", {tags = {"net", "fast"}}, function() end)
test("disk", {tags = "disk"}, function() end)
test("owned", {owner = "kernel", area = {"mm", "fs"}}, function() end)
`;
  const run = async (selection: object) => {
    const { result } = await runLua(source, { selection });
    return Object.fromEntries(result.tests.map((t) => [t.name, t.status === 'passed' ? 'run' : t.message]));
  };
  const base = await run({});
  assert.equal(base['slow'], 'filtered: slow tests skipped (pass --include-slow)');
  assert.equal(base['plain'], 'run');
  assert.equal((await run({ includeSlow: true }))['slow'], 'run');
  const tags = await run({ tags: ['net', 'disk'] });
  assert.equal(tags['net'], 'run');
  assert.equal(tags['disk'], 'run');
  assert.match(tags['plain']!, /^filtered: no tag matches --tag net, disk/);
  const noTags = await run({ tags: ['net'], noTags: ['fast'] });
  assert.equal(noTags['net'], 'filtered: tag `fast` excluded by --no-tag');
  const meta = await run({ tagMeta: [{ key: 'area', value: 'fs' }, { key: 'area', value: 'net' }, { key: 'owner', value: 'kernel' }] });
  assert.equal(meta['owned'], 'run');
  assert.match(meta['plain']!, /^filtered: meta area matches none of/);
  const meta2 = await run({ tagMeta: [{ key: 'area', value: 'fs' }, { key: 'owner', value: 'nobody' }] });
  assert.match(meta2['owned']!, /^filtered: meta owner/);
  const noMeta = await run({ noTagMeta: [{ key: 'area', value: 'mm' }] });
  assert.equal(noMeta['owned'], 'filtered: meta area=mm excluded by --no-tag-meta');
  assert.equal(noMeta['plain'], 'run');
});

test('retries re-run a failed test; a later pass is flaky; events follow', async () => {
  const { result, broker } = await runLua(
    String.raw`
local count = 0
test("flaky", function(t)
  count = count + 1
  t:assert(count >= 2, "first attempt fails")
  t:assert_eq(t.attempt, 2)
end)
test("always fails", function(t) t:fail("nope") end)
test("passes", function(t) end)
`,
    { retries: 2 },
  );
  const m = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  assert.equal(m['flaky']!.status, 'passed');
  assert.equal(m['flaky']!.flaky, true);
  assert.equal(m['flaky']!.attempts, 2);
  assert.equal(m['always fails']!.status, 'failed');
  assert.equal(m['always fails']!.attempts, 3);
  assert.equal(m['passes']!.attempts, 1);
  assert.equal(m['passes']!.flaky, false);
  const seq = broker.events.filter((e) => e.payload.name === 'flaky').map((e) => `${e.kind}:${e.payload.attempt ?? e.payload.attempts}`);
  assert.deepEqual(seq, ['test_started:1', 'test_retry:1', 'test_passed:2', 'test_flaky:2']);
  const fails = broker.events.filter((e) => e.payload.name === 'always fails').map((e) => e.kind);
  assert.deepEqual(fails, ['test_started', 'test_retry', 'test_retry', 'test_failed']);
  const failed = broker.events.find((e) => e.kind === 'test_failed')!;
  assert.equal(failed.payload.path, 'spec/sample.test.lua');
  assert.equal(failed.payload.reason, 'spec/sample.test.lua:8: nope');
  assert.equal(typeof failed.payload.duration_ns, 'number');
});

test('timeouts: a busy loop fails by its timeout and the next test runs; RPC waits are bounded', async () => {
  const started = Date.now();
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
test("spins", {timeout = 0.3}, function(t)
  while true do end
end)
test("spins under pcall", {timeout = "300ms"}, function(t)
  while true do pcall(function() while true do end end) end
end)
test("blocked in the guest", {timeout = 0.3}, function(t)
  vm:run("sleep 30")
end)
test("wait_until past the deadline", {timeout = 0.3}, function(t)
  wait_until(function() return false end, {timeout = 5})
end)
test("next", function(t)
  t:assert_eq(vm:run("echo ok").stdout, "ok\n")
end)
`);
  const elapsed = Date.now() - started;
  const m = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  for (const name of ['spins', 'spins under pcall', 'blocked in the guest', 'wait_until past the deadline']) {
    assert.equal(m[name]!.status, 'failed', name);
    assert.match(m[name]!.message!, /test timed out after 0\.3s/, `${name}: ${m[name]!.message}`);
  }
  assert.match(m['spins']!.message!, /^spec\/sample\.test\.lua:4: test timed out after 0\.3s/);
  assert.match(m['blocked in the guest']!.message!, /^spec\/sample\.test\.lua:10: /);
  assert.equal(m['next']!.status, 'passed', m['next']!.message);
  assert.ok(elapsed < 10_000, `took ${elapsed} ms`);
  // The file-scope VM survives test timeouts; it is torn down once, at file end.
  const closes = broker.calls.filter((c) => c.op === 'scope.close');
  assert.equal(closes.length, 1);
});

test('provium.timeout is the default; meta.timeout wins; bad settings are rejected', async () => {
  const { result } = await runLua(String.raw`
provium.timeout = 0.2
test("default applies", function(t) while true do end end)
test("meta wins", {timeout = 2}, function(t)
  local t0 = os.clock()
  local n = 0
  while n < 10 do n = n + 1 end
end)
test("read back", function(t)
  t:assert_eq(provium.timeout, 0.2)
  local ok, err = pcall(function() provium.bogus = 1 end)
  t:assert_contains(err, "provium.bogus: unknown setting `+"`bogus`"+String.raw`; settable keys: reset_between_tests, timeout")
  ok, err = pcall(function() provium.reset_between_tests = "yes" end)
  t:assert_contains(err, "must be a boolean")
end)
`);
  const m = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  assert.match(m['default applies']!.message!, /test timed out after 0\.2s/);
  assert.equal(m['meta wins']!.status, 'passed');
  assert.equal(m['read back']!.status, 'passed', m['read back']!.message);
});

test('test-scope resources are torn down per test; failures carry console excerpts', async () => {
  const { result, broker } = await runLua(String.raw`
test("scoped vm", function(t)
  local vm = provium:vm("tmp", "minimal"):boot()
  local p = vm:run_async("sleep 100")
  t:fail("look at the console")
end)
test("name is free again", function(t)
  provium:vm("tmp", "minimal")
end)
`);
  assert.equal(result.tests[0]!.status, 'failed');
  assert.match(result.tests[0]!.consoleExcerpt!, /provium-agent ready/);
  assert.equal(result.tests[1]!.status, 'passed', result.tests[1]!.message);
  const closes = broker.calls.filter((c) => c.op === 'scope.close').map((c) => c.args.vmIds.length);
  assert.deepEqual(closes, [1, 1]);
  // The process lived on a VM being torn down: no separate kill/wait.
  assert.equal(broker.agentCalls('kill').length, 0);
  const failed = broker.events.find((e) => e.kind === 'test_failed')!;
  assert.match(failed.payload.console_excerpt, /Linux version/);
});

test('wait_until polls and reports its description', async () => {
  const { result } = await runLua(String.raw`
test("eventually", function(t)
  local n = 0
  local v = wait_until(function() n = n + 1; return n >= 3 and "done" end, {interval = 0.01})
  t:assert_eq(v, "done")
end)
test("never", function(t)
  wait_until(function() return false end, {timeout = 0.05, interval = 0.01, desc = "the moon"})
end)
test("bad option", function(t)
  wait_until(function() return true end, {timout = 1})
end)
test("predicate errors propagate", function(t)
  wait_until(function() error("inner boom") end)
end)
`);
  const m = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  assert.equal(m['eventually']!.status, 'passed', m['eventually']!.message);
  assert.equal(m['never']!.message, 'spec/sample.test.lua:8: wait_until: the moon not met within 0.05s');
  assert.match(m['bad option']!.message!, /unknown option `timout`.*accepted keys: timeout, interval, desc/);
  assert.match(m['predicate errors propagate']!.message!, /spec\/sample\.test\.lua:14: inner boom/);
});

test('list mode registers tests without booting anything', async () => {
  const { broker, reports } = await runLua(
    String.raw`
local vm = provium:vm("a", "minimal", {disks = {{id = "d", size = "1M"}}}):boot()
local net = provium:bridge("net")
net:attach(vm)
net:partition_all()
vm:disk("d"):fail_reads()
vm:attach_disk({id = "e", size = "1M"})
test("one", function() error("must not run") end)
test("two", {slow = true}, function() end)
`,
    { listOnly: true },
  );
  // Listing declares the tests and ends the file; nothing begins.
  assert.deepEqual(reports.map((r) => r.type), ['tests_declared', 'file_done']);
  const declared = reports[0]!.type === 'tests_declared' ? reports[0]!.tests : [];
  assert.deepEqual(declared.map((t) => [t.name, t.skipReason]), [
    ['one', null],
    ['two', 'filtered: slow tests skipped (pass --include-slow)'],
  ]);
  assert.equal(broker.calls.length, 0);
});
