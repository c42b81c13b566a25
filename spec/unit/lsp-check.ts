// A stand-in for `lua-language-server --check` (packaged neither on npm nor in Debian): the
// definitions `provium lsp-setup` writes are read the way LuaLS reads them (`---@class`,
// `---@field`, `---@return`, `---@type`, methods of `local X = {}`), and Lua sources are parsed
// with luaparse (scope-aware) to report LuaLS's two diagnostics that matter here:
//   undefined-global  a global that is neither Lua's, declared by the definitions or .luarc.json,
//                     nor assigned in the file;
//   undefined-field   a field or method a value of one of the API's classes does not have, where
//                     the value's class follows from the API (provium, a method's return, a
//                     test's `t`, locals bound to those).
import luaparse from 'luaparse';

export interface Diagnostic {
  file: string;
  line: number;
  code: 'undefined-global' | 'undefined-field';
  message: string;
}

interface ClassDef {
  parents: string[];
  /** Member → its type (a method's type is its return type). */
  members: Map<string, string>;
}

export interface Definitions {
  classes: Map<string, ClassDef>;
  /** Global → its type (`function` for a global function). */
  globals: Map<string, string>;
}

const kLuaGlobals = [
  '_G', '_VERSION', '_ENV', 'assert', 'collectgarbage', 'dofile', 'error', 'getmetatable', 'ipairs', 'load', 'loadfile', 'next', 'pairs', 'pcall',
  'print', 'rawequal', 'rawget', 'rawlen', 'rawset', 'require', 'select', 'setmetatable', 'tonumber', 'tostring', 'type', 'xpcall', 'coroutine',
  'debug', 'io', 'math', 'os', 'package', 'string', 'table', 'utf8', 'arg',
];

/** Reads a definitions file (`---@meta`). */
export function readDefinitions(text: string, extraGlobals: string[]): Definitions {
  const classes = new Map<string, ClassDef>();
  const globals = new Map<string, string>(kLuaGlobals.map((g) => [g, 'any']));
  for (const g of extraGlobals) if (!globals.has(g)) globals.set(g, 'any');
  const aliases = new Map<string, string>();
  let current: string | undefined;
  let pendingReturn: string | undefined;
  let pendingType: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^---@class\s+([\w.]+)(?:\s*:\s*([\w.,\s]+))?/.exec(line))) {
      current = m[1]!;
      if (!classes.has(current)) classes.set(current, { parents: (m[2] ?? '').split(',').map((s) => s.trim()).filter(Boolean), members: new Map() });
    } else if ((m = /^---@field\s+([\w[\]]+)\??\s+(.+)$/.exec(line)) && current) {
      classes.get(current)!.members.set(m[1]!, typeOf(m[2]!));
    } else if ((m = /^---@return\s+(\S+)/.exec(line))) {
      pendingReturn = m[1]!;
    } else if ((m = /^---@type\s+(\S+)/.exec(line))) {
      pendingType = m[1]!;
    } else if ((m = /^local\s+(\w+)\s*=\s*\{\}/.exec(line)) && current) {
      aliases.set(m[1]!, current);
    } else if ((m = /^(\w+)\s*=\s*\{\}/.exec(line))) {
      globals.set(m[1]!, pendingType ?? current ?? 'any');
      if (current) aliases.set(m[1]!, current);
      pendingType = undefined;
    } else if ((m = /^function\s+(\w+)[:.](\w+)\s*\(/.exec(line))) {
      const cls = aliases.get(m[1]!);
      if (cls) classes.get(cls)!.members.set(m[2]!, pendingReturn ?? 'any');
      pendingReturn = undefined;
    } else if ((m = /^function\s+(\w+)\s*\(/.exec(line))) {
      globals.set(m[1]!, 'function');
      pendingReturn = undefined;
    } else if (!line.startsWith('---')) {
      current = line === '' ? current : undefined;
    }
  }
  return { classes, globals };
}

/** `fun(...): R` → R; `Vm|string` stays as is (only a bare class name is followed). */
function typeOf(annotation: string): string {
  const fn = /^fun\(.*\)\s*:\s*(\S+)/.exec(annotation);
  if (fn) return fn[1]!;
  return annotation.split(/\s+/)[0]!.replace(/\?$/, '');
}

type Node = luaparse.Node & Record<string, unknown>;

