-- bench --only faults: how fast a wedged guest is named, and a 1 GiB stdout flood. The bench
-- freezes this guest's QEMU from outside (SIGSTOP) when it prints the marker.
local vm = provium:vm("bench-faults", "minimal", {memory = "128M"}):boot()

test("idle", {tags = {"idle"}}, function(t)
  vm:run("true"):assert_ok()
end)

test("flood", {tags = {"flood"}}, function(t)
  local r = vm:run("dd if=/dev/zero bs=1M count=1024 2>/dev/null")
  r:assert_ok()
  t:assert(r.stdout_truncated and #r.stdout == 16 * 1024 * 1024, "the first 16 MiB kept, truncated")
end)

test("channel", {tags = {"channel"}}, function(t)
  local err = t:assert_raises(function()
    vm:run("d=$(readlink -f /sys/class/virtio-ports/vport*p1); echo 1 > ${d%%/virtio*}/remove")
  end)
  t:assert_contains(err, "channel was closed inside the guest")
end)

test("frozen", {tags = {"frozen"}}, function(t)
  local err = t:assert_raises(function() vm:run("echo BENCH-FROZEN > /dev/console; sleep 120") end)
  t:assert_contains(err, "stopped answering")
end)
