-- Guests that die or never come up: the test that meets it fails with the reason, the VM is
-- marked dead, and everything else keeps going.

local survivor = provium:vm("survivor", "minimal"):boot()

test("a guest whose kernel crashes mid-test is marked dead with the reason", function(t)
  local doomed = provium:vm("doomed", "minimal", {memory = "128M"}):boot()
  doomed:write_file("/tmp/alive", "yes")
  -- sysrq-c panics the kernel; panic=-1 reboots and -no-reboot turns that into a QEMU exit.
  local err = t:assert_raises(function() doomed:run("echo c > /proc/sysrq-trigger") end)
  t:assert_contains(err, "vm `doomed`")
  wait_until(function() return doomed:state() == "dead" end, {timeout = "10s", desc = "doomed marked dead"})
  local after = t:assert_raises(function() doomed:read_file("/tmp/alive") end)
  t:assert_contains(after, "vm `doomed` is dead")
  t:assert_contains(after, "kernel panic: Kernel panic - not syncing: sysrq triggered crash")
  -- The other guest of the file is untouched.
  t:assert_eq(survivor:run("echo still here").stdout, "still here\n")
end)

test("a dead VM can be shut down, and the next test still runs", function(t)
  t:assert_eq(survivor:state(), "booted")
  t:assert_eq(survivor:run("true").exit_code, 0)
end)

test("a boot whose init is missing fails with the console tail", function(t)
  local broken = provium:vm("broken", "minimal", {memory = "128M"})
  local err = t:assert_raises(function()
    broken:boot({kernel_cmdline_append = "rdinit=/no/such/init"})
  end)
  t:assert_contains(err, "vm `broken` (profile minimal) failed to boot")
  t:assert_contains(err, "--- console (last 4K) ---")
  t:assert_contains(err, "Kernel panic")
  t:assert_eq(broken:state(), "created")
end)

test("an agent that does not answer in time fails the boot, naming agent_timeout", function(t)
  local slow = provium:vm("slow", "minimal", {memory = "128M"})
  -- Files force a cold boot (no boot snapshot), which cannot reach the agent in 50 ms.
  local err = t:assert_raises(function()
    slow:boot({agent_timeout = 0.05, files = {{path = "/etc/marker", content = "x"}}})
  end)
  t:assert_contains(err, "the agent did not answer within 50ms (agent_timeout)")
  t:assert_contains(err, "--- console (last 4K) ---")
end)
