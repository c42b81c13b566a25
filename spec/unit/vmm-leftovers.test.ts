// A cache and temp directory that stay clean (issue 15 part 5): console.log capped as its boot
// plus a ring of its last MiBs, under a writer that keeps appending as QEMU does; a dead VM's
// console still told after its scratch dir is gone; a killed run's scratch, boot-files and disk
// dirs, snapshot files and boot-snapshot `.tmp` files swept by the next run.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { BootCache } from '../../src/broker/boot-cache.js';
import { minimalProfile } from '../../src/config/profiles.js';
import { capConsoleLog } from '../../src/vmm/console-log.js';
import { killAllQemu, QemuVm } from '../../src/vmm/qemu.js';
import { ownedTempDir, removeOwnedSync, sweepStale } from '../../src/vmm/temp-dirs.js';
import { FakeError, runLua } from './lua-fake-broker.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const kLimits = { maxBytes: 256 * KiB, headBytes: 16 * KiB, tailBytes: 64 * KiB };
const scratch = mkdtempSync(path.join(tmpdir(), 'provium-leftovers-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A pid that existed and is gone. */
function deadPid(): number {
  const r = spawnSync('true');
  return r.pid!;
}

describe('console.log cap', () => {
  it('cuts a log past the limit to its boot and its last bytes, with a note; a small log is left alone', async () => {
    const file = path.join(scratch, 'console-big.log');
    const boot = 'Linux version 6.1 boot line\n'.repeat(1000); // 28 KB: more than the head keeps
    const lines: string[] = [];
    for (let i = 0; i < 20000; i++) lines.push(`guest says ${i}`);
    writeFileSync(file, boot + lines.join('\n') + '\n');
    const before = statSync(file).size;
    const dropped = await capConsoleLog(file, kLimits);
    const text = readFileSync(file, 'utf8');
    assert.ok(dropped > 0);
    assert.ok(text.length < kLimits.headBytes + kLimits.tailBytes + 512, `${text.length} bytes left`);
    assert.ok(text.startsWith('Linux version 6.1 boot line\n'));
    assert.match(text, /\n\[provium: console log capped: \d+ bytes dropped here; the log keeps its first 16384 bytes \(the boot\) and its last 65536 bytes\]\nguest says \d+\n/);
    assert.ok(text.endsWith('guest says 19999\n'));
    assert.equal(before - text.length + text.match(/\[provium.*\]\n/)![0].length + 1, dropped);
    assert.equal(await capConsoleLog(file, kLimits), 0, 'under the limit now');
    assert.equal(await capConsoleLog(path.join(scratch, 'absent.log'), kLimits), 0);
  });

  it('stays bounded while a writer keeps appending (O_APPEND, as QEMU with logappend=on), its latest bytes at the end', async () => {
    const file = path.join(scratch, 'console-live.log');
    writeFileSync(file, 'BOOT LOG\n');
    const fd = openSync(file, 'a');
    let i = 0;
    let peak = 0;
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline) {
      // ~80 KB between cuts, as a chatty guest between two checks.
      for (let k = 0; k < 2000; k++) writeSync(fd, `line ${i++} ${'x'.repeat(30)}\n`);
      peak = Math.max(peak, statSync(file).size);
      await capConsoleLog(file, kLimits);
    }
    writeSync(fd, 'the last line\n');
    closeSync(fd);
    const text = readFileSync(file, 'utf8');
    assert.ok(text.startsWith('BOOT LOG\n'));
    assert.ok(text.endsWith(`line ${i - 1} ${'x'.repeat(30)}\nthe last line\n`), text.slice(-200));
    assert.ok(peak < kLimits.maxBytes + 100 * KiB, `peak ${peak}`);
    assert.ok(statSync(file).size < kLimits.maxBytes + 100 * KiB);
    assert.ok(i > 10000, 'the writer wrote well past the cap');
  });
});

describe("a dead VM's console", () => {
  const repo = fileURLToPath(new URL('../../../', import.meta.url));
  const standin = path.join(repo, 'spec', 'unit', 'qemu-standin.mjs');
  const agent = path.join(repo, 'agent', 'build', 'provium-agent');
  const missing = !existsSync(agent) ? `${agent} is missing (make -C agent)` : undefined;

  /** A QemuVm of the stand-in QEMU (qemu-standin.mjs), given to `use`. */
  const withStandin = async (name: string, use: (vm: QemuVm) => Promise<void>): Promise<void> => {
    const saved = process.env['PROVIUM_QEMU'];
    process.env['PROVIUM_QEMU'] = standin;
    const kernel = path.join(scratch, 'vmlinux');
    const initrd = path.join(scratch, 'initrd.img');
    writeFileSync(kernel, 'stand-in kernel\n');
    writeFileSync(initrd, 'stand-in initrd\n');
    try {
      const profile = { ...minimalProfile({ kernel, initrd }), accel: 'tcg' as const, memoryBytes: 64 * MiB };
      await use(await QemuVm.launch({ name, profile, memoryBytes: 64 * MiB, cpus: 1, hotplugSlots: 0 }));
    } finally {
      if (saved === undefined) delete process.env['PROVIUM_QEMU'];
      else process.env['PROVIUM_QEMU'] = saved;
    }
  };

  it('QemuVm keeps the console tail after stop() removed its scratch dir', { skip: missing }, () =>
    withStandin('leftovers-console', async (vm) => {
      const deadline = Date.now() + 5000;
      while (!(await vm.consoleTail()).includes('stand-in console') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(readFileSync(path.join(vm.scratchDir, 'owner'), 'utf8').startsWith(`${process.pid}`));
      await vm.stop({ graceMs: 500 });
      assert.equal(existsSync(vm.scratchDir), false);
      assert.match(await vm.consoleTail(), /stand-in console/);
    }));

  it('killAllQemu (a forced exit) removes the scratch dir of a QEMU that exited but was not stopped yet', { skip: missing }, () =>
    withStandin('leftovers-forced', async (vm) => {
      vm.kill();
      await vm.exited;
      assert.equal(existsSync(vm.scratchDir), true, 'stop() has not run: the scratch dir is still there');
      killAllQemu();
      assert.equal(existsSync(vm.scratchDir), false);
    }));

  it("a test that failed on a dead VM carries that VM's console excerpt", async () => {
    const { result } = await runLua(
      String.raw`
test("panics", function(t)
  local vm = provium:vm("a", "minimal"):boot()
  vm:run("echo c > /proc/sysrq-trigger")
end)
`,
      {
        setup: (b) => {
          b.agent['exec'] = () => {
            const [id, vm] = [...b.vms].find(([, v]) => v.name === 'a')!;
            vm.console += 'Kernel panic - not syncing: sysrq triggered crash\n';
            b.setState(id, 'dead', 'kernel panic: Kernel panic - not syncing: sysrq triggered crash');
            const err = new FakeError(`vm \`a\` is dead: ${vm.deadReason}`, 'vm_dead');
            err.vm = b.view(id);
            throw err;
          };
        },
      },
    );
    const t = result.tests[0]!;
    assert.equal(t.status, 'failed');
    assert.match(t.message!, /kernel panic/);
    assert.match(t.consoleExcerpt ?? '', /Kernel panic - not syncing: sysrq triggered crash/);
  });
});

describe('what a killed run left behind', () => {
  /** Runs `use` with the runtime dir and TMPDIR on a new directory of its own. */
  const inRuntimeDir = async (use: (runtime: string) => Promise<void>): Promise<void> => {
    const runtime = mkdtempSync(path.join(scratch, 'rt-'));
    const saved = { rt: process.env['PROVIUM_RUNTIME_DIR'], tmp: process.env['TMPDIR'] };
    process.env['PROVIUM_RUNTIME_DIR'] = runtime;
    process.env['TMPDIR'] = runtime;
    try {
      await use(runtime);
    } finally {
      for (const [k, v] of [['PROVIUM_RUNTIME_DIR', saved.rt], ['TMPDIR', saved.tmp]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  };

  it('the next run sweeps scratch, boot-files, disk and bridge dirs, parked NICs and disks of warm spares, and snapshot files of dead processes, and nothing else', () =>
    inRuntimeDir(async (runtime) => {
      const dead = deadPid();
      const mine = await ownedTempDir('provium-files-');
      assert.equal(statSync(mine).mode & 0o777, 0o700);
      const stale: string[] = [];
      for (const prefix of ['provium-vm-', 'provium-files-', 'provium-disks-', 'provium-br-', 'provium-parked-', 'provium-parked-disks-']) {
        const dir = path.join(runtime, `${prefix}dead1`);
        mkdirSync(dir);
        writeFileSync(path.join(dir, 'owner'), `${dead}\n`);
        writeFileSync(path.join(dir, 'files.cpio'), 'x');
        stale.push(dir);
      }
      for (const name of [`provium-snap-${dead}-123.bin`, `provium-snap-${dead}-123.bin.console`]) {
        writeFileSync(path.join(runtime, name), 'snapshot');
        stale.push(path.join(runtime, name));
      }
      mkdirSync(path.join(runtime, `provium-labsnap-${dead}-abc`));
      stale.push(path.join(runtime, `provium-labsnap-${dead}-abc`));
      // Kept: ours, a live process's, a fresh dir without an owner file yet, someone else's.
      const keep = [mine, path.join(runtime, `provium-snap-${process.pid}-1.bin`), path.join(runtime, 'provium-files-fresh'), path.join(runtime, 'other-tool-dir')];
      writeFileSync(keep[1]!, 'live');
      mkdirSync(keep[2]!);
      mkdirSync(keep[3]!);
      const removed = await sweepStale();
      assert.deepEqual(removed.sort(), stale.sort());
      for (const p of stale) assert.equal(existsSync(p), false, p);
      for (const p of keep) assert.equal(existsSync(p), true, p);
    }));

  it('at exit (or a forced kill) a run removes everything it owns in the temp dirs, and nothing else', () =>
    inRuntimeDir(async (runtime) => {
      const mine = [await ownedTempDir('provium-disks-'), await ownedTempDir('provium-parked-disks-'), path.join(runtime, `provium-snap-${process.pid}-7.bin`)];
      writeFileSync(mine[2]!, 'snapshot');
      const others = [path.join(runtime, `provium-snap-${process.pid + 1}-7.bin`), path.join(runtime, 'provium-br-other'), path.join(runtime, 'unrelated')];
      writeFileSync(others[0]!, 'another run');
      mkdirSync(others[1]!);
      writeFileSync(path.join(others[1]!, 'owner'), `${process.pid + 1}\n`);
      mkdirSync(others[2]!);
      removeOwnedSync();
      for (const p of mine) assert.equal(existsSync(p), false, p);
      for (const p of others) assert.equal(existsSync(p), true, p);
    }));

  it("boot-snapshot .tmp files of a dead process are swept; a live save's and the snapshots are kept", async () => {
    const cache = mkdtempSync(path.join(scratch, 'cache-'));
    const dir = path.join(cache, 'boot-snapshots');
    mkdirSync(dir);
    const key = 'ab'.repeat(16);
    const dead = deadPid();
    const names = {
      stale: [`${key}.${dead}.1700000000000.tmp`, `${key}.${dead}.1700000000000.tmp.console`],
      kept: [`${key}.${process.pid}.1700000000001.tmp`, `${key}.snap`, `${key}.snap.console`],
    };
    for (const n of [...names.stale, ...names.kept]) writeFileSync(path.join(dir, n), 'data');
    const removed = await new BootCache(cache).sweepTemp();
    assert.deepEqual(removed.sort(), names.stale.sort());
    for (const n of names.kept) assert.ok(existsSync(path.join(dir, n)), n);
  });
});
