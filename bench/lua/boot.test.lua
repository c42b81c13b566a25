-- Bench (issue 2): boot one `minimal` guest to agent-ready. bench.ts reads `boot_ns` of the
-- `vm_spawned` event (run with PROVIUM_BOOT_SNAPSHOTS=0 for a cold boot) and the duration of the
-- first command after the boot.
local vm = provium:vm("bench-boot", "minimal"):boot()

test("first-run", function(t)
  vm:run("true"):assert_ok()
end)
