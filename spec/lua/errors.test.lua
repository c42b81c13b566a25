-- Error paths and layer 0: argument and state errors carry the caller's file:line, the sandbox
-- refuses host access, syscall/ioctl/read_mem pass 64-bit values exactly.

local vm = provium:vm("errs", "minimal"):boot()

local function message_of(f)
  local ok, err = pcall(f)
  assert(not ok, "expected an error")
  return err
end

test("errors are positioned at the calling line", function(t)
  local err = message_of(function() vm:read_file(42) end)
  t:assert_eq(err, "spec/lua/errors.test.lua:13: vm:read_file: argument #1 (path) must be a string, got integer")
  err = message_of(function() vm:run("true", {cwdd = "/"}) end)
  t:assert_contains(err, "spec/lua/errors.test.lua:15: vm:run: unknown option `cwdd`")
  t:assert_contains(err, "accepted keys: args, env, env_clear, cwd, stdin, timeout_ms, timeout")
  t:assert_contains(message_of(function() vm.run("true") end), "call it with a colon")
end)

test("guest errors carry the path and the errno text", function(t)
  t:assert_eq(message_of(function() vm:read_file("/nope") end),
    "spec/lua/errors.test.lua:22: vm:read_file: /nope: No such file or directory (errno 2)")
  t:assert_contains(message_of(function() vm:listdir("/etc/passwd") end), "Not a directory")
  t:assert_contains(message_of(function() vm:write_file("/proc/version", "x") end), "vm:write_file: /proc/version:")
end)

test("sandbox: no host commands, files or exits", function(t)
  t:assert_contains(message_of(function() os.exit(1) end), "os.exit is not available in a test file: end the test with t:fail() or error()")
  t:assert_contains(message_of(function() os.execute("ls") end), "os.execute is not available")
  t:assert_contains(message_of(function() os.remove("/tmp/x") end), "os.remove is not available")
  t:assert_contains(message_of(function() os.rename("/a", "/b") end), "os.rename is not available")
  t:assert_contains(message_of(function() io.open("/etc/passwd") end), "io.open is not available")
  t:assert_contains(message_of(function() debug.sethook() end), "debug.sethook is not available")
  t:assert(type(os.time()) == "number")
end)

test("sticky failures: a swallowed assertion still fails the test", {tags = {"meta"}}, function(t)
  local inner = {}
  pcall(function() inner.ok = pcall(t.assert_eq, t, 1, 1) end)
  t:assert(inner.ok)
  -- assert_raises restores the flag: the failing assertion inside is expected.
  local err = t:assert_raises(function() t:assert_eq("a", "b", "inner") end)
  t:assert_contains(err, 'inner: "a" ~= "b"')
end)

test("syscall: integer form, 64-bit strings and floats", function(t)
  t:assert_eq(vm:syscall(39).ret, 1, "getpid of the agent (PID 1 in standalone mode)")
  local r = vm:syscall(62, 0, 0)              -- kill(0, 0): the agent's own process group
  t:assert_eq(r.ret, 0)
  t:assert_eq(r.result, 0)
  t:assert_eq(r.errno, 0)
  r = vm:syscall("62", "0", "0x0")            -- kill(0, 0) again, from decimal and hex strings
  t:assert_eq(r.errno, 0)
  r = vm:syscall(3, "18446744073709551615")    -- close(-1): EBADF
  t:assert_eq(r.ret, -1)
  t:assert_eq(r.errno, 9)
  -- lseek(fd, 2^40, SEEK_SET): a 64-bit offset goes in and comes back (as a float).
  local f = vm:open_file("/tmp/sparse", {write = true, create = true})
  r = vm:syscall(8, f:fd(), 2^40, 0)
  t:assert_eq(r.ret, 2^40)
  t:assert_eq(f:tell(), 1099511627776)
  r = vm:syscall(8, f:fd(), "0x20000000000", 0)
  t:assert_eq(r.ret, 2^41)
  f:close()
  t:assert_contains(message_of(function() vm:syscall(3, 2^60) end), "beyond 2^53")
  t:assert_contains(message_of(function() vm:syscall(3, "fd") end), "table form")
end)

