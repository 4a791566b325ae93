/**
 * Frames announced by a binary length field, the framing of most binary protocols. The options
 * follow Netty's `LengthFieldBasedFrameDecoder` and tokio-util's `LengthDelimitedCodec`.
 *
 * @module
 */

import {
  FrameTooLargeError,
  IncompleteFrameError,
  InvalidFrameError,
  InvalidOptionError,
} from '../errors.js';
import { checkKeys, type KnownKeys, optionsObject } from '../option-keys.js';
import { describeValue } from '../timers.js';
import { BaseDecoder, checkInt, checkMaxLength } from './base.js';
import type { Decoder, FrameEncoder } from './decoder.js';

/** Width in bytes of a length field. */
export type LengthFieldLength = 1 | 2 | 4;

/**
 * Options of {@link lengthPrefixedDecoder}. A frame on the wire is
 * `[lengthFieldOffset bytes][length field][value + lengthAdjustment bytes]`.
 */
export interface LengthPrefixedDecoderOptions {
  /**
   * Largest accepted `value + lengthAdjustment`, the bytes that follow the length field (with the
   * default options: the payload). A header announcing more throws `FrameTooLargeError` before any
   * of the payload is buffered. Unlike Netty's `maxFrameLength` it does not count the header, so
   * an encoder and a decoder given the same `maxLength` agree.
   */
  maxLength: number;
  /** Width of the unsigned length field: 1, 2 or 4 bytes. Default 4. */
  lengthFieldLength?: LengthFieldLength;
  /** The length field is little-endian. Default `false` (network byte order). */
  littleEndian?: boolean;
  /** Bytes before the length field (a type or version header, say). Default 0. */
  lengthFieldOffset?: number;
  /**
   * Added to the field's value to get the number of bytes that follow the field. Default 0 (the
   * value is the payload length). Use `-lengthFieldLength - lengthFieldOffset` when the value
   * counts the whole frame, header included. A negative sum throws `InvalidFrameError`.
   */
  lengthAdjustment?: number;
  /**
   * Bytes removed from the start of each frame before it is returned. Default
   * `lengthFieldOffset + lengthFieldLength`: the payload only. `0` returns the frame with its header.
   */
  initialBytesToStrip?: number;
}

/** Options of {@link lengthPrefixedEncoder}. */
export interface LengthPrefixedEncoderOptions {
  /** Width of the length field: 1, 2 or 4 bytes. Default 4. */
  lengthFieldLength?: LengthFieldLength;
  /** Write the length little-endian. Default `false`. */
  littleEndian?: boolean;
  /** The field holds `payload.length - lengthAdjustment` (the decoder adds it back). Default 0. */
  lengthAdjustment?: number;
  /** Refuse (with `FrameTooLargeError`) a payload longer than this. Default: what the field can hold. */
  maxLength?: number;
}

const DECODER_KEYS: KnownKeys<LengthPrefixedDecoderOptions> = {
  maxLength: true,
  lengthFieldLength: true,
  littleEndian: true,
  lengthFieldOffset: true,
  lengthAdjustment: true,
  initialBytesToStrip: true,
};
const ENCODER_KEYS: KnownKeys<LengthPrefixedEncoderOptions> = {
  lengthFieldLength: true,
  littleEndian: true,
  lengthAdjustment: true,
  maxLength: true,
};

function checkFieldLength(value: unknown, where: string): LengthFieldLength {
  if (value === undefined) return 4;
  if (value !== 1 && value !== 2 && value !== 4) {
    throw new InvalidOptionError(
      `${where}: lengthFieldLength must be 1, 2 or 4, got ${describeValue(value)}`,
    );
  }
  return value;
}

function checkAdjustment(value: unknown, where: string): number {
  return value === undefined ? 0 : checkInt(value, `${where}: lengthAdjustment`, Number.MIN_SAFE_INTEGER);
}

class LengthPrefixedDecoder extends BaseDecoder<Buffer> {
  readonly #maxLength: number;
  readonly #width: LengthFieldLength;
  readonly #littleEndian: boolean;
  readonly #offset: number;
  readonly #adjustment: number;
  readonly #strip: number;
  /** Total bytes of the frame whose header was read, or -1 while waiting for a header. */
  #frameLength = -1;

