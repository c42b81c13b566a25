// The agent's op list exists once on the host (src/protocol/agent.ts); this pins it to the prose
// (agent/PROTOCOL.md, the tables' first column) and to the C op table (agent/req.c), so a new or
// renamed op must change all three together.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { AGENT_NOTICE_OPS, AGENT_REQUEST_OPS, AGENT_STREAM_OPS } from '../../src/protocol/agent.js';

const repo = new URL('../../../', import.meta.url);
const hostOps = [...AGENT_REQUEST_OPS, ...AGENT_STREAM_OPS, ...AGENT_NOTICE_OPS].sort();

test('the host op list names each op once', () => {
  assert.equal(new Set(hostOps).size, hostOps.length);
});

test('agent/PROTOCOL.md documents exactly the host ops', async () => {
  const md = await readFile(new URL('agent/PROTOCOL.md', repo), 'utf8');
  // Op tables: rows whose first cell is one backquoted lower-case op name.
  const documented = [...md.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]!);
  assert.deepEqual([...new Set(documented)].sort(), hostOps);
});

test("the agent's op table (agent/req.c) serves exactly the host ops", async () => {
  const c = await readFile(new URL('agent/req.c', repo), 'utf8');
  const served = [...c.matchAll(/^\s*\{ "([a-z_]+)", op_[a-z_]+,/gm)].map((m) => m[1]!);
  assert.deepEqual([...served].sort(), hostOps);
});
