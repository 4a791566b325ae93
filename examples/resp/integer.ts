/**
 * Redis's integer rules (`string2ll`): an optional `-`, no `+`, no spaces, no leading zeros, no
 * `-0`, and within the signed 64-bit range.
 *
 * @module
 */

/** Largest signed 64-bit integer. */
export const INT64_MAX = 2n ** 63n - 1n;
/** Smallest signed 64-bit integer. */
export const INT64_MIN = -(2n ** 63n);

/**
 * Parses bytes as a signed 64-bit integer the way Redis does. Values of up to 15 digits (always
 * exact as a double) come back as a number, longer ones as a bigint; invalid input gives null.
 */
export function parseInt64(buf: Uint8Array): number | bigint | null {
  const len = buf.length;
  if (len === 0 || len > 20) return null;
  let i = 0;
  const negative = buf[0] === 0x2d;
  if (negative) {
    i = 1;
    if (len === 1) return null;
  }
  if (buf[i] === 0x30) return len === 1 ? 0 : null;
  let value = 0;
  for (let p = i; p < len; p++) {
    const c = buf[p]!;
    if (c < 0x30 || c > 0x39) return null;
    value = value * 10 + (c - 0x30);
  }
  const digits = len - i;
  if (digits <= 15) return negative ? -value : value;
  if (digits > 19) return null;
  const big = BigInt(Buffer.from(buf.buffer, buf.byteOffset, len).toString('latin1'));
  return big > INT64_MAX || big < INT64_MIN ? null : big;
}
