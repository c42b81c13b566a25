// The warm pool with the real CLI and real guests: a later file's boot takes a spare restored
// while an earlier file ran; a spare goes to one file only (nothing leaks between files), is
// a clone of its own (its own random bytes), the first file's boot finds one when the files name
// its profile, a lab fixture's guests come with their NICs, a fixture's or a reset's with their
// disks (either backend; a reset's not when it reads an image in place), and --no-warm-pool keeps
// none.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProvium } from './cli-run.js';

// Each file leaves a marker in its guest and logs what it found there, and its random bytes.
const kFile = (n: number) => `
local vm = provium:vm("v", "minimal", {memory = "128M"}):boot()
test("file ${n}", function(t)
  t:log("seen=" .. vm:run("ls /tmp | grep -c marker || true").stdout:gsub("%s", ""))
  t:log("random=" .. vm:run("head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\\\n'").stdout)
  vm:write_file("/tmp/marker-${n}", "x")
  vm:run("sleep 1"):assert_ok()
end)
`;

describe('the warm pool (real guests)', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-warm-'));
    await mkdir(path.join(dir, 't'));
    await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
    for (let n = 1; n <= 4; n++) await writeFile(path.join(dir, `t/f${n}.test.lua`), kFile(n));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('later files boot from spares, each a fresh clone that saw no other file', async () => {
    const run = await runProvium(dir, ['--json', '-j1'], path.join(dir, 'pool.bin'));
    assert.equal(run.code, 0, run.out);
    const hits = run.events.filter((e) => e.kind === 'pool_hit');
    assert.ok(hits.length >= 1, `a spare was taken (${run.events.filter((e) => e.kind === 'pool_miss').length} misses)`);
    assert.ok(hits.every((h) => (h.payload['vm_name'] as string) === 'v'));
    const logs = run.out.match(/seen=\d+/g) ?? [];
    assert.deepEqual(logs, ['seen=0', 'seen=0', 'seen=0', 'seen=0'], 'no file saw another file\'s marker');
    const randoms = run.out.match(/random=[0-9a-f]+/g) ?? [];
    assert.equal(new Set(randoms).size, 4, `every guest has its own random bytes: ${randoms.join(' ')}`);
  });

  it('reset_between_tests restores from a spare kept while later tests remain', async () => {
    const test = path.join(dir, 'reset.test.lua');
    await writeFile(
      test,
      [
        'provium.reset_between_tests = true',
        'local vm = provium:vm("r", "minimal", {memory = "128M"}):boot()',
        'for i = 1, 3 do',
        '  test("t" .. i, function(t)',
        '    t:assert_eq(vm:run("ls /tmp | grep -c dirty || true").stdout, "0\\n")',
        '    vm:write_file("/tmp/dirty" .. i, "x")',
        '    vm:run("sleep 1"):assert_ok()',
        '  end)',
        'end',
        '',
      ].join('\n'),
    );
    const run = await runProvium(dir, ['--json', test], path.join(dir, 'reset.bin'));
    assert.equal(run.code, 0, run.out);
    assert.ok(run.events.some((e) => e.kind === 'pool_hit' && e.payload['vm_name'] === 'r'), 'a reset took a spare');
  });

  it('reset_between_tests with a "qemu" disk: a spare runs on its own copy, under the file\'s fault rules', async () => {
    const test = path.join(dir, 'reset-qemu-disk.test.lua');
    await writeFile(
      test,
      [
        'provium.reset_between_tests = true',
        'local vm = provium:vm("q", "minimal", {memory = "128M", disks = {{id = "data", size = "4M", backend = "qemu"}}}):boot()',
        'vm:disk("data"):write_sectors(0, "top level" .. string.rep("\\0", 503))',
        'vm:disk("data"):fail_reads()',
        'for i = 1, 3 do',
        '  test("t" .. i, function(t)',
        '    local data = vm:disk("data")',
        '    t:assert_eq(data:read_sectors(0, 1):sub(1, 9), "top level")',
        '    t:assert(not vm:run("dd if=/dev/vda of=/dev/null bs=4k count=1 iflag=direct"):ok(), "the file\'s fault reaches the guest")',
        '    data:write_sectors(0, ("test " .. i .. string.rep("\\0", 512)):sub(1, 512))',
        '    vm:run("sleep 1"):assert_ok()',
        '  end)',
        'end',
        '',
      ].join('\n'),
    );
    const run = await runProvium(dir, ['--json', test], path.join(dir, 'reset-qemu-disk.bin'));
    assert.equal(run.code, 0, run.out);
    assert.ok(run.events.some((e) => e.kind === 'pool_hit' && e.payload['vm_name'] === 'q'), `a reset took a spare: ${JSON.stringify(run.events.filter((e) => e.kind.startsWith('pool_')))}`);
  });

  it('the first boot of a run takes a spare: the pool starts on the profiles the files name', async () => {
    const plain = (n: number) => `local vm = provium:vm("p", "minimal"):boot()\ntest("plain ${n}", function(t) vm:run("true"):assert_ok() end)\n`;
    await writeFile(path.join(dir, 'plain1.test.lua'), plain(1));
    await writeFile(path.join(dir, 'plain2.test.lua'), plain(2));
    // The boot snapshot of a plain minimal boot: the pool restores spares from it.
    const warmUp = await runProvium(dir, ['--json', '--no-warm-pool', 'plain1.test.lua'], path.join(dir, 'warmup.bin'));
    assert.equal(warmUp.code, 0, warmUp.out);
    const run = await runProvium(dir, ['--json', '-j1', 'plain1.test.lua', 'plain2.test.lua'], path.join(dir, 'prewarm.bin'));
    assert.equal(run.code, 0, run.out);
    const first = run.events.find((e) => e.kind === 'pool_hit' || e.kind === 'pool_miss');
    assert.equal(first?.kind, 'pool_hit', `the first boot: ${JSON.stringify(first)}`);
    assert.equal(first.payload['file'], 'plain1.test.lua');
  });

  it('a lab fixture on a bridge: later files take spares whose NICs join their bridge, and whose disk is their own', async () => {
    await mkdir(path.join(dir, 't/fx'), { recursive: true });
    await writeFile(
      path.join(dir, 't/fx/pair.fixture.lua'),
      [
        'local a = provium:vm("a", "minimal", {memory = "128M", disks = {{id = "data", size = "4M"}}})',
        'local b = provium:vm("b", "minimal", {memory = "128M"})',
        'provium:bridge("net"):attach({a, b})',
        'provium:boot()',
        'a:disk("data"):write_sectors(0, "lab fixture" .. string.rep("\\0", 501))',
        'return provium:snapshot()',
        '',
      ].join('\n'),
    );
    const files: string[] = [];
    for (let n = 1; n <= 3; n++) {
      files.push(`t/lab${n}.test.lua`);
      await writeFile(
        path.join(dir, files.at(-1)!),
        [
          'local lab = provium:lab_fixture("fx/pair")',
          `test("lab file ${n}", function(t)`,
          '  local a, b = lab:vm("a"), lab:vm("b")',
          '  t:log("seen=" .. a:run("ls /tmp | grep -c marker || true").stdout:gsub("%s", ""))',
          `  a:write_file("/tmp/marker-${n}", "x")`,
          '  t:assert_eq(a:disk("data"):read_sectors(0, 1):sub(1, 11), "lab fixture")',
          `  a:disk("data"):write_sectors(0, "file ${n}" .. string.rep("\\0", 506))`,
          `  t:assert_eq(a:run("dd if=/dev/vda bs=4k count=1 iflag=direct 2>/dev/null | head -c 6").stdout, "file ${n}")`,
          '  t:assert(a:run("ping -c1 -W5 b"):ok(), "a reaches b over the bridge")',
          '  t:assert(b:run("ping -c1 -W5 a"):ok(), "b reaches a over the bridge")',
          '  a:run("sleep 1"):assert_ok()',
          'end)',
          '',
        ].join('\n'),
      );
    }
    const run = await runProvium(dir, ['--json', '-j1', ...files], path.join(dir, 'lab.bin'));
    assert.equal(run.code, 0, run.out);
    const hits = run.events.filter((e) => e.kind === 'pool_hit');
    for (const name of ['a', 'b']) {
      assert.ok(hits.some((h) => h.payload['vm_name'] === name && h.payload['file'] !== files[0]), `a later file took a spare of ${name}: ${JSON.stringify(hits)}`);
    }
    assert.deepEqual(run.out.match(/seen=\d+/g), ['seen=0', 'seen=0', 'seen=0'], 'no file saw another file\'s marker');
  });

  for (const backend of ['nbd', 'qemu']) it(`a vm fixture with a disk (backend "${backend}"): later files take spares whose disk is a clone of their own`, async () => {
    await mkdir(path.join(dir, 't/fx'), { recursive: true });
    await writeFile(
      path.join(dir, `t/fx/store-${backend}.fixture.lua`),
      [
        `local vm = provium:vm("s", "minimal", {memory = "128M", disks = {{id = "data", size = "8M", backend = "${backend}"}}})`,
        'vm:boot()',
        'vm:disk("data"):write_sectors(0, "from the fixture" .. string.rep("\\0", 496))',
        'return vm:snapshot()',
        '',
      ].join('\n'),
    );
    const files: string[] = [];
    for (let n = 1; n <= 3; n++) {
      files.push(`t/disk-${backend}${n}.test.lua`);
      await writeFile(
        path.join(dir, files.at(-1)!),
        [
          `local vm = provium:vm_fixture("fx/store-${backend}")`,
          `test("disk file ${n}", function(t)`,
          '  local data = vm:disk("data")',
          '  t:assert_eq(data:device(), "/dev/vda")',
          '  local guest = "dd if=/dev/vda bs=4k count=1 iflag=direct 2>/dev/null | head -c 16"',
          '  t:log("seen=" .. vm:run(guest).stdout:gsub("%s", "_"))',
          `  vm:run("printf file-${n} | dd of=/dev/vda bs=4k count=1 conv=sync,fsync oflag=direct"):assert_ok()`,
          `  t:assert_eq(data:read_sectors(0, 1):sub(1, 6), "file-${n}")`,
          '  data:fail_reads()',
          '  t:assert(not vm:run("dd if=/dev/vda of=/dev/null bs=4k count=1 skip=9 iflag=direct"):ok(), "the fault reaches the guest")',
          '  data:clear_policy()',
          '  vm:run("sleep 1"):assert_ok()',
          'end)',
          '',
        ].join('\n'),
      );
    }
    const run = await runProvium(dir, ['--json', '-j1', ...files], path.join(dir, `disk-${backend}.bin`));
    assert.equal(run.code, 0, run.out);
    const hits = run.events.filter((e) => e.kind === 'pool_hit' && e.payload['vm_name'] === 's');
    assert.ok(hits.some((h) => h.payload['file'] !== files[0]), `a later file took a spare: ${JSON.stringify(run.events.filter((e) => e.kind.startsWith('pool_')))}`);
    assert.deepEqual(run.out.match(/seen=[\w-]+/g), ['seen=from_the_fixture', 'seen=from_the_fixture', 'seen=from_the_fixture'], 'every file started from the fixture\'s disk');
    const restores = run.events.filter((e) => e.kind === 'vm_restored' && e.payload['vm_name'] === 's');
    assert.deepEqual(restores.map((e) => e.payload['file']), files, 'each file\'s restore is reported');
    assert.equal(restores.filter((e) => e.payload['pooled'] === true).length, hits.length, 'vm_restored says which came from a spare');
    const faults = run.events.filter((e) => e.kind === 'disk_fault' && e.payload['kind'] === 'fail_reads');
    assert.deepEqual(faults.map((e) => e.payload['file']).sort(), files.slice().sort(), 'each file\'s fault is reported as its own');
  });

  it('reset_between_tests on a VM reading an image in place (read-only, backend "qemu") restores, not copying it into spares', async () => {
    const image = path.join(dir, 'golden.img');
    await writeFile(image, Buffer.concat([Buffer.from('golden image'), Buffer.alloc(1024 * 1024 - 12)]));
    const test = path.join(dir, 'reset-golden.test.lua');
    await writeFile(
      test,
      [
        'provium.reset_between_tests = true',
        `local vm = provium:vm("g", "minimal", {memory = "128M", disks = {{id = "base", image = ${JSON.stringify(image)}, readonly = true, backend = "qemu"}}}):boot()`,
        'for i = 1, 3 do',
        '  test("t" .. i, function(t)',
        '    t:assert_eq(vm:run("dd if=/dev/vda bs=4k count=1 iflag=direct 2>/dev/null | head -c 12").stdout, "golden image")',
        '    vm:run("sleep 1"):assert_ok()',
        '  end)',
        'end',
        '',
      ].join('\n'),
    );
    const run = await runProvium(dir, ['--json', test], path.join(dir, 'reset-golden.bin'));
    assert.equal(run.code, 0, run.out);
    const restores = run.events.filter((e) => e.kind === 'vm_restored' && e.payload['vm_name'] === 'g');
    assert.ok(restores.length >= 2, `the later tests restored the VM: ${restores.length}`);
    assert.ok(restores.every((e) => e.payload['pooled'] === false), 'every reset restored the VM itself');
  });

  it('a vm fixture with a read-only "qemu" image: each file reads the image, restored or from a spare', async () => {
    await mkdir(path.join(dir, 't/fx'), { recursive: true });
    const image = path.join(dir, 'golden-fx.img');
    await writeFile(image, Buffer.concat([Buffer.from('golden image'), Buffer.alloc(1024 * 1024 - 12)]));
    await writeFile(
      path.join(dir, 't/fx/golden.fixture.lua'),
      [`local vm = provium:vm("g", "minimal", {memory = "128M", disks = {{id = "base", image = ${JSON.stringify(image)}, readonly = true, backend = "qemu"}}})`, 'vm:boot()', 'return vm:snapshot()', ''].join('\n'),
    );
    const files = ['t/golden1.test.lua', 't/golden2.test.lua', 't/golden3.test.lua'];
    for (const file of files) {
      await writeFile(
        path.join(dir, file),
        [
          'local vm = provium:vm_fixture("fx/golden")',
          'test("reads the image", function(t)',
          '  t:assert_eq(vm:run("dd if=/dev/vda bs=4k count=1 iflag=direct 2>/dev/null | head -c 12").stdout, "golden image")',
          '  t:assert(not vm:run("echo x | dd of=/dev/vda oflag=direct 2>/dev/null"):ok(), "the disk is read-only")',
          '  vm:run("sleep 1"):assert_ok()',
          'end)',
          '',
        ].join('\n'),
      );
    }
    const run = await runProvium(dir, ['--json', '-j1', ...files], path.join(dir, 'golden.bin'));
    assert.equal(run.code, 0, run.out);
    const restores = run.events.filter((e) => e.kind === 'vm_restored' && e.payload['vm_name'] === 'g');
    assert.deepEqual(restores.map((e) => e.payload['file']), files);
    assert.ok(restores.some((e) => e.payload['pooled'] === true) && restores.some((e) => e.payload['pooled'] === false), 'both paths ran');
  });

  it('--no-warm-pool keeps no spares', async () => {
    const run = await runProvium(dir, ['--json', '-j1', '--no-warm-pool', 't/f1.test.lua', 't/f2.test.lua'], path.join(dir, 'nopool.bin'));
    assert.equal(run.code, 0, run.out);
    assert.equal(run.events.filter((e) => e.kind === 'pool_hit' || e.kind === 'pool_miss').length, 0);
  });
});
