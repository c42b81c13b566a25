-- Disks served by the broker's NBD server: boot-time and hot-plugged disks, the test and the
-- guest seeing one disk, guest-visible faults, power cut, a filesystem across a reboot, and
-- errors that name the bad value.

local vm = provium:vm("d", "minimal", {memory = "128M", disks = {{id = "data", size = "16M"}}}):boot()
local data = vm:disk("data")

local function err_of(f)
  local ok, e = pcall(f)
  assert(not ok, "expected an error")
  return tostring(e)
end

-- The guest's dd goes straight to the device in 4 KiB blocks (O_DIRECT: past its page cache;
-- busybox falls back to buffered I/O for smaller direct blocks). Block n is sectors 8n to 8n+7.
local function read_block(n)
  return vm:run("dd if=/dev/vda of=/dev/null bs=4k count=1 skip=" .. n .. " iflag=direct 2>&1")
end

local function write_block(n, text, flags)
  return vm:run("printf '" .. text .. "' | dd of=/dev/vda bs=4k count=1 seek=" .. n .. " conv=sync" .. (flags or "") .. " oflag=direct 2>&1")
end

local function block_text(n)
  return vm:run("dd if=/dev/vda bs=4k skip=" .. n .. " count=1 iflag=direct 2>/dev/null | head -c 16").stdout
end

test("a boot-time disk is /dev/vda and a hot-plugged one appears at once", function(t)
  t:assert_eq(data:id(), "data")
  t:assert_eq(data:size(), 16 * 1024 * 1024)
  t:assert_eq(data:device(), "/dev/vda")
  t:assert_eq(vm:run("cat /sys/block/vda/size").stdout, "32768\n")
  local hot = vm:attach_disk({id = "hot", size = "8M"})
  t:assert_eq(hot:device(), "/dev/vdb")
  t:assert_eq(vm:run("cat /sys/block/vdb/size").stdout, "16384\n")
  t:assert_eq(vm:disk("hot"), hot)
  hot:detach()
  t:assert(hot:is_detached())
  t:assert_contains(err_of(function() hot:read_sectors(0, 1) end), "is detached")
end)

test("the test and the guest see one disk, both ways", function(t)
  write_block(0, "written by guest"):assert_ok()
  t:assert_eq(data:read_sectors(0, 1):sub(1, 16), "written by guest")
  data:write_sectors(16, "written by host!" .. string.rep("\0", 496))
  t:assert_eq(block_text(2), "written by host!")
end)

