-- A bridge's uplink: slirp in a guest-less QEMU behind the switch, no root. The guest gets a
-- default route and a nameserver; slirp answers pings at the gateway and relays TCP to the host
-- (here: the host refuses, and the refusal comes back); disable_uplink takes it all away.

local u1 = provium:vm("u1", "minimal", {memory = "128M"})
local up = provium:bridge("up")
up:attach(u1)
provium:boot()

test("enable_uplink gives a default route, a nameserver and the host at the gateway", function(t)
  t:assert_eq(up:uplink(), nil)
  up:enable_uplink()
  local uplink = up:uplink()
  local prefix = up:subnet():match("^(%d+%.%d+%.%d+%.)")
  t:assert_eq(uplink.gateway, prefix .. "1")
  t:assert_eq(uplink.dns, prefix .. "3")
  t:assert_contains(u1:run("ip route").stdout, "default via " .. uplink.gateway)
  t:assert_contains(u1:read_file("/etc/resolv.conf"), "nameserver " .. uplink.dns)
  u1:run("ping -c1 -W3 " .. uplink.gateway):assert_ok()
  -- Port 1 on the host's loopback: slirp connects for the guest, the host refuses, the guest
  -- sees the refusal (without the uplink there is no route at all).
  local r = u1:run("nc -w 3 " .. uplink.gateway .. " 1 </dev/null")
  t:assert(r.exit_code ~= 0)
  t:assert_contains(r.stderr, "refused")
  up:enable_uplink() -- again: nothing changes
  t:assert_eq(up:uplink().gateway, uplink.gateway)

  up:disable_uplink()
  t:assert_eq(up:uplink(), nil)
  t:assert(not u1:run("ip route").stdout:find("default", 1, true), "the default route is gone")
  t:assert(not u1:read_file("/etc/resolv.conf"):find(uplink.dns, 1, true), "the nameserver is gone")
  t:assert(u1:run("ping -c1 -W2 " .. uplink.gateway).exit_code ~= 0, "the gateway no longer answers")
  t:assert_eq(u1:nic("up"):ip(), prefix .. "2", "the first NIC still gets .2")
end)

test("a VM attached while the uplink is on is configured at once", function(t)
  up:enable_uplink()
  local u2 = provium:vm("u2", "minimal", {memory = "128M"})
  u2:boot()
  up:attach(u2)
  t:assert_eq(u2:nic("up"):ip(), up:subnet():match("^(%d+%.%d+%.%d+%.)") .. "4", ".3 is the DNS address: skipped")
  t:assert_contains(u2:run("ip route").stdout, "default via " .. up:uplink().gateway)
  u2:run("ping -c1 -W3 " .. up:uplink().gateway):assert_ok()
  up:disable_uplink()
end)
