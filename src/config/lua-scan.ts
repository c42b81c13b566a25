// Static (textual) scans of Lua sources: the one home of reading a test file, a fixture or a
// helper module without running it. Two callers: `file_discovered` (fixture refs and a literal
// claim, src/run/plan.ts) and the fixture cache key (src/broker/fixture-key.ts: what a fixture
// depends on). Pure functions over the text; reading files is the caller's business.
//
// The scan tokenizes first (strings with their escapes, comments, long brackets), so a call inside
// a comment is ignored and `"a\"b"` is one string. Then it matches call shapes on the tokens,
// as the bindings take them: src/lua/lab.ts (vm, depends_on_file), src/lua/files.ts (push_file),
// src/lua/boot-options.ts (a disk's `image`), src/lua/sandbox.ts (require). Only literal
// arguments count; a computed one is unknown before the file runs.

import type { ResourceAmount } from '../protocol/events.js';
import { parseSize } from './units.js';

/** A host file named by a literal in the source, and what a relative path is relative to. */
export interface HostFileRef {
  path: string;
  /**
   * `source`: the directory of the file that holds the call (push_file, depends_on_file: the
   * binding resolves against the calling source file, a helper module's own directory included).
   * `chunk`: the directory of the file being run (a disk spec's `image`, which the binding
   * resolves against the test or fixture file, wherever the table was written).
   */
  relativeTo: 'source' | 'chunk';
}

export interface LuaStatics {
  /** Literal first arguments of vm_fixture(...) / lab_fixture(...), either call form (`provium:vm_fixture("x")`, `provium.vm_fixture("x")`, `lab:lab_fixture "x"`), in source order, deduplicated. */
  fixtures: string[];
  /** Literal names of the legacy `provium.fixture("name")` (seed 002; the file is fixtures/<name>.lua near the source), in source order, deduplicated. */
  legacyFixtures: string[];
  /** Literal module names of require("a.b") / require "a.b", in source order, deduplicated. */
  requires: string[];
  /** Literal profile names: the second argument of `:vm("name", "profile", ...)` calls (and `provium.create("profile")` of the legacy API), in source order, deduplicated. */
  profiles: string[];
  /** True when some `:vm(` call's profile (or `provium.create`'s) is not a literal string: then every profile counts. */
  dynamicProfiles: boolean;
  /** Literal host paths: the first argument of `:push_file("host", ...)` (unless that call passes `auto_dep = false` literally) and of `depends_on_file("host")`, and literal `image = "..."` values in disk specs; in source order, deduplicated. */
  hostFiles: string[];
  /** The same host paths with how each one resolves (one entry per path and kind). */
  hostFileRefs: HostFileRef[];
  /** A literal `claim{memory = …, cpus = …}`, or null when there is none or it is not literal. */
  claim: ResourceAmount | null;
  /** Literal names of `:barrier("name", …)` calls (lab or provium), in source order, deduplicated. */
  barriers: string[];
}