test("fail_reads gives the guest EIO, and the kernel logs the I/O error", function(t)
  data:fail_reads()
  t:assert_eq(data:fault_policy().fail_reads, true)
  t:assert_eq(data:active_faults()[1], "eio_read")
  local r = read_block(200)
  t:assert(r.exit_code ~= 0, "dd read failed")
  t:assert_contains(r.stdout, "Input/output error")
  t:assert_contains(vm:run("dmesg | tail -5").stdout, "I/O error, dev vda")
  -- The test's own access is not the guest's: it still reads.
  t:assert_eq(#data:read_sectors(1600, 1), 512)
  data:clear_policy()
  read_block(200):assert_ok()
end)

test("fail_after(3) lets three requests through, then fails", function(t)
  data:fail_after(3, "write")
  for i = 1, 3 do write_block(100 + i, "ok"):assert_ok() end
  local r = write_block(110, "fails")
  data:clear_policy()
  t:assert(r.exit_code ~= 0, "the fourth write fails")
  t:assert_contains(r.stdout, "Input/output error")
end)

test("fail_range fails only requests touching those sectors", function(t)
  data:fail_range(1000, 8)
  t:assert_eq(data:fault_policy().fail_range_sector, 1000)
  local inside, outside = read_block(125), read_block(126)
  data:clear_faults()
  t:assert(inside.exit_code ~= 0, "block 125 (sectors 1000-1007) is inside the range")
  outside:assert_ok()
end)

test("delay(200) slows every guest request by at least that", function(t)
  data:delay(200)
  local r = vm:run("cut -d' ' -f1 /proc/uptime; dd if=/dev/vda of=/dev/null bs=4k count=1 skip=3000 iflag=direct 2>/dev/null; cut -d' ' -f1 /proc/uptime")
  data:clear_policy()
  local s, e = r.stdout:match("([%d%.]+)\n([%d%.]+)")
  t:assert((tonumber(e) - tonumber(s)) * 1000 >= 190, "the read took " .. (tonumber(e) - tonumber(s)) * 1000 .. " ms")
end)

test("power_cut loses what was not flushed and keeps what was", function(t)
  write_block(50, "flushed", ",fsync"):assert_ok()
  write_block(51, "volatile"):assert_ok()
  local lost = data:power_cut()
  t:assert(lost >= 4096, "lost " .. lost .. " bytes")
  t:assert_eq(vm:state(), "shutdown")
  vm:boot()
  t:assert_eq(vm:disk("data"):device(), "/dev/vda")
  t:assert_eq(block_text(50):sub(1, 7), "flushed")
  t:assert_eq(block_text(51), string.rep("\0", 16))
end)

test("a snapshot holds the disks' contents: a restore gives them back", function(t)
  write_block(60, "before snap", ",fsync"):assert_ok()
  local snap = vm:snapshot()
  write_block(60, "after snap", ",fsync"):assert_ok()
  vm:shutdown()
  vm:restore(snap)
  t:assert_eq(block_text(60):sub(1, 11), "before snap")
  t:assert_eq(data:read_sectors(480, 1):sub(1, 11), "before snap")
  t:assert_eq(data:device(), "/dev/vda")
  snap:delete()
end)

test("an ext2 filesystem made in the guest survives a reboot", function(t)
  vm:run("mke2fs -q /dev/vda && mkdir -p /mnt && mount -t ext2 /dev/vda /mnt && echo kept > /mnt/file && umount /mnt"):assert_ok()
  vm:shutdown()
  vm:boot()
  vm:run("mkdir -p /mnt && mount -t ext2 /dev/vda /mnt"):assert_ok()
  t:assert_eq(vm:read_file("/mnt/file"), "kept\n")
  vm:run("umount /mnt"):assert_ok()
end)

test("torn_write lands only part of the next write", function(t)
  data:torn_write()
  vm:run("dd if=/dev/zero bs=4k count=1 2>/dev/null | tr '\\0' 'T' | dd of=/dev/vda bs=4k count=1 seek=1000 oflag=direct 2>/dev/null")
  local got = data:read_sectors(8000, 8)
  t:assert_eq(got:sub(1, 1), "T")
  t:assert_eq(got:sub(-1), "\0", "the tail of the write never landed")
  data:clear_policy()
end)

test("a backing image (raw or qcow2) is read, and written through an overlay that leaves it unchanged", function(t)
  for _, image in ipairs({"data/disk.raw", "data/disk.qcow2"}) do
    local id = image:match("%.(%w+)$")
    local d = vm:attach_disk({id = id, image = image})
    t:assert_eq(d:size(), 65536)
    t:assert_eq(d:read_sectors(0, 1):sub(1, 18), "raw image sector 0")
    d:write_sectors(0, string.rep("w", 512))
    t:assert_eq(d:read_sectors(0, 1):sub(1, 1), "w")
    d:detach()
    -- A second disk over the same image starts from the untouched file.
    local again = vm:attach_disk({id = id .. "2", image = image, readonly = true})
    t:assert_eq(again:read_sectors(0, 1):sub(1, 18), "raw image sector 0")
    t:assert_contains(err_of(function() again:write_sectors(0, string.rep("x", 512)) end), "is read-only")
    again:detach()
  end
end)

test("bad arguments name the value and the valid range", function(t)
  t:assert_contains(err_of(function() data:read_sectors(40000, 1) end), "sector 40000 is outside the disk (sectors 0 to 32767)")
  t:assert_contains(err_of(function() data:read_sectors(0, -1) end), "count -1 from sector 0 must be 1 to 32768")
  t:assert_contains(err_of(function() data:write_sectors(0, "abc") end), "whole number of 512-byte sectors, got 3 bytes")
  t:assert_contains(err_of(function() vm:disk("nope") end), "has no disk `nope`; disks: data")
  t:assert_contains(err_of(function() data:fault_inject("melt") end), "unknown fault mode \"melt\"; modes: eio_read, eio_write, slow")
  t:assert_contains(err_of(function() data:fail_range(0, 0) end), "must be between 1 and")
  t:assert_contains(err_of(function() vm:attach_disk({id = "data", size = "1M"}) end), "already has a disk `data`")
  t:assert_contains(err_of(function() vm:attach_disk({id = "x"}) end), "give `size`")
  t:assert_contains(err_of(function() vm:attach_disk({id = "bad id!", size = "1M"}) end), "must be 1 to 20 letters")
end)
