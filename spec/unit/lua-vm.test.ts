// VM, Lab, Process, File, streams, console, clock, batch, workers and snapshots against the fake
// broker: what each binding sends, what it returns, and its errors.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertAllPassed, runLua } from './lua-fake-broker.js';

test('run: call shapes, options and RunResult', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
test("shapes", function(t)
  local r = vm:run("echo hello")
  t:assert_eq(r.stdout, "hello\n")
  t:assert_eq(r.status, "exited")
  t:assert(r:ok())
  t:assert_eq(r:assert_ok(), r)
  vm:run("echo", {"a", "b"})
  vm:run("echo", {args = {"x"}, env = {K = "v", N = 1}, cwd = "/tmp", stdin = "in", env_clear = true, timeout = "2s"})
  vm:run({"echo", "argv"}, {timeout_ms = 500})
  vm:run("env", {env = {FOO = "bar"}})
  vm:run("echo", {})
end)
test("result fields", function(t)
  local r = vm:run("fail")
  t:assert_eq(r.exit_code, 3)
  t:assert(not r:ok())
  local ok, err = pcall(r.assert_ok, r)
  t:assert_contains(err, "command ` + '`fail`' + String.raw` failed: exited with code 3 (status=exited)")
  t:assert_contains(err, 'stdout: "some output"')
  t:assert_contains(err, 'stderr: "bad things"')
  local k = vm:run("kill9")
  t:assert_eq(k.exit_code, -1)
  t:assert_eq(k.signal, 9)
  t:assert_eq(k.status, "signalled")
  ok, err = pcall(k.assert_ok, k)
  t:assert_contains(err, "killed by signal 9 (SIGKILL)")
  local s = vm:run("sleep 5", {timeout = 0.05})
  t:assert_eq(s.exit_code, -2)
  t:assert(s.timed_out)
  t:assert_eq(s.signal, nil)
end)
`);
  assertAllPassed(result, 2);
  const execs = broker.agentCalls('exec').map((c) => c.data);
  assert.deepEqual(execs[0].argv, ['/bin/sh', '-c', 'echo hello']);
  assert.deepEqual(execs[0].env, {});
  assert.equal(execs[0].env_clear, false);
  assert.deepEqual(execs[1].argv, ['echo', 'a', 'b']);
  assert.deepEqual(execs[2], {
    argv: ['echo', 'x'],
    env: { K: 'v', N: '1' },
    env_clear: true,
    stdin: new Uint8Array([105, 110]),
    cwd: '/tmp',
    timeout_ms: 2000,
  });
  assert.deepEqual(execs[3].argv, ['echo', 'argv']);
  assert.equal(execs[3].timeout_ms, 500);
  assert.deepEqual(execs[4].argv, ['/bin/sh', '-c', 'env']);
  assert.deepEqual(execs[5].argv, ['/bin/sh', '-c', 'echo']);
  // The broker is told how long the exec may take: its own timeout plus a margin, so the
  // agent's timed_out result arrives before the broker gives up.
  assert.equal(broker.agentCalls('exec')[2].timeoutMs, 2000 + 5000);
  assert.equal(broker.agentCalls('exec')[0].timeoutMs, undefined);
});

test('wrong-state errors name the state; dead VMs give the reason', async () => {
  const { result } = await runLua(String.raw`
local function err_of(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return e end
test("states", function(t)
  local vm = provium:vm("s", "minimal")
  t:assert_eq(vm:state(), "created")
  t:assert_eq(vm:cid(), nil)
  t:assert_eq(tostring(vm), "vm(s state=created cid=nil)")
  t:assert_contains(err_of(function() vm:run("echo") end), "vm:run: vm ` + '`s`' + String.raw` is not booted (state: created)")
  t:assert_contains(err_of(function() vm:pause() end), "vm ` + '`s`' + String.raw` is not booted")
  t:assert_eq(vm:boot(), vm)
  t:assert_eq(vm:cid(), 100 + 1)
  t:assert_contains(err_of(function() vm:boot() end), "already booted")
  t:assert_contains(err_of(function() vm:resume() end), "is not paused (state: booted)")
  vm:pause()
  t:assert_eq(vm:state(), "paused")
  t:assert_contains(err_of(function() vm:read_file("/x") end), "vm:read_file: vm ` + '`s`' + String.raw` is paused; use resume()")
  t:assert_contains(err_of(function() vm:restore("/tmp/x") end), "vm ` + '`s`' + String.raw` is not created or shutdown (state: paused); shut it down first")
  vm:resume()
  vm:reset()
  t:assert_eq(vm:state(), "booted")
  vm:shutdown()
  vm:shutdown()
  t:assert_contains(err_of(function() vm:run("echo") end), "is not booted (state: shutdown)")
  vm:close()
end)
`);
  assertAllPassed(result, 1);
});

test('a VM the broker reports dead', async () => {
  const { result } = await runLua(
    String.raw`
local vm = provium:vm("d", "minimal"):boot()
test("dead", function(t)
  local ok, e = pcall(function() vm:run("echo hi") end)
  t:assert_contains(e, "vm:run: vm ` + '`d`' + String.raw` is dead: QEMU exited (signal KILL)")
  ok, e = pcall(function() vm:stat("/") end)
  t:assert_contains(e, "vm:stat: vm ` + '`d`' + String.raw` is dead")
  t:assert_eq(vm:state(), "dead")
end)
`,
    {
      setup: (b) =>
        (b.handlers['vm.boot'] = (args: { vmId: number }) => {
          // The broker's view after the boot says the guest died, and why.
          b.setState(args.vmId, 'dead', 'QEMU exited (signal KILL)');
          return { vm: b.view(args.vmId), bootMs: 1, restored: false };
        }),
    },
  );
  assertAllPassed(result, 1);
});

test('lab: create/lookup, shadowing, dot sugar, sub-labs, include/remove, members', async () => {
  const { result } = await runLua(String.raw`
local a = provium:vm("a", "minimal", {memory = "256M", cpus = 2})
local function err_of(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return e end
test("lookup and sugar", function(t)
  t:assert_eq(provium:name(), "provium")
  t:assert_eq(provium:vm("a"), a)
  t:assert_eq(provium.a, a)
  t:assert_eq(provium.nothing, nil)
  t:assert_contains(err_of(function() provium:vm("zz") end), "no vm named ` + '`zz`' + String.raw`")
  t:assert_contains(err_of(function() provium:vm("a", "minimal") end), "name ` + '`a`' + String.raw` already declared at a parent scope")
  t:assert_contains(err_of(function() provium:vm("a", "minimal") end), 'use ` + '`provium:vm("a")`' + String.raw`')
  t:assert_contains(err_of(function() provium:vm("boot", "minimal") end), "is reserved")
  t:assert_contains(err_of(function() provium:vm("bad name", "minimal") end), "invalid vm name")
  local b = provium:vm("b", "minimal")
  t:assert_eq(provium.b, b)
  t:assert_eq(#provium:vm_names(), 1)
end)
test("root again", function(t)
  t:assert_eq(provium.b, nil)
  t:assert_contains(err_of(function() provium:vm("a", "minimal") end), "already declared at a parent scope")
end)
test("sub-labs", function(t)
  local l = provium:lab()
  t:assert_eq(l:name(), "__lab_0")
  t:assert_eq(provium:lab():name(), "__lab_1")
  local net = provium:lab("net")
  local x = net:vm("x", "minimal")
  t:assert_eq(net.x, x)
  t:assert_eq(provium.net, net)
  local y = provium:vm("y", "minimal")
  net:include(y)
  t:assert_eq(net.y, y)
  t:assert_eq(provium.y, nil)
  local m = net:members()
  t:assert_eq(m[1].kind, "vm"); t:assert_eq(m[1].name, "x")
  t:assert_eq(m[2].name, "y")
  t:assert_contains(err_of(function() net:include(y) end), "already a member")
  net:remove("y")
  t:assert_eq(net.y, nil)
  t:assert_contains(err_of(function() net:remove("y") end), "has no member ` + '`y`' + String.raw`")
  t:assert_eq(#net:sub_lab_names(), 0)
  t:assert_eq(#net:bridge_names(), 0)
  t:assert_contains(err_of(function() net:include(42) end), "must be a VM or a Lab")
end)
test("pack", function(t)
  local s = provium:pack("<I4", 258)
  t:assert_eq(#s, 4)
  t:assert_eq(provium:unpack("<I4", s), 258)
  t:assert_eq(type(provium.pack), "function")
end)
test("claim and barrier", function(t)
  t:assert_contains(err_of(function() provium:claim({memroy = 1}) end), "unknown option ` + '`memroy`' + String.raw`")
  provium:claim({memory = "1G", cpus = 2})
  t:assert_contains(err_of(function() provium:claim({memory = 1}) end), "claim already taken")
  t:assert_eq(provium:barrier("one", 1), true)
  t:assert_contains(err_of(function() provium:barrier("two", 2, 0.1) end), "1 of 2 arrived")
  t:assert_contains(err_of(function() provium:barrier("x", 1.5) end), "must be an integer")
end)
`);
  assertAllPassed(result, 5);
});

test('lab:boot posts every boot before waiting for any (concurrent boots)', async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const { result, broker } = await runLua(
    String.raw`
test("boots", function(t)
  local l = provium:lab("group")
  local a = l:vm("a", "minimal")
  local b = l:vm("b", "minimal", {memory = "128M"})
  local c = l:vm("c", "minimal")
  t:assert_eq(l:boot(), l)
  t:assert_eq(a:state(), "booted")
  t:assert_eq(c:cid() ~= nil, true)
  l:pause()
  t:assert_eq(b:state(), "paused")
  l:resume()
  l:shutdown()
  t:assert_eq(a:state(), "shutdown")
end)
`,
    {
      setup: (b) => {
        b.handlers['vm.boot'] = async (args: { vmId: number }) => {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await new Promise((r) => setTimeout(r, 100));
          inFlight--;
          b.setState(args.vmId, 'booted');
          b.vms.get(args.vmId)!.cid = 100 + args.vmId;
          return { vm: b.view(args.vmId), bootMs: 100, restored: false };
        };
      },
    },
  );
  assertAllPassed(result, 1);
  assert.equal(maxInFlight, 3);
  const boot = broker.calls.filter((c) => c.op === 'vm.boot').map((c) => c.args.opts);
  assert.deepEqual(boot[1], { memoryBytes: 128 * 1024 * 1024 });
});

test('boot options merge (boot-time keys win, files from both) and are validated', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal", {memory = "1G", cpus = 2, kernel_cmdline = "quiet",
  files = {{path = "/etc/a", content = "A"}, {path = "/etc/c", content = "old"}}})
vm:boot({cpus = 4, initial_time = 1700000000.5, agent_timeout = "20s", kernel_cmdline_append = "x=1",
  files = {{path = "/etc/b", content = "\0\1", mode = 384}, {path = "/etc/c", content = "new"}}})
test("bad files", function(t)
  local b = provium:vm("b", "minimal")
  local ok, e = pcall(function() b:boot({files = {{content = "x"}}}) end)
  t:assert_contains(e, "` + '`path`' + String.raw` is required")
  ok, e = pcall(function() b:boot({files = {{path = "/x", content = "x", mode = 99999}}}) end)
  t:assert_contains(e, "between 0 and 4095")
end)
`);
  assertAllPassed(result, 1);
  const opts = broker.calls.find((c) => c.op === 'vm.boot')!.args.opts;
  assert.deepEqual(opts, {
    memoryBytes: 1024 ** 3,
    cpus: 4,
    kernelCmdline: 'quiet',
    kernelCmdlineAppend: 'x=1',
    initialTime: 1700000000.5,
    agentTimeoutMs: 20000,
    // Both lists, the boot's entry winning for /etc/c.
    files: [
      { path: '/etc/a', content: new Uint8Array([0x41]) },
      { path: '/etc/c', content: new TextEncoder().encode('new') },
      { path: '/etc/b', content: new Uint8Array([0, 1]), mode: 384 },
    ],
  });
});

test('process: wait, kill, signals, stdin, status, close', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
local function err_of(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return e end
test("stdin", function(t)
  local p = vm:run_async("cat")
  t:assert_eq(p:stdin_write("hello\n"), 6)
  p:stdin_write("world\n")
  p:close_stdin()
  t:assert_contains(err_of(function() p:stdin_write("x") end), "close_stdin() was called")
  local r = p:wait("5s")
  t:assert_eq(r.stdout, "hello\nworld\n")
  t:assert_eq(p:wait().stdout, r.stdout)
end)
test("signals", function(t)
  local p = vm:run_async("sleep 100")
  t:assert_eq(p:pid(), 1000 + p:handle())
  t:assert_eq(p:status(), "running")
  t:assert_contains(err_of(function() p:wait(0) end), "poll with proc:status() instead")
  t:assert_contains(err_of(function() p:kill("bogus") end), "unknown signal name ` + '`bogus`' + String.raw`")
  t:assert_contains(err_of(function() p:kill({}) end), "must be a signal name or number")
  t:assert_eq(p:signal("SIGUSR1"), true)
  local st, code, sig = p:status()
  t:assert_eq(st, "signalled"); t:assert_eq(code, -1); t:assert_eq(sig, 10)
  local r = p:wait()
  t:assert_eq(r.signal, 10)
  t:assert_eq(p:kill(), false)
end)
test("kill forms", function(t)
  for _, s in ipairs({"term", "KILL", "sigint", "Hup", 9, "usr2"}) do
    local p = vm:run_async("sleep 100")
    p:kill(s)
    p:wait()
  end
end)
test("scope closes processes on file-scope vms", function(t)
  vm:run_async("sleep 100")
end)
test("close is TERM then wait 2s", function(t)
  local p = vm:run_async("sleep 100")
  p:close()
  p:close()
  t:assert_eq(p:wait().status, "signalled")
end)
`);
  assertAllPassed(result, 5);
  const kills = broker.agentCalls('kill').map((c) => c.data.signal);
  assert.deepEqual(kills, [10, 15, 9, 2, 1, 9, 12, 15, 15]);
  const waits = broker.agentCalls('wait').map((c) => c.data.timeout_ms);
  assert.ok(waits.includes(2000), 'close waits 2 s');
  assert.ok(waits.includes(5000));
});

test('files: read/write/seek/tell/read_all/close and closed-file errors; stat and listdir', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
local function err_of(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return e end
test("file", function(t)
  local f = vm:open_file("/tmp/f", {write = true, read = true, create = true, perm = 384})
  t:assert_eq(vm:open_file_count(), 1)
  t:assert_eq(vm:is_quiescent(), false)
  t:assert_eq(f:write("hello world"), 11)
  t:assert_eq(f:tell(), 11)
  t:assert_eq(f:seek(0), 0)
  t:assert_eq(f:read(5), "hello")
  t:assert_eq(f:seek(-5, "end"), 6)
  t:assert_eq(f:read_all(), "world")
  t:assert_eq(f:read(10), "")
  t:assert(f:fd() > 0)
  t:assert_contains(err_of(function() f:seek(0, "middle") end), 'must be "set", "cur" or "end"')
  f:close()
  f:close()
  t:assert_eq(f:fd(), 0)
  t:assert_eq(vm:open_file_count(), 0)
  for _, m in ipairs({"read", "read_all", "write", "seek", "tell", "tail_stream"}) do
    t:assert_contains(err_of(function() f[m](f, "x") end), "file is closed")
  end
end)
test("stat and dirs", function(t)
  vm:write_file("/d/one", "1")
  vm:write_file("/d/two", "22")
  local st = vm:stat("/d/two")
  t:assert_eq(st.size, 2)
  t:assert_eq(st.perm, 420)
  t:assert_eq(st.entry_type, "file")
  t:assert_eq(st.mtime_ns_str, "1700000000123456789")
  t:assert(math.abs(st.mtime - 1700000000.123456789) < 1e-6)
  local names = {}
  for _, e in ipairs(vm:listdir("/d")) do names[#names + 1] = e.name .. ":" .. e.entry_type end
  t:assert_eq(table.concat(names, ","), "one:file,two:file")
  vm:mkdir("/d/sub", {parents = true, perm = 448})
  vm:rename("/d/one", "/d/uno")
  vm:unlink("/d/uno")
  local e = err_of(function() vm:read_file("/d/uno") end)
  t:assert_contains(e, "vm:read_file: /d/uno: No such file or directory (errno 2)")
  local r = vm:batch(function(b)
    b:write_file("/tmp/a", "1")
    b:read_file("/tmp/a")
    b:stat("/tmp/missing")
    b:run("echo batched")
    b:syscall(39)
  end)
  t:assert_eq(#r, 5)
  t:assert_eq(r[1].ok, nil); t:assert_eq(r[1].err, nil)
  t:assert_eq(r[2].ok, "1")
  t:assert_contains(r[3].err, "No such file")
  t:assert_eq(r[3].errno, 2)
  t:assert_eq(r[4].ok.stdout, "batched\n")
  t:assert_eq(r[5].ok.ret, 42)
  t:assert_contains(err_of(function() vm:batch(function(b) b:syscall(1, {args = {}}) end) end), "only the integer form")
end)
test("push_file", function(t)
  vm:push_file("data/blob.bin", "/tmp/blob")
  t:assert_eq(vm:read_file("/tmp/blob"), "blob\n")
  t:assert_contains(err_of(function() vm:push_file("data/missing", "/tmp/x") end), "cannot read host file")
end)
`, { files: { 'spec/data/blob.bin': 'blob\n' } });
  assertAllPassed(result, 3);
  const open = broker.agentCalls('open_file')[0].data;
  assert.deepEqual(open, { path: '/tmp/f', flags: 1 | 2 | 4, perm: 384 });
  assert.equal(broker.agentCalls('batch').length, 1);
});

test('streams: read_until keeps pending bytes; expect, next, drain, eof, close, creation_site', async () => {
  const { result, broker } = await runLua(
    String.raw`
local vm = provium:vm("a", "minimal"):boot()
local function err_of(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return e end
test("tail", function(t)
  local s = vm:tail_file("/var/log/x", {start = "beginning"})
  t:assert_eq(vm:open_stream_count(), 1)
  t:assert_eq(s:read_until("ready"), "line1\nready")
  t:assert_eq(s:next(), "\nline2\n")
  t:assert_eq(s:next(), "more")
  t:assert_eq(s:expect("done", 2), "done")
  t:assert_eq(s:read_until("\n"), " tail\n")
  local chunks = s:drain(0.05)
  t:assert_eq(table.concat(chunks), "rest")
  t:assert_eq(s:next(0.01), nil)
  t:assert_eq(s:eof(), true)
  t:assert_contains(err_of(function() s:read_until("never") end), "stream EOF")
  local site = s:creation_site()
  t:assert_eq(site.file, "spec/sample.test.lua")
  t:assert_eq(site.line, 5)
  t:assert_contains(err_of(function() vm:snapshot() end), "stream(s) are open: tail_file /var/log/x (opened at spec/sample.test.lua:5)")
  s:close()
  s:close()
  t:assert_eq(s:next(), nil)
  t:assert_contains(err_of(function() s:read_until("x") end), "stream closed")
  t:assert_eq(vm:open_stream_count(), 0)
end)
test("timeout", function(t)
  local s = vm:tail_file("/empty")
  local e = err_of(function() s:read_until("nothing", 0.05) end)
  t:assert_contains(e, "read_until timed out waiting for ` + '`nothing`' + String.raw`")
  t:assert_contains(err_of(function() s:expect("nothing", "50ms") end), "expect timed out waiting for")
  t:assert_contains(err_of(function() s:read_until("") end), "must not be empty")
end)
test("negative start resolves against the size", function(t)
  vm:write_file("/sized", "0123456789")
  vm:tail_file("/sized", {start = -4})
  vm:tail_file("/sized", {start = 3.9})
  t:assert_contains(err_of(function() vm:tail_file("/sized", {start = "middle"}) end), '"beginning", "end" or a byte offset')
end)
`,
    {
      setup: (b) => {
        b.files.set('/var/log/x', new TextEncoder().encode('line1\nready\nline2\n'));
        b.tailScripts['/var/log/x'] = ['more', 'do', 'ne tail\nrest'];
      },
    },
  );
  assertAllPassed(result, 3);
  const tails = broker.calls.filter((c) => c.op === 'stream.open').map((c) => c.args.data.start);
  assert.deepEqual(tails, ['beginning', 'end', 6, 3]);
});

test('console, clock, workers, snapshots, syscall table form, ioctl, read_mem', async () => {
  const { result, broker } = await runLua(String.raw`
local vm = provium:vm("a", "minimal"):boot()
local function err_of(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return e end
test("console", function(t)
  local c = vm:console()
  t:assert_eq(c, vm:console())
  t:assert_contains(c:read_log(), "provium-agent ready")
  t:assert_eq(c:expect("agent ready", 1), "agent ready")
  c:write("root\n", {timeout = 1})
  t:assert_contains(c:read_log(), "root\n")
  t:assert_contains(err_of(function() c:write("x", {timeout_ms = 5}) end), "use ` + '`timeout`' + String.raw`")
  t:assert_contains(err_of(function() c:expect("never", 0.1) end), "console:expect timed out after 0.1s")
  local s = c:read()
  t:assert_eq(tostring(s), "ConsoleStream(console of vm ` + '`a`' + String.raw`)")
  s:close()
  t:assert_contains(err_of(function() s:read_until("x") end), "console closed")
  c:close()
end)
test("clock", function(t)
  local clk = vm:clock()
  t:assert_eq(clk:get_ns_str(), "1700000000000000000")
  t:assert_eq(clk:get(), 1700000000.0)
  clk:set(1800000000.25)
  t:assert_eq(clk:get_ns_str(), "1800000000250000000")
  clk:set_ns("1234567890123456789")
  t:assert_eq(clk:get_ns_str(), "1234567890123456789")
  t:assert_eq(clk:advance(-1.5), 1234567888.623456789)
  clk:advance("2s")
  clk:advance("-500ms")
  t:assert_eq(clk:get_ns_str(), "1234567890123456789")
  clk:sleep("10ms")
  clk:set(-1.5)
  t:assert_eq(clk:get_ns_str(), "-1500000000")
  t:assert_contains(err_of(function() clk:set(1/0) end), "finite")
  t:assert_contains(err_of(function() clk:sleep(0/0) end), "clock:sleep")
end)
test("workers", function(t)
  local w = vm:spawn_worker()
  t:assert(w:handle() > 0)
  t:assert_eq(w:run("echo from worker").stdout, "from worker\n")
  local p = w:run_async("sleep 100")
  t:assert_eq(w:kill("term"), 0)
  w:open_file("/tmp/wf", {write = true, create = true}):close()
  w:syscall(39)
  local j = w:join()
  t:assert_eq(j.status, "exited")
  t:assert_contains(err_of(function() w:run("echo") end), "has been joined")
  w:close()
  local w2 = vm:spawn_worker()
  w2:close()
end)
test("snapshots", function(t)
  local s = vm:snapshot()
  t:assert(s:size() > 0)
  local path = s:path()
  t:assert_contains(err_of(function() vm:restore(s) end), "already booted")
  vm:shutdown()
  vm:restore(s)
  t:assert_eq(vm:state(), "booted")
  t:assert_eq(s:delete(), true)
  t:assert_eq(s:size(), 0)
  s:delete()
end)
test("layer 0", function(t)
  local r = vm:syscall(0, {args = {3, 0, 16}, bufs = {"abcd", "\0\0\0\0\0\0\0\0"}, ptrs = {1, 2}, nested = {{2, 1, 0}}})
  t:assert_eq(r.ret, 42); t:assert_eq(r.result, 42); t:assert_eq(r.errno, 0)
  t:assert_eq(r.out_bufs[1], "abcd")
  t:assert_contains(err_of(function() vm:syscall(0, {bufs = {"a"}, ptrs = {1, 2}}) end), "ptrs has 2 entries but there are only 1 bufs")
  t:assert_contains(err_of(function() vm:syscall(0, {bufs = {"a"}, nested = {{1, 1, 0}}}) end), "passes the end of bufs[1]")
  t:assert_contains(err_of(function() vm:syscall(0, {bufs = {"a"}, nested = {{1, 3, 0}}}) end), "between 1 and 1")
  t:assert_contains(err_of(function() vm:syscall(0, {bogus = 1}) end), "unknown option ` + '`bogus`' + String.raw`")
  t:assert_contains(err_of(function() vm:syscall(0, 1, 2, 3, 4, 5, 6, 7) end), "at most 6 arguments")
  local io = vm:ioctl(3, 0x5401, "\0\0\0\0\0\0\0\0", {bufs = {"xy"}, ptr_offsets = {0}})
  t:assert_eq(io.out_data, "\0\0\0\0\0\0\0\0")
  t:assert_eq(io.out_bufs[1], "xy")
  t:assert_eq(#vm:read_mem("0x1000", 4), 4)
  local data, errno = vm:read_mem(0, 4)
  t:assert_eq(data, nil); t:assert_eq(errno, 14)
end)
`);
  assertAllPassed(result, 5);
  const sys = broker.agentCalls('syscall').find((c) => c.data.bufs.length === 2)!.data;
  assert.deepEqual(sys.ptrs, [[1, 0], [2, 1]]);
  assert.deepEqual(sys.nested, [[1, 0, 0]]);
  const wcalls = broker.calls.filter((c) => c.op === 'agent.call' && c.args.worker !== undefined).map((c) => c.args.op);
  assert.deepEqual(wcalls, ['exec', 'spawn', 'kill_all', 'open_file', 'close', 'syscall', 'exit', 'kill_all', 'exit']);
  const joins = broker.agentCalls('worker_join');
  assert.equal(joins.length, 2);
  assert.equal(joins[0].worker, undefined, 'joins go to the main agent');
});

test('reset_between_tests refuses streams left open at file scope, naming them', async () => {
  const { result } = await runLua(String.raw`
provium.reset_between_tests = true
local vm = provium:vm("a", "minimal"):boot()
local s = vm:tail_file("/var/log/x")
test("never runs", function(t) end)
`);
  assert.match(result.fatalErrors[0]!.message, /provium\.reset_between_tests: vm `a` has 1 stream\(s\) open at file scope \(tail_file \/var\/log\/x/);
  // The declared test never ran: it is reported, as not run, with the reason.
  assert.deepEqual(result.tests.map((t) => [t.name, t.status, t.message]), [['never runs', 'not_run', 'the file failed outside its tests']]);
});