/** Diagnostics for one source. */
export function checkSource(file: string, source: string, defs: Definitions): Diagnostic[] {
  // A UTF-8 byte-order mark is accepted by the runner (and LuaLS); luaparse does not skip it.
  const ast = luaparse.parse(source.replace(/^\uFEFF/, ''), { luaVersion: '5.3', locations: true, scope: true, comments: false, encodingMode: 'none' }) as unknown as Node;
  const out: Diagnostic[] = [];
  const assignedGlobals = new Set<string>();
  const globalRefs: { name: string; line: number }[] = [];
  const scopes: Map<string, string | undefined>[] = [new Map()];
  const lookup = (name: string): string | undefined => {
    for (let i = scopes.length - 1; i >= 0; i--) if (scopes[i]!.has(name)) return scopes[i]!.get(name);
    return undefined;
  };
  const member = (cls: string, name: string): string | undefined | null => {
    const def = defs.classes.get(cls);
    if (!def) return undefined;
    if (def.members.has(name)) return def.members.get(name);
    // `---@field [string] T`: any name (a lab's members by name).
    if (def.members.has('[string]')) return 'any';
    for (const p of def.parents) {
      const found = member(p, name);
      if (found !== null) return found;
    }
    return null;
  };
  const classOf = (type: string | undefined): string | undefined => (type && defs.classes.has(type) ? type : undefined);

  /** The class of an expression's value, when the API says. */
  const typeOfExpr = (node: Node | undefined): string | undefined => {
    if (!node) return undefined;
    switch (node.type) {
      case 'Identifier':
        return node['isLocal'] ? lookup(node['name'] as string) : classOf(defs.globals.get(node['name'] as string));
      case 'MemberExpression': {
        const base = classOf(typeOfExpr(node['base'] as Node));
        if (!base) return undefined;
        return classOf(member(base, (node['identifier'] as Node)['name'] as string) ?? undefined);
      }
      case 'CallExpression':
      case 'StringCallExpression':
      case 'TableCallExpression':
        return typeOfExpr(node['base'] as Node);
      default:
        return undefined;
    }
  };

  const visit = (node: unknown): void => {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) {
      for (const n of node) visit(n);
      return;
    }
    const n = node as Node;
    const line = (n.loc?.start.line ?? 0) as number;
    switch (n.type) {
      case 'Identifier':
        if (!n['isLocal']) globalRefs.push({ name: n['name'] as string, line });
        return;
      case 'TableKeyString':
        // `{tags = …}`: the key is a name, not a variable.
        visit(n['value']);
        return;
      case 'MemberExpression': {
        visit(n['base']);
        const base = classOf(typeOfExpr(n['base'] as Node));
        const name = (n['identifier'] as Node)['name'] as string;
        // The string library's own methods are Lua's; only the API's classes are checked.
        if (base && base !== 'string' && member(base, name) === null) {
          out.push({ file, line, code: 'undefined-field', message: `undefined field \`${name}\` of ${base}` });
        }
        return;
      }
      case 'LocalStatement': {
        visit(n['init']);
        const init = n['init'] as Node[];
        (n['variables'] as Node[]).forEach((v, i) => scopes.at(-1)!.set(v['name'] as string, typeOfExpr(init[i])));
        return;
      }
      case 'AssignmentStatement': {
        visit(n['init']);
        const init = n['init'] as Node[];
        (n['variables'] as Node[]).forEach((v, i) => {
          if (v.type === 'Identifier') {
            if (v['isLocal']) {
              for (let s = scopes.length - 1; s >= 0; s--) {
                if (scopes[s]!.has(v['name'] as string)) {
                  scopes[s]!.set(v['name'] as string, typeOfExpr(init[i]));
                  break;
                }
              }
            } else assignedGlobals.add(v['name'] as string);
          } else visit(v);
        });
        return;
      }
      case 'CallExpression': {
        visit(n['base']);
        const args = n['arguments'] as Node[];
        // test(name, [meta,] function(t) …): `t` is a TestContext; vm:batch(function(b) …): a Batch.
        const callee = n['base'] as Node;
        const calleeName = callee.type === 'Identifier' ? (callee['name'] as string) : callee.type === 'MemberExpression' ? ((callee['identifier'] as Node)['name'] as string) : '';
        const paramType = calleeName === 'test' && callee.type === 'Identifier' && !callee['isLocal'] ? 'TestContext' : calleeName === 'batch' ? 'Batch' : undefined;
        for (const arg of args) {
          if (arg.type === 'FunctionDeclaration' && paramType) visitFunction(arg, [paramType]);
          else visit(arg);
        }
        return;
      }
      case 'FunctionDeclaration': {
        const id = n['identifier'] as Node | null;
        if (id && n['isLocal']) scopes.at(-1)!.set(id['name'] as string, undefined);
        else if (id?.type === 'Identifier') assignedGlobals.add(id['name'] as string);
        else if (id) visit(id);
        visitFunction(n, []);
        return;
      }
      case 'ForNumericStatement':
      case 'ForGenericStatement': {
        visit(n['start']);
        visit(n['end']);
        visit(n['step']);
        visit(n['iterators']);
        scopes.push(new Map());
        const vars = n.type === 'ForNumericStatement' ? [n['variable'] as Node] : (n['variables'] as Node[]);
        for (const v of vars) scopes.at(-1)!.set(v['name'] as string, undefined);
        visit(n['body']);
        scopes.pop();
        return;
      }
      case 'DoStatement':
      case 'WhileStatement':
      case 'RepeatStatement':
      case 'IfClause':
      case 'ElseifClause':
      case 'ElseClause': {
        visit(n['condition']);
        scopes.push(new Map());
        visit(n['body']);
        scopes.pop();
        return;
      }
      default:
        for (const [k, v] of Object.entries(n)) if (k !== 'loc' && k !== 'range') visit(v);
    }
  };
  const visitFunction = (fn: Node, paramTypes: (string | undefined)[]): void => {
    scopes.push(new Map());
    (fn['parameters'] as Node[]).forEach((p, i) => {
      if (p.type === 'Identifier') scopes.at(-1)!.set(p['name'] as string, paramTypes[i]);
    });
    visit(fn['body']);
    scopes.pop();
  };
  visit((ast as Record<string, unknown>)['body']);
  for (const ref of globalRefs) {
    if (defs.globals.has(ref.name) || assignedGlobals.has(ref.name)) continue;
    out.push({ file, line: ref.line, code: 'undefined-global', message: `undefined global \`${ref.name}\`` });
  }
  return out;
}
