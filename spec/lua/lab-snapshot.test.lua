-- lab:snapshot and lab:restore: every running VM of a lab (with its disks), its bridges with their
-- NICs, partitions and impairments, restored concurrently; into the same lab or a fresh one.

-- A sub-lab: in a test body `provium` is the test's own scope, and a snapshot does not walk up.
local lab = provium:lab("pair")
local a = lab:vm("a", "minimal", {memory = "128M", disks = {{id = "data", size = "4M"}}})
local b = lab:vm("b", "minimal", {memory = "128M"})
local net = lab:bridge("net")
net:attach({a, b})
lab:boot()

local function err_of(f)
  local ok, e = pcall(f)
  assert(not ok, "expected an error")
  return tostring(e)
end

local function ping_ok(from, to)
  return from:run("ping -c1 -W1 " .. to).exit_code == 0
end

-- After a partition heals, the guest's neighbour entry may take a moment to resolve again.
local function reaches(from, to)
  wait_until(function() return ping_ok(from, to) end, {timeout = "10s", desc = from:name() .. " reaches " .. to})
  return true
end

test("a round trip gives back files, disks, NICs, partitions and impairments", function(t)
  a:write_file("/tmp/state", "a before")
  b:write_file("/tmp/state", "b before")
  a:disk("data"):write_sectors(0, string.rep("s", 512))
  net:partition(a, b)
  net:add_latency(40)
  t:assert(not ping_ok(a, "b"), "partitioned before the snapshot")
  local snap = lab:snapshot()
  t:assert_eq(type(snap:path()), "string")
  t:assert(snap:size() > 0, "the lab snapshot has bytes")
  t:assert_contains(tostring(snap), "lab_snapshot(")

  a:write_file("/tmp/state", "a after")
  b:write_file("/tmp/state", "b after")
  a:disk("data"):write_sectors(0, string.rep("x", 512))
  net:unpartition(a, b)
  net:add_latency(0)
  t:assert(reaches(a, "b"), "healed after the snapshot")

  lab:restore(snap)
  t:assert_eq(a:state(), "booted")
  t:assert_eq(a:read_file("/tmp/state"), "a before")
  t:assert_eq(b:read_file("/tmp/state"), "b before")
  t:assert_eq(a:disk("data"):read_sectors(0, 1), string.rep("s", 512))
  t:assert(not ping_ok(a, "b"), "the partition is back")
  t:assert_eq(net:latency_ms(), 40)
  net:unpartition(a, b)
  net:add_latency(0)
  t:assert(reaches(a, "b"), "the NICs work after the restore")
  t:assert(reaches(b, a:nic("net"):ip()), "both ways, by address")
  snap:delete()
  t:assert_eq(snap:size(), 0)
end)

test("a snapshot restores into a fresh lab, which gets its VMs, disks and bridge", function(t)
  local snap = lab:snapshot()
  local copy = provium:lab("copy")
  copy:restore(snap)
  local names = copy:vm_names()
  table.sort(names)
  t:assert_eq(table.concat(names, ","), "a,b")
  t:assert_eq(copy:bridge_names()[1], "net")
  local ca, cb = copy:vm("a"), copy:vm("b")
  t:assert_eq(ca:read_file("/tmp/state"), "a before")
  t:assert_eq(ca:disk("data"):read_sectors(0, 1), string.rep("s", 512))
  -- The guest reads its own new disk, not the original VM's.
  ca:disk("data"):write_sectors(1, string.rep("c", 512))
  t:assert_eq(ca:run("dd if=/dev/vda bs=512 skip=1 count=1 iflag=direct 2>/dev/null | head -c 4").stdout, "cccc")
  t:assert_eq(a:run("dd if=/dev/vda bs=512 skip=1 count=1 iflag=direct 2>/dev/null | head -c 4").stdout, "\0\0\0\0")
  t:assert_eq(ca:nic("net"):ip(), a:nic("net"):ip(), "the guest keeps its address")
  t:assert(reaches(ca, cb:nic("net"):ip()), "the copies reach each other on their own bridge")
  copy:shutdown()
  snap:delete()
end)

test("lab:snapshot(dir) writes there and returns the directory", function(t)
  -- Kept directories stay: this one goes inside a transient snapshot's directory, removed with it.
  local holder = provium:lab("holder"):snapshot()
  local dir = holder:path() .. "/kept"
  local empty = provium:lab("empty")
  t:assert_eq(empty:snapshot(dir), dir)
  empty:restore(dir)
  t:assert_eq(#empty:vm_names(), 0)
  holder:delete()
  t:assert_contains(err_of(function() provium:lab("gone"):restore("/nonexistent-provium-dir") end), "cannot restore the lab from /nonexistent-provium-dir")
end)

test("bad directories are refused with the reason", function(t)
  local busy = os.getenv("TMPDIR") or "/tmp"
  t:assert_contains(err_of(function() lab:snapshot(busy) end), "is not empty and holds no lab.json")
  t:assert_contains(err_of(function() lab:restore(busy) end), "was it written by lab:snapshot?")
end)
