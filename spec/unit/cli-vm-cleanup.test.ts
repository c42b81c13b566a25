// The real CLI with real guests, in a private TMPDIR: whatever a run made there (transient
// snapshots that the test never deleted, QEMU scratch dirs, disk images) is gone when it ends.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

describe('a run leaves nothing behind in TMPDIR (real guests)', () => {
  let dir: string;
  let tmp: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-cleanup-'));
    tmp = path.join(dir, 'tmp');
    await mkdir(tmp);
    await mkdir(path.join(dir, 't'));
    await writeFile(path.join(dir, 'provium.toml'), '[provium]\nroots = ["t"]\n');
    await writeFile(
      path.join(dir, 't/leaves.test.lua'),
      [
        'local vm = provium:vm("v", "minimal", {memory = "128M", disks = {{id = "d", size = "1M"}}}):boot()',
        'test("snapshots and never deletes", function(t)',
        '  local s = vm:snapshot()',
        '  t:assert(s:size() > 0)',
        '  t:assert_eq(s:path():sub(1, #os.getenv("TMPDIR")), os.getenv("TMPDIR"))',
        'end)',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('removes transient snapshots, scratch dirs and disk images at the end of the run', async () => {
    const r = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile(process.execPath, [cli, '--no-progress'], { cwd: dir, env: { ...process.env, CI: '1', TMPDIR: tmp } }, (err, stdout, stderr) => {
        resolve({ code: err ? 1 : 0, out: stdout + stderr });
      });
    });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /PASS t\/leaves\.test\.lua \(1 passed/);
    assert.deepEqual(await readdir(tmp), []);
  });
});
