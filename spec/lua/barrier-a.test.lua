-- Two files, run on different worker threads, meet at a run-wide barrier (barrier-b.test.lua
-- is the other party). No VM: the barrier lives in the broker. With a single worker (-j1) the
-- barrier can never fill, which the broker reports at once; the test then has nothing to prove.
-- The other party may wait in the queue behind a slow file: the broker fails the barrier at once
-- if it can never fill, so a long timeout costs nothing.

test("meets barrier-b.test.lua at a run-wide barrier", function(t)
  local ok, err = pcall(function() return provium:barrier("spec-meet", 2, "10m") end)
  if not ok and tostring(err):find("can never fill", 1, true) then
    t:skip("one worker: the two files cannot run at once (" .. tostring(err) .. ")")
  end
  t:assert(ok, tostring(err))
  t:assert_eq(err, true)
end)

test("a barrier needing more files than can run at once fails at once, saying why", function(t)
  local err = t:assert_raises(function() provium:barrier("spec-crowd-a", 4096, "60s") end)
  t:assert_contains(err, "barrier `spec-crowd-a` can never fill")
end)
