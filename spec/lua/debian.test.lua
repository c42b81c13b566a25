-- Debian profiles (issue 11): a root built from Debian's packages, read-only under a tmpfs
-- overlay, with the agent serving inside it; `init = "systemd"` boots systemd with the agent as a
-- unit. The profiles are in the project's provium.toml. The seed 000 examples run as written.

test("a Debian profile runs python3, curl and nginx from Debian's packages", function(t)
  local vm = provium:vm("web", "web"):boot()
  t:assert_eq(vm:run("python3 -c 'print(1 + 1)'"):assert_ok().stdout, "2\n")
  t:assert_eq(vm:run("sed -n 's/^VERSION_CODENAME=//p' /etc/os-release").stdout, "bookworm\n")
  -- "fixture installs curl", as the seed writes it.
  local r = vm:run("which curl")
  r:assert_ok()
  t:assert(r.stdout:find("/usr/bin/curl"))
  -- "Run a server, hit it, tear down", as the seed writes it.
  local proc = vm:run_async("nginx", {args = {"-g", "daemon off;"}})
  wait_until(function()
    return vm:run("ss -ltn | grep :80"):ok()
  end, {timeout = "60s", desc = "nginx listening on :80"})
  r = vm:run("curl -s http://localhost/")
  r:assert_ok()
  t:assert(r.stdout:find("Welcome to nginx"))
  proc:kill("term")
  proc:wait("5s")
end)

test("the seed's command examples pass as written", function(t)
  local vm = provium:vm("web", "web"):boot()
  t:assert_eq(vm:run("printenv FOO", {env = {FOO = "bar"}}).stdout, "bar\n")
  local r = vm:run("python3 -c 'import os, sys; print(os.environ[\"X\"], file=sys.stderr); print(sys.stdin.read())'", {
    env = {X = "from-env"},
    stdin = "from-stdin\n",
  })
  t:assert_eq(r.stderr, "from-env\n")
  t:assert_eq(r.stdout, "from-stdin\n\n")
  -- Only the keys given (and the PWD that Debian's sh, dash, exports itself).
  local env = vm:run("env", {env = {PATH = "/usr/bin"}, env_clear = true}).stdout
  t:assert(env:find("^PATH=/usr/bin\n") or env:find("\nPATH=/usr/bin\n"), env)
  t:assert(not env:find("HOME="), env)
  t:assert_eq(vm:run("cat", {stdin = "hello\n"}).stdout, "hello\n")
  t:assert_eq(vm:run("ls", {cwd = "/etc"}).exit_code, 0)
  vm:run("ls /etc/*.conf | head -3"):assert_ok()
end)

test("writes land in the overlay: a second VM of the profile sees the image as built", function(t)
  local a = provium:vm("a", "web"):boot()
  local root = a:run("awk '$2 == \"/\" {print $1, $3}' /proc/mounts"):assert_ok().stdout
  t:assert_eq(root, "overlay overlay\n")
  a:run("echo changed > /usr/share/provium-marker && rm /usr/bin/curl"):assert_ok()
  t:assert_eq(a:read_file("/usr/share/provium-marker"), "changed\n")
  a:shutdown()
  local b = provium:vm("b", "web"):boot()
  t:assert(not b:run("test -e /usr/share/provium-marker"):ok(), "a write of another VM reached the image")
  t:assert(b:run("test -x /usr/bin/curl"):ok(), "a delete of another VM reached the image")
end)

test("init = \"systemd\": systemd is PID 1, units run, the agent is a unit", function(t)
  local vm = provium:vm("sd", "web-systemd"):boot()
  t:assert_eq(vm:run("cat /proc/1/comm").stdout, "systemd\n")
  t:assert_eq(vm:run("systemctl is-active provium-agent.service").stdout, "active\n")
  -- nginx is enabled by its package: systemd started it.
  t:assert_eq(vm:run("systemctl is-active nginx.service").stdout, "active\n")
  t:assert(vm:run("curl -s http://localhost/").stdout:find("Welcome to nginx"))
  vm:run("systemctl stop nginx.service"):assert_ok()
  t:assert_eq(vm:run("systemctl is-active nginx.service").stdout, "inactive\n")
  t:assert(not vm:run("curl -s http://localhost/"):ok(), "nginx still answers after systemctl stop")
  -- The power button reaches logind, which powers off cleanly.
  t:assert(vm:power_button(), "systemd did not power off on the ACPI power button")
end)

test("init = \"systemd\": an agent unit killed by a signal is named, not a silent link", function(t)
  local vm = provium:vm("sd-dies", "web-systemd"):boot()
  local pid = vm:run("systemctl show -p MainPID --value provium-agent.service"):assert_ok().stdout:gsub("%s+", "")
  local started = os.time()
  local err = t:assert_raises(function() vm:run("kill -SEGV " .. pid .. "; sleep 30") end)
  t:assert_contains(err, "agent exited (signal 11, SIGSEGV)")
  t:assert(os.time() - started <= 10, "the diagnosis took " .. (os.time() - started) .. " s")
  t:assert_eq(vm:state(), "dead")
end)
