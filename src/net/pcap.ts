// Classic pcap (not pcapng), as `tcpdump -w` writes it: a 24-byte global header, then per frame
// a 16-byte record header and the captured bytes. Written little-endian, which every reader
// detects from the magic. Linktype 1 (ETHERNET): the frames are what the guest's NIC saw.

import { createWriteStream, type WriteStream } from 'node:fs';

/** Microsecond timestamps (what tcpdump writes by default). */
export const kPcapMagicMicros = 0xa1b2c3d4;
/** Nanosecond timestamps (tcpdump --time-stamp-precision=nano, Wireshark). */
export const kPcapMagicNanos = 0xa1b23c4d;
export const kPcapVersionMajor = 2;
export const kPcapVersionMinor = 4;
export const kLinktypeEthernet = 1;
/** The reference captures with `tcpdump -s 65535`. */
export const kDefaultSnapLenBytes = 65_535;
export const kPcapGlobalHeaderBytes = 24;
export const kPcapRecordHeaderBytes = 16;

export interface PcapOptions {
  /** Nanosecond timestamps (magic 0xa1b23c4d) instead of microseconds. */
  nanosecond?: boolean;
  /** Frames longer than this are truncated in the file (orig_len keeps their length). */
  snapLenBytes?: number;
}

export interface PcapInput {
  tsNs: bigint;
  frame: Uint8Array;
}

function checkSnapLen(snapLenBytes: number): void {
  if (!Number.isInteger(snapLenBytes) || snapLenBytes < 1 || snapLenBytes > 0x7fffffff) {
    throw new Error(`pcap snapLenBytes ${snapLenBytes} is out of range: expected an integer from 1 to ${0x7fffffff}`);
  }
}

export function pcapGlobalHeader(options: PcapOptions = {}): Buffer {
  const snapLen = options.snapLenBytes ?? kDefaultSnapLenBytes;
  checkSnapLen(snapLen);
  const header = Buffer.alloc(kPcapGlobalHeaderBytes);
  header.writeUInt32LE(options.nanosecond ? kPcapMagicNanos : kPcapMagicMicros, 0);
  header.writeUInt16LE(kPcapVersionMajor, 4);
  header.writeUInt16LE(kPcapVersionMinor, 6);
  // thiszone (4 bytes) and sigfigs (4 bytes) stay 0, as every modern writer leaves them.
  header.writeUInt32LE(snapLen, 16);
  header.writeUInt32LE(kLinktypeEthernet, 20);
  return header;
}

/** One record: header and (possibly truncated) frame in one buffer. */
export function pcapRecord(input: PcapInput, options: PcapOptions = {}): Buffer {
  const snapLen = options.snapLenBytes ?? kDefaultSnapLenBytes;
  const included = Math.min(input.frame.byteLength, snapLen);
  const record = Buffer.allocUnsafe(kPcapRecordHeaderBytes + included);
  const seconds = input.tsNs / 1_000_000_000n;
  const fractionNs = input.tsNs % 1_000_000_000n;
  record.writeUInt32LE(Number(seconds & 0xffffffffn), 0);
  record.writeUInt32LE(Number(options.nanosecond ? fractionNs : fractionNs / 1000n), 4);
  record.writeUInt32LE(included, 8);
  record.writeUInt32LE(input.frame.byteLength, 12);
  record.set(input.frame.subarray(0, included), kPcapRecordHeaderBytes);
  return record;
}

/** Turns capture records into pcap bytes for any consumer (a stream, a Lua Capture, a test). */
export class PcapWriter {
  private _bytes = 0;

  constructor(
    private readonly _sink: (chunk: Buffer) => void,
    private readonly _options: PcapOptions = {},
  ) {
    this._emit(pcapGlobalHeader(_options));
  }

  write(input: PcapInput): void {
    this._emit(pcapRecord(input, this._options));
  }

  /** Bytes handed to the sink so far, the global header included. */
  get bytesWritten(): number {
    return this._bytes;
  }

  private _emit(chunk: Buffer): void {
    this._bytes += chunk.byteLength;
    this._sink(chunk);
  }
}

/** A pcap file being written; close() resolves once every byte is on disk. */
export class PcapFile {
  private readonly _stream: WriteStream;
  private readonly _writer: PcapWriter;
  private _error: Error | undefined;
  private _closed: Promise<void> | undefined;

  constructor(
    readonly path: string,
    options: PcapOptions = {},
  ) {
    this._stream = createWriteStream(path);
    this._stream.on('error', (err) => (this._error ??= err));
    this._writer = new PcapWriter((chunk) => this._stream.write(chunk), options);
  }

  write(input: PcapInput): void {
    if (this._closed === undefined) this._writer.write(input);
  }

  get bytesWritten(): number {
    return this._writer.bytesWritten;
  }

  /** Flushes and closes; rejects with the first write error. Idempotent. */
  close(): Promise<void> {
    this._closed ??= new Promise<void>((resolve, reject) => {
      this._stream.end(() => (this._error ? reject(this._error) : resolve()));
    });
    return this._closed;
  }
}

export interface PcapHeader {
  nanosecond: boolean;
  littleEndian: boolean;
  versionMajor: number;
  versionMinor: number;
  snapLenBytes: number;
  linktype: number;
}

export interface PcapParsedRecord {
  tsNs: bigint;
  origLen: number;
  frame: Buffer;
}

/** Reads pcap bytes back (either byte order, either precision); throws on truncation or a bad magic. */
export function parsePcap(bytes: Buffer): { header: PcapHeader; records: PcapParsedRecord[] } {
  if (bytes.byteLength < kPcapGlobalHeaderBytes) throw new Error(`pcap of ${bytes.byteLength} bytes has no global header`);
  const magicLe = bytes.readUInt32LE(0);
  const magicBe = bytes.readUInt32BE(0);
  const littleEndian = magicLe === kPcapMagicMicros || magicLe === kPcapMagicNanos;
  if (!littleEndian && magicBe !== kPcapMagicMicros && magicBe !== kPcapMagicNanos) {
    throw new Error(`not a pcap file: magic 0x${magicLe.toString(16)}`);
  }
  const u16 = (at: number): number => (littleEndian ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at));
  const u32 = (at: number): number => (littleEndian ? bytes.readUInt32LE(at) : bytes.readUInt32BE(at));
  const header: PcapHeader = {
    nanosecond: (littleEndian ? magicLe : magicBe) === kPcapMagicNanos,
    littleEndian,
    versionMajor: u16(4),
    versionMinor: u16(6),
    snapLenBytes: u32(16),
    linktype: u32(20),
  };
  const records: PcapParsedRecord[] = [];
  let at = kPcapGlobalHeaderBytes;
  while (at < bytes.byteLength) {
    if (at + kPcapRecordHeaderBytes > bytes.byteLength) throw new Error(`pcap record header truncated at byte ${at}`);
    const seconds = BigInt(u32(at));
    const fraction = BigInt(u32(at + 4));
    const included = u32(at + 8);
    const origLen = u32(at + 12);
    if (included > header.snapLenBytes || at + kPcapRecordHeaderBytes + included > bytes.byteLength) {
      throw new Error(`pcap record at byte ${at} claims ${included} bytes, beyond the snap length or the data`);
    }
    const start = at + kPcapRecordHeaderBytes;
    records.push({
      tsNs: seconds * 1_000_000_000n + (header.nanosecond ? fraction : fraction * 1000n),
      origLen,
      frame: bytes.subarray(start, start + included),
    });
    at = start + included;
  }
  return { header, records };
}
