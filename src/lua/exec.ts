// vm:run / vm:run_async (seed 000): the call shapes and their detection, shared by VMs, guest
// workers and batches.
//
//   run("echo hi")                      shell form: /bin/sh -c "echo hi"
//   run("echo", {"hi"})                 legacy direct exec (a pure array, no option keys)
//   run("echo", {args = {"hi"}, ...})   options form: direct exec when `args` is present,
//   run("printenv X", {env = {...}})    else the string still goes through the shell
//   run({"echo", "hi"}, opts?)          argv table, direct exec
//
// A table with any non-array key is options; mixing array entries with option keys is an error.

import { lua } from 'fengari';
import type { AgentOps, ExecSpec } from '../protocol/agent.js';
import { R, readOptions, type Args } from './args.js';
import { agentCall, type AgentTarget } from './guest.js';
import { ProcessClass, Process } from './process.js';
import { pushRunResult } from './run-result.js';
import { eachPair } from './values.js';

const kRunSpec = {
  args: R.array(R.stringish, 'string'),
  env: R.stringMap,
  env_clear: R.bool,
  cwd: R.string,
  stdin: R.bytes,
  timeout_ms: R.int(0, 2 ** 31 - 1),
  timeout: R.duration,
};

export interface ExecRequest {
  spec: ExecSpec;
  /** The agent's timeout, when one was given. */
  timeoutMs?: number;
  /** `` `echo hi` `` for messages. */
  display: string;
}

/** Classifies a table argument: 'array' (keys 1..n only, n >= 1), 'options' or 'mixed'. */
function tableShape(a: Args, idx: number): 'array' | 'options' | 'mixed' {
  let ints = 0;
  let others = 0;
  eachPair(a.L, idx, () => {
    if (lua.lua_type(a.L, -2) === lua.LUA_TNUMBER) ints++;
    else others++;
  });
  if (ints > 0 && others > 0) return 'mixed';
  return ints > 0 ? 'array' : 'options';
}

/** Parses user arguments n (command) and n+1 (args or options). */
export function parseExec(a: Args, n: number, mode: 'run' | 'async'): ExecRequest {
  const usage = `${a.label}("cmd"), ${a.label}("cmd", {"arg", ...}) or ${a.label}("cmd", {args = {...}, env = {...}, cwd = "...", stdin = "..."${mode === 'run' ? ', timeout = "5s"' : ''}})`;
  let argv: string[] | undefined;
  let shell: string | undefined;
  const t1 = a.type(n);
  if (t1 === lua.LUA_TSTRING) shell = a.string(n, 'cmd');
  else if (t1 === lua.LUA_TTABLE) {
    argv = a.read(n, 'argv', R.array(R.stringish, 'string'));
    if (argv.length === 0) throw a.error(`argument #${n} (argv) must not be empty; usage: ${usage}`);
  } else throw a.error(`argument #${n} (cmd) must be a string or an array of strings, got ${a.got(a.idx(n))}; usage: ${usage}`);

  let opts: ReturnType<typeof readOptions<typeof kRunSpec>> = {};
  if (!a.isNil(n + 1)) {
    const idx = a.table(n + 1, 'opts');
    const shape = tableShape(a, idx);
    if (shape === 'mixed') {
      throw a.error(`argument #${n + 1} mixes array entries with option keys; put positional arguments in \`args\` (usage: ${usage})`);
    }
    if (shape === 'array') {
      if (argv) throw a.error(`argument #${n + 1}: positional arguments cannot follow an argv table; put them in the argv table`);
      argv = [shell!, ...a.read(n + 1, 'args', R.array(R.stringish, 'string'))];
      shell = undefined;
    } else {
      opts = readOptions(a, idx, `argument #${n + 1} (opts)`, kRunSpec);
    }
  }
  a.noMoreThan(n + 1, usage);

  if (opts.args !== undefined) {
    if (argv) throw a.error('option `args` cannot be combined with an argv table; put the arguments in the argv table');
    argv = [shell!, ...opts.args];
    shell = undefined;
  }
  if (mode === 'async' && (opts.timeout !== undefined || opts.timeout_ms !== undefined)) {
    const which = opts.timeout !== undefined ? 'timeout' : 'timeout_ms';
    throw a.error(
      `option \`${which}\` is not accepted: the agent does not kill async processes; use proc:wait(timeout) instead`,
    );
  }
  if (opts.timeout !== undefined && opts.timeout_ms !== undefined) {
    throw a.error('give either `timeout` or `timeout_ms`, not both');
  }
  const timeoutMs = opts.timeout ?? opts.timeout_ms;
  // execve takes NAME=value C strings: a `=` in a name or a NUL anywhere would silently change them.
  for (const [name, value] of Object.entries(opts.env ?? {})) {
    if (name === '' || name.includes('=') || name.includes('\0')) {
      throw a.error(`env key ${JSON.stringify(name)} is not a valid variable name: it must be non-empty, without \`=\` or NUL`);
    }
    if (value.includes('\0')) throw a.error(`env value of ${name} contains a NUL byte, which an environment variable cannot hold`);
  }
  if (timeoutMs !== undefined && timeoutMs <= 0) {
    throw a.error('the timeout must be greater than 0 (leave it out to wait without a limit)');
  }
  const spec: ExecSpec = {
    argv: shell !== undefined ? ['/bin/sh', '-c', shell] : argv!,
    env: opts.env ?? {},
    env_clear: opts.env_clear ?? false,
    stdin: opts.stdin ?? new Uint8Array(0),
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
  };
  const display = shell !== undefined ? `\`${shell}\`` : `\`${argv!.join(' ')}\``;
  return { spec, display, ...(timeoutMs !== undefined ? { timeoutMs: Math.ceil(timeoutMs) } : {}) };
}

/** Runs the command given as user arguments 1 and 2 to completion (run's call shapes). */
export function execCommand(target: AgentTarget, a: Args): { result: AgentOps['exec']['res']; display: string } {
  const req = parseExec(a, 1, 'run');
  const data = req.timeoutMs !== undefined ? { ...req.spec, timeout_ms: req.timeoutMs } : req.spec;
  return { result: agentCall(target, a.label, 'exec', data, { boundMs: req.timeoutMs, context: req.display }), display: req.display };
}

/** Starts the command given as user arguments 1 and 2 (run_async's call shapes), owned by the current scope. */
export function startProcess(target: AgentTarget, a: Args): Process {
  const req = parseExec(a, 1, 'async');
  const reply = agentCall(target, a.label, 'spawn', req.spec, { context: req.display });
  const proc = new Process(target, reply.handle, reply.pid, req.display);
  a.rt.currentScope.add(proc);
  return proc;
}

/** `target:run(...)`: pushes a RunResult. */
export function runMethod(target: AgentTarget, a: Args): number {
  const { result, display } = execCommand(target, a);
  pushRunResult(a.rt, a.L, result, display);
  return 1;
}

/** `target:run_async(...)`: pushes a Process. */
export function runAsyncMethod(target: AgentTarget, a: Args): number {
  a.rt.push(ProcessClass, startProcess(target, a), a.L);
  return 1;
}
