-- Reachability checks for the network specs.
local net = {}

-- One ping from `from` to `to` (a name or an address), waiting `wait` seconds (default 1) for the reply.
function net.ping_ok(from, to, wait)
  return from:run("ping -c1 -W" .. (wait or 1) .. " " .. to).exit_code == 0
end

-- Waits until `from` reaches `to`: after a partition heals or a restore, the guest's neighbour
-- entry may take a moment to resolve again.
function net.reaches(from, to)
  wait_until(function() return net.ping_ok(from, to) end, {timeout = "10s", desc = from:name() .. " reaches " .. to})
  return true
end

return net
