// The Lua runtime: sandbox, require, chunk errors with file:line, json, 64-bit conversions,
// binary-safe strings, argument validation messages. Runs test files in a worker thread against
// the fake broker.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertAllPassed, runLua } from './lua-fake-broker.js';

test('sandbox refuses host access with clear errors and the file keeps running', async () => {
  const { result } = await runLua(String.raw`
test("os.exit", function(t)
  local ok, err = pcall(function() os.exit(1) end)
  t:assert(not ok)
  t:assert_contains(err, "os.exit is not available in a test file: end the test with t:fail() or error()")
  t:assert_contains(err, "spec/sample.test.lua:3:")
end)
test("os.execute / remove / rename", function(t)
  for _, name in ipairs({"execute", "remove", "rename"}) do
    local ok, err = pcall(os[name], "x", "y")
    t:assert(not ok)
    t:assert_contains(err, "os." .. name .. " is not available in a test file")
  end
end)
test("io", function(t)
  local ok, err = pcall(function() return io.open("/etc/passwd") end)
  t:assert(not ok)
  t:assert_contains(err, "io.open is not available in a test file")
  ok, err = pcall(function() io.write("x") end)
  t:assert_contains(err, "io.write is not available")
end)
test("os.time and os.clock still work", function(t)
  t:assert(type(os.time()) == "number")
  t:assert(type(os.clock()) == "number")
end)
test("an uncaught os.exit fails only this test", function(t)
  os.exit(0)
end)
test("the next test still runs", function(t) end)
`);
  const byName = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  assert.equal(byName['os.exit']!.status, 'passed', byName['os.exit']!.message);
  assert.equal(byName['os.execute / remove / rename']!.status, 'passed', byName['os.execute / remove / rename']!.message);
  assert.equal(byName['io']!.status, 'passed', byName['io']!.message);
  assert.equal(byName['os.time and os.clock still work']!.status, 'passed');
  const exit = byName['an uncaught os.exit fails only this test']!;
  assert.equal(exit.status, 'failed');
  assert.match(exit.message!, /^spec\/sample\.test\.lua:27: os\.exit is not available/);
  assert.deepEqual(exit.failureLocation, { file: "spec/sample.test.lua", line: 27 });
  assert.equal(byName['the next test still runs']!.status, 'passed');
});

test('require resolves <root>/x/y.lua, <root>/x/y/init.lua and the file directory', async () => {
  const { result } = await runLua(
    String.raw`
local a = require("helpers.a")
local b = require("helpers.b")
test("modules", function(t)
  t:assert_eq(a.name, "a")
  t:assert_eq(b.name, "b")
  local ok, err = pcall(require, "helpers.missing")
  t:assert(not ok)
  t:assert_contains(err, "module 'helpers.missing' not found")
  t:assert_contains(err, "helpers/missing.lua")
end)
test("errors in a module carry its path", function(t)
  local ok, err = pcall(a.boom)
  t:assert_contains(err, "helpers/a.lua:2: boom")
end)
`,
    {
      files: {
        'spec/helpers/a.lua': 'local M = {name = "a"}\nfunction M.boom() error("boom") end\nreturn M\n',
        'spec/helpers/b/init.lua': 'return {name = "b"}\n',
      },
    },
  );
  assertAllPassed(result, 2);
});

test('chunk errors carry file:line (syntax and runtime)', async () => {
  const syntax = await runLua('test("x", function(t)\n  local = 1\nend)\n');
  assert.match(syntax.result.fatalErrors[0]!.message, /^spec\/sample\.test\.lua:2: /);
  assert.deepEqual(syntax.result.fatalErrors[0]!.location, { file: 'spec/sample.test.lua', line: 2 });
  const runtime = await runLua('local x = nil\nlocal y = x.field\n');
  assert.match(runtime.result.fatalErrors[0]!.message, /^spec\/sample\.test\.lua:2: attempt to index a nil value/);
  assert.deepEqual(runtime.result.fatalErrors[0]!.location, { file: 'spec/sample.test.lua', line: 2 });
  const dup = await runLua('test("a", function() end)\ntest("a", function() end)\n');
  assert.match(dup.result.fatalErrors[0]!.message, /spec\/sample\.test\.lua:2: test: duplicate name `a` in this file/);
});

