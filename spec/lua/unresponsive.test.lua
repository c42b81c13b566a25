-- A guest process that stops answering (a worker frozen with SIGSTOP): calls to it fail after
-- their timeout, everything else keeps going, and closing it is bounded. Slow by nature (the
-- default timeout is 30 s), so it has a file of its own and runs beside the rest of the suite.

local vm = provium:vm("frozen", "minimal"):boot()
test("a guest process that stops answering fails the call after its timeout; the rest goes on", function(t)
  local w = vm:spawn_worker()
  vm:run("kill -STOP " .. w:pid()):assert_ok()
  -- Non-command agent calls time out after 30 s.
  local err = t:assert_raises(function() w:open_file("/proc/version", {read = true}) end)
  t:assert_contains(err, "did not answer `open_file` within 30000 ms")
  -- The VM, its main agent and the rest of the file are unaffected, and the worker recovers.
  t:assert_eq(vm:run("echo fine").stdout, "fine\n")
  vm:run("kill -CONT " .. w:pid()):assert_ok()
  t:assert_eq(w:run("echo back").stdout, "back\n")
  -- Closing a worker that stopped answering is bounded too: it is killed, not waited for.
  vm:run("kill -STOP " .. w:pid()):assert_ok()
  w:close()
  t:assert(not vm:run("kill -0 " .. w:pid()):ok(), "the stopped worker was killed")
end)
