// The legacy Lua API of seed 002 against the fake broker: what each binding sends to the agent
// and what it returns, the mixing rule, the globals (assert, assert_eq, assert_contains, todo in a
// test) and the string methods. The same functions run on real guests in spec/lua/legacy-*.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertAllPassed, FakeError, runLua } from './lua-fake-broker.js';

const dec = new TextDecoder();
const u8 = (s: string) => new TextEncoder().encode(s);

test('provium.create: a legacy VM named after its profile, not booted; boot takes the legacy keys', async () => {
  const { result, broker } = await runLua(
    String.raw`
test("create and boot", function()
  local vm = provium.create("minimal")
  assert_eq("created", vm:state())
  assert_eq("minimal_1", vm:name())
  local vm2 = provium.create("minimal")
  assert_eq("minimal_2", vm2:name())
  assert_eq(vm, vm:boot({memory = "1G", cpus = 2, files = {["/etc/motd"] = "motd.txt"}, disks = {{path = "disk.img", format = "raw", readonly = true}}}))
  assert_eq("booted", vm:state())
  local ok, err = pcall(function() provium.create("nope") end)
  assert(not ok)
  assert_contains(err, "unknown profile")
  ok, err = pcall(function() vm2:boot({disks = {{path = "disk.img", format = "vmdk"}}}) end)
  assert_contains(err, 'format "vmdk" is not supported, only "raw" and "qcow2"')
  ok, err = pcall(function() vm2:boot({files = {["/x"] = "missing.txt"}}) end)
  assert_contains(err, "cannot read host file")
end)
`,
    { files: { 'spec/motd.txt': 'hello motd\n', 'spec/disk.img': 'x' } },
  );
  assertAllPassed(result, 1);
  const boot = broker.calls.find((c) => c.op === 'vm.boot')!.args as { opts: Record<string, unknown> };
  assert.equal(boot.opts['memoryBytes'], 1024 ** 3);
  assert.equal(boot.opts['cpus'], 2);
  const files = boot.opts['files'] as { path: string; content: Uint8Array; mode: number }[];
  assert.equal(files[0]!.path, '/etc/motd');
  assert.equal(dec.decode(files[0]!.content), 'hello motd\n');
  assert.equal(typeof files[0]!.mode, 'number');
  const disks = boot.opts['disks'] as { id: string; image: string; readonly: boolean }[];
  assert.equal(disks[0]!.id, 'disk0');
  assert.match(disks[0]!.image, /spec\/disk\.img$/);
  assert.equal(disks[0]!.readonly, true);
});

test('exec, json, dmesg, mount_vfs, write_file/read_file, wait_until', async () => {
  const { result, broker } = await runLua(
    String.raw`
local vm = provium.create("minimal")
vm:boot()
test("exec", function()
  local r = vm:exec("echo hello")
  assert_eq(true, r.ok)
  assert_eq(0, r.exit_code)
  assert_eq("hello\n", r.stdout)
  assert_eq("hello\n", r.stdout.value)
  assert(r.stdout:contains("ell"))
  assert(r.stdout.contains("hell"))
  assert(r.stdout:starts_with("he") and not r.stdout:starts_with("lo"))
  assert_eq("hello", r.stdout:trim())
  assert_eq("hello", r.stdout.trim())
  assert_eq("[hello\n]", "[" .. r.stdout .. "]")
  assert_eq("hello\n", tostring(r.stdout))
  assert_eq("", r.stderr)
  local f = vm:exec("fail")
  assert_eq(false, f.ok)
  assert_eq(3, f.exit_code)
  assert_eq("bad things", f.stderr)
end)
test("json", function()
  local d = vm:json([[echo {"a": [1, 2], "b": "x"}]])
  assert_eq({a = {1, 2}, b = "x"}, d)
  local ok, err = pcall(vm.json, vm, "fail")
  assert_contains(err, "vm:json: command ` + '`fail`' + String.raw` failed: exited with code 3")
  ok, err = pcall(vm.json, vm, "echo not json")
  assert_contains(err, "is not JSON")
end)
test("files", function()
  vm:write_file("/tmp/t.txt", "hello")
  assert_eq("hello", vm:read_file("/tmp/t.txt"))
end)
test("dmesg and mount_vfs", function()
  assert_eq("kernel log\n", vm:dmesg())
  assert_eq("kacs: ready\n", vm:dmesg("kacs:"))
  vm:mount_vfs()
end)
test("wait_until", function()
  local n = 0
  assert_eq(true, vm:wait_until(function() n = n + 1; return n >= 2 end, {interval = 0.01}))
  local ok, err = pcall(vm.wait_until, vm, function() return false end, {timeout = 0.05, interval = 0.01, desc = "never"})
  assert_contains(err, "vm:wait_until: never not met within 0.05s")
end)
`,
    {
      setup: (b) => {
        b.agent['exec'] = (d: { argv: string[] }) => {
          const line = d.argv.join(' ');
          const out = (stdout: string, code = 0, stderr = '') => ({ status: 'exited', code, signal: 0, stdout: u8(stdout), stderr: u8(stderr), stdout_truncated: false, stderr_truncated: false });
          if (d.argv[0] === 'dmesg') return out('kernel log\n');
          if (line.includes('grep -e')) return out(d.argv[4] === 'kacs:' ? 'kacs: ready\n' : '');
          if (line.includes('securityfs')) return out('');
          if (line.includes('echo {')) return out('{"a": [1, 2], "b": "x"}\n');
          if (line.includes('echo not json')) return out('not json\n');
          if (line.includes('echo hello')) return out('hello\n');
          if (line.includes('fail')) return out('', 3, 'bad things');
          throw new FakeError(`unexpected exec ${line}`, 'agent', 22);
        };
      },
    },
  );
  assertAllPassed(result, 5);
  const execs = broker.agentCalls('exec').map((c) => c.data.argv as string[]);
  assert.ok(execs.some((argv) => argv[0] === '/bin/sh' && argv[2]!.includes('securityfs /sys/kernel/security')), 'mount_vfs mounts securityfs');
  assert.ok(execs.some((argv) => argv[3] === 'sh' && argv[4] === 'kacs:'), 'dmesg passes the pattern as an argument, not through the shell');
});

