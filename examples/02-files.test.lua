-- Files in the guest: write, read, stat, list, create directories, rename, remove. Errors from
-- the guest come back as Lua errors carrying the OS message.

local vm = provium:vm("files", "minimal"):boot()

test("write a file and read it back, from Lua and from the guest", function(t)
  vm:write_file("/tmp/greeting.txt", "hello\n")
  t:assert_eq(vm:read_file("/tmp/greeting.txt"), "hello\n")
  t:assert_eq(vm:run("cat /tmp/greeting.txt").stdout, "hello\n")
end)

test("binary data survives the round trip", function(t)
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  local blob = table.concat(bytes)
  vm:write_file("/tmp/blob", blob)
  t:assert_eq(vm:read_file("/tmp/blob"), blob)
  t:assert_eq(vm:run("wc -c < /tmp/blob").stdout, "256\n")
end)

test("mkdir, stat and listdir", function(t)
  vm:mkdir("/tmp/tree/a/b", { parents = true })
  vm:write_file("/tmp/tree/a/b/file", "12345")
  local st = vm:stat("/tmp/tree/a/b/file")
  t:assert_eq(st.size, 5)
  t:assert_eq(st.entry_type, "file")
  t:assert_eq(vm:stat("/tmp/tree/a").entry_type, "directory")

  local names = {}
  for _, entry in ipairs(vm:listdir("/tmp/tree/a/b")) do names[#names + 1] = entry.name end
  t:assert_eq(table.concat(names, ","), "file")
end)

test("rename and unlink", function(t)
  vm:write_file("/tmp/old-name", "x")
  vm:rename("/tmp/old-name", "/tmp/new-name")
  t:assert_eq(vm:read_file("/tmp/new-name"), "x")
  vm:unlink("/tmp/new-name")
  t:assert(not vm:run("test -e /tmp/new-name"):ok(), "the file should be gone")
end)

test("a missing file is an error with the OS message", function(t)
  local err = t:assert_raises(function()
    vm:read_file("/tmp/does-not-exist")
  end)
  t:assert_contains(tostring(err), "No such file or directory")
end)
