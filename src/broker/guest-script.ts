// Shell scripts the broker runs in a guest through its agent, to set up what it plugged in (a
// NIC's address, a disk's device name). The guest's busybox sh runs them.

import type { ManagedVm } from './managed-vm.js';
import { BrokerError } from './rpc-server.js';

/** Between two looks for a hot-plugged device: the guest shows one within ~0.1 s. */
const kPollSeconds = 0.05;

/**
 * Lines that wait (up to `tries` looks) for the entry of `dir` whose `attribute` file reads
 * `value` (the NIC with this MAC, the disk with this serial), and set `variable` to its name.
 */
export function waitForSysfsEntry(dir: string, attribute: string, value: string, variable: string, tries: number, missing: string): string[] {
  return [
    'i=0',
    `while :; do for d in ${dir}/*; do [ -e "$d/${attribute}" ] && [ "$(cat "$d/${attribute}")" = "${value}" ] && ${variable}=\${d##*/}; done`,
    `  [ -n "$${variable}" ] && break; i=$((i+1)); [ $i -gt ${tries} ] && { echo "${missing}" >&2; exit 1; }; sleep ${kPollSeconds}`,
    'done',
  ];
}

/** Runs `script` with /bin/sh in the guest; its stdout, trimmed, or a BrokerError: `failure` and the guest's stderr. */
export async function runGuestScript(vm: ManagedVm, script: string, timeoutMs: number, failure: string): Promise<string> {
  const result = await vm.callAgent('exec', { argv: ['/bin/sh', '-c', script], env: {}, env_clear: false, stdin: new Uint8Array(0), timeout_ms: timeoutMs });
  if (result.status !== 'exited' || result.code !== 0) {
    throw new BrokerError(`${failure} (${result.status} ${result.code}): ${Buffer.from(result.stderr).toString('utf8').trim()}`);
  }
  return Buffer.from(result.stdout).toString('utf8').trim();
}