test('syscall shapes: syscall, syscall_buf, syscall_bufs, syscall_ptr, ioctl, ioctl_buf', async () => {
  const { result, broker } = await runLua(
    String.raw`
local vm = provium.create("minimal")
vm:boot()
test("syscalls", function()
  assert_eq(42, vm:syscall(1000, 0, 0x0008))
  assert_eq(42, vm:syscall_buf(1003, 0, "spec", 0, 4))
  local ret, b1, b3 = vm:syscall_bufs(1022, {[1] = "path", [3] = "sd"}, -100, 0, 7, 0, 2, 0)
  assert_eq(42, ret); assert_eq("path", b1); assert_eq("sd", b3)
  local args = string.rep("\0", 16)
  local r2, a_out, p_out = vm:syscall_ptr(1023, {[0] = args}, {{buf_idx = 0, ptr_offset = 8, data_len = 4, data = "ab"}, {buf_idx = 0, ptr_offset = 0, data_len = 3, output = true}}, 0)
  assert_eq(42, r2); assert_eq(args, a_out); assert_eq("\0\0\0", p_out)
  local iret, out = vm:ioctl(5, 0xC0104B00, "data")
  assert_eq(0, iret); assert_eq("data", out)
  local nret, nout = vm:ioctl(5, 0x1234)
  assert_eq(0, nret); assert_eq(nil, nout)
  local sret, sout, buf = vm:ioctl_buf(5, 0x10, string.rep("\0", 16), {{ptr_offset = 8, buf_len = 4, output = true}, {ptr_offset = 0, data = "in"}})
  assert_eq(0, sret); assert_eq(16, #sout); assert_eq("\0\0\0\0", buf)
  local ok, err = pcall(vm.syscall_ptr, vm, 1, {[0] = "x"}, {{buf_idx = 2, ptr_offset = 0, data = "y"}})
  assert_contains(err, "bufs has no buffer at slot 2")
  ok, err = pcall(vm.syscall_buf, vm, 1, 6, "x")
  assert_contains(err, "between 0 and 5")
  ok, err = pcall(vm.ioctl_buf, vm, 5, 1, "short", {{ptr_offset = 0, buf_len = 1}})
  assert_contains(err, "must fit inside struct_data (5 bytes)")
end)
test("mixing: lab:vm keeps the current shapes", function(t)
  local cur = provium:vm("cur", "minimal"):boot()
  t:assert_eq(cur:syscall(39).ret, 42)
  t:assert_eq(cur:exec("echo hi").stdout, "hi\n")
end)
`,
  );
  assertAllPassed(result, 2);
  const sys = broker.agentCalls('syscall').map((c) => c.data);
  assert.deepEqual(sys[0], { nr: 1000, args: [0, 8], bufs: [], ptrs: [], nested: [] });
  assert.deepEqual(sys[1], { nr: 1003, args: [0, 4], bufs: [u8('spec')], ptrs: [[0, 0]], nested: [] });
  assert.deepEqual(sys[2], { nr: 1022, args: [-100, 0, 7, 0, 2, 0], bufs: [u8('path'), u8('sd')], ptrs: [[1, 0], [3, 1]], nested: [] });
  assert.deepEqual(sys[3].ptrs, [[0, 0]]);
  assert.deepEqual(sys[3].nested, [[0, 1, 8], [0, 2, 0]]);
  assert.deepEqual(sys[3].bufs.slice(1), [new Uint8Array([97, 98, 0, 0]), new Uint8Array(3)]);
  const ioctls = broker.agentCalls('ioctl').map((c) => c.data);
  assert.equal(ioctls[0].cmd, 0xc0104b00);
  assert.deepEqual(ioctls[2].ptr_offsets, [8, 0]);
  assert.deepEqual(ioctls[2].bufs, [new Uint8Array(4), u8('in')]);
});

