// The byte format of QEMU's `-netdev stream`: each Ethernet frame travels as a 4-byte
// big-endian length, then the frame. The length is checked before any byte is buffered for it.

/** QEMU's NET_BUFSIZE (4096 + 65536): the largest frame a stream netdev sends or accepts. */
export const kMaxFrameBytes = 69_632;
export const kLengthPrefixBytes = 4;

/** A length the switch refuses; the port that sent it is closed with this message. */
export class WireError extends Error {
  override name = 'WireError';
  /** Frames completed in the same push() before the bad length: they were valid. */
  frames: Buffer[] = [];
}

/** One frame with its length prefix, in one buffer so one write sends it. */
export function encodeWireFrame(frame: Uint8Array): Buffer {
  if (frame.byteLength > kMaxFrameBytes) {
    throw new WireError(`frame of ${frame.byteLength} bytes exceeds the ${kMaxFrameBytes}-byte limit`);
  }
  const out = Buffer.allocUnsafe(kLengthPrefixBytes + frame.byteLength);
  out.writeUInt32BE(frame.byteLength, 0);
  out.set(frame, kLengthPrefixBytes);
  return out;
}

/**
 * Accumulates stream bytes and yields whole frames. A length above `maxFrameBytes` throws a
 * WireError as soon as its 4 header bytes are in, before the body is waited for or allocated.
 */
export class WireReader {
  private _chunks: Buffer[] = [];
  private _buffered = 0;

  constructor(private readonly _maxFrameBytes: number = kMaxFrameBytes) {}

  /** Feeds bytes; returns the frames they completed, in order. Throws WireError on a bad length. */
  push(chunk: Buffer): Buffer[] {
    if (chunk.byteLength > 0) {
      this._chunks.push(chunk);
      this._buffered += chunk.byteLength;
    }
    const frames: Buffer[] = [];
    while (this._buffered >= kLengthPrefixBytes) {
      const length = this._peekLength();
      if (length > this._maxFrameBytes) {
        this.clear();
        const err = new WireError(`frame length ${length} exceeds the ${this._maxFrameBytes}-byte limit`);
        err.frames = frames;
        throw err;
      }
      if (this._buffered < kLengthPrefixBytes + length) break;
      frames.push(this._take(kLengthPrefixBytes + length).subarray(kLengthPrefixBytes));
    }
    return frames;
  }

  /** Forgets every byte held. */
  clear(): void {
    this._chunks = [];
    this._buffered = 0;
  }

  /** Bytes of an incomplete frame still held (at EOF this means a truncated frame). */
  get pendingBytes(): number {
    return this._buffered;
  }

  private _peekLength(): number {
    if (this._chunks[0]!.byteLength < kLengthPrefixBytes) this._chunks = [Buffer.concat(this._chunks)];
    return this._chunks[0]!.readUInt32BE(0);
  }

  /** Removes and returns the first n buffered bytes (one copy at most). */
  private _take(n: number): Buffer {
    const head = this._chunks[0]!;
    let out: Buffer;
    if (head.byteLength >= n) {
      out = head.subarray(0, n);
      if (head.byteLength === n) this._chunks.shift();
      else this._chunks[0] = head.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this._chunks[0]!;
        const used = Math.min(chunk.byteLength, n - filled);
        chunk.copy(out, filled, 0, used);
        filled += used;
        if (used === chunk.byteLength) this._chunks.shift();
        else this._chunks[0] = chunk.subarray(used);
      }
    }
    this._buffered -= n;
    return out;
  }
}
