-- Two guests on a bridge: names and addresses come without set-up, and the test breaks the
-- network the way production does (a partition, a lossy link) without root on the host.

local a = provium:vm("a", "minimal", {memory = "128M"})
local b = provium:vm("b", "minimal", {memory = "128M"})
local net = provium:bridge("net")
net:attach({a, b})
provium:boot()

local function reaches(from, to)
  return from:run("ping -c1 -W1 " .. to).exit_code == 0
end

test("the guests reach each other by name", function(t)
  t:assert(reaches(a, "b"))
  t:log("b is " .. b:nic("net"):ip())
end)

test("a partition cuts them apart, and healing joins them again", function(t)
  net:partition(a, b)
  t:assert(not reaches(a, "b"))
  net:unpartition(a, b)
  t:assert(reaches(a, "b"))
end)

test("a slow link shows in the round trip", function(t)
  net:add_latency(100)
  local rtt = tonumber(a:run("ping -c1 -W2 b").stdout:match("time=([%d%.]+) ms"))
  net:reset()
  t:assert(rtt >= 200, "rtt " .. rtt .. " ms with 100 ms each way")
end)
