// No silent integer wrap (DESIGN §8, issue 15 part 1): fengari's integers are 32-bit, and our
// patch (patches/fengari+*.patch, applied by `npm ci` through patch-package) makes +, -, *, //,
// unary minus, constant folding and numerals give the exact value as a float where 32 bits cannot
// hold it. Bitwise operators keep Lua's integer rules and name the value they cannot take.
// Runs real test files in a worker thread, as a run does.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { assertAllPassed, runLua } from './lua-fake-broker.js';

test('the fengari patch is carried: patch-package is a devDependency run at postinstall, and the patch matches the installed version', () => {
  const repo = new URL('../../../', import.meta.url);
  const pkg = JSON.parse(readFileSync(new URL('package.json', repo), 'utf8'));
  assert.match(pkg.scripts.postinstall, /^patch-package\b/);
  assert.ok(pkg.devDependencies['patch-package'], 'patch-package in devDependencies');
  const fengariVersion = createRequire(import.meta.url)('fengari/package.json').version;
  assert.equal(pkg.dependencies.fengari, fengariVersion, 'fengari is pinned exactly: the patch is for one version');
  assert.ok(existsSync(new URL(`patches/fengari+${fengariVersion}.patch`, repo)), `patches/fengari+${fengariVersion}.patch`);
});

test('arithmetic past 32 bits gives the exact value as a float, folded or at run time', async () => {
  const { result } = await runLua(String.raw`
test("the issue's examples", function(t)
  t:assert_eq(5 * 1024 * 1024 * 1024, 5368709120)
  t:assert_eq(0x100000000, 4294967296)
  t:assert_eq(2^31 + 1 - 1, 2147483648)
end)
test("constant folding", function(t)
  local v = 65536 * 65536
  t:assert_eq(v, 4294967296)
  t:assert_eq(math.type(v), "float")
  t:assert_eq(2147483647 + 1, 2147483648)
  t:assert_eq(-2147483647 - 2, -2147483649)
  t:assert_eq(-(-2147483647 - 1), 2147483648)
end)
test("at run time", function(t)
  local five, kib, max, min = 5, 1024, math.maxinteger, math.mininteger
  t:assert_eq(five * kib * kib * kib, 5368709120)
  t:assert_eq(max + 1, 2147483648)
  t:assert_eq(max + max, 4294967294)
  t:assert_eq(min - 1, -2147483649)
  t:assert_eq(min - max, -4294967295)
  t:assert_eq(-min, 2147483648)
  t:assert_eq(min // -1, 2147483648)
  t:assert_eq(max * max, 4611686014132420609)   -- 2^62 - 2^32 + 1, as the nearest float
  t:assert_eq(math.abs(min), 2147483648)
  t:assert_eq(math.type(max + 1), "float")
end)
test("results that fit stay integers", function(t)
  local a, b = 46340, 46340
  t:assert_eq(math.type(a * b), "integer")
  t:assert_eq(math.type(math.maxinteger - 1 + 1), "integer")
  t:assert_eq(math.type(-math.maxinteger), "integer")
  t:assert_eq(math.type(7 // 2), "integer")
  t:assert_eq(math.type(0 * -5), "integer")
  t:assert_eq(tostring(0 * -5), "0")
  t:assert_eq(-7 % 3, 2)
end)
test("numerals and tonumber", function(t)
  t:assert_eq(0xFFFFFFFF, 4294967295)
  t:assert_eq(0xC0104B00, 3222293248)
  t:assert_eq(math.type(0x7FFFFFFF), "integer")
  t:assert_eq(2147483648, 2147483648.0)
  t:assert_eq(tonumber("0x100000000"), 4294967296)
  t:assert_eq(math.type(tonumber("-0x80000000")), "integer")
  t:assert_eq("4294967296" + 0, 4294967296)
end)
test("an integer for loop up to math.maxinteger ends", {timeout = "5s"}, function(t)
  local n = 0
  for i = math.maxinteger - 2, math.maxinteger do n = n + 1 end
  t:assert_eq(n, 3)
  n = 0
  for i = math.mininteger + 2, math.mininteger, -1 do n = n + 1 end
  t:assert_eq(n, 3)
  n = 0
  for i = math.mininteger, math.mininteger + 2 do n = n + 1 end
  t:assert_eq(n, 3)
end)
`);
  assertAllPassed(result, 6);
});

test('bitwise operators keep the integer rules and name a value with no 32-bit representation', async () => {
  const { result } = await runLua(String.raw`
local function err_of(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return e end
test("in range", function(t)
  t:assert_eq(0xFF & 0x0F, 15)
  t:assert_eq(1 << 31, math.mininteger)
  t:assert_eq(0x7FFFFFFF | 0, 2147483647)
end)
test("too wide", function(t)
  local size = 5 * 1024 * 1024 * 1024
  local e = err_of(function() return size | 1 end)
  t:assert_contains(e, "number (upvalue 'size') has no integer representation")
  t:assert_contains(e, "5368709120 is beyond fengari's 32-bit integers, -2147483648..2147483647")
  t:assert_contains(e, "use // and % for wider values")
  t:assert_contains(err_of(function() return 0x100000000 & 1 end), "4294967296 is beyond fengari's 32-bit integers")
  t:assert_contains(err_of(function() return ~0xFFFFFFFF end), "4294967295 is beyond")
  t:assert_contains(err_of(function() return string.format("%d", 2^32) end),
    "bad argument #2 to 'format' (number has no integer representation (4294967296 is beyond fengari's 32-bit integers")
end)
test("not integral", function(t)
  local e = err_of(function() return 1.5 | 1 end)
  t:assert_contains(e, "number has no integer representation")
  t:assert(not e:find("beyond"), e)
end)
`);
  assertAllPassed(result, 3);
});
