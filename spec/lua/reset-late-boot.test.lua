-- reset_between_tests with a file-scope VM the top level did not boot (issue 15 part 6): what
-- the first test booted and wrote must not reach the second.
provium.reset_between_tests = true

local vm = provium:vm("late", "minimal", {memory = "128M"})

test("boots the VM and leaves a file", function(t)
  vm:boot()
  vm:write_file("/tmp/leak", "from the first test")
end)

test("starts with the VM as the top level left it", function(t)
  t:assert_eq(vm:state(), "shutdown")
  vm:boot()
  t:assert(not vm:run("test -e /tmp/leak"):ok(), "the first test's file is gone")
end)
