-- Bench (network): two guests on a bridge (the broker's userspace switch). bench.ts runs this file
-- with --json and parses what the tests print (the guests' own measurements, read back from each
-- test's log) with the same parsers as its floor: the same commands on two plain QEMUs joined by
-- a direct `-netdev stream` link. The commands and names below are bench.ts's kNet* constants:
-- keep them in step.
local a = provium:vm("a", "minimal")
local b = provium:vm("b", "minimal")
local net = provium:bridge("net")
net:attach({a, b})
provium:boot()

local PORT = 9000

test("ping", function(t)
  -- Warm-up: ARP, and the TCG translation cache of a restored guest.
  a:run("ping -c 2 -i 0.2 -W 2 b"):assert_ok()
  local r = a:run("ping -c 20 -i 0.05 -W 2 b")
  r:assert_ok()
  print(r.stdout)
end)

test("xfer-32MiB", function(t)
  -- The receiver times the transfer on its own clock, from the first byte to EOF.
  local server = b:run_async("nc -l -p " .. PORT .. " | { dd bs=1 count=1 of=/dev/null 2>/dev/null; cut -d' ' -f1 /proc/uptime; wc -c; cut -d' ' -f1 /proc/uptime; }")
  wait_until(function() return b:run("netstat -ltn | grep -q ':" .. PORT .. " '").exit_code == 0 end, {timeout = 10, desc = "nc listening"})
  a:run("dd if=/dev/zero bs=65536 count=512 2>/dev/null | nc b " .. PORT):assert_ok()
  local s = server:wait("60s")
  s:assert_ok()
  print(s.stdout)
end)
