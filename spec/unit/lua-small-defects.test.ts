// Issue 15 part 6, the small defects, on the worker side (real worker thread, fake broker): a
// byte-order mark, error({...}) at file scope, loadfile/dofile kept to the test roots,
// open_file{exclusive} without create, env keys with `=` or NUL, reset_between_tests and a VM
// first booted inside a test. Their guest-side halves are in spec/lua/small-defects.test.lua.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertAllPassed, runLua } from './lua-fake-broker.js';

test('a UTF-8 byte-order mark at the start of a test file is accepted', async () => {
  const { result } = await runLua('\ufefftest("after a BOM", function(t) t:assert_eq(1, 1) end)\n');
  assertAllPassed(result, 1);
});

test('error({...}) at file scope shows the table, not its address', async () => {
  const { result } = await runLua('error({code = 42, why = "boom"})\n');
  const message = result.fatalErrors[0]?.message ?? '';
  assert.match(message, /error object is a table: \{code = 42, why = "boom"\}/);
  assert.doesNotMatch(message, /table: 0x/);
});

test('error({...}) in a test shows the table; a table with __tostring still uses it', async () => {
  const { result } = await runLua(String.raw`
test("plain", function(t) error({1, 2, kind = "x"}) end)
test("tostring", function(t) error(setmetatable({}, {__tostring = function() return "custom" end})) end)
`);
  assert.match(result.tests[0]!.message!, /error object is a table: \{1, 2, kind = "x"\}/);
  assert.match(result.tests[1]!.message!, /custom/);
});

test('loadfile and dofile read from the test roots and the test file directory only', async () => {
  const { result } = await runLua(
    String.raw`
test("in the roots", function(t)
  t:assert_eq(dofile("helpers/value.lua"), 42)
  local chunk = assert(loadfile("helpers/value.lua"))
  t:assert_eq(chunk(), 42)
  local env = {}
  assert(loadfile("helpers/setter.lua", "t", env))()
  t:assert_eq(env.x, 7)
  t:assert_eq(rawget(_G, "x"), nil)
end)
test("outside", function(t)
  local f, err = loadfile("/etc/passwd")
  t:assert_eq(f, nil)
  t:assert_contains(err, "loadfile: /etc/passwd is outside the test roots")
  f, err = loadfile("../../../../../../etc/hostname")
  t:assert_eq(f, nil)
  t:assert_contains(err, "is outside the test roots")
  local ok, e = pcall(dofile, "/etc/passwd")
  t:assert(not ok)
  t:assert_contains(e, "dofile: /etc/passwd is outside the test roots")
  f, err = loadfile("helpers/missing.lua")
  t:assert_contains(err, "loadfile: cannot open helpers/missing.lua")
  ok, e = pcall(dofile)
  t:assert_contains(e, "dofile needs a file name")
end)
`,
    { files: { 'spec/helpers/value.lua': 'return 42\n', 'spec/helpers/setter.lua': 'x = 7\n' } },
  );
  assertAllPassed(result, 2);
});

test('open_file{exclusive = true} without create is an error, not a create', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
test("exclusive", function(t)
  local ok, e = pcall(function() return vm:open_file("/tmp/new", {write = true, exclusive = true}) end)
  t:assert(not ok)
  t:assert_contains(e, "exclusive = true needs create = true")
  vm:open_file("/tmp/new", {write = true, create = true, exclusive = true}):close()
end)
`);
  assertAllPassed(result, 1);
  assert.equal(broker.agentCalls('open_file').length, 1, 'only the call with create reached the guest');
});

test('an env key containing = or NUL, or a value with NUL, is an error naming it', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
test("env", function(t)
  local function err(env) local ok, e = pcall(function() vm:run("true", {env = env}) end); t:assert(not ok); return e end
  t:assert_contains(err({["A=B"] = "1"}), 'env key "A=B" is not a valid variable name')
  t:assert_contains(err({["A\0B"] = "1"}), 'env key "A\\u0000B" is not a valid variable name')
  t:assert_contains(err({[""] = "1"}), 'env key "" is not a valid variable name')
  t:assert_contains(err({A = "x\0y"}), "env value of A contains a NUL byte")
  t:assert_contains(pcall(function() vm:run_async("true", {env = {["X=1"] = "2"}}) end) and "" or "refused", "refused")
  vm:run("true", {env = {GOOD_NAME = "a=b is fine in a value"}})
end)
`);
  assertAllPassed(result, 1);
  assert.equal(broker.agentCalls('exec').length, 1);
});

test('reset_between_tests: a file-scope VM first booted inside a test is shut down before the next test', async () => {
  const { result, broker } = await runLua(String.raw`
provium.reset_between_tests = true
local vm = provium:vm("late", "minimal")
test("boots it and leaves state", function(t)
  vm:boot()
  vm:write_file("/tmp/leak", "from test 1")
end)
test("starts without it", function(t)
  t:assert_eq(vm:state(), "shutdown")
end)
`);
  assertAllPassed(result, 2);
  assert.equal(broker.calls.filter((c) => c.op === 'vm.shutdown').length, 1);
});
