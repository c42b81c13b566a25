import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { BootCache } from '../../src/broker/boot-cache.js';
import { consoleLogOf } from '../../src/vmm/snapshot.js';

describe('BootCache.store', () => {
  const dirs: string[] = [];
  after(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
  const cache = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'provium-bootcache-'));
    dirs.push(dir);
    return new BootCache(dir);
  };
  const save = (text: string) => async (tmp: string) => {
    await writeFile(tmp, text);
    await writeFile(consoleLogOf(tmp), `${text} console`);
  };

  it('keeps the first snapshot of a key: boots that raced it and saved later restore that one', async () => {
    const c = await cache();
    await c.store('k', save('first'));
    await c.store('k', save('second'));
    const file = (await c.lookup('k'))!;
    assert.equal(await readFile(file, 'utf8'), 'first');
    assert.equal(await readFile(consoleLogOf(file), 'utf8'), 'first console', 'the log is the snapshot\'s own');
  });

  it('replaces a snapshot saved without its console log (an older version)', async () => {
    const c = await cache();
    await c.store('k', save('old'));
    const file = (await c.lookup('k'))!;
    await rm(consoleLogOf(file));
    assert.equal(await c.lookup('k'), undefined);
    await c.store('k', save('new'));
    assert.equal(await readFile((await c.lookup('k'))!, 'utf8'), 'new');
  });
});
