-- Guest-side block I/O for the disk specs: 4 KiB blocks with O_DIRECT, straight to the device
-- past the guest's page cache (busybox falls back to buffered I/O for smaller direct blocks).
-- Block n is sectors 8n to 8n+7.
local blocks = {}

function blocks.on(vm, dev)
  dev = dev or "/dev/vda"
  local b = {}
  function b.read(n)
    return vm:run("dd if=" .. dev .. " of=/dev/null bs=4k count=1 skip=" .. n .. " iflag=direct 2>&1")
  end
  function b.write(n, text, flags)
    return vm:run("printf '" .. text .. "' | dd of=" .. dev .. " bs=4k count=1 seek=" .. n .. " conv=sync" .. (flags or "") .. " oflag=direct 2>&1")
  end
  function b.text(n)
    return vm:run("dd if=" .. dev .. " bs=4k skip=" .. n .. " count=1 iflag=direct 2>/dev/null | head -c 16").stdout
  end
  return b
end

return blocks
