-- The agent as PID 1 takes no fatal signal from a user process (issue 15 part 5): `kill -SEGV 1`
-- from a test used to park it for good. Only real faults reach its crash handler. A worker (a
-- process forked from the agent) has the default actions back: it dies and says so.

local vm = provium:vm("pid1", "minimal", {memory = "128M"}):boot()

test("kill -SEGV/-BUS/-ILL/-FPE/-ABRT 1 from a guest process leaves the agent serving", function(t)
  for _, sig in ipairs({"SEGV", "BUS", "ILL", "FPE", "ABRT"}) do
    vm:run("kill -" .. sig .. " 1"):assert_ok()
    t:assert_eq(vm:run("echo alive", {timeout = "10s"}).stdout, "alive\n", "the agent answers after kill -" .. sig .. " 1")
  end
  vm:run("kill -SEGV 1 & kill -SEGV 1 & wait"):assert_ok()
  t:assert_eq(vm:read_file("/proc/1/comm"), "provium-agent\n")
  t:assert_contains(vm:console():read_log(), "provium-agent: ignored signal 11 sent by pid")
end)

test("a worker sent SIGSEGV dies of it instead of parking", function(t)
  local w = vm:spawn_worker()
  local pid = w:syscall(39).ret                     -- getpid in the worker
  t:assert(pid > 1, "the worker has a pid of its own")
  vm:run("kill -SEGV " .. pid):assert_ok()
  wait_until(function() return not vm:run("test -d /proc/" .. pid):ok() end, {timeout = "5s", desc = "the worker gone"})
  local started = os.time()
  local ok = pcall(function() return w:run("true", {timeout = "10s"}) end)
  t:assert(not ok, "a call to the dead worker fails")
  t:assert(os.time() - started <= 3, "and fails at once")
  t:assert_eq(vm:run("echo alive").stdout, "alive\n")
end)
