-- provium.reset_between_tests: every test starts from the file-scope VMs as the top level left
-- them, whatever the test before it did to them.

provium.reset_between_tests = true
local vm = provium:vm("base", "minimal", {memory = "128M"}):boot()
vm:write_file("/tmp/setup", "from the top level")

test("a test changes the guest", function(t)
  t:assert_eq(provium.reset_between_tests, true)
  vm:write_file("/tmp/scribble", "left behind")
  vm:unlink("/tmp/setup")
  t:assert_eq(vm:read_file("/tmp/scribble"), "left behind")
end)

test("the next test starts from the saved guest", function(t)
  t:assert_eq(vm:read_file("/tmp/setup"), "from the top level")
  t:assert_contains(t:assert_raises(function() vm:read_file("/tmp/scribble") end), "No such file or directory")
  vm:write_file("/tmp/scribble", "again")
end)

test("skipped tests do not cost a restore", {skip = "nothing to do"}, function(t) end)

test("so does every later one", function(t)
  t:assert_contains(t:assert_raises(function() vm:read_file("/tmp/scribble") end), "No such file or directory")
  t:assert_eq(vm:run("cat /tmp/setup").stdout, "from the top level")
end)