test('json follows the reference rules', async () => {
  const { result } = await runLua(String.raw`
test("encode", function(t)
  t:assert_eq(json.encode({1, 2, 3}), "[1,2,3]")
  t:assert_eq(json.encode({[1] = "a", [3] = "c"}), '["a",null,"c"]')
  t:assert_eq(json.encode({b = 1, a = true}), '{"a":true,"b":1}')
  t:assert_eq(json.encode({1, x = 2}), '{"1":1,"x":2}')
  t:assert_eq(json.encode({}), "{}")
  t:assert_eq(json.encode("a\"b\n"), '"a\\"b\\n"')
  t:assert_eq(json.encode(1.5), "1.5")
  t:assert_eq(json.encode(3e9), "3000000000")
  t:assert_eq(json.encode(nil), "null")
  local ok, err = pcall(json.encode, {f = print})
  t:assert_contains(err, "cannot encode a function")
  ok, err = pcall(json.encode, 0/0)
  t:assert_contains(err, "NaN")
  local cyc = {}; cyc.self = cyc
  ok, err = pcall(json.encode, cyc)
  t:assert_contains(err, "cycle")
  ok, err = pcall(json.encode, "\255")
  t:assert_contains(err, "not valid UTF-8")
end)
test("decode", function(t)
  local v = json.decode('{"a": [1, null, 3], "b": null, "c": "x\\u00e9", "d": 1.0, "e": {"f": false}}')
  t:assert_eq(v.a[1], 1)
  t:assert_eq(v.a[2], nil)
  t:assert_eq(v.a[3], 3)
  t:assert_eq(v.b, nil)
  t:assert_eq(v.c, "x\195\169")
  t:assert_eq(math.type(v.d), "float")
  t:assert_eq(v.e.f, false)
  t:assert_eq(json.decode("18446744073709551615"), -1)
  t:assert_eq(json.decode("-9223372036854775808"), -9223372036854775808.0)
  t:assert_eq(math.type(json.decode("5")), "integer")
  t:assert_eq(json.decode("4294967296"), 4294967296.0)
  t:assert_eq(json.decode("null"), nil)
  local ok, err = pcall(json.decode, '{"a": }')
  t:assert_contains(err, "json.decode: unexpected character")
  t:assert_contains(err, "line 1 column 7")
  ok, err = pcall(json.decode, '[1] x')
  t:assert_contains(err, "trailing characters")
end)
test("round trip", function(t)
  local v = {name = "vm", list = {1, 2, {deep = true}}, n = -7}
  local back = json.decode(json.encode(v))
  t:assert_eq(json.encode(back), json.encode(v))
end)
`);
  assertAllPassed(result, 3);
});

test('binary data round-trips exactly (all 256 byte values)', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
test("bytes", function(t)
  local parts = {}
  for i = 0, 255 do parts[#parts + 1] = string.char(i) end
  local all = table.concat(parts)
  vm:write_file("/tmp/bin", all)
  local back = vm:read_file("/tmp/bin")
  t:assert_eq(#back, 256)
  t:assert(back == all, "bytes differ")
  local r = vm:run("cat", {stdin = all})
  t:assert(r.stdout == all, "stdin/stdout bytes differ")
end)
`);
  assertAllPassed(result, 1);
  const written = broker.files.get('/tmp/bin')!;
  assert.deepEqual([...written], Array.from({ length: 256 }, (_, i) => i));
});

test('64-bit arguments: floats, decimal and hex strings, hex literals and 32-bit bit patterns', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
test("syscall args", function(t)
  vm:syscall(1, -1, 4294967296, "18446744073709551615", "0x7fffffffffffffff", 2^53, "-100")
  local ok, err = pcall(vm.syscall, vm, 1, 2^60)
  t:assert(not ok)
  t:assert_contains(err, "beyond 2^53")
  ok, err = pcall(vm.syscall, vm, 1, 1.5)
  t:assert_contains(err, "not an integer")
  ok, err = pcall(vm.syscall, vm, 1, "abc")
  t:assert_contains(err, "table form")
  ok, err = pcall(vm.syscall, vm, 1, "99999999999999999999999")
  t:assert_contains(err, "outside the 64-bit range")
end)
test("ioctl cmd", function(t)
  t:assert_eq(0xC0104B00, 3222293248, "a literal past 32 bits is its value, as a float")
  vm:ioctl(3, 0xC0104B00)
  vm:ioctl(3, -0x3FEFB500)   -- a negative 32-bit integer (0xC0104B00 - 2^32) is taken as its bit pattern
  vm:ioctl(3, "0xC0104B00")
  vm:ioctl(3, 3222293248)
end)
test("rng_seed", function(t)
  local b = provium:vm("b", "minimal", {rng_seed = "0xdeadbeefcafef00d"})
  b:boot({rng_seed = 0xdeadbeef})
end)
`);
  assertAllPassed(result, 3);
  const sys = broker.agentCalls('syscall')[0].data;
  assert.deepEqual(sys.args, [-1, 4294967296, -1, 0x7fffffffffffffffn, 2 ** 53, -100]);
  const cmds = broker.agentCalls('ioctl').map((c) => c.data.cmd);
  assert.deepEqual(cmds, [0xc0104b00, 0xc0104b00, 0xc0104b00, 0xc0104b00]);
  const boot = broker.calls.filter((c) => c.op === 'vm.boot').at(-1)!.args;
  assert.equal(boot.opts.rngSeed, 0xdeadbeefn);
});