test("syscall: table form with buffers, ptrs and nested pointers", function(t)
  vm:write_file("/tmp/sys", "payload")
  local f = vm:open_file("/tmp/sys", {read = true})
  -- read(fd, buf, 7): ptrs[1] = 1 puts bufs[1]'s address in argument slot 1 (0-based).
  local r = vm:syscall(0, {args = {f:fd(), 0, 7}, bufs = {string.rep("\0", 7)}, ptrs = {1}})
  t:assert_eq(r.ret, 7)
  t:assert_eq(r.out_bufs[1], "payload")
  -- nested {1, 2, 0}: bufs[2]'s address is written into bufs[1] at offset 0.
  r = vm:syscall(39, {bufs = {string.rep("\0", 8), "target"}, nested = {{1, 2, 0}}})
  local lo1, lo2, hi1, hi2 = string.unpack("<I2I2I2I2", r.out_bufs[1])
  local addr = lo1 + lo2 * 65536 + hi1 * 2^32 + hi2 * 2^48
  t:assert(addr > 0, "an address was spliced in")
  local data, errno = vm:read_mem(addr, 6)
  t:assert(data ~= nil or errno ~= nil)
  data, errno = vm:read_mem(0, 8)
  t:assert_eq(data, nil)
  t:assert_eq(errno, 14)
  t:assert_contains(message_of(function() vm:syscall(0, {bufs = {"a"}, ptrs = {1, 2}}) end), "ptrs has 2 entries")
  t:assert_contains(message_of(function() vm:syscall(0, {bufs = {"abc"}, nested = {{1, 1, 0}}}) end), "passes the end of bufs[1]")
  f:close()
end)

test("ioctl: data buffers and 32-bit command literals", function(t)
  vm:write_file("/tmp/io", "0123456789")
  local f = vm:open_file("/tmp/io", {read = true})
  local r = vm:ioctl(f:fd(), 0x541B, string.rep("\0", 4))   -- FIONREAD
  t:assert_eq(r.ret, 0)
  t:assert_eq(string.unpack("<i4", r.out_data), 10)
  -- 0xC0104B00 is past 32 bits: a float of its value, sent as 0xC0104B00.
  r = vm:ioctl(f:fd(), 0xC0104B00)
  t:assert_eq(r.ret, -1)
  t:assert_eq(r.errno, 25)                                  -- ENOTTY: the kernel saw a real command
  r = vm:ioctl(f:fd(), "0xC0104B00", nil, {})
  t:assert_eq(r.errno, 25)
  t:assert_contains(message_of(function() vm:ioctl(f:fd(), 1, "x", {bufs = {"y"}, ptr_offsets = {0}}) end), "must fit inside data")
  f:close()
end)

test("process, file and stream errors after close", function(t)
  local p = vm:run_async("exec sleep 30")
  t:assert_eq(message_of(function() p:kill("sigbogus") end):match("unknown signal name `sigbogus`"), "unknown signal name `sigbogus`")
  p:close()
  t:assert_eq(p:kill(), false)
  local f = vm:open_file("/tmp/closed", {write = true, create = true})
  f:close()
  t:assert_contains(message_of(function() f:write("x") end), "file is closed")
  local s = vm:tail_file("/tmp/closed")
  s:close()
  t:assert_contains(message_of(function() s:expect("x") end), "stream closed")
end)

test("a test error is reported at its line; the next test still runs", function(t)
  local line = debug.getinfo(1, "l").currentline + 1
  local err = message_of(function() local x; return x.y end)
  t:assert_contains(err, "spec/lua/errors.test.lua:" .. line .. ": attempt to index a nil value")
end)
