// Choosing KVM or TCG: the entry point for everyone but QemuVm.launch (the CLI's doctor and
// banner, the bench). `auto` probes KVM once per host with a real boot of the minimal image to
// agent-ready; accel-verdict.ts decides and caches, qemu.ts's probeKvm boots. QemuVm.launch
// resolves `auto` through accel-verdict.ts directly, so this file may depend on qemu.ts.

import { autoAccelWith, resolveAccelWith, type AccelVerdict } from './accel-verdict.js';
import { probeKvm } from './qemu.js';

export { kKvmProbeTimeoutMs, type AccelVerdict } from './accel-verdict.js';
export { agentHello } from './agent-hello.js';

/** 'kvm' and 'tcg' are taken as asked ('kvm' fails fast without /dev/kvm); 'auto' probes once. */
export function resolveAccel(requested: 'auto' | 'kvm' | 'tcg'): Promise<'kvm' | 'tcg'> {
  return resolveAccelWith(requested, probeKvm);
}

/** The verdict behind resolveAccel('auto'), with its reason (for `provium doctor`). */
export function autoAccel(opts: { reprobe?: boolean } = {}): Promise<AccelVerdict> {
  return autoAccelWith({ ...opts, probe: probeKvm });
}
