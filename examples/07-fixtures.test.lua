-- A fixture: built on first use (then cached), restored here booted, with its service running.

local vm = provium:vm_fixture("fixtures/service")

test("the fixture's setup is already done", function(t)
  t:assert_eq(vm:read_file("/etc/service/config"), "greeting=hello\n")
end)

test("its service is still running after the restore", function(t)
  vm:run("kill -0 $(cat /run/service.pid)"):assert_ok()
  local before = tonumber(vm:read_file("/run/heartbeat"))
  wait_until(function() return tonumber(vm:read_file("/run/heartbeat")) > before end, {timeout = "5s", desc = "a new heartbeat"})
end)
