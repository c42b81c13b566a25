import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { contentHash, fileStamp, keepHashesIn } from '../../src/vmm/file-hash.js';
import {
  FixtureCycleError,
  fixtureKey,
  FixtureNotFoundError,
  FixtureRefError,
  resolveFixture,
  type FixtureKeyInputs,
} from '../../src/broker/fixture-key.js';
import type { Profile } from '../../src/config/profiles.js';

let dir: string;
let rootA: string;
let rootB: string;

async function put(file: string, text: string | Uint8Array): Promise<string> {
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, text);
  return file;
}

function profile(name: string, over: Partial<Profile> = {}): Profile {
  return {
    name,
    kernel: join(dir, 'images', `${name}.vmlinux`),
    initrd: join(dir, 'images', `${name}.initrd`),
    cmdline: 'console=ttyS0 quiet',
    memoryBytes: 256 * 1024 * 1024,
    cpus: 1,
    machine: 'q35',
    accel: 'auto',
    injectAgent: true,
    agentTimeoutMs: 30_000,
    builtin: false,
    ...over,
  };
}

function inputs(over: Partial<FixtureKeyInputs> = {}): FixtureKeyInputs {
  return {
    roots: [rootA, rootB],
    profiles: { minimal: profile('minimal'), other: profile('other') },
    extra: ['protocol=1'],
    ...over,
  };
}

async function keyOf(ref: string, over: Partial<FixtureKeyInputs> = {}): Promise<string> {
  return (await fixtureKey(ref, inputs(over))).key;
}

/** The key before and after `change`: they must differ (or not, with `same`). */
async function expectChange(ref: string, change: () => Promise<unknown>, same = false): Promise<void> {
  const before = await keyOf(ref);
  await change();
  const afterwards = await keyOf(ref);
  if (same) assert.equal(afterwards, before);
  else assert.notEqual(afterwards, before);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'provium-fixture-key-'));
  rootA = join(dir, 'a');
  rootB = join(dir, 'b');
  await put(join(dir, 'images', 'minimal.vmlinux'), 'kernel-minimal');
  await put(join(dir, 'images', 'minimal.initrd'), 'initrd-minimal');
  await put(join(dir, 'images', 'other.vmlinux'), 'kernel-other');
  await put(join(dir, 'images', 'other.initrd'), 'initrd-other');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('resolveFixture', () => {
  it('finds <root>/<ref>.fixture.lua, the first root winning', async () => {
    const inB = await put(join(rootB, 'db', 'fixtures', 'warm.fixture.lua'), 'return 1');
    assert.equal(await resolveFixture('db/fixtures/warm', [rootA, rootB]), inB);
    const inA = await put(join(rootA, 'db', 'fixtures', 'warm.fixture.lua'), 'return 2');
    assert.equal(await resolveFixture('db/fixtures/warm', [rootA, rootB]), inA);
    assert.equal(await resolveFixture('db/fixtures/warm', [rootB, rootA]), inB);
  });

  it('says where it looked when the fixture is missing', async () => {
    await assert.rejects(resolveFixture('no/such', [rootA, rootB]), (e: Error) => {
      assert.ok(e instanceof FixtureNotFoundError);
      assert.equal(e.message, `fixture \`no/such\` not found in any test root (looked for no/such.fixture.lua under: ${rootA}, ${rootB})`);
      return true;
    });
  });

  it('rejects refs that can never name a fixture, saying how to write them', async () => {
    const bad: [string, RegExp][] = [
      ['db/warm.fixture.lua', /drop the `\.fixture\.lua` suffix and write `db\/warm`/],
      ['/abs/warm', /absolute path: name a fixture by its path under a test root/],
      ['../outside/warm', /climbs out of the test root with `\.\.`/],
      ['db/../../warm', /climbs out/],
      ['', /fixture ref is empty/],
    ];
    for (const [ref, message] of bad) {
      await assert.rejects(resolveFixture(ref, [rootA]), (e: Error) => e instanceof FixtureRefError && message.test(e.message));
    }
  });
});

