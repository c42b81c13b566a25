import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeBody, encodeFrame, findFrame, FrameError, FrameReader } from '../../src/protocol/framing.js';

describe('framing', () => {
  it('prefixes the msgpack body with its big-endian length', () => {
    const frame = encodeFrame({ id: 1, kind: 'hello', data: { protocol_version: 1 } });
    assert.equal(frame.readUInt32BE(0), frame.byteLength - 4);
    assert.deepEqual(decodeBody(frame.subarray(4)), { id: 1, kind: 'hello', data: { protocol_version: 1 } });
  });

  it('pins the bytes of a hello frame', () => {
    const frame = encodeFrame({ id: 1, kind: 'hello', data: { protocol_version: 1 } });
    assert.equal(
      frame.toString('hex'),
      '00000028' + '83' + 'a26964' + '01' + 'a46b696e64' + 'a568656c6c6f' + 'a464617461' + '81' + 'b070726f746f636f6c5f76657273696f6e' + '01',
    );
  });

  it('reassembles frames split at every byte boundary', () => {
    const frames = [encodeFrame({ a: 1 }), encodeFrame({ b: 'x'.repeat(300) }), encodeFrame({ c: new Uint8Array([0, 255]) })];
    const all = Buffer.concat(frames);
    const reader = new FrameReader(1024);
    const bodies: unknown[] = [];
    for (let i = 0; i < all.byteLength; i++) bodies.push(...reader.push(all.subarray(i, i + 1)).map(decodeBody));
    assert.deepEqual(bodies.slice(0, 2), [{ a: 1 }, { b: 'x'.repeat(300) }]);
    assert.deepEqual([...(bodies[2] as { c: Uint8Array }).c], [0, 255]);
    assert.equal(reader.pendingBytes, 0);
  });

  it('yields several frames from one chunk and keeps a partial one', () => {
    const two = Buffer.concat([encodeFrame(1), encodeFrame(2), encodeFrame(3).subarray(0, 3)]);
    const reader = new FrameReader(1024);
    assert.deepEqual(reader.push(two).map(decodeBody), [1, 2]);
    assert.equal(reader.pendingBytes, 3);
  });

  it('gathers a large frame as it arrives, with the frames around it in the same chunks', () => {
    const blob = Buffer.alloc(3 << 20);
    for (let i = 0; i < blob.byteLength; i++) blob[i] = (i * 7) & 0xff;
    const all = Buffer.concat([encodeFrame('before'), encodeFrame({ out: blob }), encodeFrame('after'), encodeFrame('partial').subarray(0, 5)]);
    const reader = new FrameReader(8 << 20);
    const bodies: unknown[] = [];
    // 64 KiB chunks, offset so that headers and the large frame's end fall inside chunks.
    for (let at = 0; at < all.byteLength; at += 65_531) {
      bodies.push(...reader.push(all.subarray(at, at + 65_531)).map(decodeBody));
      assert.ok(reader.pendingBytes < all.byteLength, 'held bytes are counted once');
    }
    assert.equal(bodies.length, 3);
    assert.equal(bodies[0], 'before');
    const out = (bodies[1] as { out: Uint8Array }).out;
    assert.ok(Buffer.from(out).equals(blob), 'the large body arrives intact');
    assert.equal(out.buffer.byteLength, encodeFrame({ out: blob }).byteLength, 'in a buffer of its own size, not a join of everything held');
    assert.equal(bodies[2], 'after');
    assert.equal(reader.pendingBytes, 5);
    reader.clear();
    assert.equal(reader.pendingBytes, 0);
    // clear() in the middle of a large frame forgets it: the next frame starts fresh.
    const big = encodeFrame({ out: blob });
    reader.push(big.subarray(0, 2 << 20));
    reader.clear();
    assert.deepEqual(reader.push(encodeFrame('fresh')).map(decodeBody), ['fresh']);
  });

  it('refuses an oversized frame from its header, before the body arrives', () => {
    const reader = new FrameReader(16);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(17, 0);
    assert.throws(() => reader.push(header), FrameError);
  });

  it('round-trips 64-bit integers exactly as bigint', () => {
    const big = 0xc0104b00_00000001n;
    const frame = encodeFrame({ v: big, small: 5 });
    assert.deepEqual(decodeBody(frame.subarray(4)), { v: big, small: 5 });
  });

  it('takes frames one at a time, and an oversized length does not lose the frames before it', () => {
    const reader = new FrameReader(64);
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(65, 0);
    reader.feed(Buffer.concat([encodeFrame('a'), encodeFrame('b'), huge, Buffer.from('rest')]));
    assert.equal(decodeBody(reader.next()!), 'a');
    assert.equal(decodeBody(reader.next()!), 'b');
    assert.throws(() => reader.next(), /frame of 65 bytes exceeds the 64-byte limit/);
    assert.throws(() => reader.next(), FrameError, 'the bad header stays until cleared');
    reader.clear();
    assert.equal(reader.pendingBytes, 0);
    assert.equal(reader.next(), undefined);
    reader.feed(encodeFrame('c'));
    assert.equal(decodeBody(reader.next()!), 'c');
  });

  it('finds a small frame inside bytes that lost their framing', () => {
    const wanted = encodeFrame({ id: 9, kind: 'ok', data: { token: 't' } });
    const other = encodeFrame({ id: 8, kind: 'ok', data: {} });
    const noise = Buffer.from([0, 0, 3, 0x9a, 0x61, 0x62, 0x63, 0x81, 0, 0, 0, 1, 0x80]);
    const bytes = Buffer.concat([noise, other, wanted.subarray(0, 3), noise, wanted, other]);
    const isWanted = (v: unknown): boolean => (v as { id?: unknown })?.id === 9;
    const at = findFrame(bytes, 1024, isWanted);
    assert.equal(at, noise.byteLength * 2 + other.byteLength + 3);
    assert.deepEqual(decodeBody(bytes.subarray(at! + 4, at! + wanted.byteLength)), { id: 9, kind: 'ok', data: { token: 't' } });
    // Not there yet (cut short), or longer than allowed: not found.
    assert.equal(findFrame(bytes.subarray(0, at! + wanted.byteLength - 1), 1024, isWanted), undefined);
    assert.equal(findFrame(bytes, 8, isWanted), undefined);
  });
});
