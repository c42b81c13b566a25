-- Layer 0 never stalls the agent (issue 15 part 2): a syscall that blocks runs on a thread of
-- its own in the guest, bounded by its timeout, while the agent keeps serving; syscall_async
-- keeps one in flight while the test does other work.

local vm = provium:vm("l0", "minimal", {memory = "128M"}):boot()

-- pipe2(fds, 0) → read end, write end
local function pipe(target)
  local r = target:syscall(293, {args = {0, 0}, bufs = {string.rep("\0", 8)}, ptrs = {0}})
  local rfd, wfd = string.unpack("<i4<i4", r.out_bufs[1])
  return rfd, wfd
end

test("a read on an empty pipe blocks only itself and ends at its timeout with ETIMEDOUT", function(t)
  local rfd = pipe(vm)
  local started = os.time()
  local err = t:assert_raises(function()
    vm:syscall(0, {args = {rfd, 0, 16}, bufs = {string.rep("\0", 16)}, ptrs = {1}, timeout = "1s"})
  end)
  t:assert_contains(err, "syscall did not return within 1000 ms (timeout_ms); it was interrupted")
  t:assert(os.time() - started <= 4, "took " .. (os.time() - started) .. " s")
  t:assert_eq(vm:run("echo serving"):assert_ok().stdout, "serving\n")
end)

test("pause() with a timeout is interrupted; the agent answered meanwhile", function(t)
  local h = vm:syscall_async(34, {timeout = "2s"})
  -- While pause() blocks in the guest, every other call goes through.
  t:assert_eq(vm:run("echo meanwhile").stdout, "meanwhile\n")
  t:assert_eq(vm:stat("/").entry_type, "directory")
  local err = t:assert_raises(function() h:await() end)
  t:assert_contains(err, "syscall did not return within 2000 ms")
end)

test("syscall_async(read) completes once another call writes the pipe; await(timeout) says when it has not", function(t)
  local rfd, wfd = pipe(vm)
  local h = vm:syscall_async(0, {args = {rfd, 0, 16}, bufs = {string.rep("\0", 16)}, ptrs = {1}})
  local early = t:assert_raises(function() h:await("200ms") end)
  t:assert_contains(early, "did not return within 0.2s; it is still in flight")
  t:assert_eq(vm:syscall(1, {args = {wfd, 0, 5}, bufs = {"hello"}, ptrs = {1}}).ret, 5)
  local r = h:await("10s")
  t:assert_eq(r.ret, 5)
  t:assert_eq(r.out_bufs[1]:sub(1, 5), "hello")
  -- Awaited again: the same table.
  t:assert_eq(h:await().ret, 5)
end)

test("a worker's syscall_async runs in the worker process", function(t)
  local w = vm:spawn_worker()
  local h = w:syscall_async(39)
  t:assert_eq(h:await("10s").ret, w:pid())
  w:close()
end)

test("per-thread calls stay on the agent's thread: gettid is the agent's pid, setuid in a worker sticks", function(t)
  t:assert_eq(vm:syscall(186).ret, vm:syscall(39).ret)
  local w = vm:spawn_worker()
  t:assert_eq(w:syscall(105, 1000).ret, 0)
  t:assert_eq(w:run("id -u").stdout, "1000\n")
  w:close()
end)
