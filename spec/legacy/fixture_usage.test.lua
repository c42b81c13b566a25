-- Legacy-API use of a fixture (seed 002 style): each test resumes its own VM from
-- fixtures/seeded.lua and shuts it down with provium.shutdown_all().

test("the fixture's data is there", function()
  local vm = provium.fixture("seeded")
  assert_eq("alice\nbob\n", vm:read_file("/var/lib/app/users"))
  assert_eq("1", vm:exec("cat /var/lib/app/schema_version").stdout:trim())
  provium.shutdown_all()
  assert_eq("shutdown", vm:state())
end)

test("each resume starts from the same state", function()
  local first = provium.fixture("seeded")
  first:exec("echo carol >> /var/lib/app/users")
  local second = provium.fixture("seeded")
  assert_eq("alice\nbob\n", second:read_file("/var/lib/app/users"))
  assert_contains(first:read_file("/var/lib/app/users"), "carol")
end)

test("migration v2", function()
  todo("schema v2 is not written yet")
  local vm = provium.fixture("seeded")
  assert_eq("2", vm:exec("cat /var/lib/app/schema_version").stdout:trim())
end)
