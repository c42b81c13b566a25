-- Seed 002's assertions and sub-tests: assert(cond, msg?), assert_eq(expected, actual, msg?) with
-- deep table comparison, assert_contains(haystack, needle, msg?), test(name, fn) without `t`, and
-- todo(reason) inside a test. Failures are checked through t:assert_raises, which keeps a caught
-- assertion from failing the test that checks it.

local vm = provium.create("minimal")
vm:boot()

test("assert(condition, message?) raises with file:line and the message", function()
  assert(true)
  assert(vm:exec("true").ok, "never shown")
  local ok, err = pcall(function() assert(false, "custom message") end)
  assert(not ok)
  assert_eq("spec/lua/legacy-assertions.test.lua:12: custom message", err)
  ok, err = pcall(function() assert(vm:exec("false").ok) end)
  assert_eq("spec/lua/legacy-assertions.test.lua:15: assertion failed!", err)
  -- Like Lua's assert, it returns its arguments.
  local a, b = assert(1, 2)
  assert_eq(1, a); assert_eq(2, b)
end)

test("assert_eq(expected, actual, message?) shows both values", function(t)
  assert_eq(5, 2 + 3)
  assert_eq("hello\n", vm:exec("echo hello").stdout)
  local err = t:assert_raises(function() assert_eq(1, 2, "numbers") end)
  assert_contains(err, "numbers: expected 1, got 2")
  err = t:assert_raises(function() assert_eq("a", vm:exec("echo b").stdout) end)
  assert_contains(err, 'assert_eq failed: expected "a", got "b\\n"')
end)

test("assert_eq compares tables deeply and prints them; t:assert_eq too", function(t)
  assert_eq({1, 2, {x = "y"}}, {1, 2, {x = "y"}})
  assert_eq(vm:json([[echo '{"a": [1, 2]}']]), {a = {1, 2}})
  local err = t:assert_raises(function() assert_eq({a = 1, b = {2}}, {a = 1, b = {3}}) end)
  assert_contains(err, "expected {a = 1, b = {2}}, got {a = 1, b = {3}}")
  t:assert_eq({k = {1, 2}}, {k = {1, 2}})
  err = t:assert_raises(function() t:assert_eq({1, 2}, {1, 2, 3}) end)
  assert_contains(err, "{1, 2} ~= {1, 2, 3}")
end)

test("assert_contains(haystack, needle, message?) is a substring check", function(t)
  assert_contains(vm:dmesg(), "Linux version")
  assert_contains("a.b*c", ".b*", "plain text, not a pattern")
  local err = t:assert_raises(function() assert_contains("haystack", "needle", "where") end)
  assert_contains(err, 'where: "haystack" does not contain "needle"')
end)

test("test(name, fn) runs without t", function()
  assert_eq("booted", vm:state())
end)

test("todo(reason) inside a test skips it", function()
  todo("waiting on feature X")
  error("never reached: todo ends the test as skipped")
end)
