// The module boundaries of DESIGN.md §2 and §9, checked by `npm run lint:deps` (the first step of
// `npm test`). Each folder under src/ may import only the folders listed for it below (besides
// itself, node builtins and npm packages); type-only imports count, because a type import is
// still a dependency on the other module's shape.
//
// When a rule fires, its comment says what it protects and where the code should go instead.
// Do not loosen a rule to make a violation pass: move the shape into src/protocol or src/config,
// or inject the behaviour from the caller (src/cli wires everything together).

/** Product code; imports of node builtins and npm packages are not restricted by the boundary rules. */
const kOurs = '^(src|workers)/';

/** `^src/(a|b|c)/`: a path regexp for the given src/ folders. */
function folders(...names) {
  return `^src/(${names.join('|')})/`;
}

/**
 * One rule: code under `from` may import only `allowed` (path regexps) and itself. `comment`
 * says what the boundary protects and what to do instead.
 */
function onlyImports(name, from, allowed, comment) {
  return {
    name,
    severity: 'error',
    comment,
    from: { path: from },
    to: { path: kOurs, pathNot: [from, ...allowed] },
  };
}

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'No import cycles, not even through type-only or dynamic imports: a cycle means two modules ' +
        'are one concept split in two, or a lower layer knows about a higher one. Move the shared ' +
        'part into the lower module (shapes into src/protocol, profile and unit types into ' +
        'src/config), or pass the behaviour in as a parameter from the caller.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-circular-folders',
      severity: 'error',
      scope: 'folder',
      comment:
        'No cycles between the folders of src/: the folders are layers (DESIGN §2), and each one ' +
        'may depend only on the layers below it. Find the import that goes upward and move the ' +
        'shared code down, or inject it from src/cli.',
      from: { path: '^src/[^/]+$' },
      to: { path: '^src/[^/]+$', circular: true },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'This import does not resolve to a file or an installed package: fix the path or add the dependency.',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'no-test-code-in-product',
      severity: 'error',
      comment:
        'Product code (src/, workers/) must not import the tests or the benchmarks (spec/, bench/): ' +
        'move the helper into the product folder that owns the concept.',
      from: { path: '^(src|workers)/' },
      to: { path: '^(spec|bench)/' },
    },

    onlyImports('workers-boundary', '^workers/', [folders('protocol', 'lua')],
      'A piscina worker runs Lua and talks to the broker only through the typed RPC of src/protocol ' +
      '(DESIGN §2): it may import src/protocol and src/lua, nothing that owns host state (broker, ' +
      'vmm, run, report…). Put the shape it needs into src/protocol, or the binding into src/lua.'),

    onlyImports('lua-boundary', '^src/lua/', [folders('protocol', 'config')],
      'The Lua bindings run in worker threads and reach the host only through RPC: src/lua may ' +
      'import src/protocol (message shapes) and src/config (types and units), never the main-thread ' +
      'modules (run, broker, vmm, report, events…). Move a type both sides need into src/protocol.'),

    onlyImports('protocol-boundary', '^src/protocol/', [],
      'src/protocol is the one home of every shape that crosses a boundary and is shared by both ' +
      'ends (DESIGN §2): it must not depend on any other part of src/. Declare the type here and ' +
      'let the other modules import it from src/protocol.'),

    onlyImports('run-boundary', '^src/run/', [folders('protocol', 'config', 'events'), '^src/broker/broker\\.ts$'],
      'The run controller reaches the broker only through its public session interface in ' +
      'src/broker/broker.ts (DESIGN §2: the broker owns the resource pool, barriers, VMs); besides ' +
      'that it may import src/protocol, src/config and src/events. Never broker internals ' +
      '(resources, barriers, sessions…), vmm, lua or report: export what you need from broker.ts, ' +
      'or let src/report depend on src/run instead of the other way round.'),

    onlyImports('report-boundary', '^src/report/', [folders('run', 'protocol', 'config')],
      'Reporters only turn results into output: src/report may import src/run (the result types and ' +
      'reporter hooks), src/protocol and src/config, never src/broker, src/vmm, src/lua or src/events. ' +
      'If a reporter needs a value, add it to the result types in src/run or to the event payloads ' +
      'in src/protocol.'),

    onlyImports('broker-boundary', '^src/broker/', [folders('vmm', 'agent', 'net', 'disk', 'protocol', 'config', 'events')],
      'The broker owns every external thing through the layers below it (vmm, agent, net, disk) and ' +
      'speaks src/protocol; it must not import src/run, src/report, src/lua or src/cli. Pass what ' +
      'it needs from those in through its constructor or session interface.'),

    onlyImports('vmm-boundary', '^src/vmm/', [folders('config', 'protocol')],
      'src/vmm starts and drives QEMU; it may import src/config (profiles, the tuned command line, ' +
      'the cache dir) and src/protocol, never src/broker, src/run, src/lua, src/report or src/cli. ' +
      'Whoever needs more than that wires it up in src/broker or src/cli.'),

    onlyImports('agent-boundary', '^src/agent/', [folders('protocol')],
      'The host side of the agent link is a leaf: src/agent may import only src/protocol (the agent ' +
      'frames and replies). Pass anything else in from the broker.'),

    onlyImports('net-boundary', '^src/net/', [folders('protocol')],
      'The userspace switch is a leaf: src/net may import only src/protocol. Pass anything else in ' +
      'from the broker.'),

    onlyImports('disk-boundary', '^src/disk/', [folders('protocol')],
      'The NBD server and disk faults are a leaf: src/disk may import only src/protocol. Pass ' +
      'anything else in from the broker.'),

    onlyImports('config-boundary', '^src/config/', [folders('protocol')],
      'src/config (provium.toml, profiles, the tuned command line, units) sits below everything that ' +
      'uses it and may import only src/protocol. Never src/vmm (the image lookup is injected into ' +
      'loadConfig by src/cli) or any other layer: take what you need as a parameter.'),

    onlyImports('events-boundary', '^src/events/', [folders('protocol')],
      'The event bus and its sinks carry src/protocol event shapes and may import only src/protocol. ' +
      'Reporters subscribe from src/report or src/cli; the bus must not know them.'),

    // src/cli may import anything: it is where the layers are wired together.
  ],

  options: {
    doNotFollow: { path: 'node_modules' },
    // `import type` counts: a type-only import still ties a module to another's internals.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
  },
};