test('background jobs: {id, pid}, job_wait with and without a timeout, job_kill', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium.create("minimal")
vm:boot()
test("jobs", function()
  local job = vm:background("sleep 10")
  assert(job.id >= 1 and job.pid > 1000)
  local r = vm:job_wait(job, 0)
  assert_eq(true, r.running)
  assert_eq(nil, r.exit_code)
  r = vm:job_wait(job, 0.1)
  assert_eq(true, r.running)
  local k = vm:job_kill(job)
  assert_eq(false, k.running)
  assert_eq(-1, k.exit_code)
  assert_eq(9, k.signal)
  local h = vm:background("echo hello; exit 0")
  local done = vm:job_wait(h)
  assert_eq(false, done.running)
  assert_eq(0, done.exit_code)
  assert_eq("hello\n", done.stdout)
  local ok, err = pcall(vm.job_wait, vm, {id = 999})
  assert_contains(err, "has no background job 999")
end)
`, {
    setup: (b) => {
      b.agent['spawn'] = (d: { argv: string[] }) => {
        const handle = 10 + b.agentCalls('spawn').length;
        const exitsNow = d.argv.join(' ').includes('exit 0');
        b.procs.set(handle, { argv: d.argv, stdout: exitsNow ? u8('hello\n') : new Uint8Array(0), exit: exitsNow ? { status: 'exited', code: 0, signal: 0 } : null, stdin: [], waiters: [] });
        return { handle, pid: 1000 + handle };
      };
    },
  });
  assertAllPassed(result, 1);
  assert.ok(broker.agentCalls('proc_status').length >= 2, 'job_wait(job, 0) polls');
  assert.deepEqual(broker.agentCalls('kill').map((c) => c.data.signal), [9]);
});

test('workers: vm:spawn, legacy methods on the worker, kill closes it; thread = true is refused', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium.create("minimal")
vm:boot()
test("spawn", function()
  local w = vm:spawn()
  assert_eq("hello\n", w:exec("echo hello").stdout)
  assert_eq(42, w:syscall(39))
  w:write_file("/tmp/w", "x")
  assert_eq("x", w:read_file("/tmp/w"))
  w:kill()
  local ok, err = pcall(w.exec, w, "echo again")
  assert_contains(err, "has been joined")
  ok, err = pcall(vm.spawn, vm, {thread = true})
  assert_contains(err, "threads are not supported")
  ok, err = pcall(function() w:boot() end)
  assert_contains(err, "boot")
end)
`);
  assertAllPassed(result, 1);
  const calls = broker.agentCalls('exec');
  assert.equal(calls[0]!.worker, broker.agentCalls('spawn_worker').length > 0 ? calls[0]!.worker : undefined);
  assert.ok(calls[0]!.worker !== undefined, 'worker exec is routed to the worker');
  assert.equal(broker.agentCalls('worker_join').length, 1);
});

test('shutdown, kill, shutdown_all; a file-scope shutdown waits for the tests', async () => {
  const { result, broker } = await runLua(String.raw`
local early = provium.create("minimal")
early:boot()
early:shutdown()
assert_eq("shutdown", early:state(), "no test declared yet: at once")
local vm = provium.create("minimal")
vm:boot()
test("uses the vm after the top level shut it down", function()
  assert_eq("booted", vm:state())
  local a = provium.create("minimal"); a:boot()
  local b = provium.create("minimal"); b:boot()
  provium.shutdown_all()
  assert_eq("shutdown", a:state())
  assert_eq("shutdown", b:state())
  local c = provium.create("minimal"); c:boot()
  c:kill()
  assert_eq("shutdown", c:state())
  c:kill()
  local d = provium.create("minimal"); d:boot(); d:shutdown(); d:shutdown()
  assert_eq("shutdown", d:state())
end)
vm:shutdown()
local k = provium.create("minimal")
k:boot()
test("a file-scope kill after a test waits too", function()
  assert_eq("booted", k:state())
  assert_eq("booted", vm:state())
end)
k:kill()
`);
  assertAllPassed(result, 2);
  assert.equal(broker.calls.filter((c) => c.op === 'vm.power_button').length, 4);
  assert.equal(broker.calls.filter((c) => c.op === 'vm.kill').length, 1);
});

