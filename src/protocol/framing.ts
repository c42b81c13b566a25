// Length-prefixed msgpack frames: a 4-byte big-endian length, then one msgpack value.
// The wire format shared by the agent link and the event stream, so it lives with the protocol.

import { Decoder, Encoder } from '@msgpack/msgpack';

export class FrameError extends Error {
  override name = 'FrameError';
}

const encoder = new Encoder({ useBigInt64: true, ignoreUndefined: true });
const decoder = new Decoder({ useBigInt64: true });

/** Encodes one value as a frame (header and body in one buffer, so one write sends it). */
export function encodeFrame(value: unknown): Buffer {
  const body = encoder.encode(value);
  const frame = Buffer.allocUnsafe(4 + body.byteLength);
  frame.writeUInt32BE(body.byteLength, 0);
  frame.set(body, 4);
  return frame;
}

/** Decodes one frame body. */
export function decodeBody(body: Uint8Array): unknown {
  return decoder.decode(body);
}

/** A frame at least this big is gathered into its own buffer as its bytes arrive. */
const kGatherFrameBytes = 1 << 20;

/**
 * Accumulates bytes from a stream and yields whole frame bodies. The length is checked against
 * `maxFrameBytes` before anything is allocated for the body. A large frame's bytes are copied
 * into one buffer of its size as they arrive, rather than kept as chunks and joined at the end:
 * a 16 MiB stdout then peaks at 16 MiB held, not 32.
 */
export class FrameReader {
  private _chunks: Buffer[] = [];
  private _buffered = 0;
  /** The large frame being gathered (header included), and how much of it has arrived. */
  private _big: { frame: Buffer; filled: number } | undefined;

  constructor(private readonly _maxFrameBytes: number) {}

  /** Feeds bytes; returns the complete frame bodies they finished, in order. Throws FrameError on an oversized frame. */
  push(chunk: Buffer): Buffer[] {
    this.feed(chunk);
    const bodies: Buffer[] = [];
    for (let body = this.next(); body !== undefined; body = this.next()) bodies.push(body);
    return bodies;
  }

  /** Adds bytes without taking frames out (see next()). */
  feed(chunk: Buffer): void {
    const big = this._big;
    if (big && big.filled < big.frame.byteLength) {
      const n = Math.min(big.frame.byteLength - big.filled, chunk.byteLength);
      chunk.copy(big.frame, big.filled, 0, n);
      big.filled += n;
      this._buffered += n;
      chunk = chunk.subarray(n);
    }
    if (chunk.byteLength === 0) return;
    this._chunks.push(chunk);
    this._buffered += chunk.byteLength;
  }

  /**
   * The next complete frame body, or undefined until one is complete. Throws FrameError on an
   * oversized length (the bytes stay: clear() them or the same error comes again).
   */
  next(): Buffer | undefined {
    const big = this._big;
    if (big) {
      if (big.filled < big.frame.byteLength) return undefined;
      this._big = undefined;
      this._buffered -= big.frame.byteLength;
      return big.frame.subarray(4);
    }
    if (this._buffered < 4) return undefined;
    const length = this._peek(4).readUInt32BE(0);
    if (length > this._maxFrameBytes) {
      throw new FrameError(`frame of ${length} bytes exceeds the ${this._maxFrameBytes}-byte limit`);
    }
    if (this._buffered < 4 + length) {
      if (4 + length >= kGatherFrameBytes) this._gather(4 + length);
      return undefined;
    }
    return this._take(4 + length).subarray(4);
  }

  /** Forgets every byte held (a partial frame included). */
  clear(): void {
    this._chunks = [];
    this._buffered = 0;
    this._big = undefined;
  }

  /** Bytes of an incomplete frame still held (an EOF here means a truncated frame). */
  get pendingBytes(): number {
    return this._buffered;
  }

  private _peek(n: number): Buffer {
    if (this._chunks[0]!.byteLength < n) this._chunks = [Buffer.concat(this._chunks)];
    return this._chunks[0]!.subarray(0, n);
  }

  /** Starts gathering a frame of `n` bytes: every byte held belongs to it (it is not complete). */
  private _gather(n: number): void {
    const frame = Buffer.allocUnsafe(n);
    let filled = 0;
    for (const chunk of this._chunks) filled += chunk.copy(frame, filled);
    this._chunks = [];
    this._big = { frame, filled };
  }

  private _take(n: number): Buffer {
    const all = this._chunks.length === 1 ? this._chunks[0]! : Buffer.concat(this._chunks);
    const taken = all.subarray(0, n);
    const rest = all.subarray(n);
    this._chunks = rest.byteLength > 0 ? [rest] : [];
    this._buffered = rest.byteLength;
    return taken;
  }
}

/**
 * Looks through bytes that lost their framing for one complete frame of at most `maxBodyBytes`
 * whose decoded value satisfies `match`, trying every byte offset. Returns where that frame
 * starts, or undefined. Only candidates that could be a small msgpack map are decoded, so the
 * cost stays linear in the bytes searched.
 */
export function findFrame(bytes: Buffer, maxBodyBytes: number, match: (value: unknown) => boolean): number | undefined {
  for (let at = 0; at + 5 <= bytes.byteLength; at++) {
    const length = bytes.readUInt32BE(at);
    if (length === 0 || length > maxBodyBytes || at + 4 + length > bytes.byteLength) continue;
    const first = bytes[at + 4]!;
    if ((first & 0xf0) !== 0x80 && first !== 0xde && first !== 0xdf) continue;
    let value: unknown;
    try {
      value = decoder.decode(bytes.subarray(at + 4, at + 4 + length));
    } catch {
      continue;
    }
    if (match(value)) return at;
  }
  return undefined;
}
