-- The README's "Legacy API (seed 002)" example, run as written (the top-level part keeps what
-- it got in `seen`, which the last test checks).

local seen = {}

local vm = provium.create("minimal")           -- not booted; named minimal_1, minimal_2, … in the root lab
vm:boot({memory = "512M", cpus = 2,
         files = {["/etc/app.conf"] = "data/app.conf"},       -- guest path → host path (from the test file's dir)
         disks = {{path = "data/disk.raw", format = "raw", readonly = true}}})   -- /dev/vda, … ("raw" or "qcow2")

test("exec", function()                        -- the body needs no `t`
  local r = vm:exec("uname -r")                -- {ok, exit_code, stdout, stderr} (+ status, signal)
  assert(r.ok, r.stderr)
  assert(r.stdout:contains(".") and r.stdout:trim() ~= "" and r.stdout.value == r.stdout)
  assert_eq({a = {1, 2}}, vm:json([[echo '{"a": [1, 2]}']]))   -- raises if the command fails or prints no JSON
end)

test("not yet", function()
  todo("waiting on feature X")                 -- inside a test: this test is skipped
end)

vm:write_file("/tmp/x", "hello"); seen.read = vm:read_file("/tmp/x")
seen.dmesg = vm:dmesg("kacs:")                 -- the kernel log, through grep with a pattern
vm:mount_vfs()                                 -- proc, sysfs, devtmpfs, securityfs; idempotent
vm:wait_until(function() return vm:exec("test -f /tmp/x").ok end, {timeout = 5, interval = 0.5, desc = "x"})
local db = provium.fixture("seeded")           -- fixtures/seeded.lua, built once, cached like *.fixture.lua

-- Syscalls: slots are 0-based argument positions; the arguments fill every slot, a buffer's slot
-- holds a placeholder. Values are libc's (-1 on failure).
local fd = vm:syscall_bufs(257, {[1] = "/tmp/x\0"}, -100, 0, 2, 0)          -- openat(O_RDWR) → fd
seen.written = vm:syscall_buf(1, 1, "HELLO", fd, 0, 5)                       -- write → 5
local ret, iov, data = vm:syscall_ptr(295, {[1] = provium.pack("u64 u64", 0, 5)},
  {{buf_idx = 1, ptr_offset = 0, data_len = 5, output = true}}, fd, 0, 1, 0, 0)  -- preadv: ret, bufs…, output ptrs…
seen.preadv = {ret, data}
local ret, out = vm:ioctl(fd, 0x541B, provium.pack("i32", 0))                 -- FIONREAD: ret, data (nil without)
seen.fionread = {ret, provium.unpack("i32", out)}
local sock = vm:syscall(41, 2, 2, 0)
local ret, ifc, buf = vm:ioctl_buf(sock, 0x8912, provium.pack("i32 u32 u64", 256, 0, 0),
  {{ptr_offset = 8, buf_len = 256, output = true}})                          -- SIOCGIFCONF: ret, struct, outputs…
seen.ifconf = {ret, #buf}

local job = vm:background("sleep 10")          -- {id, pid}
seen.job = vm:job_wait(job, 0.5)               -- {exit_code, stdout, stderr, running}; 0 polls, nil waits
seen.killed = vm:job_kill(job)                 -- SIGKILL, then its result (exit_code -1, signal 9)

local w = vm:spawn()                           -- a forked agent: own pid and credentials
w:syscall(105, 1000); seen.uid = w:exec("id -u").stdout; w:kill()   -- the VM's methods but boot, shutdown, spawn

local data = provium.pack("u32 u32 u64", 1, 42, 0)
local a, b, c = provium.unpack("u32 u32 u64", data)
seen.unpacked = {a, b, c}

provium.shutdown_all()                         -- the VMs made in this test (at file scope: the file's)
vm:shutdown()                                  -- graceful: power button, up to 10 s, then stopped
vm:kill()                                      -- QEMU killed at once

test("what the top level got", function(t)
  t:assert_eq(seen.read, "hello")
  t:assert_eq(seen.dmesg, "")
  t:assert_eq(db:read_file("/etc/fixture-marker"), "built once\n")
  t:assert_eq(seen.written, 5)
  t:assert_eq(seen.preadv, {5, "HELLO"})
  t:assert_eq(seen.fionread, {0, 0}, "nothing left to read: the write left the offset at the end")
  t:assert_eq(seen.ifconf, {0, 256})
  t:assert_eq(seen.job.running, true)
  t:assert_eq({seen.killed.exit_code, seen.killed.signal}, {-1, 9})
  t:assert_eq(seen.uid, "1000\n")
  t:assert_eq(seen.unpacked, {1, 42, 0})
  t:assert_eq(vm:read_file("/etc/app.conf"), 'listen = 8080\nmode = "legacy"\n')
  t:assert_eq(vm:exec("cat /sys/block/vda/ro").stdout:trim(), "1")
  t:assert_eq(vm:state(), "booted", "the file-scope shutdown and kill wait for the tests")
end)
