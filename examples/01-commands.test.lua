-- Running commands in a guest. One `minimal` VM (Debian's cloud kernel + busybox) is booted for
-- the whole file; every test drives it through the agent.
--
--   provium examples/01-commands.test.lua

local vm = provium:vm("guest", "minimal"):boot()

test("a shell command runs and its output comes back", function(t)
  local r = vm:run("echo hello from the guest")
  r:assert_ok()
  t:assert_eq(r.stdout, "hello from the guest\n")
  t:assert_eq(r.stderr, "")
end)

test("exit codes and stderr are reported", function(t)
  local r = vm:run("echo oops >&2; exit 3")
  t:assert_eq(r.exit_code, 3)
  t:assert_eq(r.status, "exited")
  t:assert_eq(r.stderr, "oops\n")
  t:assert(not r:ok(), "a non-zero exit must not be ok")
end)

test("direct exec passes arguments without a shell", { tags = { "exec" } }, function(t)
  local r = vm:run("echo", { args = { "a  b", "$HOME", "*" } })
  r:assert_ok()
  t:assert_eq(r.stdout, "a  b $HOME *\n")
end)

test("environment, working directory and stdin", { tags = { "exec" } }, function(t)
  local r = vm:run("pwd; echo \"$GREETING\"; cat", {
    env = { GREETING = "hi there" },
    cwd = "/tmp",
    stdin = "from stdin\n",
  })
  r:assert_ok()
  t:assert_eq(r.stdout, "/tmp\nhi there\nfrom stdin\n")
end)

test("a command that runs too long is killed at its timeout", function(t)
  local r = vm:run("sleep 30", { timeout = "500ms" })
  t:assert(r.timed_out, "expected the command to time out")
  t:assert_eq(r.status, "timed_out")
end)

test("the guest is a real Linux kernel", function(t)
  local r = vm:run("uname -s; cat /proc/1/comm")
  r:assert_ok()
  t:assert_contains(r.stdout, "Linux\n")
  t:log("pid 1 is " .. r.stdout:match("\n(.-)\n$"))
end)
