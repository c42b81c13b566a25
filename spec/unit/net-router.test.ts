import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseMac } from '../../src/net/ethernet.js';
import { arpFrame, checksum, Router } from '../../src/net/router.js';
import { Switch } from '../../src/net/switch.js';
import { FakeNic, sleep, until } from './net-helpers.js';

const ip = (text: string): number => text.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const kMac1 = parseMac('02:00:00:00:00:01');
const kMac2 = parseMac('02:00:00:00:00:02');
const kRouterA = parseMac('52:54:01:00:00:01');
const kRouterB = parseMac('52:54:01:00:00:02');

/** An IPv4 packet in an Ethernet frame: ICMP echo request `id` unless `proto` says otherwise. */
function ipFrame(o: { dstMac: number; srcMac: number; src: string; dst: string; ttl?: number; id?: number; padBytes?: number }): Buffer {
  const icmp = Buffer.alloc(12);
  icmp[0] = 8;
  icmp.writeUInt16BE(o.id ?? 1, 4);
  icmp.writeUInt32BE(0xdeadbeef, 8);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const frame = Buffer.alloc(14 + 20 + icmp.byteLength + (o.padBytes ?? 0));
  frame.writeUIntBE(o.dstMac, 0, 6);
  frame.writeUIntBE(o.srcMac, 6, 6);
  frame.writeUInt16BE(0x0800, 12);
  const h = frame.subarray(14);
  h[0] = 0x45;
  h.writeUInt16BE(20 + icmp.byteLength, 2);
  h[8] = o.ttl ?? 64;
  h[9] = 1;
  h.writeUInt32BE(ip(o.src), 12);
  h.writeUInt32BE(ip(o.dst), 16);
  h.writeUInt16BE(checksum(h.subarray(0, 20)), 10);
  icmp.copy(h, 20);
  return frame;
}

const isArp = (f: Buffer): boolean => f.readUInt16BE(12) === 0x0806;
const isIpv4 = (f: Buffer): boolean => f.readUInt16BE(12) === 0x0800;

interface Lab {
  a: Switch;
  b: Switch;
  n1: FakeNic;
  n2: FakeNic;
  router: Router;
  close(): Promise<void>;
}

const open: Lab[] = [];
after(async () => {
  for (const lab of open) await lab.close();
});

