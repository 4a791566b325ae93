/**
 * Frames separated by an arbitrary byte sequence (`\0`, `\r\n\r\n`, a record separator...).
 *
 * @module
 */

import {
  FrameTooLargeError,
  IncompleteFrameError,
  InvalidFrameError,
  InvalidOptionError,
} from '../errors.js';
import { checkKeys, type KnownKeys } from '../option-keys.js';
import { BaseDecoder, checkInt, checkMaxLength } from './base.js';
import type { Decoder, FrameEncoder } from './decoder.js';

/** Options of {@link delimiterDecoder}. */
export interface DelimiterDecoderOptions {
  /** The separator; a string is taken as UTF-8. Must not be empty. */
  delimiter: string | Uint8Array;
  /**
   * Longest accepted frame in bytes, delimiter not counted. Exceeding it throws
   * `FrameTooLargeError` as soon as the received bytes prove it.
   */
  maxLength: number;
  /** Return each frame with its delimiter at the end. Default `false`. */
  keepDelimiter?: boolean;
}

/** Options of {@link delimiterEncoder}. */
export interface DelimiterEncoderOptions {
  /** The separator; a string is taken as UTF-8. Must not be empty. */
  delimiter: string | Uint8Array;
  /** Refuse (with `FrameTooLargeError`) a payload longer than this many bytes. */
  maxLength?: number;
}

const DELIMITER_DECODER_KEYS: KnownKeys<DelimiterDecoderOptions> = {
  delimiter: true,
  maxLength: true,
  keepDelimiter: true,
};
const DELIMITER_ENCODER_KEYS: KnownKeys<DelimiterEncoderOptions> = { delimiter: true, maxLength: true };

function toDelimiter(value: unknown, where: string): Buffer {
  let delim: Buffer | undefined;
  if (typeof value === 'string') delim = Buffer.from(value, 'utf8');
  else if (value instanceof Uint8Array) delim = Buffer.from(value); // a copy: the caller may reuse it
  if (delim === undefined || delim.length === 0) {
    throw new InvalidOptionError(`${where}: delimiter must be a non-empty string or Uint8Array`);
  }
  return delim;
}

/** Length of the longest end of `tail` that is a start of `delim` (a delimiter still arriving). */
function partialMatch(tail: Buffer, delim: Buffer): number {
  for (let k = Math.min(tail.length, delim.length - 1); k > 0; k--) {
    if (tail.compare(delim, 0, k, tail.length - k) === 0) return k;
  }
  return 0;
}

class DelimiterDecoder extends BaseDecoder<Buffer> {
  readonly #delim: Buffer;
  readonly #maxLength: number;
  readonly #keep: boolean;

  constructor(delim: Buffer, maxLength: number, keep: boolean) {
    super();
    this.#delim = delim;
    this.#maxLength = maxLength;
    this.#keep = keep;
  }

  protected decode(): Buffer | undefined {
    const q = this.queue;
    if (q.length === 0) return undefined;
    const m = this.#delim.length;
    // A valid frame's delimiter ends at the latest at maxLength + m bytes: never search further.
    const limit = this.#maxLength + m;
    const at = q.indexOf(this.#delim, limit);
    if (at < 0) {
      // All bytes searched, except when the limit cut the search (then the frame is too long).
      const atLeast = q.length >= limit ? limit : q.length - partialMatch(q.tail, this.#delim);
      if (atLeast > this.#maxLength) throw new FrameTooLargeError(this.#maxLength);
      return undefined;
    }
    if (at > this.#maxLength) throw new FrameTooLargeError(this.#maxLength, at);
    if (this.#keep) return q.take(at + m);
    const frame = q.take(at);
    q.skip(m);
    return frame;
  }

  protected decodeEnd(): Buffer | undefined {
    if (this.queue.length > 0) throw new IncompleteFrameError(this.queue.length);
    return undefined;
  }
}

/**
 * A decoder of frames that each end with `delimiter`, returned as `Buffer`s without it (unless
 * `keepDelimiter`). A delimiter split across received chunks is found. At end of stream, bytes
 * after the last delimiter throw `IncompleteFrameError`.
 */
export function delimiterDecoder(options: DelimiterDecoderOptions): Decoder<Buffer> {
  checkKeys(options, DELIMITER_DECODER_KEYS, '', 'delimiterDecoder: ');
  const delim = toDelimiter(options?.delimiter, 'delimiterDecoder');
  const maxLength = checkMaxLength(options.maxLength, 'delimiterDecoder');
  return new DelimiterDecoder(delim, maxLength, options.keepDelimiter === true);
}

/**
 * An encoder for {@link delimiterDecoder}'s framing: returns `payload` followed by `delimiter`.
 * Throws `InvalidFrameError` if the result would be decoded differently (the payload contains the
 * delimiter, or ends with part of it such that a delimiter starts early), and `FrameTooLargeError`
 * above `maxLength`.
 */
export function delimiterEncoder(options: DelimiterEncoderOptions): FrameEncoder {
  checkKeys(options, DELIMITER_ENCODER_KEYS, '', 'delimiterEncoder: ');
  const delim = toDelimiter(options?.delimiter, 'delimiterEncoder');
  const max =
    options.maxLength === undefined
      ? undefined
      : checkInt(options.maxLength, 'delimiterEncoder: maxLength', 0);
  return (payload) => {
    const len = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
    if (max !== undefined && len > max) throw new FrameTooLargeError(max, len);
    const out = Buffer.allocUnsafe(len + delim.length);
    if (typeof payload === 'string') out.write(payload, 0);
    else out.set(payload);
    delim.copy(out, len);
    if (out.indexOf(delim) !== len) throw new InvalidFrameError('payload contains the delimiter');
    return out;
  };
}
