// A test's timeout holds within a second even when the test spends its time inside slow library
// calls (issue 15 part 5): our fengari patch counts pattern-matching steps, buffer appends,
// string.rep copies, sort comparisons and long concatenations toward the deadline hook, which used
// to run only every 1000 VM instructions (a 2 s timeout on a gsub loop over 2 MB fired at 38.6 s).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runLua } from './lua-fake-broker.js';

const kSlack = 1000;

test('a 1 s timeout fires within a second of its deadline inside slow library calls, and the file goes on', async () => {
  const { result } = await runLua(String.raw`
local big = string.rep("a", 2 * 1024 * 1024)
test("gsub loop over 2 MB", {timeout = "1s"}, function(t)
  while true do big:gsub("a", "b") end
end)
test("one backtracking find", {timeout = "1s"}, function(t)
  big:find(".-y")
end)
test("string.rep", {timeout = "1s"}, function(t)
  while true do local x = string.rep(big, 100) end
end)
test("table.concat", {timeout = "1s"}, function(t)
  local parts = {}
  for i = 1, 100000 do parts[i] = "abc" end
  while true do table.concat(parts) end
end)
test("table.sort", {timeout = "1s"}, function(t)
  local xs = {}
  for i = 1, 200000 do xs[i] = -i end
  while true do table.sort(xs); table.sort(xs, function(a, b) return a > b end) end
end)
test("concatenation", {timeout = "1s"}, function(t)
  while true do local x = big .. "b" end
end)
test("the file goes on", function(t) t:assert_eq(1 + 1, 2) end)
`);
  const names = ['gsub loop over 2 MB', 'one backtracking find', 'string.rep', 'table.concat', 'table.sort', 'concatenation'];
  for (const name of names) {
    const t = result.tests.find((x) => x.name === name)!;
    assert.equal(t.status, 'failed', name);
    assert.match(t.message!, /^spec\/sample\.test\.lua:\d+: test timed out after 1s/, `${name}: ${t.message}`);
    assert.ok(t.durationMs < 1000 + kSlack, `${name} took ${Math.round(t.durationMs)} ms for a 1 s timeout`);
  }
  assert.equal(result.tests.at(-1)!.status, 'passed');
});