/** Bridges a (10.1.0.0/24, n1 at .2) and b (10.2.0.0/24, n2 at .2), the router at .254 on each. */
async function lab(): Promise<Lab> {
  const dir = mkdtempSync(join(tmpdir(), 'pv-rt-'));
  const a = new Switch({ name: 'a', seed: 1 });
  const b = new Switch({ name: 'b', seed: 1 });
  const router = new Router();
  const nics: FakeNic[] = [];
  for (const [sw, n] of [[a, 1], [b, 2]] as const) {
    await sw.addPort(`n${n}`, join(dir, `n${n}.sock`));
    nics.push(await FakeNic.connect(join(dir, `n${n}.sock`)));
    await sw.addPort('@router', join(dir, `r${n}.sock`));
    await router.addInterface({ name: sw.name, socketPath: join(dir, `r${n}.sock`), mac: n === 1 ? kRouterA : kRouterB, address: ip(`10.${n}.0.254`), prefixLength: 24 });
    await sw.whenConnected('@router', 2000);
  }
  const result: Lab = {
    a, b, n1: nics[0]!, n2: nics[1]!, router,
    async close() {
      router.close();
      for (const nic of nics) nic.close();
      await a.close();
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  open.push(result);
  return result;
}

/** n2 answers the router's ARP request for 10.2.0.2. */
async function answerArp(l: Lab): Promise<void> {
  await until(() => l.n2.frames.some(isArp), 'ARP request at n2');
  const req = l.n2.frames.find(isArp)!;
  assert.equal(req.readUInt32BE(14 + 24), ip('10.2.0.2'), 'asks for n2');
  l.n2.send(arpFrame(2, kMac2, ip('10.2.0.2'), kRouterB, ip('10.2.0.254')));
}

describe('router', () => {
  it('answers ARP for its address on each bridge', async () => {
    const l = await lab();
    l.n1.send(arpFrame(1, kMac1, ip('10.1.0.2'), 0, ip('10.1.0.254')));
    await until(() => l.n1.frames.some(isArp), 'ARP reply');
    const reply = l.n1.frames.find(isArp)!;
    assert.equal(reply.readUIntBE(0, 6), kMac1);
    assert.equal(reply.readUInt16BE(14 + 6), 2, 'a reply');
    assert.equal(reply.readUIntBE(14 + 8, 6), kRouterA);
    assert.equal(reply.readUInt32BE(14 + 14), ip('10.1.0.254'));
    assert.equal(l.router.neighbour('a', ip('10.1.0.2')), kMac1, 'learnt the asker');
  });

  it('forwards between linked bridges: ARP for the next hop, new MACs, TTL - 1, checksum, no padding', async () => {
    const l = await lab();
    l.router.link('a', 'b');
    assert.deepEqual(l.router.peers('a'), ['b']);
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.2.0.2', padBytes: 6 }));
    await answerArp(l);
    await until(() => l.n2.frames.some(isIpv4), 'packet at n2');
    const f = l.n2.frames.find(isIpv4)!;
    assert.equal(f.readUIntBE(0, 6), kMac2);
    assert.equal(f.readUIntBE(6, 6), kRouterB);
    assert.equal(f.byteLength, 14 + 20 + 12, 'padding trimmed');
    assert.equal(f[14 + 8], 63);
    assert.equal(checksum(f.subarray(14, 34)), 0, 'header checksum valid');
    assert.equal(f.readUInt32BE(14 + 12), ip('10.1.0.2'));
    // The reply finds n1 without ARP: the router learnt it from the request.
    l.n2.send(ipFrame({ dstMac: kRouterB, srcMac: kMac2, src: '10.2.0.2', dst: '10.1.0.2', id: 2 }));
    await until(() => l.n1.frames.some(isIpv4), 'reply at n1');
    assert.equal(l.n1.frames.filter(isArp).length, 0);
    assert.equal(l.router.forwarded, 2);
  });

  it('drops between bridges that are not linked, and after unlink', async () => {
    const l = await lab();
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.2.0.2' }));
    await until(() => l.router.drops().not_linked === 1, 'not_linked drop');
    l.router.link('a', 'b');
    l.router.unlink('a', 'b');
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.2.0.2' }));
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.9.0.2' }));
    await until(() => l.router.drops().not_linked === 2 && l.router.drops().no_route === 1, 'drops');
    assert.equal(l.n2.frames.length, 0);
  });

  it('drops TTL 1 with an ICMP time exceeded to the sender', async () => {
    const l = await lab();
    l.router.link('a', 'b');
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.2.0.2', ttl: 1 }));
    await until(() => l.n1.frames.some(isIpv4), 'ICMP at n1');
    const f = l.n1.frames.find(isIpv4)!;
    assert.equal(f.readUInt32BE(14 + 12), ip('10.1.0.254'));
    assert.equal(f[14 + 20], 11, 'time exceeded');
    assert.equal(l.router.drops().ttl, 1);
    assert.equal(l.n2.frames.length, 0);
  });

  it('answers pings to its own addresses (the far one only when linked)', async () => {
    const l = await lab();
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.1.0.254', id: 7 }));
    await until(() => l.n1.frames.some(isIpv4), 'echo reply');
    const reply = l.n1.frames.find(isIpv4)!;
    assert.equal(reply[14 + 20], 0, 'echo reply');
    assert.equal(reply.readUInt16BE(14 + 24), 7, 'same id');
    assert.equal(checksum(reply.subarray(14 + 20)), 0);
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.2.0.254', id: 8 }));
    await sleep(50);
    assert.equal(l.n1.frames.filter(isIpv4).length, 1, 'no answer from the unlinked side');
    l.router.link('a', 'b');
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.2.0.254', id: 9 }));
    await until(() => l.n1.frames.filter(isIpv4).length === 2, 'echo reply from the far address');
  });

  it("a bridge's partition applies to routed traffic crossing it", async () => {
    const l = await lab();
    l.router.link('a', 'b');
    l.b.partition('@router', 'n2');
    l.n1.send(ipFrame({ dstMac: kRouterA, srcMac: kMac1, src: '10.1.0.2', dst: '10.2.0.2' }));
    await until(() => l.b.drops().partition > 0, 'the ARP request cut on b');
    assert.equal(l.n2.frames.length, 0);
  });

  it('refuses overlapping subnets and self-links', async () => {
    const l = await lab();
    await assert.rejects(l.router.addInterface({ name: 'c', socketPath: '/nonexistent', mac: 1, address: ip('10.1.0.253'), prefixLength: 24 }), /overlapping subnets/);
    assert.throws(() => l.router.link('a', 'a'), /to itself/);
    assert.throws(() => l.router.link('a', 'z'), /no interface on `z`/);
  });
});
