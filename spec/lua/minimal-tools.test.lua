-- The small commands the seed pages' examples use, on the busybox `minimal` image (issue 11):
-- printenv, pgrep/pkill and ss are sh scripts where Debian's busybox-static has no applet.

local vm = provium:vm("m", "minimal"):boot()

test("printenv prints a variable, and fails for an unset one", function(t)
  t:assert_eq(vm:run("printenv FOO", {env = {FOO = "bar"}}).stdout, "bar\n")
  local r = vm:run("printenv NOT_SET_ANYWHERE")
  t:assert_eq(r.exit_code, 1)
  t:assert_eq(r.stdout, "")
  t:assert(vm:run("printenv", {env = {A1 = "x y"}}).stdout:find("A1=x y\n", 1, true))
end)

test("pgrep finds a process by name and command line; pkill signals it", function(t)
  local proc = vm:run_async("sleep", {args = {"300"}})
  local pid = tostring(proc:pid())
  t:assert(vm:run("pgrep sleep").stdout:find(pid, 1, true))
  t:assert(vm:run("pgrep -f 'sleep 300'").stdout:find(pid, 1, true))
  t:assert_eq(vm:run("pgrep -x no-such-process").exit_code, 1)
  vm:run("pkill -KILL -x sleep"):assert_ok()
  local r = proc:wait("5s")
  t:assert_eq(r.signal, 9)
end)

test("ss -ltn lists a listening TCP port", function(t)
  local proc = vm:run_async("nc", {args = {"-l", "-p", "8123"}})
  wait_until(function()
    return vm:run("ss -ltn | grep -q :8123"):ok()
  end, {timeout = "5s", desc = "nc listening on :8123"})
  proc:kill("kill")
  proc:wait("5s")
end)
