-- Every restore is a clean clone: rng_seed makes virtio-rng's bytes reproducible, clones without a
-- seed differ, and a VM restored from a snapshot has its boot log on the console.

local function hwrng(name, seed)
  local opts = {memory = "128M"}
  if seed then opts.rng_seed = seed end
  local vm = provium:vm(name, "minimal", opts):boot()
  local out = vm:run("dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'"):assert_ok().stdout
  vm:shutdown()
  return out
end

test("rng_seed: the same seed reads the same bytes, another seed and no seed differ", function(t)
  local a, b = hwrng("a", 0xdeadbeef), hwrng("b", 0xdeadbeef)
  t:assert_eq(#a, 64)
  t:assert_eq(a, b, "two VMs with rng_seed 0xdeadbeef")
  t:assert(hwrng("c", 0xdeadbeef + 1) ~= a, "another seed gives other bytes")
  local x, y = hwrng("x"), hwrng("y")
  t:assert(x ~= y and x ~= a, "clones without a seed read their own bytes")
end)

test("rng_seed holds for VMs booting at the same time", function(t)
  local vms = {}
  for i = 1, 2 do vms[i] = provium:vm("p" .. i, "minimal", {memory = "128M", rng_seed = 42}) end
  provium:boot()
  local cmd = "dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'"
  t:assert_eq(vms[1]:run(cmd).stdout, vms[2]:run(cmd).stdout)
end)

test("a VM from a snapshot has its boot log on the console", function(t)
  -- A kernel line that logs its banner; the first VM saves the boot snapshot, the second restores it.
  local opts = {memory = "128M", kernel_cmdline_append = "loglevel=7"}
  local first = provium:vm("first", "minimal", opts):boot()
  t:assert_eq(first:console():expect("Linux version", "1s"), "Linux version")
  first:shutdown()
  local vm = provium:vm("logged", "minimal", opts):boot()
  t:assert_eq(vm:console():expect("Linux version", "1s"), "Linux version")
  t:assert_eq(vm:console():expect("provium-agent: ready", "1s"), "provium-agent: ready")
  vm:run("echo marker-before-snapshot > /dev/console"):assert_ok()
  local snap = vm:snapshot()
  vm:shutdown()
  vm:restore(snap)
  local log = vm:console():read_log()
  t:assert_contains(log, "Linux version")
  t:assert_contains(log, "marker-before-snapshot")
  vm:run("echo marker-after-restore > /dev/console"):assert_ok()
  t:assert_eq(vm:console():expect("marker-after-restore", "5s"), "marker-after-restore")
  snap:delete()
end)