/** Scans one Lua source. Never throws: text it cannot make sense of contributes nothing. */
export function scanLua(text: string): LuaStatics {
  const { tokens, code } = tokenize(text);
  const fixtures = new OrderedSet<string>();
  const legacyFixtures = new OrderedSet<string>();
  const requires = new OrderedSet<string>();
  const profiles = new OrderedSet<string>();
  const barriers = new OrderedSet<string>();
  const hostFiles = new OrderedSet<string>();
  const hostFileRefs = new OrderedSet<string>();
  const refs: HostFileRef[] = [];
  let dynamicProfiles = false;
  const addHost = (path: string, relativeTo: HostFileRef['relativeTo']): void => {
    hostFiles.add(path);
    if (hostFileRefs.add(`${relativeTo}\0${path}`)) refs.push({ path, relativeTo });
  };

  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.kind !== 'name') continue;
    const prev = tokens[i - 1];
    const method = prev?.kind === 'op' && prev.text === ':';
    const field = prev?.kind === 'op' && prev.text === '.';
    switch (t.text) {
      case 'vm_fixture':
      case 'lab_fixture': {
        // `provium:vm_fixture("x")`, `provium.vm_fixture("x")` (the provium table's function
        // form) and a local alias `vm_fixture "x"`: the ref is the first argument either way.
        const ref = literal(callArgs(tokens, i + 1)?.args[0]);
        if (named(ref)) fixtures.add(ref);
        break;
      }
      case 'barrier': {
        if (!method && !field) break;
        const name = literal(callArgs(tokens, i + 1)?.args[0]);
        if (named(name)) barriers.add(name);
        break;
      }
      case 'require': {
        if (method || field) break;
        const name = literal(callArgs(tokens, i + 1)?.args[0]);
        if (named(name)) requires.add(name);
        break;
      }
      case 'vm': {
        if (!method) break;
        const call = callArgs(tokens, i + 1);
        // lab:vm(name) looks a VM up; lab:vm(name, profile, opts?) creates one.
        if (!call || call.args.length < 2) break;
        const profile = literal(call.args[1]);
        if (profile === undefined) dynamicProfiles = true;
        else profiles.add(profile);
        break;
      }
      case 'fixture': {
        // The legacy API (seed 002): provium.fixture("name") or provium:fixture("name").
        if (!(field || method) || !onProvium(tokens, i)) break;
        const name = literal(callArgs(tokens, i + 1)?.args[0]);
        if (named(name)) legacyFixtures.add(name);
        break;
      }
      case 'create': {
        // The legacy API (seed 002): provium.create("profile").
        if (!field || !onProvium(tokens, i)) break;
        const call = callArgs(tokens, i + 1);
        if (!call || call.args.length === 0) break;
        const profile = literal(call.args[0]);
        if (profile === undefined) dynamicProfiles = true;
        else profiles.add(profile);
        break;
      }
      case 'push_file': {
        if (!method) break;
        const call = callArgs(tokens, i + 1);
        const host = literal(call?.args[0]);
        if (!named(host) || hasAutoDepFalse(call!.args.slice(2))) break;
        addHost(host, 'source');
        break;
      }
      case 'depends_on_file': {
        const host = literal(callArgs(tokens, i + 1)?.args[0]);
        if (named(host)) addHost(host, 'source');
        break;
      }
      case 'image': {
        // A table field `image = "..."`: in a disk spec (boot option `disks`, vm:attach_disk).
        const before = prev?.kind === 'op' ? prev.text : '';
        if (before !== '{' && before !== ',' && before !== ';') break;
        if (tokens[i + 1]?.text !== '=' || tokens[i + 1]?.kind !== 'op') break;
        const value = tokens[i + 2];
        const after = tokens[i + 3];
        const ends = !after || (after.kind === 'op' && (after.text === ',' || after.text === ';' || after.text === '}'));
        if (value?.kind === 'string' && value.text !== '' && ends) addHost(value.text, 'chunk');
        break;
      }
    }
  }
  return {
    fixtures: fixtures.values(),
    legacyFixtures: legacyFixtures.values(),
    requires: requires.values(),
    profiles: profiles.values(),
    dynamicProfiles,
    hostFiles: hostFiles.values(),
    hostFileRefs: refs,
    claim: literalClaim(code),
    barriers: barriers.values(),
  };
}

/** Whether the name token at `i` is a field of the global `provium` (`provium.x`, `provium:x`, not `a.provium.x`). */
function onProvium(tokens: Token[], i: number): boolean {
  const owner = tokens[i - 2];
  const before = tokens[i - 3];
  return owner?.kind === 'name' && owner.text === 'provium' && !(before?.kind === 'op' && (before.text === '.' || before.text === ':'));
}

/** The source with every comment blanked out (same length, newlines kept), for textual matches. */
export function stripLuaComments(text: string): string {
  return tokenize(text).code;
}

// ---------------------------------------------------------------------------------------------
// Call shapes.