describe('fixtureKey', () => {
  before(async () => {
    await put(join(rootA, 'lib', 'helpers.lua'), 'local inner = require("lib.inner")\nreturn {}\n');
    await put(join(rootA, 'lib', 'inner', 'init.lua'), 'return { x = 1 }\n');
    await put(join(rootA, 'base.fixture.lua'), 'local vm = provium:vm("b", "minimal")\nvm:boot()\nreturn vm:snapshot()\n');
    await put(join(rootA, 'app', 'bin', 'tool'), 'tool v1');
    await put(join(rootA, 'app', 'warm.fixture.lua'), [
      'local h = require("lib.helpers")',
      'local s = require("string") -- a built-in: not under the roots',
      'local vm = provium:vm_fixture("base")',
      'vm:push_file("bin/tool", "/usr/bin/tool")',
      'provium:depends_on_file("schema.sql")',
      'vm:push_file("unfolded.txt", "/x", {auto_dep = false})',
      'return vm:snapshot()',
      '',
    ].join('\n'));
    await put(join(rootA, 'unrelated.lua'), 'return 1\n');
  });

  it('is stable across calls and reports its inputs', async () => {
    const a = await fixtureKey('app/warm', inputs());
    const b = await fixtureKey('app/warm', inputs());
    assert.equal(a.key, b.key);
    assert.match(a.key, /^[0-9a-f]{64}$/);
    assert.equal(a.file, join(rootA, 'app', 'warm.fixture.lua'));
    assert.equal(a.ref, 'app/warm');
    assert.deepEqual(a.deps, ['base']);
    assert.deepEqual(a.parts, b.parts);
    const kinds = a.parts.map((p) => p.split(/[=.]/)[0]);
    // source, scheme, extra, dep, modules, profiles, host files: in that order.
    assert.deepEqual([...new Set(kinds)], ['source', 'scheme', 'protocol', 'dep', 'module', 'file']);
    assert.deepEqual(a.parts.filter((p) => p.startsWith('module=')).map((p) => p.replace(/sha256:\w+/, 'H')), [
      'module=lib.helpers lib/helpers.lua H',
      'module=lib.inner lib/inner/init.lua H',
    ]);
    assert.ok(a.parts.some((p) => p === 'file=schema.sql missing'));
    assert.ok(a.parts.some((p) => p.startsWith('file=bin/tool sha256:')));
    assert.ok(!a.parts.some((p) => p.includes('unfolded')));
    assert.ok(!a.parts.some((p) => p.includes('module=string')));
    // The profile `minimal` is used by the dep, not by app/warm itself.
    assert.ok(!a.parts.some((p) => p.startsWith('profile.')));
    const base = await fixtureKey('base', inputs());
    assert.ok(base.parts.includes('profile.minimal.cmdline=console=ttyS0 quiet'));
    assert.ok(!base.parts.some((p) => p.startsWith('profile.other')));
  });

  it('changes with the fixture text', async () => {
    const file = join(rootA, 'app', 'text.fixture.lua');
    await put(file, 'return 1\n');
    await expectChange('app/text', () => writeFile(file, 'return 2\n'));
  });

  it('changes with a required helper, also a nested one', async () => {
    await expectChange('app/warm', () => writeFile(join(rootA, 'lib', 'helpers.lua'), 'local inner = require("lib.inner")\nreturn { v = 2 }\n'));
    await expectChange('app/warm', () => writeFile(join(rootA, 'lib', 'inner', 'init.lua'), 'return { x = 2 }\n'));
  });

  it('changes with a dep fixture, and with what the dep depends on', async () => {
    await expectChange('app/warm', () => writeFile(join(rootA, 'base.fixture.lua'), 'local vm = provium:vm("b", "minimal")\nvm:boot{memory = "512M"}\nreturn vm:snapshot()\n'));
    await expectChange('app/warm', () => writeFile(join(dir, 'images', 'minimal.vmlinux'), 'kernel-minimal-2'));
  });

  it('changes with a pushed host file, its content or its creation', async () => {
    await expectChange('app/warm', () => writeFile(join(rootA, 'app', 'bin', 'tool'), 'tool v2'));
    await expectChange('app/warm', () => writeFile(join(rootA, 'app', 'schema.sql'), 'create table t (x int);'));
  });

  it('changes with an extra part', async () => {
    assert.notEqual(await keyOf('app/warm', { extra: ['protocol=1'] }), await keyOf('app/warm', { extra: ['protocol=2'] }));
    assert.notEqual(await keyOf('app/warm', { extra: ['protocol=1'] }), await keyOf('app/warm', { extra: ['protocol=1', 'qemu=9.2'] }));
  });

  it('changes with the used profile, not with an unused one', async () => {
    const base = inputs();
    const key = (profiles: Record<string, Profile>) => keyOf('base', { profiles });
    const k0 = await key(base.profiles);
    assert.notEqual(await key({ ...base.profiles, minimal: profile('minimal', { cmdline: 'console=ttyS0 quiet debug' }) }), k0);
    assert.notEqual(await key({ ...base.profiles, minimal: profile('minimal', { memoryBytes: 512 * 1024 * 1024 }) }), k0);
    assert.equal(await key({ ...base.profiles, other: profile('other', { cmdline: 'console=ttyS0 debug' }) }), k0);
    assert.equal(await key({ minimal: base.profiles['minimal']! }), k0);
    // Defining a profile the fixture names but nobody had defined changes it.
    const { other: _o, ...rest } = base.profiles;
    await put(join(rootA, 'uses-other.fixture.lua'), 'local vm = provium:vm("o", "other")\nreturn vm:snapshot()\n');
    assert.notEqual(await keyOf('uses-other', { profiles: rest }), await keyOf('uses-other', { profiles: base.profiles }));
  });

  it('follows the used kernel by content, not by mtime', async () => {
    const kernel = join(dir, 'images', 'minimal.vmlinux');
    // Old mtimes: the hash is remembered, and a new mtime must be looked at again.
    await utimes(kernel, new Date(Date.now() - 3600_000), new Date(Date.now() - 3600_000));
    await expectChange('base', () => utimes(kernel, new Date(Date.now() - 7200_000), new Date(Date.now() - 7200_000)), true);
    await expectChange('base', () => writeFile(kernel, 'kernel-minimal-3'));
    await expectChange('base', () => writeFile(join(dir, 'images', 'other.vmlinux'), 'kernel-other-2'), true);
  });

  it('does not change with an unrelated file', async () => {
    await expectChange('app/warm', () => writeFile(join(rootA, 'unrelated.lua'), 'return 2\n'), true);
    await expectChange('app/warm', () => put(join(rootA, 'app', 'notes.txt'), 'hello'), true);
    await expectChange('app/warm', () => writeFile(join(rootA, 'app', 'unfolded.txt'), 'not folded'), true);
  });

  it('counts every profile when one is computed', async () => {
    await put(join(rootA, 'dyn.fixture.lua'), 'local p = os.getenv("P") or "minimal"\nlocal vm = provium:vm("d", p)\nreturn vm:snapshot()\n');
    const k = await fixtureKey('dyn', inputs());
    assert.ok(k.parts.some((p) => p.startsWith('profile.minimal.')));
    assert.ok(k.parts.some((p) => p.startsWith('profile.other.')));
    await expectChange('dyn', () => writeFile(join(dir, 'images', 'other.initrd'), 'initrd-other-2'));
  });

  it('resolves helpers pushed from a module against the module, and finds modules next to the fixture', async () => {
    await put(join(rootB, 'suite', 'local_helper.lua'), 'return function(vm) vm:push_file("payload.bin", "/p") end\n');
    await put(join(rootB, 'suite', 'payload.bin'), 'v1');
    await put(join(rootB, 'suite', 'mod.fixture.lua'), 'local push = require("local_helper")\nlocal vm = provium:vm("m", "minimal")\npush(vm)\nreturn vm:snapshot()\n');
    const k = await fixtureKey('suite/mod', inputs());
    assert.ok(k.parts.some((p) => p.startsWith('module=local_helper local_helper.lua sha256:')));
    assert.ok(k.parts.some((p) => p.startsWith('file=payload.bin sha256:')));
    await expectChange('suite/mod', () => writeFile(join(rootB, 'suite', 'payload.bin'), 'v2'));
  });

  it('is a clear error on a dependency cycle, and on a missing dep', async () => {
    await put(join(rootA, 'cyc', 'x.fixture.lua'), 'provium:vm_fixture("cyc/y")\n');
    await put(join(rootA, 'cyc', 'y.fixture.lua'), 'provium.lab_fixture("cyc/z")\n');
    await put(join(rootA, 'cyc', 'z.fixture.lua'), "lab:vm_fixture 'cyc/x'\n");
    await assert.rejects(fixtureKey('cyc/x', inputs()), (e: Error) =>
      e instanceof FixtureCycleError && e.message === 'fixtures use each other in a cycle: cyc/x → cyc/y → cyc/z → cyc/x');
    await put(join(rootA, 'self.fixture.lua'), 'provium:vm_fixture("self")\n');
    await assert.rejects(fixtureKey('self', inputs()), /cycle: self → self/);
    await put(join(rootA, 'lost.fixture.lua'), 'provium:vm_fixture("gone/away")\n');
    await assert.rejects(fixtureKey('lost', inputs()), (e: Error) =>
      e instanceof FixtureNotFoundError && /^fixture `lost` uses fixture `gone\/away`: fixture `gone\/away` not found in any test root/.test(e.message));
  });

  it('shares one dep between two paths (a diamond is not a cycle)', async () => {
    await put(join(rootA, 'dia', 'top.fixture.lua'), 'provium:vm_fixture("dia/l")\nprovium:vm_fixture("dia/r")\n');
    await put(join(rootA, 'dia', 'l.fixture.lua'), 'provium:vm_fixture("dia/base")\n');
    await put(join(rootA, 'dia', 'r.fixture.lua'), 'provium:vm_fixture("dia/base")\n');
    await put(join(rootA, 'dia', 'base.fixture.lua'), 'return 1\n');
    assert.deepEqual((await fixtureKey('dia/top', inputs())).deps, ['dia/l', 'dia/base', 'dia/r']);
  });

  it('ignores references in comments', async () => {
    const file = join(rootA, 'commented.fixture.lua');
    await put(file, '-- provium:vm_fixture("base")\n-- require("lib.helpers")\n--[[ vm:push_file("x.bin", "/x") ]]\nreturn 1\n');
    const k = await fixtureKey('commented', inputs());
    assert.deepEqual(k.deps, []);
    assert.deepEqual(k.parts.filter((p) => /^(dep|module|file|profile)/.test(p)), []);
    await expectChange('commented', () => writeFile(join(rootA, 'lib', 'helpers.lua'), 'return { v = 3 }\n'), true);
  });
});

