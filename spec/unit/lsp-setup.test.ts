// Issue 14 item 4: `provium lsp-setup` writes lua-language-server definitions of the whole API
// and a .luarc.json; checked like `lua-language-server --check` (lsp-check.ts: neither npm nor
// Debian packages the server) over every Lua file of examples/ and spec/, which must give no
// undefined-global or undefined-field diagnostic. The check itself is shown to catch both.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import fg from 'fast-glob';
import { repoRoot } from '../../src/vmm/paths.js';
import { VmClass } from '../../src/lua/vm.js';
import { LabClass } from '../../src/lua/lab.js';
import { cliMain } from './cli-run.js';
import { checkSource, readDefinitions, type Definitions } from './lsp-check.js';
import { project } from './run-capture.js';

function lspSetup(cwd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cliMain, 'lsp-setup', ...args], { cwd }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
  });
}

async function definitionsIn(dir: string): Promise<Definitions> {
  const luarc = JSON.parse(await readFile(path.join(dir, '.luarc.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(luarc['runtime.version'], 'Lua 5.3');
  assert.deepEqual(luarc['workspace.library'], ['.provium-meta']);
  return readDefinitions(await readFile(path.join(dir, '.provium-meta/provium.lua'), 'utf8'), luarc['diagnostics.globals'] as string[]);
}

describe('provium lsp-setup', () => {
  let defs: Definitions;
  before(async () => {
    const dir = await project({});
    const r = await lspSetup(dir, []);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /^wrote \.provium-meta\/provium\.lua\nwrote \.luarc\.json\n$/);
    defs = await definitionsIn(dir);
  });

  it('writes definitions that check examples/ and spec/ clean', async () => {
    // Every method of the bindings is declared (current and legacy API alike).
    for (const [cls, binding] of [['Vm', VmClass], ['Lab', LabClass]] as const) {
      for (const method of Object.keys(binding.methods)) assert.ok(defs.classes.get(cls)!.members.has(method), `${cls}:${method} is not declared`);
    }
    assert.equal(defs.classes.get('Vm')!.members.get('run'), 'RunResult');
    assert.ok(defs.classes.get('BootOptions')!.members.has('kernel_cmdline_append'), 'option tables are classes');

    const root = repoRoot();
    const files = await fg(['examples/**/*.lua', 'spec/**/*.lua'], { cwd: root, ignore: ['**/node_modules/**'] });
    assert.ok(files.length > 40, `found only ${files.length} Lua files`);
    const diagnostics = [];
    for (const file of files) diagnostics.push(...checkSource(file, await readFile(path.join(root, file), 'utf8'), defs));
    assert.deepEqual(diagnostics.map((d) => `${d.file}:${d.line}: ${d.code}: ${d.message}`), []);
  });

  it('reports an undefined global and unknown fields, so the check above can fail', () => {
    const source = [
      'local vm = provium:vm("a", "minimal"):boot()',
      'vm:runn("echo")',
      'test("x", function(t)',
      '  t:assert_equal(1, 1)',
      '  local r = vm:run("true")',
      '  r:assert_ok()',
      '  t:log(r.stdoutt)',
      '  helper()',
      'end)',
      'defined_here = 1',
      'print(defined_here)',
    ].join('\n');
    assert.deepEqual(
      checkSource('bad.lua', source, defs).map((d) => `${d.line}: ${d.code}: ${d.message}`),
      ['2: undefined-field: undefined field `runn` of Vm', '4: undefined-field: undefined field `assert_equal` of TestContext', '7: undefined-field: undefined field `stdoutt` of RunResult', '8: undefined-global: undefined global `helper`'],
    );
  });

  it('leaves a .luarc.json of the user\'s own alone unless --force', async () => {
    const dir = await project({ '.luarc.json': '{"runtime.version": "Lua 5.4"}\n' });
    const refused = await lspSetup(dir, []);
    assert.equal(refused.code, 2);
    assert.match(refused.out, /\.luarc\.json exists and was not written by provium; add "\.provium-meta" to its workspace\.library yourself, or run with --force/);
    assert.equal(await readFile(path.join(dir, '.luarc.json'), 'utf8'), '{"runtime.version": "Lua 5.4"}\n');
    assert.equal((await lspSetup(dir, ['--force'])).code, 0);
    // Ours is rewritten without --force.
    await writeFile(path.join(dir, '.provium-meta/provium.lua'), 'stale');
    assert.equal((await lspSetup(dir, ['.'])).code, 0);
    assert.match(await readFile(path.join(dir, '.provium-meta/provium.lua'), 'utf8'), /^---@meta provium/);
  });
});
