// Test helpers for the switch: fake NICs (unix socket clients speaking QEMU's stream framing)
// and hand-built Ethernet frames.

import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { buildFrame } from '../../src/net/ethernet.js';
import { Switch, type SwitchOptions } from '../../src/net/switch.js';
import { encodeWireFrame, WireReader } from '../../src/net/wire.js';

export const kTestEthertype = 0x88b5;
export const kBroadcast = 'ff:ff:ff:ff:ff:ff';

/** A locally administered unicast MAC for NIC number `n`. */
export function macOf(n: number): string {
  return `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`;
}

/** A frame whose payload is a 4-byte sequence number, then `padBytes` zero bytes. */
export function seqFrame(dst: string, src: string, seq: number, padBytes = 0): Buffer {
  const payload = Buffer.alloc(4 + padBytes);
  payload.writeUInt32BE(seq, 0);
  return buildFrame({ dst, src, ethertype: kTestEthertype, payload });
}

export function seqOf(frame: Buffer): number {
  return frame.readUInt32BE(14);
}

/** Polls `predicate` every 5 ms; rejects with `what` after `timeoutMs`. */
export async function until(predicate: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A fake guest NIC: sends and records length-prefixed frames, with the time each arrived. */
export class FakeNic {
  readonly frames: Buffer[] = [];
  readonly arrivalsMs: number[] = [];
  closed = false;
  private readonly _reader = new WireReader();

  private constructor(private readonly _socket: Socket) {
    _socket.on('data', (chunk: Buffer) => {
      for (const frame of this._reader.push(chunk)) {
        this.frames.push(frame);
        this.arrivalsMs.push(performance.now());
      }
    });
    _socket.on('error', () => {});
    _socket.on('close', () => (this.closed = true));
  }

  static connect(path: string): Promise<FakeNic> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new FakeNic(socket));
      });
    });
  }

  send(frame: Buffer): void {
    this._socket.write(encodeWireFrame(frame));
  }

  sendRaw(bytes: Buffer): void {
    this._socket.write(bytes);
  }

  /** Frames carrying the test ethertype, as sequence numbers. */
  seqs(): number[] {
    return this.frames.filter((f) => f.readUInt16BE(12) === kTestEthertype).map(seqOf);
  }

  waitFrames(count: number, timeoutMs = 5000): Promise<void> {
    return until(() => this.frames.length >= count, `${count} frames (have ${this.frames.length})`, timeoutMs);
  }

  close(): void {
    this._socket.destroy();
  }
}

export interface Bench {
  sw: Switch;
  dir: string;
  nics: Record<string, FakeNic>;
  close(): Promise<void>;
}

/**
 * A switch with one connected fake NIC per name, each NIC i sending from macOf(i + 1).
 * close() closes the NICs, the switch and the temp directory.
 */
/** A `bench` maker for one test file: every bench it made is closed after the file. */
export function benches(): (names: string[], options?: Partial<SwitchOptions>) => Promise<Bench> {
  const open: Bench[] = [];
  after(async () => {
    for (const b of open) await b.close();
  });
  return async (names, options = {}) => {
    const b = await bench(names, options);
    open.push(b);
    return b;
  };
}

export async function bench(names: string[], options: Partial<SwitchOptions> = {}): Promise<Bench> {
  const dir = mkdtempSync(join(tmpdir(), 'pv-net-'));
  const sw = new Switch({ name: 'lan', seed: 1, ...options });
  const nics: Record<string, FakeNic> = {};
  for (const name of names) {
    await sw.addPort(name, join(dir, `${name}.sock`));
    nics[name] = await FakeNic.connect(join(dir, `${name}.sock`));
    await sw.whenConnected(name, 2000);
  }
  return {
    sw,
    dir,
    nics,
    async close() {
      for (const nic of Object.values(nics)) nic.close();
      await sw.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Sends a broadcast marker from `from` and waits until every other NIC has it: the switch
 * forwards in order, so anything `from` sent earlier (without impairments) has arrived by then.
 */
export async function barrier(b: Bench, from: string, markerSeq = 0xffffffff): Promise<void> {
  const nameIndex = Object.keys(b.nics).indexOf(from);
  b.nics[from]!.send(seqFrame(kBroadcast, macOf(nameIndex + 1), markerSeq));
  for (const [name, nic] of Object.entries(b.nics)) {
    if (name === from) continue;
    await until(() => nic.seqs().includes(markerSeq), `marker at ${name}`);
  }
}
