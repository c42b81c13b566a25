// The fixed newstyle handshake: greeting, client flags, then option haggling until the client
// picks an export (NBD_OPT_GO or NBD_OPT_EXPORT_NAME) or leaves. Options we do not implement
// (structured replies, meta contexts, TLS) get NBD_REP_ERR_UNSUP, and the client carries on
// without them.
import type { Socket } from 'node:net';
import type { Disk } from './disk.js';
import {
  exportNameReply,
  greeting,
  Info,
  infoBlockSize,
  infoExport,
  kKnownClientFlags,
  kClientFlagNoZeroes,
  kOptionHeaderBytes,
  kOptMagic,
  Opt,
  optionReply,
  Rep,
  serverEntry,
  TxFlag,
} from './nbd-protocol.js';
import type { SocketReader } from './socket-reader.js';

/** Longest option payload accepted: names are at most 4096 bytes (spec), plus a few info requests. */
export const kMaxOptionBytes = 8 * 1024;
/** Options one connection may send before it is taken for a denial of service. */
export const kMaxOptionsPerConnection = 1024;
/** The smallest and preferred I/O sizes announced with NBD_INFO_BLOCK_SIZE. */
const kMinBlockBytes = 1;
const kPreferredBlockBytes = 4096;

/** The client broke a MUST of the protocol: the connection is closed. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export interface ExportTable {
  get(name: string): Disk | undefined;
  names(): string[];
}

/** Transmission flags of an export. CAN_MULTI_CONN holds: all connections share one cache, and FLUSH writes all of it. */
export function transmissionFlags(readOnly: boolean): number {
  const base = TxFlag.HAS_FLAGS | TxFlag.CAN_MULTI_CONN;
  if (readOnly) return base | TxFlag.READ_ONLY;
  return base | TxFlag.SEND_FLUSH | TxFlag.SEND_FUA | TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES;
}

/**
 * Runs the handshake. Resolves with the chosen disk (transmission starts), or null when the client
 * aborted. Rejects with ProtocolError on a violation, ConnectionClosedError if the client left.
 */
export async function negotiate(
  socket: Socket,
  reader: SocketReader,
  exports: ExportTable,
  maxRequestBytes: number,
): Promise<Disk | null> {
  // 1. Greeting and client flags.
  socket.write(greeting());
  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  if ((clientFlags & ~kKnownClientFlags) !== 0) throw new ProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
  const noZeroes = (clientFlags & kClientFlagNoZeroes) !== 0;

  // 2. Options, each answered before the next is read.
  for (let count = 0; count < kMaxOptionsPerConnection; count++) {
    const header = await reader.read(kOptionHeaderBytes);
    if (header.readBigUInt64BE(0) !== kOptMagic) throw new ProtocolError('bad option magic');
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > kMaxOptionBytes) throw new ProtocolError(`option ${option} length ${length} exceeds ${kMaxOptionBytes}`);
    const data = await reader.read(length);
    const reply = (type: number, payload?: Buffer): void => {
      socket.write(optionReply(option, type, payload));
    };
    const error = (type: number, message: string): void => reply(type, Buffer.from(message, 'utf8'));

    switch (option) {
      case Opt.EXPORT_NAME: {
        const disk = exports.get(data.toString('utf8'));
        // This option cannot answer an error: the spec says to drop the connection.
        if (!disk) throw new ProtocolError(`unknown export ${JSON.stringify(data.toString('utf8'))}`);
        socket.write(exportNameReply(disk.sizeBytes, transmissionFlags(disk.readOnly), noZeroes));
        return disk;
      }
      case Opt.ABORT:
        reply(Rep.ACK);
        return null;
      case Opt.LIST:
        if (length !== 0) {
          error(Rep.ERR_INVALID, 'NBD_OPT_LIST takes no data');
          break;
        }
        for (const name of exports.names()) reply(Rep.SERVER, serverEntry(name));
        reply(Rep.ACK);
        break;
      case Opt.INFO:
      case Opt.GO: {
        const parsed = parseInfoRequest(data);
        if (!parsed) {
          error(Rep.ERR_INVALID, 'malformed NBD_OPT_INFO/GO data');
          break;
        }
        const disk = exports.get(parsed.name);
        if (!disk) {
          error(Rep.ERR_UNKNOWN, `no export named ${JSON.stringify(parsed.name)}`);
          break;
        }
        reply(Rep.INFO, infoExport(disk.sizeBytes, transmissionFlags(disk.readOnly)));
        if (parsed.infos.includes(Info.BLOCK_SIZE)) {
          reply(Rep.INFO, infoBlockSize(kMinBlockBytes, kPreferredBlockBytes, maxRequestBytes));
        }
        reply(Rep.ACK);
        if (option === Opt.GO) return disk;
        break;
      }
      default:
        // STARTTLS, STRUCTURED_REPLY, meta contexts and anything newer.
        error(Rep.ERR_UNSUP, `option ${option} not supported`);
    }
  }
  throw new ProtocolError(`more than ${kMaxOptionsPerConnection} options`);
}

/** NBD_OPT_INFO/GO data: u32 name length, name, u16 count, count × u16 info types. Null if inconsistent. */
function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | null {
  if (data.length < 6) return null;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) return null;
  const name = data.toString('utf8', 4, 4 + nameBytes);
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 6 + nameBytes + 2 * count) return null;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameBytes + 2 * i));
  return { name, infos };
}
