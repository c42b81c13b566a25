import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { decodeEventBody, encodeEvent, eventToJsonLine, readEvents } from '../../src/events/codec.js';
import { EVENTS_PROTOCOL_VERSION, type AnyEvent } from '../../src/protocol/events.js';

/** Hex of a msgpack str (fixstr: 0xa0 | length). */
const str = (s: string) => (0xa0 | s.length).toString(16) + Buffer.from(s).toString('hex');

describe('event frames', () => {
  it('pins the bytes: 4-byte BE length + msgpack {ts: uint64, kind, payload} in that order', () => {
    const event = { ts: 1_700_000_000_123_456_789, kind: 'fixture_cache_hit', payload: { path: 'a.test.lua' } } as AnyEvent;
    // Built by hand from the msgpack spec, not from the encoder.
    const body =
      '83' + // map of 3
      str('ts') + 'cf' + '17979cfe3d85cd00' + // uint64 1700000000123456768 (the float ts, exactly representable)
      str('kind') + 'b1' + Buffer.from('fixture_cache_hit').toString('hex') + // str8-free: fixstr of 17 = 0xb1
      str('payload') + '81' + str('path') + str('a.test.lua');
    const length = (body.length / 2).toString(16).padStart(8, '0');
    assert.equal(encodeEvent(event).toString('hex'), length + body);
    assert.equal(EVENTS_PROTOCOL_VERSION, 4, 'changing the event shapes changes EVENTS_PROTOCOL_VERSION and this pin');
  });

  it('writes integers past 32 bits as 64-bit integers, not floats', () => {
    const event = { ts: 1, kind: 'file_completed', payload: { path: 'p', status: 'passed', duration_ns: 2 ** 40 } } as AnyEvent;
    const hex = encodeEvent(event).toString('hex');
    assert.ok(hex.includes(str('duration_ns') + 'cf' + (2 ** 40).toString(16).padStart(16, '0')), hex);
    const decoded = decodeEventBody(encodeEvent(event).subarray(4));
    assert.equal(decoded.payload['duration_ns'], BigInt(2 ** 40));
    assert.equal(decoded.ts, 1n);
  });

  it('round-trips a stream, including frames split across chunks', async () => {
    const events: AnyEvent[] = [
      { ts: 1e18, kind: 'run_started', payload: { version: 2, files: 2, workers: 1, shard: { index: 2, count: 8 }, accel: 'tcg', seed: '42' } },
      { ts: 1e18 + 1000, kind: 'test_passed', payload: { path: 'x', name: 'ü', duration_ns: 12, meta: { tags: ['a'] }, attempt: 1, log: ['hi'], location: { file: 'x', line: 3 } } },
    ];
    const bytes = Buffer.concat(events.map(encodeEvent));
    const chunks = [...bytes].map((b) => Buffer.from([b])); // one byte at a time
    const decoded = [];
    for await (const e of readEvents(Readable.from(chunks))) decoded.push(e);
    assert.deepEqual(decoded.map((e) => e.kind), ['run_started', 'test_passed']);
    assert.deepEqual(decoded[1]!.payload, { path: 'x', name: 'ü', duration_ns: 12, meta: { tags: ['a'] }, attempt: 1, log: ['hi'], location: { file: 'x', line: 3 } });
    assert.equal(decoded[0]!.ts, 1000000000000000000n);
  });

  it('reports a truncated frame with its offset', async () => {
    const one = encodeEvent({ ts: 5, kind: 'fixture_cache_hit', payload: { path: 'a' } } as AnyEvent);
    const bytes = Buffer.concat([one, one.subarray(0, 7)]);
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const e of readEvents(Readable.from([bytes]))) seen.push(e.kind);
    }, new RegExp(`truncated frame at byte ${one.length}`));
    assert.deepEqual(seen, ['fixture_cache_hit']);
  });

  it('writes JSON lines with exact 64-bit integers', () => {
    const line = eventToJsonLine({ ts: 1700000000123456789n, kind: 'k', payload: { n: 5n, bytes: new Uint8Array([1, 2]), s: 'x' } });
    assert.equal(line, '{"ts":1700000000123456789,"kind":"k","payload":{"n":5,"bytes":{"base64":"AQI="},"s":"x"}}');
  });
});