/** The arguments of a call whose argument list starts at token `at`: `(a, b)`, `"s"` or `{…}`. */
function callArgs(tokens: Token[], at: number): { args: Token[][] } | null {
  const first = tokens[at];
  if (!first) return null;
  if (first.kind === 'string') return { args: [[first]] };
  if (first.kind !== 'op') return null;
  if (first.text === '{') {
    const end = matching(tokens, at);
    return { args: [tokens.slice(at, end + 1)] };
  }
  if (first.text !== '(') return null;
  const args: Token[][] = [];
  let current: Token[] = [];
  let depth = 0;
  for (let j = at + 1; j < tokens.length; j++) {
    const t = tokens[j]!;
    if (t.kind === 'op') {
      if (t.text === '(' || t.text === '{' || t.text === '[') depth++;
      else if (t.text === ')' || t.text === '}' || t.text === ']') {
        if (depth === 0) {
          if (current.length) args.push(current);
          return { args };
        }
        depth--;
      } else if (t.text === ',' && depth === 0) {
        args.push(current);
        current = [];
        continue;
      }
    }
    current.push(t);
  }
  // Unclosed: what was read is still the best guess.
  if (current.length) args.push(current);
  return { args };
}

/** The index of the bracket closing the one at `at` (or the last token). */
function matching(tokens: Token[], at: number): number {
  let depth = 0;
  for (let j = at; j < tokens.length; j++) {
    const t = tokens[j]!;
    if (t.kind !== 'op') continue;
    if (t.text === '(' || t.text === '{' || t.text === '[') depth++;
    else if (t.text === ')' || t.text === '}' || t.text === ']') {
      depth--;
      if (depth === 0) return j;
    }
  }
  return tokens.length - 1;
}

/** The value of an argument that is exactly one string literal (`"a" .. b` is not). */
function literal(arg: Token[] | undefined): string | undefined {
  return arg?.length === 1 && arg[0]!.kind === 'string' ? arg[0]!.text : undefined;
}

/** A literal that names something: an empty one names nothing (the call fails when it runs). */
function named(value: string | undefined): value is string {
  return value !== undefined && value !== '';
}

/** `auto_dep = false` among these argument tokens (push_file's options table). */
function hasAutoDepFalse(args: Token[][]): boolean {
  for (const arg of args) {
    for (let j = 0; j + 2 < arg.length; j++) {
      if (arg[j]!.kind === 'name' && arg[j]!.text === 'auto_dep' && arg[j + 1]!.text === '=' && arg[j + 2]!.kind === 'name' && arg[j + 2]!.text === 'false') {
        return true;
      }
    }
  }
  return false;
}

/** A literal `claim{memory = …, cpus = …}`, or null when there is none or it is not literal. */
function literalClaim(code: string): ResourceAmount | null {
  const table = /[:.]claim\s*\(?\s*\{([^}]*)\}/.exec(code)?.[1];
  if (table === undefined) return null;
  const memory = /\bmemory\s*=\s*(?:"([^"]*)"|'([^']*)'|([0-9.]+)\s*(?:[,;]|$))/.exec(table);
  const cpus = /\bcpus\s*=\s*([0-9]+)\s*(?:[,;]|$)/.exec(table);
  // A key given a computed value is unknown before the file runs.
  if ((/\bmemory\s*=/.test(table) && !memory) || (/\bcpus\s*=/.test(table) && !cpus)) return null;
  try {
    return {
      memory_bytes: memory ? parseSize(memory[1] ?? memory[2] ?? Number(memory[3]), 'claim memory') : 0,
      cpus: cpus ? Number(cpus[1]) : 0,
    };
  } catch {
    return null;
  }
}

class OrderedSet<T> {
  private readonly _seen = new Set<T>();
  private readonly _order: T[] = [];
  /** True when the value is new. */
  add(value: T): boolean {
    if (this._seen.has(value)) return false;
    this._seen.add(value);
    this._order.push(value);
    return true;
  }
  values(): T[] {
    return [...this._order];
  }
}

// ---------------------------------------------------------------------------------------------
// The tokenizer: just enough Lua 5.3 lexing to tell code from strings and comments.

interface Token {
  kind: 'name' | 'string' | 'number' | 'op';
  /** A name or operator as written; a string's decoded value. */
  text: string;
}

