// Bring your own kernel (issue 11 part 4): `provium doctor` finds a kernel's config (beside it, or
// embedded with CONFIG_IKCONFIG) and names each option the agent and the minimal userland need
// that it lacks. Kernels and configs here are fabricated: a bzImage header, an ELF magic, gzip.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { profileChecks } from '../../src/cli/doctor.js';
import { loadConfig } from '../../src/config/config.js';
import { extractIkconfig, findKernelConfig, kernelOptionsFor, kernelRelease, missingOptions, parseKernelConfig } from '../../src/config/kernel-config.js';
import { project } from './run-capture.js';

/** A config with every option Provium asks for built in, minus `drop`, plus `set`. */
function configText(opts: { drop?: string[]; set?: Record<string, string> } = {}): string {
  const all = kernelOptionsFor({ pvh: true, minimalUserland: true, machine: 'q35' }).map((o) => o.name);
  const lines = ['#', '# Automatically generated file; DO NOT EDIT.', '#', 'CONFIG_64BIT=y'];
  for (const name of all) {
    if (opts.drop?.includes(name)) lines.push(`# ${name} is not set`);
    else lines.push(`${name}=${opts.set?.[name] ?? 'y'}`);
  }
  return lines.join('\n') + '\n';
}

/** A minimal bzImage: the setup header with its version string and, optionally, a payload. */
function bzImage(release: string, payload?: Buffer): Buffer {
  const setupSects = 1;
  const image = Buffer.alloc((setupSects + 1) * 512 + (payload?.length ?? 0) + 64);
  image[0x1f1] = setupSects;
  image.write('HdrS', 0x202, 'latin1');
  image.writeUInt16LE(0x100, 0x20e);
  image.write(`${release} (builder@host) #1 SMP\0`, 0x300, 'latin1');
  if (payload) {
    image.writeUInt32LE(16, 0x248);
    image.writeUInt32LE(payload.length, 0x24c);
    payload.copy(image, (setupSects + 1) * 512 + 16);
  }
  return image;
}

const ikconfig = (text: string) => Buffer.concat([Buffer.from('IKCFG_ST'), gzipSync(text), Buffer.from('IKCFG_ED')]);
const elf = (body: Buffer) => Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(60), body, Buffer.from('Linux version 6.9.1-elf (x@y)\0')]);

describe('kernel config', () => {
  it('parses y, m, values and "is not set"', () => {
    const c = parseKernelConfig('CONFIG_A=y\nCONFIG_B=m\nCONFIG_C="x y"\n# CONFIG_D is not set\n');
    assert.deepEqual([...c.entries()], [['CONFIG_A', 'y'], ['CONFIG_B', 'm'], ['CONFIG_C', '"x y"'], ['CONFIG_D', 'n']]);
  });

  it('counts =m as missing under the minimal userland (its modules are for another kernel), and for what is needed before modules load', () => {
    const options = kernelOptionsFor({ pvh: false, minimalUserland: true, machine: 'q35' });
    const config = parseKernelConfig(configText({ set: { CONFIG_VIRTIO_BLK: 'm', CONFIG_DEVTMPFS: 'm' } }));
    assert.deepEqual(missingOptions(config, options, { minimalUserland: true }).map((m) => `${m.option.name}=${m.value}`), ['CONFIG_DEVTMPFS=m', 'CONFIG_VIRTIO_BLK=m']);
    assert.deepEqual(missingOptions(config, options, { minimalUserland: false }).map((m) => m.option.name), ['CONFIG_DEVTMPFS']);
  });

  it('asks for PVH only for an ELF vmlinux, and for PCIe hot-plug only on q35', () => {
    const names = (pvh: boolean, machine: 'q35' | 'microvm') => kernelOptionsFor({ pvh, minimalUserland: true, machine }).map((o) => o.name);
    assert.ok(names(true, 'q35').includes('CONFIG_PVH'));
    assert.ok(!names(false, 'q35').includes('CONFIG_PVH'));
    assert.ok(names(false, 'q35').includes('CONFIG_HOTPLUG_PCI_PCIE'));
    assert.ok(!names(false, 'microvm').includes('CONFIG_HOTPLUG_PCI_PCIE'));
    for (const must of ['CONFIG_VIRTIO_PCI', 'CONFIG_VIRTIO_CONSOLE', 'CONFIG_VIRTIO_BLK', 'CONFIG_VIRTIO_NET', 'CONFIG_HW_RANDOM_VIRTIO', 'CONFIG_DEVTMPFS']) {
      assert.ok(names(false, 'q35').includes(must), must);
    }
  });

  it('reads the release from a bzImage header or a "Linux version" string', () => {
    assert.equal(kernelRelease(bzImage('6.8.0-31-generic')), '6.8.0-31-generic');
    assert.equal(kernelRelease(elf(Buffer.alloc(0))), '6.9.1-elf');
    assert.equal(kernelRelease(Buffer.from('nothing here')), undefined);
  });

  it('finds config-<release> beside the kernel, else the embedded IKCONFIG', async () => {
    const dir = await project({});
    await writeFile(join(dir, 'bzImage'), bzImage('6.8.0-test'));
    await writeFile(join(dir, 'config-6.8.0-test'), configText());
    assert.equal((await findKernelConfig(join(dir, 'bzImage')))?.from, join(dir, 'config-6.8.0-test'));

    await writeFile(join(dir, 'vmlinux'), elf(ikconfig('CONFIG_EMBEDDED=y\n')));
    const embedded = await findKernelConfig(join(dir, 'vmlinux'));
    assert.equal(embedded?.from, `${join(dir, 'vmlinux')} (embedded IKCONFIG)`);
    assert.equal(embedded?.text, 'CONFIG_EMBEDDED=y\n');
  });

  it('extracts IKCONFIG from a bzImage\'s gzip payload', async () => {
    const vmlinux = elf(ikconfig('CONFIG_FROM_PAYLOAD=y\n'));
    assert.equal(await extractIkconfig(bzImage('6.1', gzipSync(vmlinux))), 'CONFIG_FROM_PAYLOAD=y\n');
    assert.equal(await extractIkconfig(bzImage('6.1', gzipSync(Buffer.from('no config')))), undefined);
  });
});

