// Ethernet header access for the switch: MACs as 48-bit numbers (exact in a JS number, cheap
// as Map keys) and the few header fields forwarding needs.

export const kEthernetHeaderBytes = 14;
export const kMacBytes = 6;
export const kBroadcastMac = 'ff:ff:ff:ff:ff:ff';

/** The destination MAC of a frame as a 48-bit number. */
export function dstMacOf(frame: Buffer): number {
  return frame.readUIntBE(0, kMacBytes);
}

/** The source MAC of a frame as a 48-bit number. */
export function srcMacOf(frame: Buffer): number {
  return frame.readUIntBE(kMacBytes, kMacBytes);
}

/** True for broadcast and multicast addresses (the I/G bit, lowest bit of the first octet). */
export function isGroupMac(mac: number): boolean {
  return Math.floor(mac / 2 ** 40) % 2 === 1;
}

/** "aa:bb:cc:dd:ee:ff" for a 48-bit MAC number. */
export function formatMac(mac: number): string {
  return mac.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');
}

/** Reads "aa:bb:cc:dd:ee:ff" (or with '-') into a 48-bit number; throws naming the text. */
export function parseMac(text: string): number {
  if (!/^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/.test(text)) {
    throw new Error(`MAC address ${JSON.stringify(text)} is invalid: expected six hex octets like 52:54:00:12:34:56`);
  }
  return parseInt(text.replace(/[:-]/g, ''), 16);
}

export interface FrameFields {
  dst: string;
  src: string;
  /** EtherType, e.g. 0x0800 for IPv4, 0x88b5 for local experimental use. */
  ethertype: number;
  payload?: Uint8Array;
}

/** Builds a frame from its fields (no padding, no FCS: QEMU's stream netdev carries neither). */
export function buildFrame(fields: FrameFields): Buffer {
  const payload = fields.payload ?? new Uint8Array(0);
  const frame = Buffer.allocUnsafe(kEthernetHeaderBytes + payload.byteLength);
  frame.writeUIntBE(parseMac(fields.dst), 0, kMacBytes);
  frame.writeUIntBE(parseMac(fields.src), kMacBytes, kMacBytes);
  frame.writeUInt16BE(fields.ethertype, 2 * kMacBytes);
  frame.set(payload, kEthernetHeaderBytes);
  return frame;
}
