-- Skipping and selecting tests. None of these boot a VM until they run, so the skipped ones cost
-- nothing.
--
--   provium examples                      # the slow test is skipped
--   provium examples --include-slow       # ... and now it runs
--   provium examples --tag smoke          # only tests tagged "smoke"
--   provium examples --no-tag slow-boot   # everything but those

test("skipped with a reason", { skip = "shows how a skipped test is reported" }, function(t)
  t:fail("a skipped test never runs")
end)

test("skips itself at run time", function(t)
  local why = "nothing to check on this host"
  t:skip(why)
  t:fail("t:skip() does not return")
end)

test("tagged smoke: boots a guest inside the test", { tags = { "smoke" } }, function(t)
  -- A VM created inside a test belongs to that test: it is shut down when the test ends.
  local vm = provium:vm("scratch", "minimal"):boot()
  t:assert_eq(vm:state(), "booted")
  t:assert_eq(vm:run("echo up").stdout, "up\n")
end)

test("slow: only with --include-slow", { slow = true, tags = { "slow-boot" }, timeout = "2m" }, function(t)
  -- Two guests side by side, each with its own memory size.
  local a = provium:vm("a", "minimal", { memory = "192M" }):boot()
  local b = provium:vm("b", "minimal", { memory = "320M" }):boot()
  local function mem_kib(vm)
    return tonumber(vm:run("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout)
  end
  t:assert(mem_kib(a) < mem_kib(b), "the 320M guest should see more memory than the 192M one")
end)
