// End to end with a real QEMU and no guest: QMP `announce-self` makes QEMU itself send RARP
// broadcasts from the NIC's MAC (no guest driver needed), which proves the wire format and the
// listen-before-connect order against the real stream netdev. Skipped when QEMU is missing.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseMac } from '../../src/net/ethernet.js';
import { parsePcap, PcapWriter } from '../../src/net/pcap.js';
import { bench, kBroadcast, macOf, seqFrame, until, type Bench } from './net-helpers.js';

const kQemu = 'qemu-system-x86_64';
const kRarpEthertype = 0x8035;
const kGuestMac = '52:54:00:12:34:56';
const haveQemu = spawnSync(kQemu, ['--version'], { stdio: 'ignore' }).status === 0;

let qemu: ChildProcess | undefined;
let b: Bench | undefined;
after(async () => {
  qemu?.kill('SIGKILL');
  await b?.close();
});

describe('switch with a real QEMU stream netdev', { skip: haveQemu ? false : `${kQemu} not installed` }, () => {
  it('carries QEMU announce-self frames, learns its MAC and applies partitions', { timeout: 60_000 }, async () => {
    // 1. The switch listens first: QEMU's stream client never retries.
    b = await bench(['host']);
    const sw = b.sw;
    const vmSock = join(b.dir, 'vm1.sock');
    await sw.addPort('vm1', vmSock);
    const pcap: Buffer[] = [];
    const writer = new PcapWriter((c) => pcap.push(c));
    sw.capture({ port: 'vm1' }, (r) => writer.write(r));

    // 2. QEMU with no disk and no option ROM: firmware idles, QMP on stdio.
    qemu = spawn(kQemu, [
      '-machine', 'q35', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '64',
      '-netdev', `stream,id=n0,server=off,addr.type=unix,addr.path=${vmSock}`,
      '-device', `virtio-net-pci,netdev=n0,mac=${kGuestMac},romfile=`,
      '-qmp', 'stdio',
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let qmpOut = '';
    qemu.stdout!.on('data', (d: Buffer) => (qmpOut += d.toString()));
    qemu.stderr!.on('data', (d: Buffer) => (qmpOut += d.toString()));
    await sw.whenConnected('vm1', 30_000);
    await until(() => qmpOut.includes('"QMP"'), 'QMP greeting', 30_000);
    const announce = (): void => {
      qemu!.stdin!.write('{"execute":"announce-self","arguments":{"initial":50,"max":200,"rounds":3,"step":50}}\n');
    };
    qemu.stdin!.write('{"execute":"qmp_capabilities"}\n');
    announce();

    // 3. The RARP broadcasts reach the fake NIC, from QEMU's MAC, and teach the switch that MAC.
    const host = b.nics.host!;
    const isRarp = (f: Buffer): boolean => f.readUInt16BE(12) === kRarpEthertype;
    await until(() => host.frames.some(isRarp), `a RARP frame from QEMU (QEMU said: ${qmpOut})`, 30_000);
    const rarp = host.frames.find(isRarp)!;
    assert.equal(rarp.readUIntBE(0, 6), parseMac(kBroadcast));
    assert.equal(rarp.readUIntBE(6, 6), parseMac(kGuestMac));
    assert.ok(sw.macTable().some((e) => e.mac === kGuestMac && e.port === 'vm1'));
    assert.equal(sw.counters('vm1').errors, 0);

    // 4. A frame to the learned MAC goes to QEMU's port, and QEMU keeps the connection.
    host.send(seqFrame(kGuestMac, macOf(1), 1));
    await until(() => sw.counters('vm1').rx_packets >= 1, 'frame written to QEMU');

    // 5. A partition stops QEMU's next announcements from reaching the fake NIC.
    sw.partition('vm1', 'host');
    const seen = sw.counters('host').rx_packets;
    announce();
    await until(() => sw.drops().partition > 0, 'a partitioned RARP', 30_000);
    assert.equal(sw.counters('host').rx_packets, seen);
    assert.ok(sw.portInfo('vm1').connected);

    // 6. The capture of QEMU's port reads back as pcap.
    const { records } = parsePcap(Buffer.concat(pcap));
    assert.ok(records.some((r) => r.frame.readUInt16BE(12) === kRarpEthertype));
  });
});
