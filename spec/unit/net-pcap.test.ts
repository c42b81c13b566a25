import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { CaptureRecord } from '../../src/net/capture.js';
import { parsePcap, PcapFile, pcapGlobalHeader, PcapWriter } from '../../src/net/pcap.js';
import { bench, kBroadcast, macOf, seqFrame, seqOf, until, type Bench } from './net-helpers.js';

const open: Bench[] = [];
after(async () => {
  for (const b of open) await b.close();
});

/** The first of tshark/tcpdump found on PATH, or undefined (neither is required). */
function findReader(): string | undefined {
  for (const tool of ['tshark', 'tcpdump']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'pipe' });
      return tool;
    } catch {
      // not installed
    }
  }
  return undefined;
}

describe('pcap', () => {
  it('writes the classic global header', () => {
    assert.equal(
      pcapGlobalHeader().toString('hex'),
      'd4c3b2a1' + '0200' + '0400' + '00000000' + '00000000' + 'ffff0000' + '01000000',
    );
    assert.equal(pcapGlobalHeader({ nanosecond: true }).readUInt32LE(0), 0xa1b23c4d);
    assert.throws(() => pcapGlobalHeader({ snapLenBytes: 0 }), /snapLenBytes 0 is out of range/);
  });

  it('round-trips records in both precisions and truncates to the snap length', () => {
    const frame = seqFrame(kBroadcast, macOf(1), 9, 100);
    const tsNs = 1_700_000_000_123_456_789n;
    for (const nanosecond of [false, true]) {
      const chunks: Buffer[] = [];
      const writer = new PcapWriter((c) => chunks.push(c), { nanosecond, snapLenBytes: 64 });
      writer.write({ tsNs, frame });
      writer.write({ tsNs: tsNs + 1_000_000_000n, frame: frame.subarray(0, 20) });
      const bytes = Buffer.concat(chunks);
      assert.equal(writer.bytesWritten, bytes.byteLength);
      const { header, records } = parsePcap(bytes);
      assert.deepEqual(header, { nanosecond, littleEndian: true, versionMajor: 2, versionMinor: 4, snapLenBytes: 64, linktype: 1 });
      assert.equal(records.length, 2);
      assert.equal(records[0]!.tsNs, nanosecond ? tsNs : 1_700_000_000_123_456_000n);
      assert.equal(records[0]!.origLen, frame.byteLength);
      assert.deepEqual(records[0]!.frame, frame.subarray(0, 64));
      assert.deepEqual(records[1]!.frame, frame.subarray(0, 20));
    }
    assert.throws(() => parsePcap(Buffer.alloc(24)), /not a pcap file/);
    const truncated = Buffer.concat([pcapGlobalHeader(), Buffer.alloc(10)]);
    assert.throws(() => parsePcap(truncated), /record header truncated at byte 24/);
  });

  it('captures a port both ways and the bridge once per frame, into a pcap file', async () => {
    const b = await bench(['a', 'b', 'c']);
    open.push(b);
    const portRecords: CaptureRecord[] = [];
    const bridgeRecords: CaptureRecord[] = [];
    const sub = b.sw.capture({ port: 'a' }, (r) => portRecords.push(r));
    b.sw.capture({}, (r) => bridgeRecords.push(r));
    const file = new PcapFile(join(b.dir, 'lan.pcap'));
    b.sw.capture({}, (r) => file.write(r));
    assert.equal(b.sw.activeCaptures, 3);

    // One at a time: frames from different sockets have no order between them.
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    await until(() => bridgeRecords.length === 1, 'frame 1 in the switch');
    b.nics.b!.send(seqFrame(macOf(1), macOf(2), 2));
    await until(() => bridgeRecords.length === 2, 'frame 2 in the switch');
    b.nics.c!.send(seqFrame(macOf(2), macOf(3), 3));
    await until(() => b.nics.a!.seqs().length === 1 && b.nics.b!.seqs().length === 2, 'frames delivered');
    assert.deepEqual(portRecords.map((r) => [r.direction, seqOf(r.frame)]), [['tx', 1], ['rx', 2]]);
    assert.deepEqual(bridgeRecords.map((r) => [r.port, seqOf(r.frame)]), [['a', 1], ['b', 2], ['c', 3]]);
    assert.ok(portRecords[0]!.tsNs <= portRecords[1]!.tsNs);
    assert.ok(Math.abs(Number(portRecords[0]!.tsNs / 1_000_000n) - Date.now()) < 5000, 'wall-clock timestamps');
    sub.close();
    assert.equal(b.sw.activeCaptures, 2);

    await file.close();
    const bytes = readFileSync(file.path);
    const { header, records } = parsePcap(bytes);
    assert.equal(header.linktype, 1);
    assert.deepEqual(records.map((r) => seqOf(r.frame)), [1, 2, 3]);
    assert.deepEqual(records[1]!.frame, seqFrame(macOf(1), macOf(2), 2));

    const reader = findReader();
    if (reader) {
      const args = reader === 'tshark' ? ['-r', file.path] : ['-r', file.path, '-nn'];
      const out = execFileSync(reader, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      assert.equal(out.trim().split('\n').length, 3, `${reader} read 3 packets:\n${out}`);
    }
  });

  it('closes a capture whose consumer throws, and the switch keeps forwarding', async () => {
    const b = await bench(['a', 'b']);
    open.push(b);
    const sub = b.sw.capture({}, () => {
      throw new Error('consumer broke');
    });
    b.nics.a!.send(seqFrame(kBroadcast, macOf(1), 1));
    await until(() => b.nics.b!.seqs().includes(1), 'frame still forwarded');
    assert.ok(sub.closed);
    assert.match(String(sub.error), /consumer broke/);
    assert.equal(b.sw.activeCaptures, 0);
  });
});
