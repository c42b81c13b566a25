-- provium.reset_between_tests with a disk: every test starts from the disk as the top level left
-- it, whatever the test before it wrote.

provium.reset_between_tests = true
local vm = provium:vm("rd", "minimal", {memory = "128M", disks = {{id = "data", size = "8M"}}}):boot()
local dev = require("lua.lib.blocks").on(vm)
dev.write(1, "top level", ",fsync"):assert_ok()

for i = 1, 3 do
  test("test " .. i .. " starts from the top level's disk", function(t)
    t:assert_eq(dev.text(1):sub(1, 9), "top level")
    t:assert_eq(vm:disk("data"):read_sectors(8, 1):sub(1, 9), "top level")
    t:assert_eq(vm:disk("data"):device(), "/dev/vda")
    dev.write(1, "test " .. i, ",fsync"):assert_ok()
    t:assert_eq(vm:disk("data"):read_sectors(8, 1):sub(1, 6), "test " .. i)
  end)
end
