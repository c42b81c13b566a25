// A warm spare's NICs wait on sockets of their own, then a bridge port adopts each connection:
// what the guest sent while parked arrives first and whole, and both directions flow after.
// Fake NICs stand in for QEMU's stream netdev here; cli-warm-pool.test.ts takes the same path
// with real guests.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { ParkedNics } from '../../src/broker/parked-nics.js';
import { benches, FakeNic, kBroadcast, macOf, seqFrame, until } from './net-helpers.js';

const make = benches();
const nic = (id: string) => ({ kind: 'nic' as const, slot: 'hp0', id, socketPath: '/nowhere/bridge.sock', mac: macOf(9) });

describe('parked NICs', () => {
  it('a port adopts a parked connection: frames sent while parked arrive first, then both ways', async () => {
    const parked = await ParkedNics.listen([nic('net1')]);
    const socketPath = parked.devices[0]!.socketPath;
    assert.notEqual(socketPath, '/nowhere/bridge.sock', 'the spare connects to the parking socket');
    assert.equal(parked.devices[0]!.mac, macOf(9), 'the NIC keeps its MAC');
    const guest = await FakeNic.connect(socketPath);
    await parked.connected(2000);
    assert.ok(!existsSync(dirname(socketPath)), 'the parking socket files go once connected');
    guest.send(seqFrame(kBroadcast, macOf(9), 1));
    guest.send(seqFrame(kBroadcast, macOf(9), 2));

    const b = await make(['other']);
    await b.sw.addPort('spare', join(b.dir, 'spare.sock'));
    const socket = parked.take('net1');
    assert.ok(socket);
    assert.equal(parked.take('net1'), undefined, 'a connection is handed over once');
    b.sw.adoptConnection('spare', socket);
    await b.sw.whenConnected('spare', 1000);
    await until(() => b.nics['other']!.seqs().length === 2, 'the parked frames at the other port');
    assert.deepEqual(b.nics['other']!.seqs(), [1, 2]);
    b.nics['other']!.send(seqFrame(kBroadcast, macOf(1), 3));
    await until(() => guest.seqs().includes(3), 'a frame to the adopted guest');
    guest.close();
  });

  it('close() ends the connections nobody took', async () => {
    const parked = await ParkedNics.listen([nic('net1'), nic('net2')]);
    const guests = await Promise.all(parked.devices.map((d) => FakeNic.connect(d.socketPath)));
    await parked.connected(2000);
    await parked.close();
    await until(() => guests.every((g) => g.closed), 'both parked connections closed');
  });

  it('a NIC that never connects fails the spare, naming the wait', async () => {
    const parked = await ParkedNics.listen([nic('net1')]);
    await assert.rejects(parked.connected(50), /the spare's NICs did not connect within 50 ms/);
    await parked.close();
  });
});
