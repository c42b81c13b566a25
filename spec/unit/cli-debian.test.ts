// Debian profiles end to end, with the real CLI, real mmdebstrap and real guests (issue 11): the
// project's `web` profile boots its second VM from the boot snapshot and never writes its image;
// `provium image build web` builds nothing when the image is there; a package Debian does not
// know fails the run with exit 2, Debian's own error and the profile's name.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cliMain, runProvium } from './cli-run.js';

const repo = path.resolve(path.dirname(cliMain), '../../..');
const kConfig = path.join(repo, 'provium.toml');

function provium(cwd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cliMain, ...args], { cwd, env: { ...process.env, CI: '1' }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256').update(await readFile(file)).digest('hex');
}

describe('Debian profiles (real mmdebstrap, real guests)', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'provium-debian-'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('`provium image build web` builds the root once; the second call finds it', async () => {
    const first = await provium(repo, ['image', 'build', 'web', '--config', kConfig]);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /^image web: (built in .*|up to date) \(?.*debian-[0-9a-f]{20}/m);
    const second = await provium(repo, ['image', 'build', 'web', '--config', kConfig, '--quiet']);
    assert.equal(second.code, 0, second.stdout + second.stderr);
    assert.match(second.stdout, /^image web: up to date \(.*debian-[0-9a-f]{20}\)$/m);
  });

  it('boots a second VM from the boot snapshot, and no guest write reaches the image', async () => {
    const built = await provium(repo, ['image', 'build', 'web', '--config', kConfig, '--quiet']);
    const imageDir = /\((.*debian-[0-9a-f]{20})\)/.exec(built.stdout)?.[1];
    assert.ok(imageDir, built.stdout);
    const image = path.join(imageDir, 'root.sqfs');
    const before = await sha256(image);

    await writeFile(path.join(dir, 'twice.test.lua'), `
test("two VMs of one profile", function(t)
  for _, name in ipairs({"a", "b"}) do
    local vm = provium:vm(name, "web"):boot()
    vm:run("rm -rf /usr/lib/python3* && echo x > /etc/provium-written"):assert_ok()
    vm:shutdown()
  end
end)
`);
    const run = await runProvium(dir, ['--config', kConfig, path.join(dir, 'twice.test.lua')], path.join(dir, 'events.bin'));
    assert.equal(run.code, 0, run.out);
    const spawned = run.events.filter((e) => e.kind === 'vm_spawned');
    assert.equal(spawned.length, 2, run.out);
    // The first boot may be cold (an empty cache); the second restores what it saved.
    assert.equal(spawned[1]!.payload['restored'], true, JSON.stringify(spawned));
    assert.equal(await sha256(image), before, 'the root image changed after guests wrote to their root');
  });

  it('a package Debian does not know fails the run: exit 2, apt\'s error, the profile named', async () => {
    await writeFile(path.join(dir, 'provium.toml'), '[profiles.bad]\ndebian = { packages = ["curl", "no-such-package-provium"] }\n');
    await writeFile(path.join(dir, 'bad.test.lua'), 'test("never runs", function(t) provium:vm("v", "bad"):boot() end)\n');
    const run = await provium(dir, ['--no-progress', 'bad.test.lua']);
    assert.equal(run.code, 2, run.stdout + run.stderr);
    assert.match(run.stderr, /profile `bad`: building its Debian root failed/);
    assert.match(run.stderr, /E: Unable to locate package no-such-package-provium/);
    assert.match(run.stderr, /Debian bookworm has no package `no-such-package-provium`: fix debian\.packages of profile `bad`/);
    assert.doesNotMatch(run.stdout + run.stderr, /never runs/);
  });
});
