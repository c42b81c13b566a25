// Durations and sizes as users write them (reference §1.4): numbers or strings with a suffix.

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE_UNITS: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Thrown for a value a user wrote wrongly; the message names the thing, the value and the fix. */
export class UnitError extends Error {
  override name = 'UnitError';
}

function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/**
 * A duration in milliseconds. A number is seconds; a string is `<number><ms|s|m|h>` or a bare
 * number of seconds. Negative, NaN and infinite values are rejected.
 */
export function parseDuration(value: unknown, what: string): number {
  let ms: number;
  if (typeof value === 'number') {
    ms = value * 1000;
  } else if (typeof value === 'string') {
    const match = /^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|m|h)?\s*$/i.exec(value);
    if (!match) {
      throw new UnitError(
        `${what}: invalid duration ${show(value)}; use seconds as a number or a string like "500ms", "5s", "2m", "1h"`,
      );
    }
    ms = Number(match[1]) * DURATION_UNITS_MS[(match[2] ?? 's').toLowerCase()]!;
  } else {
    throw new UnitError(`${what}: expected a duration (number of seconds or a string like "5s"), got ${typeof value}`);
  }
  if (!Number.isFinite(ms) || ms < 0) {
    throw new UnitError(`${what}: duration must be a finite number of seconds >= 0, got ${show(value)}`);
  }
  return ms;
}

/** A size in bytes. A number is bytes; a string is `<number>[K|M|G|T][iB|B]` (binary multiples). */
export function parseSize(value: unknown, what: string): number {
  let bytes: number;
  if (typeof value === 'number') {
    bytes = value;
  } else if (typeof value === 'string') {
    const match = /^\s*([0-9]*\.?[0-9]+)\s*([KMGT])?(?:i?B)?\s*$/i.exec(value);
    if (!match) {
      throw new UnitError(`${what}: invalid size ${show(value)}; use bytes as a number or a string like "512M", "2G"`);
    }
    bytes = Number(match[1]) * (match[2] ? SIZE_UNITS[match[2].toUpperCase()]! : 1);
  } else {
    throw new UnitError(`${what}: expected a size (bytes as a number or a string like "512M"), got ${typeof value}`);
  }
  if (!Number.isFinite(bytes) || bytes < 0 || !Number.isInteger(Math.round(bytes))) {
    throw new UnitError(`${what}: size must be a finite number of bytes >= 0, got ${show(value)}`);
  }
  return Math.round(bytes);
}

/** Human form of a millisecond count, for messages: 1500 -> "1.5s". */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
}

/** Human form of a byte count, for messages: 268435456 -> "256M". */
export function formatSize(bytes: number): string {
  for (const unit of ['T', 'G', 'M', 'K'] as const) {
    const size = SIZE_UNITS[unit]!;
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}`;
}
