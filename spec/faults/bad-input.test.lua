-- Bad input to every call is a named error, never a hang or a crash of the run (issue 15
-- part 7): NUL bytes, NaN, negative and huge numbers, wrong types; the sandbox; a barrier that
-- can never fill. Each call must raise, and the VM must still answer afterwards.

local vm = provium:vm("bad", "minimal", {memory = "128M"}):boot()
local nan, huge = 0 / 0, 2 ^ 60

local function each_raises(t, cases)
  for name, fn in pairs(cases) do
    local ok, err = pcall(fn)
    t:assert(not ok, name .. " did not raise")
    t:assert(type(err) == "string" and #err > 0, name .. " raised a non-message: " .. tostring(err))
  end
end

test("vm:run options", {timeout = "60s"}, function(t)
  each_raises(t, {
    ["NUL in the command"] = function() vm:run("echo a\0b") end,
    ["NUL in an argument"] = function() vm:run("echo", {args = {"a\0b"}}) end,
    ["NUL in an env value"] = function() vm:run("true", {env = {X = "a\0b"}}) end,
    ["NaN timeout"] = function() vm:run("true", {timeout = nan}) end,
    ["negative timeout"] = function() vm:run("true", {timeout = -1}) end,
    ["timeout as a table"] = function() vm:run("true", {timeout = {}}) end,
    ["cwd as a number"] = function() vm:run("true", {cwd = 5}) end,
    ["missing cwd"] = function() vm:run("true", {cwd = "/no/such/dir"}) end,
    ["stdin as a table"] = function() vm:run("cat", {stdin = {}}) end,
    ["env as a string"] = function() vm:run("true", {env = "X=1"}) end,
    ["unknown option"] = function() vm:run("true", {timeot = 5}) end,
    ["command as a number"] = function() vm:run(42) end,
    ["no command"] = function() vm:run() end,
  })
  t:assert_eq(vm:run("echo fine").stdout, "fine\n")
end)

test("file, process and clock calls", {timeout = "60s"}, function(t)
  each_raises(t, {
    ["NUL in a path"] = function() vm:read_file("/tmp/a\0b") end,
    ["path as a table"] = function() vm:write_file({}, "x") end,
    ["data as a function"] = function() vm:write_file("/tmp/x", print) end,
    ["negative perm"] = function() vm:mkdir("/tmp/d", {perm = -1}) end,
    ["huge perm"] = function() vm:mkdir("/tmp/d", {perm = huge}) end,
    ["open_file without a mode"] = function() vm:open_file("/tmp/x", {}) end,
    ["open_file unknown key"] = function() vm:open_file("/tmp/x", {reed = true}) end,
    ["seek NaN"] = function() local f = vm:open_file("/tmp/x", {read = true, write = true, create = true}); f:seek(nan, "set") end,
    ["seek bad whence"] = function() local f = vm:open_file("/tmp/x", {read = true}); f:seek(0, "middle") end,
    ["read negative"] = function() local f = vm:open_file("/tmp/x", {read = true}); f:read(-5) end,
    ["wait NaN"] = function() vm:run_async("sleep 1"):wait(nan) end,
    ["wait 0"] = function() vm:run_async("sleep 1"):wait(0) end,
    ["kill unknown signal"] = function() vm:run_async("sleep 1"):kill("nosuch") end,
    ["kill huge signal"] = function() vm:run_async("sleep 1"):kill(1000) end,
    ["clock:set NaN"] = function() vm:clock():set(nan) end,
    ["clock:advance as a string"] = function() vm:clock():advance("soon") end,
    ["clock:sleep negative"] = function() vm:clock():sleep(-1) end,
    ["syscall with 7 args"] = function() vm:syscall(39, 1, 2, 3, 4, 5, 6, 7) end,
    ["syscall NaN"] = function() vm:syscall(nan) end,
    ["syscall_async bad slot"] = function() vm:syscall_async(0, {args = {0}, bufs = {"x"}, ptrs = {9}}) end,
  })
  t:assert_eq(vm:run("echo fine").stdout, "fine\n")
end)

test("the sandbox names what is refused", function(t)
  t:assert_contains(t:assert_raises(function() os.exit(1) end), "os.exit is not available in a test file")
  t:assert_contains(t:assert_raises(function() os.execute("true") end), "os.execute is not available")
  t:assert_contains(t:assert_raises(function() io.open("/etc/passwd") end), "io.open is not available")
end)

test("a barrier that can never fill fails with a message instead of hanging", {timeout = "30s"}, function(t)
  local err = t:assert_raises(function() provium:barrier("faults-never-fills", 50, "5s") end)
  t:assert_contains(err, "faults-never-fills")
end)
