import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { scanLua, stripLuaComments } from '../../src/config/lua-scan.js';

describe('scanLua: fixtures and requires', () => {
  it('finds fixture refs in both call forms and both quote kinds, in order, once each', () => {
    const s = scanLua([
      'local a = provium:vm_fixture("db/fixtures/warm")',
      "local b = provium.lab_fixture('net/pair')",
      'local c = lab:lab_fixture "net/triple"',
      "local d = provium:vm_fixture'db/fixtures/warm'",
      'local e = provium:vm_fixture(name)',
      'local f = provium:vm_fixture("a" .. x)',
      'local g = provium:vm_fixture("")',
    ].join('\n'));
    assert.deepEqual(s.fixtures, ['db/fixtures/warm', 'net/pair', 'net/triple']);
  });

  it('finds literal barrier names of lab and provium calls, not computed ones or other functions', () => {
    const s = scanLua('provium:barrier("a", 2)\nlab:barrier "b"\nprovium.barrier(name, 2)\nbarrier("c")\nlab:barrier("a", 3)\n');
    assert.deepEqual(s.barriers, ['a', 'b']);
  });

  it('finds literal requires in both forms, not method calls named require', () => {
    const s = scanLua([
      'local h = require("helpers.net")',
      "local j = require 'json_util'",
      'local k = require"deep.mod.x"',
      'local l = foo.require("not.this")',
      'local m = obj:require("nor.this")',
      'local n = require(modname)',
      'local o = require("helpers.net")',
    ].join('\n'));
    assert.deepEqual(s.requires, ['helpers.net', 'json_util', 'deep.mod.x']);
  });

  it('ignores line and block comments, but not "--" inside strings', () => {
    const s = scanLua([
      '-- provium:vm_fixture("commented/out")',
      'local x = 1 -- require("also.out")',
      '--[[ provium:vm_fixture("block/out")',
      '     require "still.out" ]]',
      '--[==[ lab:vm("v", "hidden") ]==]',
      'local s = "-- not a comment"; local v = provium:vm_fixture("real/one")',
      "local t = '--[[ not a comment either' require('real.mod')",
    ].join('\n'));
    assert.deepEqual(s.fixtures, ['real/one']);
    assert.deepEqual(s.requires, ['real.mod']);
    assert.deepEqual(s.profiles, []);
    assert.equal(s.dynamicProfiles, false);
  });

  it('decodes escapes and reads long strings as literals', () => {
    const s = scanLua('require("a\\065b")\nrequire [[long.name]]\nprovium:vm_fixture("q\\"x")\n');
    assert.deepEqual(s.requires, ['aAb', 'long.name']);
    assert.deepEqual(s.fixtures, ['q"x']);
  });

  it('blanks comments without moving anything', () => {
    const text = 'a = 1 -- c\n--[[ x\ny ]] b = "-- s"\n';
    const code = stripLuaComments(text);
    assert.equal(code.length, text.length);
    assert.equal(code, 'a = 1     \n      \n     b = "-- s"\n');
  });
});

describe('scanLua: legacy fixtures', () => {
  it('takes the literal name of provium.fixture / provium:fixture, not other fixture fields', () => {
    const s = scanLua([
      'local a = provium.fixture("kacs")',
      "local b = provium:fixture('warm')",
      'local c = provium.fixture("kacs")',
      'local d = other.fixture("no")',
      'local e = x.provium.fixture("no")',
      'local f = provium.fixture(name)',
      '-- provium.fixture("commented")',
    ].join('\n'));
    assert.deepEqual(s.legacyFixtures, ['kacs', 'warm']);
    assert.deepEqual(s.fixtures, []);
  });
});

describe('scanLua: profiles', () => {
  it('takes the literal second argument of :vm(...) and legacy provium.create', () => {
    const s = scanLua([
      'local a = provium:vm("a", "minimal")',
      "local b = lab:vm('b', 'debian', {memory = \"1G\"})",
      'local c = lab:vm("c")',
      'local d = lab:vm "d"',
      'local e = provium.create("legacy")',
      'local f = provium:vm("f", "minimal", {disks = {{id = "x", size = "8M"}}})',
    ].join('\n'));
    assert.deepEqual(s.profiles, ['minimal', 'debian', 'legacy']);
    assert.equal(s.dynamicProfiles, false);
  });

  it('flags a computed profile as dynamic', () => {
    assert.equal(scanLua('lab:vm(name, profile)').dynamicProfiles, true);
    assert.equal(scanLua('lab:vm("a", "p" .. suffix)').dynamicProfiles, true);
    assert.equal(scanLua('lab:vm("a", cfg.profile, {})').dynamicProfiles, true);
    assert.equal(scanLua('provium.create(p)').dynamicProfiles, true);
    assert.equal(scanLua('lab:vm(name)').dynamicProfiles, false);
    assert.equal(scanLua('-- lab:vm(name, profile)').dynamicProfiles, false);
  });
});

describe('scanLua: host files', () => {
  it('takes push_file and depends_on_file literals, and disk images', () => {
    const s = scanLua([
      'vm:push_file("bin/tool", "/usr/bin/tool")',
      "vm:push_file('../data/seed.db', '/var/seed.db', {perm = 420})",
      'vm:push_file("skip/me", "/x", {auto_dep = false})',
      'vm:push_file(host, "/y")',
      'provium:depends_on_file("schema.sql")',
      'lab:depends_on_file "/abs/config.toml"',
      'vm:boot{disks = {{id = "base", image = "golden.img", readonly = true}}}',
      'vm:attach_disk({image = \'more.img\', id = "m"})',
      'local t = {image = name}',
      'vm:push_file("bin/tool", "/again")',
    ].join('\n'));
    assert.deepEqual(s.hostFiles, ['bin/tool', '../data/seed.db', 'schema.sql', '/abs/config.toml', 'golden.img', 'more.img']);
    assert.deepEqual(s.hostFileRefs.filter((r) => r.relativeTo === 'chunk').map((r) => r.path), ['golden.img', 'more.img']);
  });

  it('skips only the push_file call that passes auto_dep = false', () => {
    const s = scanLua('vm:push_file("a", "/a", {auto_dep=false})\nvm:push_file("b", "/b", {auto_dep = true})\n');
    assert.deepEqual(s.hostFiles, ['b']);
  });

  it('ignores host files named in comments', () => {
    assert.deepEqual(scanLua('-- vm:push_file("a", "/a")\n--[[ provium:depends_on_file("b") ]]').hostFiles, []);
  });
});

describe('scanLua: claim', () => {
  it('reads a literal claim and leaves a computed or commented one undeclared', () => {
    assert.deepEqual(scanLua('provium:claim{memory = "2G", cpus = 2}').claim, { memory_bytes: 2 * 1024 ** 3, cpus: 2 });
    assert.deepEqual(scanLua("lab:claim({cpus = 3})").claim, { memory_bytes: 0, cpus: 3 });
    assert.equal(scanLua('provium:claim({cpus = n})').claim, null);
    assert.equal(scanLua('-- provium:claim{cpus = 2}\n').claim, null);
    assert.equal(scanLua('test("x", function() end)').claim, null);
  });
});
