import assert from 'node:assert/strict';
import { utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { discover } from '../../src/run/discovery.js';
import { UsageError } from '../../src/run/errors.js';
import { buildSelection, filterFiles, parseKeyValue } from '../../src/run/filters.js';
import { project } from './run-capture.js';

const sel = (o: Partial<Parameters<typeof buildSelection>[0]> = {}) =>
  buildSelection({ includeSlow: false, tags: [], noTags: [], tagMeta: [], noTagMeta: [], ...o });

describe('selection flags', () => {
  it('splits KEY=VALUE at the first = and rejects anything else', () => {
    assert.deepEqual(parseKeyValue('a=b=c', '--tag-meta'), { key: 'a', value: 'b=c' });
    assert.deepEqual(parseKeyValue('a=', '--tag-meta'), { key: 'a', value: '' });
    for (const bad of ['novalue', '=x']) {
      assert.throws(() => parseKeyValue(bad, '--tag-meta'), (e: Error) => e instanceof UsageError && /expected KEY=VALUE/.test(e.message));
    }
    assert.throws(() => sel({ tags: [''] }), /--tag: the tag is empty/);
  });

  it('builds the selection the worker applies, without duplicate tags', () => {
    assert.deepEqual(sel({ includeSlow: true, tags: ['a', 'a', 'b'], noTags: ['c'], tagMeta: ['k=v'], noTagMeta: ['x=y=z'] }), {
      includeSlow: true,
      tags: ['a', 'b'],
      noTags: ['c'],
      tagMeta: [{ key: 'k', value: 'v' }],
      noTagMeta: [{ key: 'x', value: 'y=z' }],
    });
  });
});

describe('discovery and file filters', () => {
  it('finds *.test.lua sorted, never fixtures, and filters by path and --since', async () => {
    const dir = await project({
      'spec/b.test.lua': '',
      'spec/a.test.lua': '',
      'spec/net/c.test.lua': '',
      'spec/base.fixture.lua': '',
      'spec/helper.lua': '',
      'examples/d.test.lua': '',
      'ref': '',
    });
    const all = await discover({ paths: [], roots: [join(dir, 'spec'), join(dir, 'examples')], cwd: dir });
    assert.deepEqual(all.map((f) => f.displayPath), ['examples/d.test.lua', 'spec/a.test.lua', 'spec/b.test.lua', 'spec/net/c.test.lua']);
    assert.equal(all[3]!.rootPath, 'net/c.test.lua');

    const onlySpec = await discover({ paths: ['spec'], roots: [join(dir, 'spec'), join(dir, 'examples')], cwd: dir });
    assert.equal(onlySpec.length, 3);
    // Overlapping paths do not duplicate.
    const overlap = await discover({ paths: ['spec', 'spec/net', 'spec/a.test.lua'], roots: [], cwd: dir });
    assert.equal(overlap.length, 3);

    const filtered = await filterFiles(all, { filters: ['net/'], cwd: dir });
    assert.deepEqual(filtered.map((f) => f.displayPath), ['spec/net/c.test.lua']);

    const past = new Date(Date.now() - 60_000);
    for (const f of all) await utimes(f.file, past, past);
    await utimes(join(dir, 'ref'), new Date(Date.now() - 30_000), new Date(Date.now() - 30_000));
    await utimes(join(dir, 'spec/b.test.lua'), new Date(), new Date());
    const since = await filterFiles(all, { filters: [], since: 'ref', cwd: dir });
    assert.deepEqual(since.map((f) => f.displayPath), ['spec/b.test.lua']);
    await assert.rejects(filterFiles(all, { filters: [], since: 'missing', cwd: dir }), /--since missing: no such file/);
  });

  it('rejects a missing path, a fixture and a non-test file with exit-2 errors', async () => {
    const dir = await project({ 'x.fixture.lua': '', 'y.lua': '' });
    await assert.rejects(discover({ paths: ['nope'], roots: [], cwd: dir }), (e: Error) => e instanceof UsageError && /nope: no such file/.test(e.message));
    await assert.rejects(discover({ paths: ['x.fixture.lua'], roots: [], cwd: dir }), /is a fixture, not a test file/);
    await assert.rejects(discover({ paths: ['y.lua'], roots: [], cwd: dir }), /test files end in \.test\.lua/);
    await assert.rejects(discover({ paths: [], roots: [join(dir, 'gone')], cwd: dir }), /from \[provium\] roots in provium.toml\) does not exist/);
  });
});

describe('static scan for file_discovered', () => {
  it('finds fixture refs and a literal claim, and leaves a computed claim undeclared', async () => {
    const { scanStatics } = await import('../../src/run/plan.js');
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = await mkdtemp(join(tmpdir(), 'provium-statics-'));
    try {
      await writeFile(join(dir, 'a.test.lua'), 'provium:claim{memory = "2G", cpus = 2}\nlocal v = provium:vm_fixture("base/warm")\nlocal w = provium:vm("w", "web")\nprovium:barrier("up", 2)\n');
      await writeFile(join(dir, 'b.test.lua'), 'provium:claim({cpus = n})\n');
      await writeFile(join(dir, 'c.test.lua'), 'test("x", function() end)\n');
      assert.deepEqual(await scanStatics(join(dir, 'a.test.lua')), {
        fixtureRefs: ['base/warm'],
        declaredClaim: { memory_bytes: 2 * 1024 ** 3, cpus: 2 },
        profiles: ['web'],
        barriers: ['up'],
      });
      assert.equal((await scanStatics(join(dir, 'b.test.lua'))).declaredClaim, null);
      assert.equal((await scanStatics(join(dir, 'c.test.lua'))).declaredClaim, null);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
