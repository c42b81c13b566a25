// Fixtures across files, runs and processes, with the real CLI and real guests: built once under
// the cross-process lock and restored by every user; rebuilt exactly when an input changes; a
// corrupt entry rebuilt. Read back from each run's saved event stream.
import assert from 'node:assert/strict';
import { appendFile, mkdir, mkdtemp, readdir, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runProvium, type CliRun } from './cli-run.js';
import { cacheDir } from '../../src/config/cache-dir.js';

const count = (run: CliRun, kind: string) => run.events.filter((e) => e.kind === kind).length;

const kFixture = `
local vm = provium:vm("svc", "minimal", {memory = "128M"})
vm:boot()
vm:run("mkdir -p /srv/files"):assert_ok()
vm:push_file("data.txt", "/srv/data.txt")
vm:run("for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > /srv/files/$i; done"):assert_ok()
vm:run("(while true; do sleep 1; done) >/dev/null 2>&1 & echo $! > /srv/pid"):assert_ok()
return vm:snapshot()
`;

function user(name: string): string {
  return `
local vm = provium:vm_fixture("fx/svc")
test("${name} starts from the fixture", function(t)
  t:assert_eq(vm:read_file("/srv/files/10"), "10\\n")
  vm:run("kill -0 $(cat /srv/pid)"):assert_ok()
  t:log("data=" .. vm:read_file("/srv/data.txt"))
end)
`;
}

describe('fixtures across files, runs and processes (real guests)', () => {
  let dir: string;
  let cache: string;
  let n = 0;
  const events = () => path.join(dir, `events-${n++}.bin`);

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-fixtures-e2e-'));
    cache = path.join(dir, 'cache');
    await mkdir(cache);
    // The built image and boot snapshots are shared; the fixture cache is this test's own.
    for (const shared of ['images', 'boot-snapshots']) {
      const real = path.join(cacheDir(), shared);
      await mkdir(real, { recursive: true });
      await symlink(real, path.join(cache, shared));
    }
    await mkdir(path.join(dir, 't/fx'), { recursive: true });
    await writeFile(path.join(dir, 'provium.toml'), `[provium]\nroots = ["t"]\ncache_dir = "${cache}"\n`);
    await writeFile(path.join(dir, 't/fx/svc.fixture.lua'), kFixture);
    await writeFile(path.join(dir, 't/fx/data.txt'), 'one');
    await writeFile(path.join(dir, 't/unrelated.txt'), 'x');
    for (const f of ['a', 'b', 'c']) await writeFile(path.join(dir, `t/${f}.test.lua`), user(f));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('two runs at once on a fresh cache build it once; every file restores it', async () => {
    const [one, two] = await Promise.all([runProvium(dir, ['-j2', 't/a.test.lua', 't/b.test.lua'], events()), runProvium(dir, ['-j2', 't/b.test.lua', 't/c.test.lua'], events())]);
    assert.equal(one.code, 0, one.out);
    assert.equal(two.code, 0, two.out);
    assert.equal(count(one, 'fixture_build_started') + count(two, 'fixture_build_started'), 1, 'one build in all');
    assert.equal(count(one, 'fixture_build_done') + count(two, 'fixture_build_done'), 1);
    assert.ok(count(one, 'fixture_build_waiting') + count(two, 'fixture_build_waiting') >= 1, 'the other run waited for the build');
    assert.equal(count(one, 'fixture_cache_hit') + count(two, 'fixture_cache_hit'), 4, 'every file restored it');
    const done = [...one.events, ...two.events].find((e) => e.kind === 'fixture_build_done')!;
    assert.equal(done.payload['path'], 't/fx/svc.fixture.lua');
    assert.ok((done.payload['snapshot_bytes'] as number) > 0);
  });

  it('a later run reuses it, and an unrelated edit changes nothing', async () => {
    await appendFile(path.join(dir, 't/unrelated.txt'), 'y');
    const run = await runProvium(dir, ['t/c.test.lua'], events());
    assert.equal(run.code, 0, run.out);
    assert.equal(count(run, 'fixture_build_started'), 0);
    assert.equal(count(run, 'fixture_cache_hit'), 1);
  });

  it('a pushed host file and the fixture source are in the key', async () => {
    await writeFile(path.join(dir, 't/fx/data.txt'), 'two');
    const pushed = await runProvium(dir, ['t/c.test.lua', '--json'], events());
    assert.equal(pushed.code, 0, pushed.out);
    assert.equal(count(pushed, 'fixture_build_started'), 1, 'the pushed file changed');
    assert.match(pushed.out, /data=two/);
    await appendFile(path.join(dir, 't/fx/svc.fixture.lua'), '-- edited\n');
    const edited = await runProvium(dir, ['t/c.test.lua'], events());
    assert.equal(edited.code, 0, edited.out);
    assert.equal(count(edited, 'fixture_build_started'), 1, 'the fixture changed');
  });

  it('a corrupt entry is reported, evicted and rebuilt', async () => {
    const root = path.join(cache, 'fixtures');
    const entries = (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory());
    // Every entry's biggest stored file loses its tail.
    for (const e of entries) {
      const files = await readdir(path.join(root, e.name), { recursive: true });
      let biggest = { file: '', size: -1 };
      for (const f of files) {
        const st = await stat(path.join(root, e.name, f));
        if (st.isFile() && st.size > biggest.size) biggest = { file: path.join(root, e.name, f), size: st.size };
      }
      await truncate(biggest.file, Math.floor(biggest.size / 2));
    }
    const run = await runProvium(dir, ['t/c.test.lua'], events());
    assert.equal(run.code, 0, run.out);
    assert.equal(count(run, 'fixture_build_started'), 1, 'rebuilt');
    assert.match(run.out, /corrupt/);
  });
});
