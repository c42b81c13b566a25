-- Floods stay cheap (issue 15 part 4): a command's output past 16 MiB is drained at streaming
-- speed and dropped (stdout_truncated), and a stream nobody reads holds its writer back by
-- credit instead of buffering. The 1 GiB figure and the host's memory are in `bench --only faults`.

local vm = provium:vm("flood", "minimal", {memory = "128M"}):boot()

test("256 MiB on stdout: the first 16 MiB kept, stdout_truncated, at streaming speed", function(t)
  local started = os.clock()
  local wall = os.time()
  local r = vm:run("dd if=/dev/zero bs=1M count=256 2>/dev/null")
  r:assert_ok()
  t:assert_eq(#r.stdout, 16 * 1024 * 1024)
  t:assert_eq(r.stdout_truncated, true)
  t:assert_eq(r.stderr_truncated, false)
  -- Well under the ~6 MiB/s of a capture that slowed down past its cap (45 s for 256 MiB).
  t:assert(os.time() - wall <= 20, "256 MiB took " .. (os.time() - wall) .. " s")
  t:log(string.format("256 MiB in %d s (Lua CPU %.1f s)", os.time() - wall, os.clock() - started))
end)

test("a process writing forever to a stream nobody reads is held back by credit", function(t)
  local p = vm:run_async("yes")
  local s = p:stdout_stream()
  vm:run("sleep 3")
  -- What `yes` managed to write: the 1 MiB credit window, the pipe, the agent's own buffer.
  local io = vm:read_file("/proc/" .. p:pid() .. "/io")
  local wchar = tonumber(io:match("wchar: (%d+)"))
  t:assert(wchar < 4 * 1024 * 1024, "an unread stream let its writer write " .. wchar .. " bytes")
  -- Reading takes it up again.
  local got = s:next("5s")
  t:assert(got ~= nil and #got > 0, "the stream gives data once read")
  s:close()
  p:kill("kill")
end)
