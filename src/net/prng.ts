// The seeded PRNG behind every random network decision (drop, duplicate, jitter, reorder).
// One run seed is forked per bridge and per direction, so a direction's decisions depend only on
// the seed and on the frames of that direction, not on how traffic of other links interleaves.
//
// Generator: xoshiro128** (32-bit integer ops only, so identical on every platform), seeded by
// splitmix64. Forks hash the label with FNV-1a 64 and mix it into the parent's seed.

const kMask64 = (1n << 64n) - 1n;
const kGolden64 = 0x9e3779b97f4a7c15n;
const kFnvOffset64 = 0xcbf29ce484222325n;
const kFnvPrime64 = 0x100000001b3n;
const kTwoPow32 = 4294967296;

/** A seed as given: a non-negative integer (number up to 2^53, or bigint below 2^64). */
export type Seed = bigint | number;

/** The splitmix64 output function: a good 64-bit mixer, also used to derive fork seeds. */
export function mix64(value: bigint): bigint {
  let z = value & kMask64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & kMask64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & kMask64;
  return z ^ (z >> 31n);
}

/** FNV-1a 64 of the UTF-8 bytes of `text` (stable label hashing for fork()). */
export function fnv1a64(text: string): bigint {
  let hash = kFnvOffset64;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash = ((hash ^ BigInt(byte)) * kFnvPrime64) & kMask64;
  }
  return hash;
}

/** Checks and converts a seed; the error names the value and the accepted range. */
export function normalizeSeed(seed: Seed): bigint {
  if (typeof seed === 'number') {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new Error(`seed ${seed} is invalid: expected an integer from 0 to ${Number.MAX_SAFE_INTEGER} (or a bigint below 2^64)`);
    }
    return BigInt(seed);
  }
  if (typeof seed !== 'bigint' || seed < 0n || seed > kMask64) {
    throw new Error(`seed ${String(seed)} is invalid: expected an integer from 0 to 2^64-1`);
  }
  return seed;
}

function rotl32(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Prng {
  /** The 64-bit seed this stream started from (forks derive from it, not from the current state). */
  readonly seed: bigint;
  private _s0: number;
  private _s1: number;
  private _s2: number;
  private _s3: number;

  constructor(seed: Seed) {
    this.seed = normalizeSeed(seed);
    // Two splitmix64 steps fill the four 32-bit state words, as the xoshiro authors recommend.
    const first = mix64(this.seed + kGolden64);
    const second = mix64(this.seed + 2n * kGolden64);
    this._s0 = Number(first & 0xffffffffn);
    this._s1 = Number(first >> 32n);
    this._s2 = Number(second & 0xffffffffn);
    this._s3 = Number(second >> 32n);
    // An all-zero state would only ever yield zeros.
    if ((this._s0 | this._s1 | this._s2 | this._s3) === 0) this._s0 = 1;
  }

  /** The next uniformly distributed 32-bit unsigned integer. */
  nextUint32(): number {
    const s1 = this._s1;
    const result = Math.imul(rotl32(Math.imul(s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (s1 << 9) >>> 0;
    this._s2 = (this._s2 ^ this._s0) >>> 0;
    this._s3 = (this._s3 ^ s1) >>> 0;
    this._s1 = (s1 ^ this._s2) >>> 0;
    this._s0 = (this._s0 ^ this._s3) >>> 0;
    this._s2 = (this._s2 ^ t) >>> 0;
    this._s3 = rotl32(this._s3, 11);
    return result;
  }

  /** A float in [0, 1) with 32 bits of resolution (enough for rates). */
  float(): number {
    return this.nextUint32() / kTwoPow32;
  }

  /**
   * True with probability `p`. Draws nothing when p <= 0 or p >= 1, so a disabled impairment
   * does not shift the stream of an enabled one.
   */
  chance(p: number): boolean {
    if (p <= 0) return false;
    if (p >= 1) return true;
    return this.float() < p;
  }

  /** A float uniformly in [min, max). */
  uniform(min: number, max: number): number {
    return min + (max - min) * this.float();
  }

  /**
   * An independent stream for `label` (a bridge name, a direction "a->b"). Depends only on this
   * stream's seed and the label, never on how many numbers were drawn before.
   */
  fork(label: string): Prng {
    return new Prng(mix64(this.seed ^ fnv1a64(label)));
  }
}