describe('legacy fixtures (seed 002: provium.fixture("name") → fixtures/<name>.lua)', () => {
  it('resolves a ref ending in .lua as the file itself', async () => {
    const file = await put(join(rootA, 'suite', 'fixtures', 'db.lua'), 'local vm = provium.create("minimal")\nvm:boot()\nreturn vm\n');
    assert.equal(await resolveFixture('suite/fixtures/db.lua', [rootA, rootB]), file);
    await assert.rejects(resolveFixture('suite/fixtures/none.lua', [rootA]), /looked for suite\/fixtures\/none\.lua under/);
  });

  it('keys a fixture with the legacy fixtures it uses, found from its own directory', async () => {
    await put(join(rootA, 'suite', 'fixtures', 'base.lua'), 'local vm = provium.create("minimal")\nvm:boot()\nreturn vm\n');
    await put(join(rootA, 'suite', 'fixtures', 'warm.lua'), 'local vm = provium.fixture("base")\nvm:exec("warm")\nreturn vm\n');
    const key = await fixtureKey('suite/fixtures/warm.lua', inputs());
    assert.deepEqual(key.deps, ['suite/fixtures/base.lua']);
    assert.ok(key.parts.some((p) => p.startsWith('dep=suite/fixtures/base.lua ')));
    const base = await fixtureKey('suite/fixtures/base.lua', inputs());
    assert.ok(base.parts.some((p) => p.startsWith('profile.minimal.kernel=')), 'provium.create("minimal") folds the profile in');
    await expectChange('suite/fixtures/warm.lua', () => put(join(rootA, 'suite', 'fixtures', 'base.lua'), 'local vm = provium.create("minimal")\nvm:boot()\nvm:exec("v2")\nreturn vm\n'));
  });

  it('names a legacy fixture that is missing, and where it looked', async () => {
    await put(join(rootA, 'suite', 'fixtures', 'broken.lua'), 'local vm = provium:fixture("absent")\nreturn vm\n');
    await assert.rejects(fixtureKey('suite/fixtures/broken.lua', inputs()), (e: Error) => {
      assert.ok(e instanceof FixtureNotFoundError);
      assert.match(e.message, /fixture `suite\/fixtures\/broken\.lua` uses fixture `absent`: no fixtures\/absent\.lua \(looked for .*suite\/fixtures\/fixtures\/absent\.lua/);
      return true;
    });
  });
});

describe('content hashes across runs', () => {
  const moduleUrl = new URL('../../src/vmm/file-hash.js', import.meta.url).href;
  /** contentHash(file) in a new process (nothing remembered in memory), with the memo `memo`. */
  const hashInNewRun = (memo: string, file: string): string =>
    execFileSync(process.execPath, ['--input-type=module', '-e',
      `const m = await import(${JSON.stringify(moduleUrl)}); m.keepHashesIn(${JSON.stringify(memo)}); process.stdout.write(await m.contentHash(${JSON.stringify(file)}));`,
    ], { encoding: 'utf8' });
  const sha = (bytes: Uint8Array) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const stampOf = async (file: string) => fileStamp(await stat(file, { bigint: true }));
  const old = new Date(Date.now() - 3600_000);

  it('keeps a large file\'s hash for the next run, and reads the file again once it changed', async () => {
    const memo = join(dir, 'memo', 'hashes.json');
    const big = await put(join(dir, 'memo', 'kernel'), Buffer.alloc(2 * 1024 * 1024, 7));
    await utimes(big, old, old);
    keepHashesIn(memo);
    try {
      assert.equal(await contentHash(big), sha(await readFile(big)));
    } finally {
      keepHashesIn(undefined);
    }
    const kept = JSON.parse(await readFile(memo, 'utf8')) as { files: Record<string, { stamp: string; hash: string }> };
    assert.deepEqual(kept.files[big], { stamp: await stampOf(big), hash: sha(await readFile(big)) });

    // A new run takes the remembered hash without reading: a planted one proves it.
    const planted = `sha256:${'0'.repeat(64)}`;
    await writeFile(memo, JSON.stringify({ version: 1, files: { [big]: { stamp: await stampOf(big), hash: planted } } }));
    assert.equal(hashInNewRun(memo, big), planted);

    // The same size rewritten under the old mtime: the ctime moved, so the bytes are read.
    const changed = Buffer.alloc(2 * 1024 * 1024, 8);
    await writeFile(big, changed);
    await utimes(big, old, old);
    assert.equal(hashInNewRun(memo, big), sha(changed));
  });

  it('does not keep small files, and takes an unreadable memo as empty', async () => {
    const memo = join(dir, 'memo2', 'hashes.json');
    const small = await put(join(dir, 'memo2', 'helper.sh'), 'echo hi\n');
    await utimes(small, old, old);
    await put(memo, 'not json');
    assert.equal(hashInNewRun(memo, small), sha(Buffer.from('echo hi\n')));
    assert.equal(await readFile(memo, 'utf8'), 'not json');
  });
});
