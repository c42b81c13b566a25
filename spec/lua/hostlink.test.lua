-- The host link trusts nothing: the agent is a guest program, and what a broken or hostile guest
-- does to the agent's channel fails the calls it touches, says what happened, and the VM and the
-- rest of the file go on.

local vm = provium:vm("link", "minimal"):boot({memory = "512M"})

-- 100 blocks of 1 MiB, each an 8-digit index and then filler: a lost, doubled or reordered chunk
-- changes the checksum. The guest builds the same bytes with its shell to check against.
local kBlocks = 100
local kFiller = 1048576 - 8
local function big_data()
  local filler = string.rep("x", kFiller)
  local parts = {}
  for i = 0, kBlocks - 1 do parts[#parts + 1] = string.format("%08d", i) .. filler end
  return table.concat(parts)
end
local kExpectedCmd = "i=0; while [ $i -lt " .. kBlocks .. " ]; do printf '%08d' $i; " ..
  "head -c " .. kFiller .. " /dev/zero | tr '\\000' x; i=$((i+1)); done | md5sum"

local function agent_port_fd()
  -- The agent is PID 1 (standalone mode); its port is the one /dev/vport* it holds.
  local listing = vm:run("ls -l /proc/1/fd"):assert_ok().stdout
  local fd = listing:match("(%d+) %-> /dev/vport%d+p%d+")
  assert(fd, "no vport among the agent's descriptors:\n" .. listing)
  return tonumber(fd)
end

test("a 100 MiB write_file arrives whole", {timeout = "240s"}, function(t)
  vm:write_file("/tmp/big", big_data())
  t:assert_eq(vm:stat("/tmp/big").size, kBlocks * 1048576)
  local want = vm:run(kExpectedCmd):assert_ok().stdout
  t:assert_eq(vm:run("md5sum < /tmp/big"):assert_ok().stdout, want)
  vm:unlink("/tmp/big")
end)

test("a worker that dies while serving a request fails it at once with its exit status", {timeout = "20s"}, function(t)
  local w = vm:spawn_worker()
  local started = os.time()
  -- The shell's parent is the worker: it dies in the middle of serving this exec.
  local err = t:assert_raises(function() w:run("kill -9 $PPID; sleep 30") end)
  t:assert_contains(err, "was killed by signal 9 while `exec` was in flight")
  t:assert(os.time() - started < 10, "the failure took " .. (os.time() - started) .. " s")
  t:assert_eq(vm:run("echo fine").stdout, "fine\n")
end)

test("a length prefix written into the agent's port from the guest fails only what was in flight", {timeout = "30s"}, function(t)
  local fd = agent_port_fd()
  -- write(fd, "\0\0\3\154abc", 7): a frame header claiming 922 bytes, then three bytes and
  -- silence. The agent's reply to this very call lands inside that frame.
  local err = t:assert_raises(function()
    vm:syscall(1, {args = {fd, 0, 7}, bufs = {"\0\0\3\154abc"}, ptrs = {1}})
  end)
  t:assert_contains(err, "stayed incomplete for over 5000 ms")
  t:assert_contains(err, "`syscall` was in flight")
  t:assert_eq(vm:run("echo after"):assert_ok().stdout, "after\n")
  t:assert_eq(vm:state(), "booted")
end)

test("closing the agent's own port inside the guest is diagnosed, and the link recovers", {timeout = "30s"}, function(t)
  local fd = agent_port_fd()
  local started = os.time()
  local err = t:assert_raises(function() vm:syscall(3, fd) end)
  t:assert_contains(err, "(fd " .. fd .. ") was closed inside the guest; the agent reopened it")
  t:assert(os.time() - started < 10, "the diagnosis took " .. (os.time() - started) .. " s")
  t:assert_eq(vm:run("echo reopened"):assert_ok().stdout, "reopened\n")
  -- The port is the agent's again, under a descriptor of its own.
  t:assert(agent_port_fd() ~= nil)
  t:assert_eq(vm:read_file("/proc/1/comm"), "provium-agent\n")
end)
