-- A VM's life: created, booted, shut down, booted again with new options. `wait_until` polls the
-- guest until something becomes true.

provium.timeout = "90s"

local vm = provium:vm("life", "minimal")

test("a declared VM starts in `created`", function(t)
  t:assert_eq(vm:state(), "created")
  t:assert_eq(vm:name(), "life")
  t:assert_eq(vm:profile(), "minimal")
end)

test("boot returns the VM (calls chain) and it answers", function(t)
  t:assert_eq(vm:boot():name(), "life")
  t:assert_eq(vm:state(), "booted")
  t:assert_eq(vm:run("echo ready").stdout, "ready\n")
end)

test("wait_until polls until a background job is done", function(t)
  -- Written aside and renamed: the file never exists half-written, so the poll sees all or nothing.
  vm:run("(sleep 1; echo done > /tmp/flag.part; mv /tmp/flag.part /tmp/flag) >/dev/null 2>&1 &")
  local content = wait_until(function()
    local r = vm:run("cat /tmp/flag 2>/dev/null")
    return r:ok() and r.stdout
  end, { timeout = "10s", interval = 0.2, desc = "/tmp/flag written" })
  t:assert_eq(content, "done\n")
end)

test("shutdown, then boot again with a kernel argument", function(t)
  vm:shutdown()
  t:assert_eq(vm:state(), "shutdown")
  vm:boot({ kernel_cmdline_append = "provium.example=42" })
  t:assert_contains(vm:run("cat /proc/cmdline").stdout, "provium.example=42")
end)