test('argument validation names the method, argument, value and accepted forms', async () => {
  const { result } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return e
end
test("messages", function(t)
  t:assert_contains(err_of(vm.run, vm, "x", {envv = {}}), "vm:run: unknown option `+"`envv`"+String.raw` in argument #2 (opts); accepted keys: args, env, env_clear, cwd, stdin, timeout_ms, timeout")
  t:assert_contains(err_of(vm.run, vm, 42), "vm:run: argument #1 (cmd) must be a string or an array of strings, got integer")
  t:assert_contains(err_of(vm.run, vm, "x", {timeout = -1}), "duration must be a finite number of seconds >= 0")
  t:assert_contains(err_of(vm.run, vm, "x", {timeout = 0/0}), "duration must be a finite number of seconds >= 0, got NaN")
  t:assert_contains(err_of(vm.run, vm, "x", {timeout = "5 parsecs"}), 'invalid duration "5 parsecs"; use seconds as a number or a string like "500ms", "5s", "2m", "1h"')
  t:assert_contains(err_of(vm.run, vm, "x", {timeout = {}}), "must be a duration (seconds as a number, or a string like")
  t:assert_contains(err_of(vm.run, vm, "x", {"a", env = {}}), "mixes array entries with option keys")
  t:assert_contains(err_of(vm.run_async, vm, "x", {timeout = 1}), "use proc:wait(timeout) instead")
  t:assert_contains(err_of(vm.read_file, vm, nil), "vm:read_file: argument #1 (path) must be a string, got nil")
  t:assert_contains(err_of(vm.open_file, vm, "/x", {}), "opens for nothing")
  t:assert_contains(err_of(vm.open_file, vm, "/x"), "keys: read, write, create, truncate, append, exclusive, perm")
  t:assert_contains(err_of(vm.open_file, vm, "/x", {rw = true}), "unknown option `+"`rw`"+String.raw`")
  t:assert_contains(err_of(vm.boot, vm, {disk = {}}), "unknown option `+"`disk`"+String.raw`")
  t:assert_contains(err_of(vm.run, "echo"), "vm:run: call it with a colon")
  t:assert_contains(err_of(vm.mkdir, vm, "/d", {perm = "755"}), "option `+"`perm`"+String.raw` must be an integer, got string")
  t:assert_contains(err_of(provium.vm, provium, "b", "minimal", {memory = "lots"}), "invalid size")
  t:assert_contains(err_of(provium.vm, provium, "b", "nope"), "unknown profile `+"`nope`"+String.raw`")
  t:assert_contains(err_of(vm.clock(vm).set, vm:clock(), 0/0), "must be a finite number")
  t:assert_contains(err_of(vm.clock(vm).sleep, vm:clock(), -1), ">= 0")
  t:assert_contains(err_of(vm.spawn_worker, vm, {thread = true}), "not yet supported")
end)
test("errors are positioned at the caller", function(t)
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, e = pcall(function() vm:read_file(1) end)
  t:assert_contains(e, "spec/sample.test.lua:" .. line .. ": vm:read_file: argument #1 (path) must be a string, got integer")
  line = debug.getinfo(1, "l").currentline + 1
  local ok2, e2 = pcall(function() vm:run("x", {bogus = 1}) end)
  t:assert_contains(e2, "spec/sample.test.lua:" .. line .. ": vm:run: unknown option")
end)
`);
  assertAllPassed(result, 2);
});

test('print goes to the test log; t:log too', async () => {
  const { result } = await runLua(String.raw`
test("logs", function(t)
  print("hello", 1, nil, true)
  t:log({1})
  t:log("second")
end)
`);
  assertAllPassed(result, 1);
  const log = result.tests[0]!.log;
  assert.equal(log[0], 'hello\t1\tnil\ttrue');
  assert.match(log[1]!, /^table: /);
  assert.equal(log[2], 'second');
});

test('bindings work from coroutines (classes and metatables first used there)', async () => {
  const { result } = await runLua(String.raw`
local co = coroutine.wrap(function()
  local vm = provium:vm("co", "minimal"):boot()
  local r = vm:run("echo from a coroutine")
  coroutine.yield(r.stdout, r:ok(), tostring(vm))
  test("registered in a coroutine", function(t) t:assert_eq(vm:read_file("/x"), "y") end)
  vm:write_file("/x", "y")
  coroutine.yield("done")
end)
local out, ok, shown = co()
test("values came back", function(t)
  t:assert_eq(out, "from a coroutine\n")
  t:assert_eq(ok, true)
  t:assert_eq(shown, "vm(co state=booted cid=101)")
  local inner = coroutine.wrap(function() t:assert_eq(1, 1); coroutine.yield(provium.co:run("echo again").stdout) end)
  t:assert_eq(inner(), "again\n")
end)
t_done = co()
`);
  assertAllPassed(result, 2);
});
