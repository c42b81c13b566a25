-- Disks with backend = "qemu": QEMU serves a raw file itself (plain-drive speed), the test reads
-- and writes the same file, and faults are blkdebug rules swapped in while the guest runs.

local vm = provium:vm("q", "minimal", {memory = "128M", disks = {{id = "fast", size = "16M", backend = "qemu"}}}):boot()
local fast = vm:disk("fast")
local blocks = require("lua.lib.blocks")
local dev = blocks.on(vm)
local read_block, write_block, block_text = dev.read, dev.write, dev.text

test("a qemu-backed disk is /dev/vda, and one hot-plugs and unplugs", function(t)
  t:assert_eq(fast:backend(), "qemu")
  t:assert_eq(fast:device(), "/dev/vda")
  t:assert_eq(vm:run("cat /sys/block/vda/size").stdout, "32768\n")
  local hot = vm:attach_disk({id = "hot", size = "8M", backend = "qemu"})
  t:assert_eq(hot:device(), "/dev/vdb")
  blocks.on(vm, "/dev/vdb").read(0):assert_ok()
  hot:detach()
  t:assert(hot:is_detached())
  wait_until(function() return vm:run("test -e /sys/block/vdb").exit_code ~= 0 end, {timeout = "15s", desc = "vdb gone"})
end)

test("the test and the guest see one file, both ways", function(t)
  write_block(0, "written by guest"):assert_ok()
  t:assert_eq(fast:read_sectors(0, 1):sub(1, 16), "written by guest")
  fast:write_sectors(16, "written by host!" .. string.rep("\0", 496))
  t:assert_eq(block_text(2), "written by host!")
end)

test("fail_reads and fail_writes give the guest EIO while it runs", function(t)
  fast:fail_reads()
  local r = read_block(200)
  t:assert(r.exit_code ~= 0, "dd read failed")
  t:assert_contains(r.stdout, "Input/output error")
  write_block(201, "writes still work"):assert_ok()
  fast:clear_policy()
  read_block(200):assert_ok()
  fast:fault_inject("eio_write")
  t:assert_eq(fast:active_faults()[1], "eio_write")
  local w = write_block(202, "fails")
  fast:clear_faults()
  t:assert(w.exit_code ~= 0, "dd write failed")
  t:assert_contains(vm:run("dmesg | tail -5").stdout, "I/O error, dev vda")
  write_block(202, "works again"):assert_ok()
end)

test("fail_after(3) lets three writes through, then fails", function(t)
  fast:fail_after(3, "write")
  for i = 1, 3 do write_block(100 + i, "ok"):assert_ok() end
  local r = write_block(110, "fails")
  fast:clear_policy()
  t:assert(r.exit_code ~= 0, "the fourth write fails")
end)

test("fail_range fails only requests touching those sectors", function(t)
  fast:fail_range(1003, 2)
  local inside, outside = read_block(125), read_block(126)
  fast:clear_policy()
  t:assert(inside.exit_code ~= 0, "block 125 (sectors 1000-1007) touches the range")
  outside:assert_ok()
end)

test("faults blkdebug cannot give are refused, and the policy stays as it was", function(t)
  fast:fail_reads()
  for _, f in ipairs({
    function() fast:delay(100) end,
    function() fast:fault_inject("slow") end,
    function() fast:torn_write() end,
    function() fast:random_faults({eio_rate = 0.5}) end,
    function() fast:fail_range(0, 5000) end,
  }) do
    t:assert_contains(t:assert_raises(f), 'has backend = "qemu", which')
  end
  t:assert_contains(t:assert_raises(function() fast:delay(100) end), 'give the disk backend = "nbd"')
  local p = fast:fault_policy()
  t:assert_eq(p.fail_reads, true)
  t:assert_eq(p.delay_ms, 0)
  fast:clear_policy()
  t:assert_contains(t:assert_raises(function() vm:attach_disk({id = "x", size = "1M", backend = "fast"}) end), '`backend` must be "nbd"')
end)

test("a snapshot gives back the contents, and the policy set since then still holds", function(t)
  write_block(60, "before snap", ",fsync"):assert_ok()
  local snap = vm:snapshot()
  write_block(60, "after snap", ",fsync"):assert_ok()
  fast:fail_reads()
  vm:shutdown()
  vm:restore(snap)
  t:assert_eq(fast:read_sectors(480, 1):sub(1, 11), "before snap")
  t:assert(read_block(60).exit_code ~= 0, "fail_reads holds after the restore")
  fast:clear_policy()
  t:assert_eq(block_text(60):sub(1, 11), "before snap")
  snap:delete()
end)

test("power_cut keeps what reached the file: there is no cache below the guest", function(t)
  write_block(50, "direct write"):assert_ok()
  t:assert_eq(fast:power_cut(), 0)
  t:assert_eq(vm:state(), "shutdown")
  vm:boot()
  t:assert_eq(block_text(50):sub(1, 12), "direct write")
end)

test("an image is copied for a writable disk and read in place for a read-only one", function(t)
  for _, image in ipairs({"data/disk.raw", "data/disk.qcow2"}) do
    local id = image:match("%.(%w+)$")
    local d = vm:attach_disk({id = id, image = image, backend = "qemu"})
    t:assert_eq(d:size(), 65536)
    t:assert_eq(d:read_sectors(0, 1):sub(1, 18), "raw image sector 0")
    vm:run("printf 'guest wrote this' | dd of=" .. d:device() .. " bs=4k count=1 conv=sync oflag=direct 2>&1"):assert_ok()
    t:assert_eq(d:read_sectors(0, 1):sub(1, 16), "guest wrote this")
    d:detach()
    local again = vm:attach_disk({id = id .. "2", image = image, readonly = true, backend = "qemu"})
    t:assert_eq(again:read_sectors(0, 1):sub(1, 18), "raw image sector 0")
    t:assert_contains(t:assert_raises(function() again:write_sectors(0, string.rep("x", 512)) end), "is read-only")
    t:assert(vm:run("echo x | dd of=" .. again:device() .. " bs=512 count=1 conv=sync oflag=direct 2>&1").exit_code ~= 0, "the guest cannot write a read-only disk")
    if id == "raw" then
      -- A restore leaves the image read in place alone (it is the user's file).
      local snap = vm:snapshot()
      vm:shutdown()
      vm:restore(snap)
      t:assert_eq(again:read_sectors(0, 1):sub(1, 18), "raw image sector 0")
      snap:delete()
    end
    again:detach()
  end
end)
