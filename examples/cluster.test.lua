-- A three-node etcd cluster (Debian's etcd-server and etcd-client, profile `etcd`) on one bridge.
-- A write is read on every node; a partition cuts one node off: the majority still takes writes,
-- the cut-off node refuses them; the partition heals and the lagging node catches up.

local names = {"n1", "n2", "n3"}
local nodes = {}
for _, name in ipairs(names) do nodes[name] = provium:vm(name, "etcd") end
local net = provium:bridge("net")
net:attach({nodes.n1, nodes.n2, nodes.n3})
provium:boot()

local function etcdctl(vm, args, opts)
  -- Serializable reads answer from the node's own copy: what a cut-off node still knows.
  return vm:run("ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=3s " .. args, opts)
end

local function get_local(vm, key)
  return etcdctl(vm, "get --consistency=s --print-value-only " .. key).stdout
end

-- Longer heartbeats than etcd's defaults: three guests share two emulated cores.
local peers = {}
for _, name in ipairs(names) do peers[#peers + 1] = name .. "=http://" .. nodes[name]:nic("net"):ip() .. ":2380" end
for _, name in ipairs(names) do
  local ip = nodes[name]:nic("net"):ip()
  nodes[name]:run_async("etcd", {args = {
    "--name", name, "--data-dir", "/var/lib/etcd-test",
    "--listen-peer-urls", "http://" .. ip .. ":2380", "--initial-advertise-peer-urls", "http://" .. ip .. ":2380",
    "--listen-client-urls", "http://" .. ip .. ":2379,http://127.0.0.1:2379", "--advertise-client-urls", "http://" .. ip .. ":2379",
    "--initial-cluster", table.concat(peers, ","), "--initial-cluster-state", "new",
    "--heartbeat-interval", "300", "--election-timeout", "3000",
  }})
end
for _, name in ipairs(names) do
  wait_until(function() return etcdctl(nodes[name], "endpoint health"):ok() end,
    {timeout = "60s", desc = name .. " healthy"})
end

test("a write on one node is read on every node", function(t)
  etcdctl(nodes.n1, "put greeting hello"):assert_ok()
  for _, name in ipairs(names) do
    t:assert_eq(etcdctl(nodes[name], "get --print-value-only greeting").stdout, "hello\n", name)
  end
end)

test("a partition: the majority writes, the minority refuses, the healed node catches up", function(t)
  net:isolate(nodes.n3)
  -- The majority (n1, n2) still has a quorum.
  wait_until(function() return etcdctl(nodes.n1, "put during partition"):ok() end,
    {timeout = "30s", desc = "the majority accepts a write"})
  t:assert_eq(etcdctl(nodes.n2, "get --print-value-only during").stdout, "partition\n")
  -- n3 alone has no quorum. Once it knows it has no leader, its write is refused, not queued for
  -- a leader it still believes in (that one would commit after the heal).
  wait_until(function() return not etcdctl(nodes.n3, "endpoint health"):ok() end,
    {timeout = "30s", desc = "n3 notices it lost the quorum"})
  t:assert(not etcdctl(nodes.n3, "put refused yes"):ok(), "the cut-off node accepted a write")
  t:assert_eq(get_local(nodes.n3, "during"), "")

  net:unisolate(nodes.n3)
  wait_until(function() return get_local(nodes.n3, "during") == "partition\n" end,
    {timeout = "30s", desc = "n3 catches up after the partition heals"})
  t:assert_eq(etcdctl(nodes.n1, "get --print-value-only refused").stdout, "")
end)