describe('provium doctor: profiles and their kernels', () => {
  async function doctorOf(files: Record<string, string | Buffer>, toml: string) {
    const dir = await project({ 'img/vmlinux': '', 'img/initrd.cpio.gz': '', 'provium.toml': `[provium]\ncache_dir = "cache"\n\n${toml}` });
    for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
    const minimal = { kernel: join(dir, 'img/vmlinux'), initrd: join(dir, 'img/initrd.cpio.gz') };
    const config = await loadConfig({ cwd: dir, findMinimalImage: async () => minimal });
    return { dir, checks: await profileChecks(config, minimal) };
  }

  it('names each option a kernel of your own lacks, from a config file beside it', async () => {
    const { dir, checks } = await doctorOf(
      { 'bzImage': bzImage('6.8.0-test'), 'config-6.8.0-test': configText({ drop: ['CONFIG_VIRTIO_CONSOLE', 'CONFIG_VIRTIO_NET'], set: { CONFIG_DEVTMPFS: 'm' } }) },
      '[profiles.mine]\nkernel = "bzImage"\n',
    );
    const lines = checks.map((c) => `${c.level} ${c.what} ${c.detail}`);
    assert.ok(lines.includes(`ok profile mine: kernel ${join(dir, 'bzImage')} on the minimal userland`), lines.join('\n'));
    const fail = checks.find((c) => c.level === 'fail' && c.what === 'kernel')!;
    assert.match(fail.detail, /^mine: .*\/bzImage \(config .*\/config-6\.8\.0-test\) lacks CONFIG_DEVTMPFS \(the agent mounts devtmpfs on \/dev \(there is no udev\); is =m: must be =y\), CONFIG_VIRTIO_CONSOLE \(the agent's channel is a virtio-serial port; is not set\)$/);
    assert.match(fail.fix!, /rebuild the kernel with these =y \(the minimal userland carries no modules for it\)/);
    const warn = checks.find((c) => c.level === 'warn' && c.what === 'kernel')!;
    assert.match(warn.detail, /lacks CONFIG_VIRTIO_NET \(networks \(bridges, uplinks\); is not set\)$/);
    // The minimal image's own kernel is not checked.
    assert.equal(checks.filter((c) => c.what === 'kernel').length, 2);
  });

  it('passes a complete config, and warns when no config can be found', async () => {
    const good = await doctorOf({ 'bzImage': bzImage('6.8.0-ok'), 'config-6.8.0-ok': configText() }, '[profiles.mine]\nkernel = "bzImage"\n');
    assert.match(good.checks.find((c) => c.what === 'kernel')!.detail, /^mine: .* has every option Provium needs \(config .*config-6\.8\.0-ok\)$/);
    const none = await doctorOf({ 'bzImage': bzImage('6.8.0-x') }, '[profiles.mine]\nkernel = "bzImage"\n');
    const warn = none.checks.find((c) => c.what === 'kernel')!;
    assert.equal(warn.level, 'warn');
    assert.match(warn.detail, /no config found for .*bzImage, so its options are not checked/);
    assert.match(warn.fix!, /config-<release>.*CONFIG_IKCONFIG=y/);
  });

  it('checks PVH for a vmlinux with an embedded config', async () => {
    const { checks } = await doctorOf({ 'vmlinux': elf(ikconfig(configText({ drop: ['CONFIG_PVH'] }))) }, '[profiles.elf]\nkernel = "vmlinux"\n');
    assert.match(checks.find((c) => c.level === 'fail' && c.what === 'kernel')!.detail, /\(config .*vmlinux \(embedded IKCONFIG\)\) lacks CONFIG_PVH \(QEMU boots an ELF vmlinux through its PVH entry point/);
  });

  it('checks every profile and names what is missing; unbuilt outputs are a warning', async () => {
    const { checks } = await doctorOf({}, '[profiles.gone]\nkernel = "nope/bzImage"\ninitrd = "nope/initrd"\n\n[profiles.later]\nbuild = "make"\nkernel = "{out}/vmlinux"\n');
    const gone = checks.filter((c) => c.detail.startsWith('gone:'));
    assert.deepEqual(gone.map((c) => c.level), ['fail', 'fail']);
    assert.match(gone[0]!.detail, /^gone: kernel .*\/nope\/bzImage does not exist$/);
    assert.match(gone[0]!.fix!, /^fix `kernel` in .*provium\.toml$/);
    assert.match(gone[1]!.detail, /^gone: initrd .*\/nope\/initrd does not exist$/);
    const later = checks.find((c) => c.detail.startsWith('later:'))!;
    assert.equal(later.level, 'warn');
    assert.match(later.detail, /^later: kernel .*\/cache\/build\/later\/vmlinux does not exist \(its build has not made it yet\)$/);
    assert.equal(later.fix, 'run `provium prepare later`; if it is still missing, make the build write it');
  });
});
