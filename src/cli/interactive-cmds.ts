// The interactive and editor commands of issue 14, declared apart from program.ts: `repl`,
// `console`, `lsp-setup` and `coverage`. Each action sets the exit code through `setExit`.

import type { Command } from 'commander';
import type { ProviumConfig } from '../config/config.js';
import type { Readable } from 'node:stream';
import type { RunIO } from '../run/controller.js';
import { consoleCommand, type ConsoleFlags } from './console-cmd.js';
import { coverageCommand, type CoverageFlags } from './coverage-cmd.js';
import { lspSetupCommand } from './lsp-setup.js';
import { replCommand, type ReplFlags } from './repl-cmd.js';

export function addInteractiveCommands(
  program: Command,
  io: RunIO & { stdin: Readable },
  loadConfig: (raw: { config?: string }) => Promise<ProviumConfig>,
  setExit: (code: number) => void,
): void {
  program
    .command('repl')
    .description('a Lua prompt with the whole test API and a booted VM bound to `vm` (Ctrl-D exits and tears it down); reads stdin without a terminal')
    .argument('[profile]', 'the profile `vm` boots (default minimal)')
    .option('--name <name>', 'the VM\'s name (default repl)')
    .option('--fixture <path>', '`vm` is restored from this vm fixture instead')
    .option('--restore <dir>', '`vm` (and each VM by its name) comes from a lab snapshot, e.g. one --keep-failed saved')
    .option('--no-boot', 'boot nothing; make VMs with provium:vm(name, profile)')
    .option('--config <path>', 'the config file (default ./provium.toml)')
    .action(async (profile: string | undefined, raw: ReplFlags & { config?: string }) => {
      setExit(await replCommand(profile, raw, await loadConfig(raw), io));
    });

  program
    .command('console')
    .description('boot PROFILE with its serial console on this terminal (Ctrl-A X quits, Ctrl-A C is the QEMU monitor); QEMU_ARGS after --')
    .argument('<profile>', 'the profile to boot')
    .argument('[qemu-args...]', 'extra QEMU arguments, after --')
    .option('--mem <size>', 'memory, e.g. 512M (default: the profile\'s)')
    .option('--cpus <n>', 'vCPUs (default: the profile\'s)')
    .option('--cmdline <text>', 'appended to the kernel command line (later values win)')
    .option('--print-command', 'print the QEMU command line instead of running it')
    .option('--config <path>', 'the config file (default ./provium.toml)')
    .action(async (profile: string, qemuArgs: string[], raw: ConsoleFlags & { config?: string }) => {
      setExit(await consoleCommand(profile, qemuArgs, raw, await loadConfig(raw), io));
    });

  program
    .command('lsp-setup')
    .description('write type definitions of the test API for lua-language-server (.provium-meta/provium.lua) and a .luarc.json that loads them')
    .argument('[dir]', 'the project directory (default .)')
    .option('--force', 'overwrite a .luarc.json that was not written by provium')
    .action(async (dir: string | undefined, raw: { force?: boolean }) => {
      setExit(await lspSetupCommand(dir ?? '.', { force: raw.force === true }, io));
    });

  program
    .command('coverage')
    .description('test outcomes grouped by a meta key (spec by default), from a saved event stream')
    .option('--from <events>', 'a file written by --save-events, or - for stdin (default -)')
    .option('--by <key>', 'the meta key to group by', 'spec')
    .option('--json', 'one JSON object instead of the table')
    .action(async (raw: CoverageFlags) => {
      setExit(await coverageCommand(raw, io));
    });
}
