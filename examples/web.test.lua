-- A real Debian guest in two lines of config (provium.toml, profile `web`):
--   [profiles.web]
--   debian = { packages = ["curl", "nginx", "python3", ...] }
-- Run a server, hit it, tear it down. The root is Debian's, read-only under an overlay: what a
-- test writes is gone at the next boot, and every boot after the first comes from a snapshot.

local vm = provium:vm("web", "web"):boot()

test("nginx serves its index page", function(t)
  local proc = vm:run_async("nginx", {args = {"-g", "daemon off;"}})
  wait_until(function()
    return vm:run("ss -ltn | grep -q :80"):ok()
  end, {timeout = "60s", desc = "nginx listening on :80"})
  local r = vm:run("curl -s http://localhost/")
  r:assert_ok()
  t:assert(r.stdout:find("Welcome to nginx"))
  proc:kill("term")
  t:assert_eq(proc:wait("5s").status, "exited")
end)

test("a Python server answers what the test wrote", function(t)
  vm:write_file("/srv/hello.txt", "hello from the test\n")
  -- -u: unbuffered, so its "Serving HTTP" line reaches the stream as it is printed.
  local proc = vm:run_async("python3", {args = {"-u", "-m", "http.server", "8080", "--directory", "/srv"}})
  proc:stdout_stream():expect("Serving HTTP on", "60s")
  t:assert_eq(vm:run("curl -s http://localhost:8080/hello.txt").stdout, "hello from the test\n")
  proc:kill("term")
  proc:wait("5s")
end)
