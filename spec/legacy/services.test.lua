-- A legacy-API service test (seed 002 style): a daemon started as a background job, waited for
-- with vm:wait_until, talked to, and stopped with vm:job_kill.

local vm = provium.create("minimal")
vm:boot()

local function start_counter()
  vm:exec("rm -f /tmp/counter.*")
  vm:write_file("/tmp/counter.sh", [[
i=0
echo started > /tmp/counter.state
while [ ! -e /tmp/counter.stop ]; do
  i=$((i + 1))
  echo $i > /tmp/counter.value.tmp && mv /tmp/counter.value.tmp /tmp/counter.value
  sleep 0.1
done
echo "stopped at $i"
]])
  return vm:background("sh /tmp/counter.sh")
end

test("a daemon runs in the background until told to stop", function()
  local job = start_counter()
  assert(job.pid > 0)
  vm:wait_until(function()
    return vm:exec("test -f /tmp/counter.value").ok
  end, {timeout = 10, desc = "counter started"})
  local status = vm:job_wait(job, 0)
  assert(status.running, "the daemon keeps running")
  vm:wait_until(function()
    return tonumber(vm:read_file("/tmp/counter.value")) >= 3
  end, {timeout = 10, interval = 0.2, desc = "counter reached 3"})
  vm:exec("touch /tmp/counter.stop")
  local r = vm:job_wait(job, 10)
  assert_eq(false, r.running)
  assert_eq(0, r.exit_code)
  assert(r.stdout:starts_with("stopped at "), r.stdout)
end)

test("a stuck job is killed", function()
  local job = vm:background("sleep 600")
  local r = vm:job_wait(job, 0.2)
  assert(r.running)
  r = vm:job_kill(job)
  assert_eq(false, r.running)
  assert(r.exit_code ~= 0)
end)

test("several jobs at once", function()
  local jobs = {}
  for i = 1, 3 do
    jobs[i] = vm:background("sleep 0." .. i .. "; echo job" .. i)
  end
  for i = 1, 3 do
    local r = vm:job_wait(jobs[i], 10)
    assert_eq("job" .. i .. "\n", r.stdout)
  end
end)
