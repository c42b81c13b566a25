-- Boot options (seed 001): they merge from lab:vm and vm:boot, boot keys winning, and each one
-- is visible inside the guest. Boots may come from a boot snapshot; the options must hold either way.

local function meminfo_kib(vm)
  return tonumber(vm:read_file("/proc/meminfo"):match("MemTotal:%s+(%d+) kB"))
end

test("memory and cpus: lab:vm defaults, vm:boot wins", function(t)
  local vm = provium:vm("sized", "minimal", {memory = "128M", cpus = 1})
  vm:boot({memory = "192M", cpus = 2})
  local kib = meminfo_kib(vm)
  -- The kernel keeps some memory for itself: MemTotal is a little under the VM's size.
  t:assert(kib > 150 * 1024 and kib <= 192 * 1024, "MemTotal " .. kib .. " kB for a 192M guest")
  t:assert_eq(vm:run("nproc").stdout, "2\n")
end)

test("initial_time sets the guest clock at boot", function(t)
  local vm = provium:vm("past", "minimal", {memory = "128M"}):boot({initial_time = 1700000000})
  local now = vm:clock():get()
  t:assert(now >= 1700000000 and now < 1700000000 + 60, "guest clock " .. now .. " should start at 1700000000")
  t:assert_eq(vm:run("date -u +%Y-%m-%d").stdout, "2023-11-14\n")
end)

test("kernel_cmdline_append reaches the kernel", function(t)
  local vm = provium:vm("cmd", "minimal", {memory = "128M"}):boot({kernel_cmdline_append = "provium.spec=boot-opts"})
  t:assert_contains(vm:read_file("/proc/cmdline"), "provium.spec=boot-opts")
end)

test("guests booted alike do not share random state", function(t)
  local lab = provium:lab("twins")
  lab:vm("a", "minimal", {memory = "128M"})
  lab:vm("b", "minimal", {memory = "128M"})
  lab:boot()
  local read = function(vm) return vm:run("head -c 16 /dev/urandom | od -An -tx1").stdout end
  t:assert_neq(read(lab.a), read(lab.b))
end)

test("rng_seed is accepted as a number or a 64-bit string, and checked", function(t)
  local vm = provium:vm("seeded", "minimal", {memory = "128M", rng_seed = "0xdeadbeefcafef00d"}):boot()
  t:assert_eq(vm:run("head -c 8 /dev/urandom | wc -c").stdout:match("%d+"), "8")
  local bad = provium:vm("badseed", "minimal")
  t:assert_contains(t:assert_raises(function() bad:boot({rng_seed = "lots"}) end), "rng_seed")
  t:assert_contains(t:assert_raises(function() bad:boot({initial_time = -1 / 0}) end), "initial_time")
end)
