-- Bench (network): boot from the boot snapshot of a VM with no NIC and of one with two NICs (two
-- bridges), each inside a test so that the test's duration is the whole vm:boot() (restore, agent
-- resync, and for `nics*` the hot-plugs, links, addresses and /etc/hosts). Two pairs per run, in
-- the order no NIC, NICs, NICs, no NIC, so drift within the run hits both alike; each VM is shut
-- down (untimed) before the next boots, since a restore slows down with every guest running
-- beside it. bench.ts reads the test durations and the `vm_spawned` events: keep names in step.
-- A first boot outside the figures pays the file's one-off costs.
local warm = provium:vm("warm", "minimal"):boot()
local plain1 = provium:vm("plain1", "minimal")
local nics1 = provium:vm("nics1", "minimal")
local nics2 = provium:vm("nics2", "minimal")
local plain2 = provium:vm("plain2", "minimal")
provium:bridge("n1"):attach({nics1, nics2})
provium:bridge("n2"):attach({nics1, nics2})

-- Untimed: the NICs are there and addressed, then the VM goes.
local function check_and_stop(vm, nics)
  if nics then
    for _, bridge in ipairs({"n1", "n2"}) do
      local nic = vm:nic(bridge)
      assert(nic:ifname() ~= nil, vm:name() .. " has no interface on " .. bridge)
      local out = vm:run("ip -o -4 addr show dev " .. nic:ifname()).stdout
      assert(out:find(nic:ip(), 1, true), vm:name() .. ": no address " .. nic:ip() .. " on " .. bridge)
    end
  end
  vm:shutdown()
end

test("boot-0nic-1", function(t) plain1:boot() end)
test("stop-0nic-1", function(t) check_and_stop(plain1, false) end)
test("boot-2nic-1", function(t) nics1:boot() end)
test("stop-2nic-1", function(t) check_and_stop(nics1, true) end)
test("boot-2nic-2", function(t) nics2:boot() end)
test("stop-2nic-2", function(t) check_and_stop(nics2, true) end)
test("boot-0nic-2", function(t) plain2:boot() end)
