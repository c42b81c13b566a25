-- Profiles from provium.toml (issue 11): one made by its `build` (a kernel of one's own booting the
-- minimal userland, with a cmdline_file), one that extends the built-in with more memory, and the
-- built-in adjusted by [profiles.minimal]. The profiles are in spec/lua/data/profiles/provium.toml:
--   node dist/src/cli/main.js --config spec/lua/data/profiles/provium.toml spec/lua/profiles.test.lua
-- (spec/unit/cli-profiles.test.ts runs it so). Under any other config the tests skip themselves.

local kConfigHint = "needs --config spec/lua/data/profiles/provium.toml"

local function meminfo_kib(vm)
  return tonumber(vm:read_file("/proc/meminfo"):match("MemTotal:%s+(%d+) kB"))
end

-- A VM of `profile`, or a skip when this run's config does not define it.
local function vm_of(t, name, profile)
  local ok, vm = pcall(function() return provium:vm(name, profile) end)
  if not ok then
    if tostring(vm):find("unknown profile", 1, true) then t:skip(kConfigHint) end
    error(vm, 0)
  end
  return vm
end

test("a profile made by its build boots its kernel on the minimal userland, cmdline_file first", function(t)
  local vm = vm_of(t, "own", "built")
  vm:boot()
  local cmdline = vm:read_file("/proc/cmdline")
  t:log("cmdline: " .. cmdline)
  t:assert_contains(cmdline, "provium.spec=cmdline-file")
  -- The file's whitespace (newlines, indentation) is collapsed; the inline cmdline comes after it.
  t:assert_contains(cmdline, "no_timer_check tsc=reliable nokaslr")
  local file_at = cmdline:find("provium.order=file", 1, true)
  local inline_at = cmdline:find("provium.order=inline", 1, true)
  t:assert(file_at and inline_at and file_at < inline_at, "cmdline_file before the inline cmdline: " .. cmdline)
  -- The agent answers: the minimal image's initrd carries it, started as rdinit.
  t:assert_contains(cmdline, "rdinit=/sbin/provium-agent")
  t:assert_eq(vm:run("echo ready"):assert_ok().stdout, "ready\n")
  local kib = meminfo_kib(vm)
  t:assert(kib > 200 * 1024 and kib <= 256 * 1024, "MemTotal " .. kib .. " kB for a 256M guest")
end)

test("extends = \"minimal\" with more memory", function(t)
  local vm = vm_of(t, "big", "big")
  vm:boot()
  local kib = meminfo_kib(vm)
  t:assert(kib > 320 * 1024 and kib <= 384 * 1024, "MemTotal " .. kib .. " kB for a 384M guest")
  local cmdline = vm:read_file("/proc/cmdline")
  -- Everything else is the built-in's: its tuned command line, not the built profile's.
  t:assert_contains(cmdline, "mitigations=off")
  t:assert(not cmdline:find("provium.order", 1, true), "no cmdline_file here: " .. cmdline)
end)

test("[profiles.minimal] changes the built-in's memory", function(t)
  vm_of(t, "probe", "built") -- skips under a config without these profiles
  local vm = provium:vm("small", "minimal")
  vm:boot()
  local kib = meminfo_kib(vm)
  t:assert(kib > 150 * 1024 and kib <= 192 * 1024, "MemTotal " .. kib .. " kB for a 192M guest")
end)
