-- Seed 002's syscall and ioctl shapes on a real guest (x86_64 syscall numbers), each written from
-- the seed's example: syscall, syscall_buf, syscall_bufs, syscall_ptr, ioctl, ioctl_buf.

local SYS_read, SYS_write, SYS_open, SYS_close = 0, 1, 2, 3
local SYS_ioctl, SYS_readv, SYS_writev = 16, 19, 20
local SYS_socket, SYS_getpid, SYS_uname, SYS_rename = 41, 39, 63, 82
local SYS_getuid, SYS_openat = 102, 257
local O_RDONLY, O_RDWR_CREAT_TRUNC = 0, 0x242
local AT_FDCWD = -100

local vm = provium.create("minimal")
vm:boot()

local function open(path, flags)
  local fd = vm:syscall_buf(SYS_open, 0, path .. "\0", 0, flags, 420)
  assert(fd >= 0, "open " .. path .. " returned " .. fd)
  return fd
end

test("vm:syscall(nr, ...) returns the number", function()
  local pid = vm:syscall(SYS_getpid)
  assert(pid > 0)
  assert_eq(0, vm:syscall(SYS_getuid))
  -- A failure is libc's -1 (EBADF here).
  assert_eq(-1, vm:syscall(SYS_close, 12345))
  assert_eq(-1, vm:syscall(1000, 0, 0x0008), "an unknown syscall number fails with -1 (ENOSYS)")
end)

test("vm:syscall_buf(nr, buf_arg_index, buf_data, ...) passes a pointer to the data", function()
  local fd = open("/tmp/sb.txt", O_RDWR_CREAT_TRUNC)
  local data = "hello"
  assert_eq(5, vm:syscall_buf(SYS_write, 1, data, fd, 0, #data))
  assert_eq(0, vm:syscall(SYS_close, fd))
  assert_eq("hello", vm:read_file("/tmp/sb.txt"))
end)

test("vm:syscall_bufs(nr, {[i] = data}, ...) returns the value, then each buffer in index order", function()
  vm:write_file("/tmp/a.txt", "abcdef")
  local ret, from, to = vm:syscall_bufs(SYS_rename, {[0] = "/tmp/a.txt\0", [1] = "/tmp/b.txt\0"})
  assert_eq(0, ret)
  assert_eq("/tmp/a.txt\0", from)
  assert_eq("/tmp/b.txt\0", to)
  assert_eq("abcdef", vm:read_file("/tmp/b.txt"))
  -- As in the seed: a path at index 1 with AT_FDCWD before it, and an output buffer.
  local fd = vm:syscall_bufs(SYS_openat, {[1] = "/tmp/b.txt\0"}, AT_FDCWD, 0, O_RDONLY, 0)
  assert(fd >= 0)
  local n, buf = vm:syscall_bufs(SYS_read, {[1] = string.rep("\0", 4)}, fd, 0, 4)
  assert_eq(4, n)
  assert_eq("abcd", buf)
  vm:syscall(SYS_close, fd)
  local uret, uts = vm:syscall_bufs(SYS_uname, {[0] = string.rep("\0", 390)})
  assert_eq(0, uret)
  assert(uts:starts_with("Linux\0"), "struct utsname starts with sysname")
end)

test("vm:syscall_ptr(nr, bufs, ptrs, ...) patches pointers inside a buffer", function()
  local fd = open("/tmp/iov.txt", O_RDWR_CREAT_TRUNC)
  -- struct iovec {void *base; size_t len}: the base pointer at offset 0 of bufs[1].
  local iov = provium.pack("u64 u64", 0, 5)
  local ret, iov_out = vm:syscall_ptr(SYS_writev, {[1] = iov}, {{buf_idx = 1, ptr_offset = 0, data_len = 5, data = "world"}}, fd, 0, 1)
  assert_eq(5, ret)
  local base, len = provium.unpack("u64 u64", iov_out)
  assert(base ~= 0, "the agent wrote the buffer's address into the iovec")
  assert_eq(5, len)
  assert_eq(0, vm:syscall(SYS_close, fd))
  assert_eq("world", vm:read_file("/tmp/iov.txt"))
  -- An output pointer: readv fills it, and it comes back after the buffers.
  fd = open("/tmp/iov.txt", O_RDONLY)
  local rret, _, got = vm:syscall_ptr(SYS_readv, {[1] = provium.pack("u64 u64", 0, 5)}, {{buf_idx = 1, ptr_offset = 0, data_len = 5, output = true}}, fd, 0, 1)
  assert_eq(5, rret)
  assert_eq("world", got)
  vm:syscall(SYS_close, fd)
end)

test("vm:ioctl(fd, cmd, data?) returns the value and the output data", function()
  vm:write_file("/tmp/io.txt", "12345")
  local fd = open("/tmp/io.txt", O_RDONLY)
  -- FIONREAD on a regular file: the bytes left to read, as an int.
  local ret, out = vm:ioctl(fd, 0x541B, provium.pack("i32", 0))
  assert_eq(0, ret)
  assert_eq(5, provium.unpack("i32", out))
  -- The seed's cmd, a literal fengari reads as a negative integer: ENOTTY here.
  local bad, data = vm:ioctl(fd, 0xC0104B00, string.rep("\0", 16))
  assert_eq(-1, bad)
  assert_eq(16, #data)
  local none, nothing = vm:ioctl(fd, 0x541B)
  assert_eq(-1, none, "FIONREAD with a NULL pointer faults")
  assert_eq(nil, nothing)
  vm:syscall(SYS_close, fd)
end)

test("vm:ioctl_buf(fd, cmd, struct_data, specs) patches buffer pointers into the struct", function()
  vm:exec("ip addr add 127.0.0.1/8 dev lo 2>/dev/null; ip link set lo up")
  local sock = vm:syscall(SYS_socket, 2, 2, 0)
  assert(sock >= 0)
  -- SIOCGIFCONF: struct ifconf {int ifc_len; char *ifc_buf at offset 8}.
  local args = provium.pack("i32 u32 u64", 256, 0, 0)
  local ret, struct_out, data = vm:ioctl_buf(sock, 0x8912, args, {
    {ptr_offset = 8, buf_len = 256, output = true},
  })
  assert_eq(0, ret)
  local len = provium.unpack("i32", struct_out)
  assert(len >= 40, "at least one struct ifreq (40 bytes), got " .. len)
  assert_eq(256, #data)
  assert(data:starts_with("lo\0"), "the first interface is lo")
  vm:syscall(SYS_close, sock)
end)
