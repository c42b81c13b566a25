// How a guest ended, from what QEMU and the console said (src/broker/vm-fate.ts): every kind of
// death gets its name. The same paths run on real guests in spec/faults/deaths.test.lua and
// spec/lua/debian.test.lua (an agent under systemd).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentCrash, describeDeath, GuestFate, panicLine } from '../../src/broker/vm-fate.js';

const exit = { code: 0, signal: null, stderrTail: '' };

describe('vm-fate', () => {
  it('names the agent as PID 1 that crashed and parked', () => {
    assert.equal(agentCrash('x\nprovium-agent: fatal signal 11 (si_code 1); PID 1 halting here\n'), 'agent exited (signal 11): it crashed and halted');
  });

  it('names the agent as a systemd unit that died of a signal or exited, from its ExecStopPost line', () => {
    assert.match(agentCrash('provium-agent: killed by signal SEGV\n')!, /^agent exited \(signal 11, SIGSEGV\); systemd restarted the unit/);
    assert.match(agentCrash('provium-agent: killed by signal KILL\n')!, /^agent exited \(signal 9, SIGKILL\)/);
    assert.match(agentCrash('provium-agent: exited with code 3\n')!, /^agent exited \(code 3\)/);
    assert.equal(agentCrash('provium-agent: ready (mode=standalone)\n'), undefined);
  });

  it('a panic with the init exit status is the agent exiting; without it, a kernel panic', () => {
    const fate = new GuestFate();
    fate.observe({ event: 'GUEST_PANICKED', data: {} } as never);
    const agent = describeDeath(fate, exit, 'Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n');
    assert.equal(agent.kind, 'agent_exited');
    assert.match(agent.reason, /^agent exited \(signal 11\); kernel panic: /);
    const kernel = describeDeath(fate, exit, 'Kernel panic - not syncing: sysrq triggered crash\n');
    assert.deepEqual([kernel.kind, kernel.reason], ['kernel_panic', 'kernel panic: Kernel panic - not syncing: sysrq triggered crash']);
    assert.equal(panicLine('no panic here'), undefined);
  });

  it('a clean poweroff is clean; QEMU killed or exiting is named as such', () => {
    const off = new GuestFate();
    off.observe({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' } } as never);
    assert.deepEqual(describeDeath(off, exit, ''), { kind: 'poweroff', reason: 'guest powered off', clean: true });
    assert.equal(describeDeath(new GuestFate(), { code: null, signal: 'SIGKILL', stderrTail: '' }, '').reason, 'QEMU killed by SIGKILL');
    assert.match(describeDeath(new GuestFate(), { code: 1, signal: null, stderrTail: 'oops' }, '').reason, /^QEMU exited unexpectedly \(exit code 1\): oops$/);
  });
});
