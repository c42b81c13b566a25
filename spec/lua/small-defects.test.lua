-- Issue 15 part 6, the small defects, on a real guest (the worker-side halves are in
-- spec/unit/lua-small-defects.test.ts; reset_between_tests in reset-late-boot.test.lua).

local vm = provium:vm("defects", "minimal", {files = {{path = "/etc/from-vm", content = "vm\n"}}})
vm:boot({files = {{path = "/etc/from-boot", content = "boot\n"}}})

local function message_of(f)
  local ok, err = pcall(f)
  assert(not ok, "expected an error")
  return tostring(err)
end

test("boot files given to lab:vm and to boot() are merged", function(t)
  t:assert_eq(vm:read_file("/etc/from-vm"), "vm\n")
  t:assert_eq(vm:read_file("/etc/from-boot"), "boot\n")
end)

test("the default memory is 512 MiB", function(t)
  local kb = tonumber(vm:read_file("/proc/meminfo"):match("MemTotal:%s+(%d+) kB"))
  t:assert(kb > 400 * 1024 and kb <= 512 * 1024, "MemTotal " .. kb .. " kB")
end)

test("a bad cwd names the directory", function(t)
  local e = message_of(function() vm:run("pwd", {cwd = "/no/such/dir"}) end)
  t:assert_contains(e, "cannot use cwd /no/such/dir: No such file or directory")
  e = message_of(function() vm:run_async("pwd", {cwd = "/etc/from-vm"}) end)
  t:assert_contains(e, "cannot use cwd /etc/from-vm: Not a directory")
  t:assert_eq(vm:run("pwd", {cwd = "/tmp"}).stdout, "/tmp\n")
end)

test("open_file{exclusive = true} without create is an error and creates nothing", function(t)
  t:assert_contains(message_of(function() vm:open_file("/tmp/excl", {write = true, exclusive = true}) end), "exclusive = true needs create = true")
  t:assert(not vm:run("test -e /tmp/excl"):ok(), "no file was created")
  vm:open_file("/tmp/excl", {write = true, create = true, exclusive = true}):close()
  t:assert_contains(message_of(function() vm:open_file("/tmp/excl", {write = true, create = true, exclusive = true}) end), "File exists")
end)

test("an env key containing = or NUL is an error", function(t)
  t:assert_contains(message_of(function() vm:run("env", {env = {["A=B"] = "1"}}) end), 'env key "A=B" is not a valid variable name')
  t:assert_contains(message_of(function() vm:run("env", {env = {["A\0B"] = "1"}}) end), "is not a valid variable name")
  t:assert_eq(vm:run("echo $X", {env = {X = "a=b"}}).stdout, "a=b\n")
end)

test("a kernel command line too long for the boot protocol is named as such", function(t)
  local long = provium:vm("longcmd", "minimal", {memory = "128M"})
  local e = message_of(function() long:boot({kernel_cmdline_append = "x=" .. string.rep("y", 2100)}) end)
  t:assert_contains(e, "the kernel command line is")
  t:assert_contains(e, "longer than the 2047 the x86 boot protocol passes")
end)
