// Shared fixtures of the disk tests: a temp dir, a server with disks, qemu-io / qemu-nbd runners,
// a seeded PRNG, and a raw NBD client for what real clients never send.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Disk, type DiskOptions } from '../../src/disk/disk.js';
import type { FaultEvent } from '../../src/disk/faults.js';
import { NbdServer } from '../../src/disk/nbd-server.js';
import { Prng } from '../../src/net/prng.js';
import { SocketReader } from '../../src/disk/socket-reader.js';

export const kMiB = 1024 * 1024;

/** The run's seeded PRNG (src/net/prng.ts), as the broker gives a disk its `random`. */
export function seeded(seed: number): () => number {
  const prng = new Prng(seed);
  return () => prng.float();
}

export interface Rig {
  dir: string;
  sock: string;
  server: NbdServer;
  disks: Map<string, Disk>;
  events: FaultEvent[];
  logs: string[];
  addDisk(name: string, opts?: Partial<DiskOptions>): Promise<Disk>;
  close(): Promise<void>;
}

/** A started server in a fresh temp dir; disks default to 16 MiB raw images. */
export async function rig(): Promise<Rig> {
  const dir = await mkdtemp(join(tmpdir(), 'provium-disk-'));
  const sock = join(dir, 'nbd.sock');
  const logs: string[] = [];
  const server = new NbdServer({ socketPath: sock, log: (m) => logs.push(m) });
  await server.start();
  const disks = new Map<string, Disk>();
  const events: FaultEvent[] = [];
  return {
    dir,
    sock,
    server,
    disks,
    events,
    logs,
    async addDisk(name, opts = {}) {
      const disk = await Disk.open({
        name,
        image: { kind: 'raw', path: join(dir, `${name}.img`), sizeBytes: 16 * kMiB },
        random: seeded(1),
        onFault: (e) => events.push(e),
        ...opts,
      });
      server.addExport(disk);
      disks.set(name, disk);
      return disk;
    },
    async close() {
      await server.stop();
      for (const d of disks.values()) await d.close({ flush: false });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface ToolResult {
  ok: boolean;
  out: string;
}

export function run(cmd: string, args: string[]): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => resolve({ ok: !err, out: stdout + stderr }));
  });
}

/** qemu-io on export `name` with the given -c commands; `extra` goes before the image (e.g. -t unsafe). */
export function qemuIo(sock: string, name: string, cmds: string[], extra: string[] = []): Promise<ToolResult> {
  const args = [...extra, '-f', 'raw', `nbd+unix:///${name}?socket=${sock}`];
  for (const c of cmds) args.push('-c', c);
  return run('qemu-io', args);
}

export interface Reply {
  error: number;
  handle: bigint;
  data: Buffer;
}

/** A hand-driven NBD client: handshake pieces, raw requests, raw replies. */
export class RawClient {
  readonly reader: SocketReader;
  private _handle = 1n;
  /** Resolves when the server closes the connection. */
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    this.reader = new SocketReader(socket, 256 * kMiB);
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
  }

  static async connect(path: string): Promise<RawClient> {
    const socket = connect(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawClient(socket);
  }

  /** Reads the 18-byte greeting and sends client flags. Returns the handshake flags. */
  async greet(clientFlags = 3): Promise<number> {
    const g = await this.reader.read(18);
    const b = Buffer.alloc(4);
    b.writeUInt32BE(clientFlags);
    this.socket.write(b);
    return g.readUInt16BE(16);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.reader.read(20);
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.reader.read(len) };
  }

  static goData(name: string, infos: number[] = []): Buffer {
    const n = Buffer.from(name);
    const b = Buffer.alloc(6 + n.length + 2 * infos.length);
    b.writeUInt32BE(n.length, 0);
    n.copy(b, 4);
    b.writeUInt16BE(infos.length, 4 + n.length);
    infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
    return b;
  }

  /** Full handshake with NBD_OPT_GO; returns size and transmission flags. */
  async open(name: string): Promise<{ sizeBytes: number; flags: number }> {
    await this.greet();
    this.sendOption(7, RawClient.goData(name));
    let info: { sizeBytes: number; flags: number } | undefined;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === 3 && r.data.readUInt16BE(0) === 0) {
        info = { sizeBytes: Number(r.data.readBigUInt64BE(2)), flags: r.data.readUInt16BE(10) };
      } else if (r.type === 1) return info!;
      else if (r.type >= 0x80000000) throw new Error(`GO failed: reply type 0x${r.type.toString(16)}`);
    }
  }

  /** Sends one request (header and payload); returns its handle. */
  request(type: number, offset: bigint | number, length: number, opts: { flags?: number; data?: Buffer; magic?: number } = {}): bigint {
    const handle = this._handle++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(opts.magic ?? 0x25609513, 0);
    h.writeUInt16BE(opts.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.socket.write(opts.data ? Buffer.concat([h, opts.data]) : h);
    return handle;
  }

  /** One simple reply; `dataBytes` is how much payload to expect if it succeeded (reads). */
  async reply(dataBytes = 0): Promise<Reply> {
    const h = await this.reader.read(16);
    if (h.readUInt32BE(0) !== 0x67446698) throw new Error('bad reply magic');
    const error = h.readUInt32BE(4);
    const data = error === 0 && dataBytes > 0 ? await this.reader.read(dataBytes) : Buffer.alloc(0);
    return { error, handle: h.readBigUInt64BE(8), data };
  }

  async read(offset: number, length: number): Promise<Reply> {
    this.request(0, offset, length);
    return this.reply(length);
  }

  async write(offset: number, data: Buffer, flags = 0): Promise<Reply> {
    this.request(1, offset, data.length, { data, flags });
    return this.reply();
  }

  async flush(): Promise<Reply> {
    this.request(3, 0, 0);
    return this.reply();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
