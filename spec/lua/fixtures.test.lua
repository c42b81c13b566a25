-- Fixtures: a vm fixture and a lab fixture restored into this file (both call forms), names,
-- and the errors of a missing fixture, the wrong kind and a builder that returns no snapshot.

local web = provium:vm_fixture("lua/fixtures/web")

local function err_of(f)
  local ok, e = pcall(f)
  assert(not ok, "expected an error")
  return tostring(e)
end

test("a vm fixture comes back booted, with its files and its running process", function(t)
  t:assert_eq(web:state(), "booted")
  t:assert_eq(web:name(), "web")
  t:assert_eq(web:read_file("/srv/index.html"), "hello from the fixture\n")
  local pid = web:read_file("/srv/server.pid"):match("%d+")
  web:run("kill -0 " .. pid):assert_ok()
end)

test("the dot form and a name give a second copy, separate from the first", function(t)
  local other = provium.vm_fixture("lua/fixtures/web", "web2")
  t:assert_eq(other:name(), "web2")
  other:write_file("/srv/index.html", "changed\n")
  t:assert_eq(web:read_file("/srv/index.html"), "hello from the fixture\n")
  t:assert_eq(provium:vm("web2"), other, "a fixture's VM lives at file scope")
end)

test("a lab fixture is a new sub-lab with its VMs and bridge", function(t)
  local lab = provium:lab_fixture("lua/fixtures/pair")
  local names = lab:vm_names()
  table.sort(names)
  t:assert_eq(table.concat(names, ","), "a,b")
  t:assert_eq(lab:vm("a"):read_file("/etc/role"), "primary\n")
  wait_until(function() return lab:vm("a"):run("ping -c1 -W1 b").exit_code == 0 end, {timeout = "10s", desc = "a reaches b"})
  lab:shutdown()
end)

test("errors name the fixture and the fix", function(t)
  t:assert_contains(err_of(function() provium:vm_fixture("lua/fixtures/nope") end), "fixture `lua/fixtures/nope` not found in any test root")
  t:assert_contains(err_of(function() provium:vm_fixture("lua/fixtures/pair") end), "use provium:lab_fixture(\"lua/fixtures/pair\")")
  t:assert_contains(err_of(function() provium:vm_fixture("lua/fixtures/web.fixture.lua") end), "drop the `.fixture.lua` suffix")
  local broken = err_of(function() provium:vm_fixture("lua/fixtures/broken") end)
  t:assert_contains(broken, "fixture `lua/fixtures/broken`")
  t:assert_contains(broken, "failed to build")
  t:assert_contains(broken, "must end with `return vm:snapshot()` or `return provium:snapshot()`; it returned integer")
end)
