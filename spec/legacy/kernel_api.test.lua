-- Legacy-API tests of kernel interfaces through raw syscalls and ioctls (seed 002 style): structs
-- are built with provium.pack and read back with provium.unpack.

local SYS_read, SYS_write, SYS_open, SYS_close = 0, 1, 2, 3
local SYS_getpid, SYS_uname, SYS_clock_gettime = 39, 63, 228
local O_RDONLY, O_WRONLY_CREAT_TRUNC = 0, 0x241
local FIONREAD = 0x541B

local vm = provium.create("minimal")
vm:boot()
vm:mount_vfs()

local function open(path, flags)
  local fd = vm:syscall_buf(SYS_open, 0, path .. "\0", 0, flags, 420)
  assert(fd >= 0, "open(" .. path .. ") = " .. fd)
  return fd
end

test("getpid matches /proc/self of the agent", function()
  local pid = vm:syscall(SYS_getpid)
  assert(pid > 0)
  assert_eq(1, pid, "the agent is PID 1 in the minimal image")
end)

test("write and read a file through raw syscalls", function()
  local fd = open("/tmp/raw.txt", O_WRONLY_CREAT_TRUNC)
  local payload = "written by syscall_buf\n"
  assert_eq(#payload, vm:syscall_buf(SYS_write, 1, payload, fd, 0, #payload))
  assert_eq(0, vm:syscall(SYS_close, fd))
  assert_eq(payload, vm:read_file("/tmp/raw.txt"))
  fd = open("/tmp/raw.txt", O_RDONLY)
  local ret, avail = vm:ioctl(fd, FIONREAD, provium.pack("i32", 0))
  assert_eq(0, ret)
  assert_eq(#payload, provium.unpack("i32", avail))
  local n, buf = vm:syscall_bufs(SYS_read, {[1] = string.rep("\0", 7)}, fd, 0, 7)
  assert_eq(7, n)
  assert_eq("written", buf)
  vm:syscall(SYS_close, fd)
end)

test("uname struct", function()
  local ret, uts = vm:syscall_bufs(SYS_uname, {[0] = string.rep("\0", 6 * 65)})
  assert_eq(0, ret)
  local sysname = uts:sub(1, 65):match("^[^%z]*")
  local release = uts:sub(2 * 65 + 1, 3 * 65):match("^[^%z]*")
  assert_eq("Linux", sysname)
  assert_eq(vm:exec("uname -r").stdout:trim(), release)
end)

test("clock_gettime fills a timespec", function()
  local ret, ts = vm:syscall_bufs(SYS_clock_gettime, {[1] = provium.pack("i64 i64", 0, 0)}, 0, 0)
  assert_eq(0, ret)
  local sec, nsec = provium.unpack("i64 i64", ts)
  local date = tonumber(vm:exec("date +%s").stdout:trim())
  assert(math.abs(date - sec) < 60, "clock_gettime " .. sec .. " vs date " .. date)
  assert(nsec >= 0 and nsec < 1000000000)
end)

test("securityfs is mounted", function()
  assert_contains(vm:read_file("/proc/mounts"), "securityfs /sys/kernel/security securityfs")
  assert(vm:exec("ls /sys/kernel/security").ok)
end)

test("kernel log", function()
  vm:exec("echo 'kacs: self-test passed' > /dev/kmsg")
  assert_contains(vm:dmesg("kacs:"), "kacs: self-test passed")
end)
