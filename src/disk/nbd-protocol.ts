// Wire constants and message builders of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md),
// fixed newstyle negotiation and simple replies only. Every number goes out big-endian.

/** 'NBDMAGIC': the first 8 bytes the server sends. */
export const kNbdMagic = 0x4e42444d41474943n;
/** 'IHAVEOPT': sent by the server after NBDMAGIC, and by the client before every option. */
export const kOptMagic = 0x49484156454f5054n;
/** Magic of every option reply during haggling. */
export const kOptReplyMagic = 0x3e889045565a9n;
/** Magic of a transmission request. */
export const kRequestMagic = 0x25609513;
/** Magic of a simple reply. */
export const kSimpleReplyMagic = 0x67446698;

/** Handshake flags (server → client, 16 bits). */
export const kFlagFixedNewstyle = 1 << 0;
export const kFlagNoZeroes = 1 << 1;
/** Client flags (client → server, 32 bits). */
export const kClientFlagFixedNewstyle = 1 << 0;
export const kClientFlagNoZeroes = 1 << 1;
export const kKnownClientFlags = kClientFlagFixedNewstyle | kClientFlagNoZeroes;

/** Transmission flags (16 bits, per export). */
export const TxFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
} as const;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

const kRepErr = 0x80000000;
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  ERR_UNSUP: kRepErr + 1,
  ERR_POLICY: kRepErr + 2,
  ERR_INVALID: kRepErr + 3,
  ERR_UNKNOWN: kRepErr + 6,
  ERR_SHUTDOWN: kRepErr + 7,
  ERR_TOO_BIG: kRepErr + 9,
} as const;

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** Error values of a reply (the spec fixes these numbers, whatever the host errno is). */
export const NbdErr = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** Bytes of a transmission request header: magic, flags, type, handle, offset, length. */
export const kRequestHeaderBytes = 28;
/** Bytes of an option header: IHAVEOPT, option, length. */
export const kOptionHeaderBytes = 16;
/** Bytes of a simple reply header: magic, error, handle. */
export const kSimpleReplyHeaderBytes = 16;
/** Zero padding after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was negotiated. */
export const kExportNameZeroesBytes = 124;

/** A parsed transmission request header. The handle stays raw: it is only echoed back. */
export interface RequestHeader {
  magic: number;
  flags: number;
  type: number;
  handle: Buffer;
  /** Offset in bytes; a u64 on the wire, so it may exceed Number.MAX_SAFE_INTEGER (then it is out of range anyway). */
  offset: bigint;
  length: number;
}

export function parseRequestHeader(buf: Buffer): RequestHeader {
  return {
    magic: buf.readUInt32BE(0),
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    handle: Buffer.from(buf.subarray(8, 16)),
    offset: buf.readBigUInt64BE(16),
    length: buf.readUInt32BE(24),
  };
}

/** The server's first 18 bytes: NBDMAGIC, IHAVEOPT, handshake flags. */
export function greeting(): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(kNbdMagic, 0);
  b.writeBigUInt64BE(kOptMagic, 8);
  b.writeUInt16BE(kFlagFixedNewstyle | kFlagNoZeroes, 16);
  return b;
}

/** One option reply: magic, option, reply type, length, data. */
export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(kOptReplyMagic, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

/** NBD_REP_SERVER payload: name length, name. */
export function serverEntry(name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  return b;
}

/** NBD_REP_INFO payload of NBD_INFO_EXPORT: type, size, transmission flags. */
export function infoExport(sizeBytes: number, txFlags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(Info.EXPORT, 0);
  b.writeBigUInt64BE(BigInt(sizeBytes), 2);
  b.writeUInt16BE(txFlags, 10);
  return b;
}

/** NBD_REP_INFO payload of NBD_INFO_BLOCK_SIZE: type, minimum, preferred, maximum (bytes). */
export function infoBlockSize(minBytes: number, preferredBytes: number, maxBytes: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(Info.BLOCK_SIZE, 0);
  b.writeUInt32BE(minBytes, 2);
  b.writeUInt32BE(preferredBytes, 6);
  b.writeUInt32BE(maxBytes, 10);
  return b;
}

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless NO_ZEROES. */
export function exportNameReply(sizeBytes: number, txFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : kExportNameZeroesBytes));
  b.writeBigUInt64BE(BigInt(sizeBytes), 0);
  b.writeUInt16BE(txFlags, 8);
  return b;
}

export function simpleReplyHeader(error: number, handle: Buffer): Buffer {
  const b = Buffer.alloc(kSimpleReplyHeaderBytes);
  b.writeUInt32BE(kSimpleReplyMagic, 0);
  b.writeUInt32BE(error, 4);
  handle.copy(b, 8);
  return b;
}
