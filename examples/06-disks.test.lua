-- A disk that fails on demand: the guest sees the I/O error, and a power cut loses what was
-- never flushed.

local vm = provium:vm("db", "minimal", {memory = "128M", disks = {{id = "data", size = "16M"}}}):boot()
local data = vm:disk("data")

local function write(block, text, flags)
  return vm:run("printf '" .. text .. "' | dd of=/dev/vda bs=4k count=1 seek=" .. block .. " conv=sync" .. (flags or "") .. " oflag=direct 2>&1")
end

test("the guest and the test see one disk", function(t)
  write(0, "hello"):assert_ok()
  t:assert_eq(data:read_sectors(0, 1):sub(1, 5), "hello")
end)

test("a failing disk gives the guest EIO", function(t)
  data:fail_writes()
  local r = write(1, "lost")
  data:clear_policy()
  t:assert_contains(r.stdout, "Input/output error")
end)

test("a power cut keeps what was flushed", function(t)
  write(2, "flushed", ",fsync"):assert_ok()
  write(3, "volatile"):assert_ok()
  data:power_cut()
  vm:boot()
  t:assert_eq(data:read_sectors(16, 1):sub(1, 7), "flushed")
  t:assert_eq(data:read_sectors(24, 1):sub(1, 8), string.rep("\0", 8))
end)
