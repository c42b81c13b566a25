// How a guest ended, told apart: QEMU's events (GUEST_PANICKED from -device pvpanic, SHUTDOWN
// with its reason, VSERPORT_CHANGE of the agent's port), its exit status and the console log.
// Every death gets a name a CI log can be grepped for, never just "QEMU exited".

import { constants as osConstants } from 'node:os';
import type { VmDeathKind } from '../protocol/events.js';
import type { QemuExit, QemuVm, QmpEvent } from '../vmm/qemu.js';
import { kAgentPortId } from '../vmm/cmdline.js';

/** What QEMU said about one guest before it went (one record per QEMU process). */
export class GuestFate {
  panicked = false;
  /** The SHUTDOWN event: `guest` is true when the guest asked for it. */
  shutdown: { guest: boolean; reason: string } | undefined;
  /** The agent's virtio port as the guest last left it (undefined: no event yet). */
  portOpen: boolean | undefined;

  observe(ev: QmpEvent): void {
    const data = ev.data ?? {};
    switch (ev.event) {
      case 'GUEST_PANICKED':
        this.panicked = true;
        return;
      case 'SHUTDOWN':
        this.shutdown = { guest: data['guest'] === true, reason: String(data['reason'] ?? '') };
        return;
      case 'VSERPORT_CHANGE':
        if (data['id'] === kAgentPortId) this.portOpen = data['open'] === true;
        return;
    }
  }
}

const fates = new WeakMap<QemuVm, GuestFate>();

/** The fate record of a QEMU, listening to its events from the first call on. */
export function fateOf(qemu: QemuVm): GuestFate {
  let fate = fates.get(qemu);
  if (!fate) {
    const made = new GuestFate();
    fate = made;
    fates.set(qemu, made);
    try {
      qemu.qmp.on('event', (ev) => made.observe(ev));
    } catch {
      // No QMP (it failed during launch): there is nothing to hear.
    }
  }
  return fate;
}

export interface Death {
  kind: VmDeathKind;
  reason: string;
  /** The guest powered itself off: the VM is shut down, not dead. */
  clean: boolean;
}

/** The first line of a kernel panic in the console log (`Kernel panic - not syncing: …`). */
export function panicLine(consoleText: string): string | undefined {
  const m = /Kernel panic - not syncing: ?([^\r\n]*)/.exec(consoleText);
  return m ? `Kernel panic - not syncing: ${m[1]!.trim()}`.trim() : undefined;
}

/**
 * PID 1 (the agent, standalone) exiting panics the kernel with its wait status:
 * `Attempted to kill init! exitcode=0x0000000b` is signal 11, `0x00000100` is exit code 1.
 */
function initExit(panic: string): string | undefined {
  const m = /Attempted to kill init! exitcode=0x([0-9a-fA-F]+)/.exec(panic);
  if (!m) return undefined;
  const status = Number.parseInt(m[1]!, 16);
  return status & 0x7f ? `agent exited (signal ${status & 0x7f})` : `agent exited (code ${(status >> 8) & 0xff})`;
}

/**
 * The agent's last words, if the console has them: as PID 1 it logs a crash and halts; as a
 * systemd unit (`init = "systemd"`), the unit's ExecStopPost logs how it ended (agent/root.c).
 */
export function agentCrash(consoleText: string): string | undefined {
  const m = /provium-agent: fatal signal(?: (\d+))?/.exec(consoleText);
  if (m) return m[1] ? `agent exited (signal ${m[1]}): it crashed and halted` : 'agent exited (fatal signal): it crashed and halted';
  const unit = /provium-agent: (?:killed by signal (\w+)|exited with code (\d+))/.exec(consoleText);
  if (!unit) return undefined;
  if (unit[2] !== undefined) return `agent exited (code ${unit[2]}); systemd restarted the unit, but what the harness had open in the guest is gone`;
  const name = unit[1]!;
  const num = (osConstants.signals as Record<string, number>)[`SIG${name}`];
  return `agent exited (signal ${num ?? name}${num ? `, SIG${name}` : ''}); systemd restarted the unit, but what the harness had open in the guest is gone`;
}

/** Why QEMU exited, in the words a report shows. `consoleText` is the end of the console log. */
export function describeDeath(fate: GuestFate, exit: QemuExit, consoleText: string): Death {
  const panic = panicLine(consoleText);
  const shutdown = fate.shutdown;
  // 1. A kernel panic: pvpanic told QEMU, or the guest rebooted (-no-reboot ends it) with a panic on the console.
  if (fate.panicked || shutdown?.reason === 'guest-panic' || (panic && shutdown?.reason === 'guest-reset')) {
    const first = panic ?? 'no panic message on the console';
    const agent = panic ? initExit(panic) : undefined;
    return { kind: agent ? 'agent_exited' : 'kernel_panic', reason: agent ? `${agent}; kernel panic: ${first}` : `kernel panic: ${first}`, clean: false };
  }
  // 2. The guest powered itself off (poweroff, the power button, halt with ACPI).
  if (shutdown?.guest && shutdown.reason === 'guest-shutdown') return { kind: 'poweroff', reason: 'guest powered off', clean: true };
  if (shutdown?.reason === 'guest-reset') {
    return { kind: 'reboot', reason: 'the guest rebooted itself (QEMU runs with -no-reboot, so a guest reboot ends the VM; use vm:reset())', clean: false };
  }
  // 3. QEMU itself: killed from outside, or its own failure.
  const stderr = exit.stderrTail.trim();
  if (exit.signal) return { kind: 'qemu_killed', reason: `QEMU killed by ${exit.signal}${stderr ? `: ${stderr}` : ''}`, clean: false };
  return { kind: 'qemu_exited', reason: `QEMU exited unexpectedly (exit code ${exit.code})${stderr ? `: ${stderr}` : ''}`, clean: false };
}
