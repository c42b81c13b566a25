// The host agent client against the real agent binary, run on the host in --listen mode.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AgentClient, AgentError, AgentLinkError } from '../../src/agent/client.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const agentBinary = path.join(repo, 'agent/build/provium-agent');
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString();

describe('AgentClient with a real agent', { skip: !existsSync(agentBinary) && 'agent not built (make -C agent)' }, () => {
  let dir: string;
  let socketPath: string;
  let agent: ChildProcess;
  let client: AgentClient;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'provium-agent-test-'));
    socketPath = path.join(dir, 'agent.sock');
    agent = spawn(agentBinary, ['--listen', socketPath], { stdio: ['ignore', 'ignore', 'inherit'] });
    client = await AgentClient.connect(socketPath, { timeoutMs: 5000 });
  });

  after(() => {
    client?.close();
    agent?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs a command and captures its output and exit code', async () => {
    const res = await client.request('exec', { argv: ['/bin/sh', '-c', 'echo out; echo err >&2; exit 3'], env: {}, env_clear: false, stdin: new Uint8Array() });
    assert.equal(res.status, 'exited');
    assert.equal(res.code, 3);
    assert.equal(text(res.stdout), 'out\n');
    assert.equal(text(res.stderr), 'err\n');
  });

  it('keeps requests concurrent: two 1 s sleeps finish in about 1 s', async () => {
    const sleep = { argv: ['sleep', '1'], env: {}, env_clear: false, stdin: new Uint8Array() };
    const started = performance.now();
    await Promise.all([client.request('exec', sleep), client.request('exec', sleep)]);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 1900, `two parallel 1 s sleeps took ${Math.round(elapsed)} ms`);
  });

  it('turns an OS failure into an AgentError with errno and strerror text', async () => {
    await assert.rejects(client.request('read_file', { path: '/nonexistent/x' }), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.errno, 2);
      assert.match(err.message, /No such file or directory/);
      return true;
    });
  });

  it('streams process output in order, paced by credit', async () => {
    const { handle } = await client.request('spawn', {
      argv: ['/bin/sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done'],
      env: {},
      env_clear: false,
      stdin: new Uint8Array(),
    });
    const stream = await client.openStream('proc_stream', { handle, which: 'stdout' });
    const chunks: Buffer[] = [];
    for (;;) {
      const chunk = await stream.read(5000);
      if (!chunk) break;
      chunks.push(Buffer.from(chunk));
    }
    const lines = Buffer.concat(chunks).toString().trimEnd().split('\n');
    assert.equal(lines.length, 2000);
    assert.equal(lines[0], 'line-0');
    assert.equal(lines[1999], 'line-1999');
    await client.request('wait', { handle });
  });

  it('times out a request the agent does not answer in time', async () => {
    await assert.rejects(
      client.request('exec', { argv: ['sleep', '2'], env: {}, env_clear: false, stdin: new Uint8Array() }, { timeoutMs: 100 }),
      (err: unknown) => err instanceof AgentLinkError && err.reason === 'timeout',
    );
  });

  it('resyncs with a fresh token', async () => {
    await client.resync(2000);
  });
});