test('assert, assert_eq (deep, with both values), assert_contains; t:assert_eq deep too', async () => {
  const { result } = await runLua(String.raw`
test("passes", function(t)
  assert(true)
  assert_eq(3, select("#", assert(1, 2, 3)))
  assert_eq({1, {a = "x"}}, {1, {a = "x"}})
  t:assert_eq({k = {1, 2}}, {k = {1, 2}})
  assert_contains("hello world", "o w")
end)
test("assert message", function() assert(false, "boom") end)
test("assert default", function() assert(nil) end)
test("assert_eq tables", function() assert_eq({1, 2, a = "x"}, {1, 3, a = "x"}, "lists") end)
test("assert_eq scalars", function() assert_eq(1, 2) end)
test("t:assert_eq tables", function(t) t:assert_eq({1}, {2}) end)
test("assert_contains", function() assert_contains("abc", "z") end)
test("sticky", function() pcall(assert_eq, 1, 2) end)
test("todo in a test", function() todo("waiting on feature X"); error("not reached") end)
test("after todo", function() end)
test("nested", function(t)
  local cyc = {1}; cyc.self = cyc
  local cyc2 = {1}; cyc2.self = cyc2
  assert_eq(cyc, cyc2)
  t:assert_contains(t:assert_raises(function() assert_eq({a = {b = {1}}}, {a = {b = {2}}}) end), "expected {a = {b = {1}}}, got {a = {b = {2}}}")
  t:assert_contains(t:assert_raises(function() t:assert_eq({x = {}}, {x = {y = 1}}) end), "{x = {}} ~= {x = {y = 1}}")
end)
`);
  const m = Object.fromEntries(result.tests.map((t) => [t.name, t]));
  assert.equal(m['passes']!.status, 'passed', m['passes']!.message);
  assert.equal(m['nested']!.status, 'passed', m['nested']!.message);
  assert.equal(m['assert message']!.message, 'spec/sample.test.lua:9: boom');
  assert.equal(m['assert default']!.message, 'spec/sample.test.lua:10: assertion failed!');
  assert.equal(m['assert_eq tables']!.message, 'spec/sample.test.lua:11: lists: expected {1, 2, a = "x"}, got {1, 3, a = "x"}');
  assert.equal(m['assert_eq scalars']!.message, 'spec/sample.test.lua:12: assert_eq failed: expected 1, got 2');
  assert.equal(m['t:assert_eq tables']!.message, 'spec/sample.test.lua:13: assert_eq failed: {1} ~= {2}');
  assert.equal(m['assert_contains']!.message, 'spec/sample.test.lua:14: assert_contains failed: "abc" does not contain "z"');
  assert.equal(m['sticky']!.status, 'failed');
  assert.equal(m['todo in a test']!.status, 'skipped');
  assert.equal(m['todo in a test']!.message, 'waiting on feature X');
  assert.equal(m['after todo']!.status, 'passed');
});

test('provium.pack / provium.unpack: legacy words; other formats stay string.pack', async () => {
  const { result } = await runLua(String.raw`
test("pack", function(t)
  local data = provium.pack("u32 u32 u64", 1, 42, 0)
  t:assert_eq(#data, 16)
  t:assert_eq(data, string.pack("<I4I4i8", 1, 42, 0))
  local a, b, c = provium.unpack("u32 u32 u64", data)
  t:assert_eq({a, b, c}, {1, 42, 0})
  t:assert_eq(provium:pack("u16", 513), "\1\2")
  t:assert_eq(provium.pack("i64", -1), string.rep("\255", 8))
  t:assert_eq(provium.unpack("u64", string.rep("\255", 8)), "18446744073709551615")
  t:assert_eq(provium.unpack("i64", provium.pack("i64", "-9223372036854775808")), "-9223372036854775808")
  t:assert_eq(provium.unpack("u64", provium.pack("u64", 2^53)), 2^53)
  t:assert_eq(provium.pack("u32", 0xFFFFFFFF), "\255\255\255\255")
  t:assert_eq(provium:pack("<I2", 513), "\1\2")
  t:assert_contains(t:assert_raises(function() provium.pack("u8", 256) end), "argument #2: unsigned overflow: 256 does not fit u8")
  t:assert_contains(t:assert_raises(function() provium.pack("u32 u32", 1) end), "takes 2 values, got 1")
  t:assert_contains(t:assert_raises(function() provium.unpack("u64", "abc") end), "data string too short: the format needs 8 bytes, got 3")
end)
`);
  assertAllPassed(result, 1);
});
