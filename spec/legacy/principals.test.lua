-- Legacy-API tests of credentials with workers (seed 002 style): a worker is a forked agent whose
-- uid can change without touching the main agent.

local SYS_getuid, SYS_setgid, SYS_setuid = 102, 106, 105

local vm = provium.create("minimal")
vm:boot()
vm:write_file("/root-only.txt", "secret")
vm:exec("chmod 600 /root-only.txt")

test("a worker can drop privileges alone", function()
  local user = vm:spawn()
  assert_eq(0, user:syscall(SYS_setgid, 1000))
  assert_eq(0, user:syscall(SYS_setuid, 1000))
  assert_eq(1000, user:syscall(SYS_getuid))
  assert_eq(0, vm:syscall(SYS_getuid))
  local r = user:exec("cat /root-only.txt")
  assert(not r.ok, "uid 1000 cannot read a 0600 root file")
  assert_contains(r.stderr.value, "Permission denied")
  assert_eq("secret", vm:exec("cat /root-only.txt").stdout.value)
  user:kill()
end)

test("workers are independent of each other", function()
  local a = vm:spawn()
  local b = vm:spawn()
  a:syscall(SYS_setuid, 2000)
  assert_eq(2000, a:syscall(SYS_getuid))
  assert_eq(0, b:syscall(SYS_getuid))
  b:write_file("/tmp/from-b", "b")
  assert_eq("b", a:read_file("/tmp/from-b"))
  a:kill()
  b:kill()
end)

test("thread workers are not available", function()
  local ok, err = pcall(function() return vm:spawn({thread = true}) end)
  assert(not ok)
  assert_contains(err, "threads are not supported")
end)
