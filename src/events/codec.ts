// The event stream's wire form (reference §4.1, §4.6): each event is one frame, a 4-byte
// big-endian length followed by a msgpack map `{ts, kind, payload}` in that key order. `ts` is
// nanoseconds since the epoch as a 64-bit integer (msgpack int64/uint64), so it survives readers
// in languages whose integers are exact; every other number is msgpack's natural encoding.

import { decodeBody, encodeFrame, FrameReader } from '../protocol/framing.js';
import type { AnyEvent, EventKind } from '../protocol/events.js';

/** Same cap as the agent wire (reference §4.1). */
export const kMaxEventFrameBytes = 128 * 1024 * 1024;

/** A frame as read back: `ts` stays a bigint so nothing is rounded. */
export interface DecodedEvent {
  ts: bigint;
  kind: EventKind | string;
  payload: Record<string, unknown>;
}

export class EventDecodeError extends Error {
  override name = 'EventDecodeError';
}

/** Encodes one event as a frame (header and body in one buffer). */
export function encodeEvent(event: AnyEvent): Buffer {
  return encodeFrame({ ts: BigInt(Math.round(event.ts)), kind: event.kind, payload: wideIntegers(event.payload) });
}

/**
 * msgpack-js writes an integer number beyond 32 bits as a float64; the reference (rmp) writes
 * u64/i64. Such integers (durations in ns, byte counts) become bigints, which encode as 64-bit
 * integers, so readers with typed integers (`duration_ns: u64`) accept them.
 */
function wideIntegers(value: unknown): unknown {
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) && (value > 0xffff_ffff || value < -0x8000_0000) ? BigInt(value) : value;
  }
  if (Array.isArray(value)) return value.map(wideIntegers);
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = wideIntegers(v);
    return out;
  }
  return value;
}

/** Decodes one frame body into an event, checking its shape. */
export function decodeEventBody(body: Uint8Array): DecodedEvent {
  const value = decodeBody(body) as Record<string, unknown> | null;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new EventDecodeError('event frame is not a map');
  }
  const { ts, kind, payload } = value;
  if (typeof kind !== 'string') throw new EventDecodeError('event frame has no string `kind`');
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new EventDecodeError(`event \`${kind}\` has no map \`payload\``);
  }
  let tsBig: bigint;
  if (typeof ts === 'bigint') tsBig = ts;
  else if (typeof ts === 'number' && Number.isFinite(ts)) tsBig = BigInt(Math.round(ts));
  else throw new EventDecodeError(`event \`${kind}\` has no integer \`ts\``);
  return { ts: tsBig, kind, payload: payload as Record<string, unknown> };
}

/**
 * Reads frames from a byte stream. An EOF on a frame boundary is a clean end; one inside a frame
 * throws, naming the byte offset where the truncated frame starts.
 */
export async function* readEvents(source: AsyncIterable<Buffer | string>): AsyncGenerator<DecodedEvent> {
  const reader = new FrameReader(kMaxEventFrameBytes);
  let offset = 0;
  for await (const chunk of source) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    for (const body of reader.push(buffer)) {
      offset += 4 + body.byteLength;
      yield decodeEventBody(body);
    }
  }
  if (reader.pendingBytes > 0) {
    throw new EventDecodeError(`truncated frame at byte ${offset} (${reader.pendingBytes} bytes left over)`);
  }
}

/**
 * One JSON line for a decoded event. `ts` is written as exact integer digits (valid JSON; readers
 * with 64-bit integers keep it exact), other bigints likewise; bytes become `{"base64": "…"}`.
 */
export function eventToJsonLine(event: DecodedEvent): string {
  const bigints: string[] = [];
  const json = JSON.stringify({ ts: event.ts, kind: event.kind, payload: event.payload }, (_key, value: unknown) => {
    if (typeof value === 'bigint') {
      bigints.push(value.toString());
      return `\u0000bigint${bigints.length - 1}\u0000`;
    }
    if (value instanceof Uint8Array) return { base64: Buffer.from(value).toString('base64') };
    return value;
  });
  // The placeholders are JSON strings ("\u0000bigint0\u0000" escaped): swap them for the digits.
  return json.replace(/"\\u0000bigint(\d+)\\u0000"/g, (_m, i: string) => bigints[Number(i)]!);
}