const kName = /[A-Za-z_][A-Za-z0-9_]*/y;
const kNumber = /0[xX][0-9a-fA-F]*(?:\.[0-9a-fA-F]*)?(?:[pP][+-]?[0-9]+)?|[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?/y;
const kLongOpen = /\[(=*)\[/y;
const kOps = ['...', '..', '::', '==', '~=', '<=', '>=', '//', '<<', '>>'];
const kEscapes: Record<string, string> = { n: '\n', t: '\t', r: '\r', a: '\x07', b: '\b', f: '\f', v: '\v', '\\': '\\', '"': '"', "'": "'", '\n': '\n' };

function tokenize(text: string): { tokens: Token[]; code: string } {
  const tokens: Token[] = [];
  const code = text.split('');
  const blank = (from: number, to: number): void => {
    for (let k = from; k < to; k++) if (code[k] !== '\n') code[k] = ' ';
  };
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    // 1. Whitespace.
    if (c === ' ' || c === '\n' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      i++;
      continue;
    }
    // 2. Comments: `--[==[ … ]==]` or to the end of the line.
    if (c === '-' && text[i + 1] === '-') {
      const long = longBracket(text, i + 2);
      const end = long ? long.end : lineEnd(text, i);
      blank(i, end);
      i = end;
      continue;
    }
    // 3. Long strings.
    if (c === '[') {
      const long = longBracket(text, i);
      if (long) {
        tokens.push({ kind: 'string', text: long.body.replace(/^\r?\n/, '') });
        i = long.end;
        continue;
      }
    }
    // 4. Short strings, escapes decoded.
    if (c === '"' || c === "'") {
      const s = shortString(text, i);
      tokens.push({ kind: 'string', text: s.value });
      i = s.end;
      continue;
    }
    // 5. Names and numbers.
    kName.lastIndex = i;
    const name = kName.exec(text);
    if (name) {
      tokens.push({ kind: 'name', text: name[0] });
      i += name[0].length;
      continue;
    }
    kNumber.lastIndex = i;
    const num = kNumber.exec(text);
    if (num) {
      tokens.push({ kind: 'number', text: num[0] });
      i += num[0].length;
      continue;
    }
    // 6. Operators.
    const op = kOps.find((o) => text.startsWith(o, i)) ?? c;
    tokens.push({ kind: 'op', text: op });
    i += op.length;
  }
  return { tokens, code: code.join('') };
}

function lineEnd(text: string, from: number): number {
  const nl = text.indexOf('\n', from);
  return nl < 0 ? text.length : nl;
}

/** A long bracket `[==[ … ]==]` opening at `at`, or null. Unclosed: it runs to the end. */
function longBracket(text: string, at: number): { body: string; end: number } | null {
  kLongOpen.lastIndex = at;
  const open = kLongOpen.exec(text);
  if (!open) return null;
  const close = `]${open[1]}]`;
  const bodyStart = at + open[0].length;
  const found = text.indexOf(close, bodyStart);
  const bodyEnd = found < 0 ? text.length : found;
  return { body: text.slice(bodyStart, bodyEnd), end: found < 0 ? text.length : found + close.length };
}

/** A quoted string opening at `at`; an unfinished one ends at the line's end. */
function shortString(text: string, at: number): { value: string; end: number } {
  const quote = text[at]!;
  let value = '';
  let i = at + 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === quote) return { value, end: i + 1 };
    if (c === '\n') return { value, end: i };
    if (c !== '\\') {
      value += c;
      i++;
      continue;
    }
    const e = text[i + 1] ?? '';
    if (e in kEscapes) {
      value += kEscapes[e];
      i += 2;
    } else if (e === 'z') {
      i += 2;
      while (i < text.length && /\s/.test(text[i]!)) i++;
    } else if (e === 'x') {
      value += String.fromCharCode(parseInt(text.slice(i + 2, i + 4), 16) || 0);
      i += 4;
    } else if (/[0-9]/.test(e)) {
      const digits = /^[0-9]{1,3}/.exec(text.slice(i + 1))![0];
      value += String.fromCharCode(Number(digits) & 0xff);
      i += 1 + digits.length;
    } else if (e === 'u') {
      const m = /^u\{([0-9a-fA-F]+)\}/.exec(text.slice(i + 1));
      value += m ? String.fromCodePoint(Math.min(parseInt(m[1]!, 16), 0x10ffff)) : '';
      i += 1 + (m ? m[0].length : 1);
    } else {
      value += e;
      i += 2;
    }
  }
  return { value, end: i };
}
