// Length-prefixed msgpack frames: a 4-byte big-endian length, then one msgpack value.
// Shared by the agent link and the event stream.

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

/**
 * Accumulates bytes from a stream and yields whole frame bodies. The length is checked against
 * `maxFrameBytes` before anything is allocated for the body.
 */
export class FrameReader {
  private _chunks: Buffer[] = [];
  private _buffered = 0;

  constructor(private readonly _maxFrameBytes: number) {}

  /** Feeds bytes; returns the complete frame bodies they finished, in order. Throws FrameError on an oversized frame. */
  push(chunk: Buffer): Buffer[] {
    this._chunks.push(chunk);
    this._buffered += chunk.byteLength;
    const bodies: Buffer[] = [];
    while (this._buffered >= 4) {
      const head = this._peek(4);
      const length = head.readUInt32BE(0);
      if (length > this._maxFrameBytes) {
        throw new FrameError(`frame of ${length} bytes exceeds the ${this._maxFrameBytes}-byte limit`);
      }
      if (this._buffered < 4 + length) break;
      const frame = this._take(4 + length);
      bodies.push(frame.subarray(4));
    }
    return bodies;
  }

  /** Bytes of an incomplete frame still held (an EOF here means a truncated frame). */
  get pendingBytes(): number {
    return this._buffered;
  }

  private _peek(n: number): Buffer {
    if (this._chunks[0]!.byteLength < n) this._chunks = [Buffer.concat(this._chunks)];
    return this._chunks[0]!.subarray(0, n);
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
