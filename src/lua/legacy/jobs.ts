// Background jobs of seed 002 over the current Process (process.ts): `background(cmd)` starts one
// and returns `{id, pid}`; `job_wait(job, timeout?)` returns `{exit_code, stdout, stderr, running}`
// (no timeout: wait for the exit; 0: look once; N seconds: wait up to N, and a job still running
// keeps running); `job_kill(job)` kills it (SIGKILL) and returns its result. A job belongs to the
// VM or worker that started it and, like a Process, to the scope that was running: it is killed
// when that test (or the file) ends.

import { lua } from 'fengari';
import type { Captured, ExitInfo } from '../../protocol/agent.js';
import { R, type Args } from '../args.js';
import { startProcess } from '../exec.js';
import type { AgentTarget } from '../guest.js';
import type { Process } from '../process.js';
import { exitCodeOf } from '../run-result.js';
import { sleepSync } from '../sync-call.js';
import { key, pushBytes, setField } from '../values.js';

const kSIGKILL = 9;
/** How often job_wait(job, N) asks whether the job is still running. */
const kPollMs = 50;

/** Each target's jobs by id (the agent's process handle). */
const kJobs = new WeakMap<AgentTarget, Map<number, Process>>();

function jobsOf(target: AgentTarget): Map<number, Process> {
  let jobs = kJobs.get(target);
  if (!jobs) kJobs.set(target, (jobs = new Map()));
  return jobs;
}

/** The job named by user argument 1: a `{id, pid}` table from background(), or its id. */
function readJob(target: AgentTarget, a: Args): Process {
  let id: number;
  if (a.type(1) === lua.LUA_TTABLE) {
    lua.lua_getfield(a.L, a.idx(1), key('id'));
    id = R.int(1, 2 ** 31 - 1)(a, lua.lua_gettop(a.L), 'job.id');
    lua.lua_pop(a.L, 1);
  } else {
    id = a.read(1, 'job', R.int(1, 2 ** 31 - 1));
  }
  const job = jobsOf(target).get(id);
  if (!job) throw a.error(`${target.label} has no background job ${id}; pass the table vm:background(cmd) returned`);
  return job;
}

function pushJobResult(a: Args, info: ExitInfo & Partial<Captured>): number {
  const L = a.L;
  const running = info.status === 'running';
  lua.lua_createtable(L, 0, 5);
  if (!running) setField(L, 'exit_code', () => lua.lua_pushinteger(L, exitCodeOf(info)));
  setField(L, 'stdout', () => pushBytes(L, info.stdout ?? new Uint8Array(0)));
  setField(L, 'stderr', () => pushBytes(L, info.stderr ?? new Uint8Array(0)));
  setField(L, 'running', () => lua.lua_pushboolean(L, running));
  if (info.status === 'signalled') setField(L, 'signal', () => lua.lua_pushinteger(L, info.signal));
  return 1;
}

/** The job's state now: its result once it exited, else `running` (nothing is waited for). */
function poll(job: Process, fn: string): ExitInfo & Partial<Captured> {
  if (job.result) return job.result;
  const status = job.status(fn);
  return status.status === 'running' ? status : job.wait(fn, undefined);
}

export const kLegacyJobMethods: Record<string, (target: AgentTarget, a: Args) => number> = {
  background(target, a) {
    const job = startProcess(target, a);
    jobsOf(target).set(job.handle, job);
    lua.lua_createtable(a.L, 0, 2);
    setField(a.L, 'id', () => lua.lua_pushinteger(a.L, job.handle));
    setField(a.L, 'pid', () => lua.lua_pushinteger(a.L, job.pid));
    return 1;
  },
  job_wait(target, a) {
    const job = readJob(target, a);
    if (a.isNil(2)) return pushJobResult(a, job.wait(a.label, undefined));
    const timeoutMs = a.read(2, 'timeout', R.duration);
    const until = Date.now() + timeoutMs;
    for (;;) {
      const info = poll(job, a.label);
      const left = until - Date.now();
      if (info.status !== 'running' || left <= 0) return pushJobResult(a, info);
      sleepSync(Math.min(kPollMs, left, a.rt.deadline.remainingMs()));
    }
  },
  job_kill(target, a) {
    const job = readJob(target, a);
    job.kill(a.label, kSIGKILL);
    return pushJobResult(a, job.wait(a.label, undefined));
  },
};
