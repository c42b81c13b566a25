-- A suite written for the legacy API (seed 002), unchanged: one VM for the file, booted at the
-- top, tests without `t`, global assertions, and a shutdown at the end of the file.

local vm = provium.create("minimal")
vm:boot({memory = "256M", cpus = 1})

test("kernel is up", function()
  local r = vm:exec("uname -s")
  assert(r.ok, "uname failed: " .. r.stderr.value)
  assert_eq("Linux", r.stdout:trim())
  assert(vm:exec("uname -r").stdout:contains("."))
end)

test("shell pipelines and exit codes", function()
  local r = vm:exec("printf 'b\\na\\nc\\n' | sort | head -n 2")
  assert_eq(0, r.exit_code)
  assert_eq("a\nb\n", r.stdout.value)
  local f = vm:exec("ls /definitely/missing")
  assert(not f.ok)
  assert(f.exit_code ~= 0)
  assert_contains(f.stderr.value, "No such file or directory")
end)

test("config files round-trip", function()
  local config = '{"service": "kacs", "workers": 4, "features": ["audit", "tokens"]}'
  vm:write_file("/etc/kacs.json", config)
  assert_eq(config, vm:read_file("/etc/kacs.json"))
  local parsed = vm:json("cat /etc/kacs.json")
  assert_eq("kacs", parsed.service)
  assert_eq(4, parsed.workers)
  assert_eq({"audit", "tokens"}, parsed.features)
end)

test("environment of exec", function()
  local r = vm:exec("echo $HOME:$PATH")
  assert(r.ok)
  assert(r.stdout:contains("/bin"), "PATH has /bin: " .. r.stdout.value)
end)

vm:shutdown()