  constructor(options: LengthPrefixedDecoderOptions) {
    super();
    const where = 'lengthPrefixedDecoder';
    checkKeys(options, DECODER_KEYS, '', `${where}: `);
    this.#maxLength = checkMaxLength(options.maxLength, where);
    this.#width = checkFieldLength(options.lengthFieldLength, where);
    this.#littleEndian = options.littleEndian === true;
    this.#offset =
      options.lengthFieldOffset === undefined
        ? 0
        : checkInt(options.lengthFieldOffset, `${where}: lengthFieldOffset`, 0);
    this.#adjustment = checkAdjustment(options.lengthAdjustment, where);
    this.#strip =
      options.initialBytesToStrip === undefined
        ? this.#offset + this.#width
        : checkInt(options.initialBytesToStrip, `${where}: initialBytesToStrip`, 0);
  }

  protected decode(): Buffer | undefined {
    const q = this.queue;
    if (this.#frameLength < 0) {
      const headerLength = this.#offset + this.#width;
      if (q.length < headerLength) return undefined;
      const field = q.peek(this.#offset, this.#width);
      const value = this.#littleEndian ? field.readUIntLE(0, this.#width) : field.readUIntBE(0, this.#width);
      const remaining = value + this.#adjustment;
      if (remaining < 0) {
        throw new InvalidFrameError(
          `length field ${value} with lengthAdjustment ${this.#adjustment} gives a negative length`,
        );
      }
      if (remaining > this.#maxLength) throw new FrameTooLargeError(this.#maxLength, remaining);
      const frameLength = headerLength + remaining;
      if (this.#strip > frameLength) {
        throw new InvalidFrameError(
          `frame of ${frameLength} bytes is shorter than initialBytesToStrip (${this.#strip})`,
        );
      }
      this.#frameLength = frameLength;
    }
    if (q.length < this.#frameLength) return undefined;
    q.skip(this.#strip);
    const frame = q.take(this.#frameLength - this.#strip);
    this.#frameLength = -1;
    return frame;
  }

  protected decodeEnd(): Buffer | undefined {
    if (this.queue.length > 0) throw new IncompleteFrameError(this.queue.length);
    return undefined;
  }
}

/**
 * A decoder of frames that carry their length in a binary field. With the defaults, each frame is
 * a 4-byte big-endian length followed by that many payload bytes, and the payload is returned.
 * A frame that lies within one received chunk is returned without copying.
 *
 * @example
 * ```ts
 * // 2-byte little-endian length that counts itself; keep the header in the returned frame.
 * lengthPrefixedDecoder({ maxLength: 65_533, lengthFieldLength: 2, littleEndian: true,
 *                         lengthAdjustment: -2, initialBytesToStrip: 0 });
 * ```
 */
export function lengthPrefixedDecoder(options: LengthPrefixedDecoderOptions): Decoder<Buffer> {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError('lengthPrefixedDecoder: options with maxLength are required');
  }
  return new LengthPrefixedDecoder(options);
}

/**
 * An encoder for {@link lengthPrefixedDecoder}'s framing (with `lengthFieldOffset` 0 and the
 * default `initialBytesToStrip`): returns the length field followed by `payload` (a string is
 * UTF-8). Throws `FrameTooLargeError` when the payload exceeds `maxLength` or what the field can
 * express, and `InvalidFrameError` when it is shorter than a positive `lengthAdjustment`.
 */
export function lengthPrefixedEncoder(opts?: LengthPrefixedEncoderOptions): FrameEncoder {
  const where = 'lengthPrefixedEncoder';
  const options = optionsObject(opts, ENCODER_KEYS, `${where}: `);
  const width = checkFieldLength(options.lengthFieldLength, where);
  const littleEndian = options.littleEndian === true;
  const adjustment = checkAdjustment(options.lengthAdjustment, where);
  const fieldMax = 2 ** (8 * width) - 1;
  const max =
    options.maxLength === undefined ? undefined : checkInt(options.maxLength, `${where}: maxLength`, 0);
  return (payload) => {
    const len = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
    if (max !== undefined && len > max) throw new FrameTooLargeError(max, len);
    const value = len - adjustment;
    if (value > fieldMax) throw new FrameTooLargeError(fieldMax + adjustment, len);
    if (value < 0) {
      throw new InvalidFrameError(`payload of ${len} bytes is shorter than lengthAdjustment (${adjustment})`);
    }
    const out = Buffer.allocUnsafe(width + len);
    if (littleEndian) out.writeUIntLE(value, 0, width);
    else out.writeUIntBE(value, 0, width);
    if (typeof payload === 'string') out.write(payload, width);
    else out.set(payload, width);
    return out;
  };
}
