-- reset_between_tests with two VMs on a bridge: each test starts from the saved pair, and their
-- NICs come back on the file's bridge, from the warm pool too (its spares' NICs wait parked
-- until a test takes them).

provium.reset_between_tests = true
local a = provium:vm("a", "minimal", {memory = "128M"})
local b = provium:vm("b", "minimal", {memory = "128M"})
local net = provium:bridge("net")
net:attach({a, b})
provium:boot()
local reaches = require("lua.lib.net").reaches

for i = 1, 3 do
  test("test " .. i .. " starts from the saved pair, on the bridge", function(t)
    t:assert(not a:run("test -e /tmp/dirty"):ok(), "an earlier test's file is gone")
    a:write_file("/tmp/dirty", tostring(i))
    reaches(a, "b")
    reaches(b, "a")
    t:assert(a:nic("net"):counters().tx_packets > 0, "the bridge counts a's frames")
  end)
end
