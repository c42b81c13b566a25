-- Bench (issues 2 and 3): per-call costs through the whole stack (Lua -> RPC -> broker -> agent).
-- There is no wall clock in the sandbox: bench.ts reads each test's `duration_ns` from the event
-- stream and subtracts the duration of "empty" from the same run. Each figure has a tag, so the
-- bench runs one figure per provium run (`--tag run`, `--tag stat`, ...) interleaved with its
-- floor. Test names and tags are read by bench.ts: keep them in step.
local vm = provium:vm("bench-calls", "minimal"):boot()

local N = 200
local FILE_ROUNDS = 100
local BATCHES = 5
local STREAM_BYTES = 32 * 1024 * 1024
local data4k = string.rep("x", 4096)
local all = {"run", "stat", "files", "batch", "stream", "workers"}

-- Workers for the concurrency test, spawned before anything is timed.
local workers = {}
for i = 1, 4 do workers[i] = vm:spawn_worker() end

test("warmup", {tags = all}, function(t)
  -- A restored guest has a cold TCG translation cache: warm up the paths measured below.
  for i = 1, 20 do vm:run("true"); vm:stat("/") end
  vm:write_file("/tmp/bench-f", data4k)
  vm:read_file("/tmp/bench-f")
  vm:batch(function(b) b:stat("/") end)
end)

test("empty", {tags = all}, function(t) end)

test("run-true-x200", {tags = {"run"}}, function(t)
  for i = 1, N do vm:run("true") end
end)

test("stat-x200", {tags = {"stat"}}, function(t)
  for i = 1, N do vm:stat("/") end
end)

-- vm:state() is one broker RPC that never reaches the agent: the cost of the RPC alone.
test("state-x200", {tags = {"stat"}}, function(t)
  for i = 1, N do vm:state() end
end)

test("files-4k-x100", {tags = {"files"}}, function(t)
  local back
  for i = 1, FILE_ROUNDS do
    vm:write_file("/tmp/bench-f", data4k)
    back = vm:read_file("/tmp/bench-f")
  end
  t:assert_eq(#back, 4096)
end)

test("stat-batch-5x200", {tags = {"batch"}}, function(t)
  local results
  for i = 1, BATCHES do
    results = vm:batch(function(b)
      for j = 1, N do b:stat("/") end
    end)
  end
  t:assert_eq(#results, N)
  t:assert(results[N].ok ~= nil, "stat in batch failed")
end)

test("stream-32MiB", {tags = {"stream"}}, function(t)
  local p = vm:run_async("exec dd if=/dev/zero bs=65536 count=512 2>/dev/null")
  local s = p:stdout_stream()
  local n = 0
  while true do
    local chunk = s:next("10s")
    if chunk then
      n = n + #chunk
    elseif s:eof() then
      break
    end
  end
  p:wait("30s"):assert_ok()
  t:assert_eq(n, STREAM_BYTES)
end)

test("workers-4x-sleep1", {tags = {"workers"}}, function(t)
  local procs = {}
  for i = 1, 4 do procs[i] = workers[i]:run_async("sleep 1") end
  for i = 1, 4 do procs[i]:wait("30s"):assert_ok() end
end)
