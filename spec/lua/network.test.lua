-- Bridges on the broker's userspace switch: addresses and names without work, TCP across a
-- bridge, partitions (symmetric, directional, all), isolation, drops, latency, bandwidth, link
-- state, counters, and errors that name the bad value.

local n1 = provium:vm("n1", "minimal", {memory = "128M"})
local n2 = provium:vm("n2", "minimal", {memory = "128M"})
local net = provium:bridge("net")
net:attach({n1, n2})
provium:boot()

-- Packets received by `vm` on the NIC of `net`, as the guest counts them.
local function guest_rx(vm)
  local ifname = vm:nic("net"):ifname()
  return tonumber(vm:run("cat /sys/class/net/" .. ifname .. "/statistics/rx_packets").stdout)
end

local ping_ok = require("lua.lib.net").ping_ok

-- Loss percentage of `count` pings from `from` to `to` (busybox prints "N% packet loss").
local function loss_pct(from, to, count)
  local r = from:run("ping -q -c " .. count .. " -i 0.02 -W 1 " .. to)
  return tonumber(r.stdout:match("(%d+)%% packet loss"))
end

test("two VMs on one bridge get addresses and reach each other by name", function(t)
  t:assert_eq(net:subnet():match("^10%.%d+%.0%.0/24$") ~= nil, true, net:subnet())
  local nic = n2:nic("net")
  t:assert_eq(nic:vm_name(), "n2")
  t:assert_eq(nic:bridge():name(), "net")
  t:assert(nic:ip():match("^10%.%d+%.0%.%d+$"), nic:ip())
  t:assert(nic:mac():match("^52:54:00:"), nic:mac())
  t:assert_eq(n2:nic(nic:ifname()), nic)
  t:assert_eq(net:members()[1], "n1")
  t:assert_eq(#net:members(), 2)
  t:assert_contains(n1:read_file("/etc/hosts"), nic:ip() .. "\tn2")
  t:assert(ping_ok(n1, "n2"), "n1 pings n2")
  t:assert(ping_ok(n2, "n1"), "n2 pings n1")
end)

test("a snapshot of a VM with a NIC restores onto its bridge", function(t)
  local snap = n2:snapshot()
  n2:shutdown()
  t:assert(not ping_ok(n1, "n2"), "n2 is down")
  n2:restore(snap)
  t:assert(ping_ok(n1, "n2"), "n1 pings the restored n2")
  t:assert(ping_ok(n2, "n1"), "the restored n2 pings n1")
  snap:delete()
end)

test("TCP across the bridge (busybox nc)", function(t)
  local server = n2:run_async("nc -l -p 9000 > /tmp/got")
  wait_until(function() return n2:run("netstat -ltn | grep -q ':9000 '").exit_code == 0 end, {timeout = 10, desc = "nc listening"})
  n1:run("dd if=/dev/zero bs=1k count=256 2>/dev/null | nc -w 3 n2 9000"):assert_ok()
  server:wait("20s")
  t:assert_eq(n2:run("wc -c < /tmp/got").stdout, "262144\n")
end)

test("a symmetric partition stops traffic both ways, and heals", function(t)
  net:partition(n1, n2)
  t:assert(net:is_partitioned(n1, n2))
  t:assert(net:is_partitioned("n2", "n1"))
  t:assert(not ping_ok(n1, "n2"), "n1 -> n2 during the partition")
  t:assert(not ping_ok(n2, "n1"), "n2 -> n1 during the partition")
  net:unpartition(n1, n2)
  t:assert(not net:is_partitioned(n1, n2))
  t:assert(ping_ok(n1, "n2"), "n1 -> n2 after healing")
end)

test("a directional partition stops one way only", function(t)
  net:partition({from = n1, to = n2})
  t:assert(net:is_partitioned({from = n1, to = n2}))
  t:assert(not net:is_partitioned({from = n2, to = n1}))
  -- n2's pings still reach n1 (n1 counts them), but n1's replies never come back.
  local before = guest_rx(n1)
  t:assert(not ping_ok(n2, "n1"), "the reply n1 -> n2 is cut")
  t:assert(guest_rx(n1) > before, "n2 -> n1 still arrives")
  net:restore_all()
  t:assert(ping_ok(n2, "n1"))
  net:partition_all()
  t:assert(not ping_ok(n1, "n2"))
  net:restore_all()
  t:assert(ping_ok(n1, "n2"))
end)

test("isolate cuts one VM off, unisolate brings it back", function(t)
  net:isolate(n2)
  t:assert(net:is_isolated("n2"))
  t:assert(not ping_ok(n1, "n2"))
  net:unisolate(n2)
  t:assert(not net:is_isolated(n2))
  t:assert(ping_ok(n1, "n2"))
end)

test("drops: 100% stops traffic, 30% one way loses about 30% of pings", function(t)
  net:drop_rate(100)
  t:assert_eq(net:drop_rate_pct(), 100)
  t:assert(not ping_ok(n1, "n2"))
  net:reset()
  t:assert_eq(net:drop_rate_pct(), 0)
  net:directional_drop_rate({from = n1, to = n2, p = 30})
  local loss = loss_pct(n1, "n2", 200)
  t:assert(loss >= 15 and loss <= 45, "loss " .. loss .. "% for a 30% drop rate")
  net:reset()
end)

test("random drops replay: the same seed and the same traffic drop the same pings", function(t)
  -- Only the pings may cross n1 -> n2: no IPv6 chatter, and ARP resolved before the rule.
  for _, vm in ipairs({n1, n2}) do
    vm:run("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
  end
  -- Two bridges of the same name (in two labs) draw from the same stream of the run's seed, as
  -- two runs with the same --seed would.
  local function answered(lab_name, subnet)
    local lossy = provium:lab(lab_name):bridge("lossy", {subnet = subnet})
    lossy:attach({n1, n2})
    local target = n2:nic("lossy"):ip()
    t:assert(n1:run("ping -c1 -W2 " .. target).exit_code == 0, "warm-up ping on " .. lab_name)
    lossy:directional_drop_rate({from = n1, to = n2, p = 50})
    local r = n1:run("ping -c 30 -i 0.05 -W 1 " .. target)
    lossy:close()
    local seqs = {}
    for seq in r.stdout:gmatch("seq=(%d+)") do seqs[#seqs + 1] = seq end
    return seqs
  end
  local first = answered("r1", "10.201.0.0/24")
  local second = answered("r2", "10.202.0.0/24")
  t:assert(#first > 0 and #first < 30, "some of 30 pings were dropped, some answered: " .. #first)
  t:assert_eq(table.concat(second, ","), table.concat(first, ","))
end)

test("latency shows in the round trip, and combines with a bandwidth limit", function(t)
  net:add_latency(200)
  t:assert_eq(net:latency_ms(), 200)
  local r = n1:run("ping -c1 -W3 n2")
  r:assert_ok()
  local rtt = tonumber(r.stdout:match("time=([%d%.]+) ms"))
  t:assert(rtt >= 400, "rtt " .. rtt .. " ms with 200 ms each way")
  net:bandwidth_limit(2000000)
  t:assert_eq(net:bandwidth_bps(), 2000000)
  t:assert_eq(net:latency_ms(), 200)
  net:reset()
  t:assert_eq(net:latency_ms(), 0)
  t:assert_eq(net:bandwidth_bps(), 0)
end)

test("a bandwidth limit bounds a transfer's rate", function(t)
  -- 512 KiB at 2 Mbit/s takes about 2.1 s; without the limit it takes a fraction of that.
  net:bandwidth_limit(2000000)
  local server = n2:run_async("nc -l -p 9001 > /dev/null")
  wait_until(function() return n2:run("netstat -ltn | grep -q ':9001 '").exit_code == 0 end, {timeout = 10, desc = "nc listening"})
  -- The guest's own uptime (1/100 s) around the transfer: no harness time in the figure.
  local r = n1:run("cut -d' ' -f1 /proc/uptime; dd if=/dev/zero bs=1k count=512 2>/dev/null | nc -w 5 n2 9001; cut -d' ' -f1 /proc/uptime")
  r:assert_ok()
  server:wait("30s")
  net:reset()
  local s, e = r.stdout:match("([%d%.]+)\n([%d%.]+)")
  local ms = (tonumber(e) - tonumber(s)) * 1000
  t:assert(ms >= 0.8 * 512 * 1024 * 8 / 2000000 * 1000, "512 KiB took " .. ms .. " ms at 2 Mbit/s")
end)

test("link down is seen by the guest, and counters move", function(t)
  local nic = n1:nic("net")
  local before = nic:counters()
  t:assert(ping_ok(n1, "n2"))
  local after = nic:counters()
  t:assert(after.tx_packets > before.tx_packets, "tx_packets moved")
  t:assert(after.rx_bytes > before.rx_bytes, "rx_bytes moved")
  nic:disconnect()
  t:assert(not nic:is_link_up())
  local operstate = "/sys/class/net/" .. nic:ifname() .. "/operstate"
  wait_until(function() return n1:read_file(operstate) == "down\n" end, {timeout = 5, desc = "operstate down"})
  t:assert(not ping_ok(n1, "n2"))
  nic:reconnect()
  wait_until(function() return n1:read_file(operstate) == "up\n" end, {timeout = 5, desc = "operstate up"})
  -- The guest's link watcher settles within a second or so of the carrier coming back.
  wait_until(function() return ping_ok(n1, "n2") end, {timeout = 10, desc = "ping after reconnect"})
end)

-- Each pcap record (16-byte header, then the frame) of an ICMP echo: "request" or "reply" seen.
local function icmp_seen(pcap)
  local seen = {}
  local at = 25 -- after the 24-byte global header
  while at + 16 <= #pcap do
    local len = string.unpack("<I4", pcap, at + 8)
    local frame = pcap:sub(at + 16, at + 15 + len)
    if frame:sub(13, 14) == "\8\0" and frame:byte(24) == 1 then
      local kind = frame:byte(35)
      if kind == 8 then seen.request = true elseif kind == 0 then seen.reply = true end
    end
    at = at + 16 + len
  end
  return seen
end

test("a capture holds the ping, as pcap bytes and as a pcap file", function(t)
  -- Inside a transient snapshot's directory, which goes with it: nothing is left on the host.
  local holder = provium:lab("capture-holder"):snapshot()
  local path = holder:path() .. "/capture.pcap"
  local cap = net:capture({file = path})
  local nic_cap = n2:nic("net"):capture()
  t:assert(ping_ok(n1, "n2"))
  local bytes = table.concat(cap:drain(0.5))
  t:assert_eq(bytes:sub(1, 4), "\212\195\178\161", "pcap magic (little-endian 0xa1b2c3d4)")
  local seen = icmp_seen(bytes)
  t:assert(seen.request and seen.reply, "the bridge capture holds the echo request and reply")
  local nic_seen = icmp_seen(table.concat(nic_cap:drain(0.5)))
  t:assert(nic_seen.request and nic_seen.reply, "n2's capture holds both directions")
  cap:close()
  nic_cap:close()
  -- The file the switch wrote holds the same bytes (copied into a guest to read it back).
  n1:push_file(path, "/tmp/cap.pcap")
  t:assert_eq(n1:read_file("/tmp/cap.pcap"):sub(1, #bytes), bytes)
  t:assert_contains(t:assert_raises(function() net:capture({file = "/nonexistent/dir/x.pcap"}) end), "cannot write /nonexistent/dir/x.pcap")
  holder:delete()
end)

test("a bridge made in a test dies with it; a VM booted later on a bridge gets its NIC at boot", function(t)
  local side = provium:bridge("side", {subnet = "192.168.77.0/24"})
  t:assert_eq(side:subnet(), "192.168.77.0/24")
  t:assert_eq(provium:bridge("side"), side)
  local late = provium:vm("late", "minimal", {memory = "128M"})
  side:attach(late)
  side:attach({n1, n2})
  t:assert_eq(late:nic("side"):ifname(), nil)
  late:boot()
  t:assert_eq(late:nic("side"):ip(), "192.168.77.2")
  -- Three VMs on one bridge reach each other by name.
  t:assert(ping_ok(late, "n1"), "late pings n1 on the side bridge")
  t:assert(ping_ok(late, "n2"), "late pings n2 on the side bridge")
  t:assert(ping_ok(n2, "late"), "n2 pings late")
end)

test("bad arguments name the value and the accepted range", function(t)
  t:assert_contains(t:assert_raises(function() net:drop_rate(150) end), "percentage from 0 to 100, got 150")
  t:assert_contains(t:assert_raises(function() net:add_latency(-5) end), "from 0 to 600000 milliseconds, got -5")
  t:assert_contains(t:assert_raises(function() net:partition(n1, "ghost") end), "`ghost` is not attached to bridge `net` (members: n1, n2)")
  t:assert_contains(t:assert_raises(function() net:attach("ghost") end), "no vm named `ghost`")
  local stray = provium:vm("stray", "minimal")
  t:assert_contains(t:assert_raises(function() net:partition(n1, stray) end), "`stray` is not attached to bridge `net`")
  t:assert_contains(t:assert_raises(function() stray:nic("net") end), "has no NIC on a bridge or interface named `net`")
  t:assert_contains(t:assert_raises(function() provium:bridge("x", {subnet = "10.0.0.0/33"}) end), "prefix length 8 to 29")
  t:assert_contains(t:assert_raises(function() net:bandwidth_limit(-1) end), "at least 8 bits per second, got -1")
  t:assert_contains(t:assert_raises(function() net:add_directional_latency(100) end), "a directional rule is a table")
  t:assert_contains(t:assert_raises(function() net:route("other") end), "expected a bridge")
end)
