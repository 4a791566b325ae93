/**
 * Newline-delimited frames: the framing of chat, SMTP/POP3/Redis-inline style protocols, JSON lines.
 *
 * @module
 */

import { FrameTooLargeError, InvalidFrameError, InvalidOptionError } from '../errors.js';
import { checkKeys, type KnownKeys, optionsObject } from '../option-keys.js';
import { describeValue } from '../timers.js';
import { BaseDecoder, checkInt, checkMaxLength } from './base.js';
import type { Decoder } from './decoder.js';

const LF = 0x0a;
const CR = 0x0d;
const LF_BUF = Buffer.from([LF]);

/** Options of {@link lineDecoder}. */
export interface LineDecoderOptions {
  /**
   * Longest accepted line in bytes, not counting the `\n` or `\r\n` that ends it. A longer line
   * throws `FrameTooLargeError` as soon as more than this many bytes arrive without a newline.
   */
  maxLength: number;
  /**
   * How to turn a line's bytes into a string; `null` returns `Buffer`s. Default `'utf8'`. Must be
   * ASCII-compatible (UTF-16 is refused: its code units can contain the byte `\n`).
   */
  encoding?: BufferEncoding | null;
}

/** Options of {@link encodeLine}. */
export interface EncodeLineOptions {
  /** Refuse (with `FrameTooLargeError`) a line longer than this many bytes, newline not counted. */
  maxLength?: number;
  /** Encoding of a string `text`. Default `'utf8'`. */
  encoding?: BufferEncoding;
}

const LINE_DECODER_KEYS: KnownKeys<LineDecoderOptions> = { maxLength: true, encoding: true };
const ENCODE_LINE_KEYS: KnownKeys<EncodeLineOptions> = { maxLength: true, encoding: true };

class LineDecoder<T> extends BaseDecoder<T> {
  readonly #maxLength: number;
  readonly #convert: (line: Buffer) => T;

  constructor(maxLength: number, convert: (line: Buffer) => T) {
    super();
    this.#maxLength = maxLength;
    this.#convert = convert;
  }

  protected decode(): T | undefined {
    const q = this.queue;
    if (q.length === 0) return undefined;
    // A valid line ends with `\r\n` at the latest at maxLength + 2 bytes: never search further.
    const nl = q.indexOf(LF_BUF, this.#maxLength + 2);
    if (nl < 0) {
      // A trailing `\r` may yet be the first half of `\r\n`, which does not count.
      const atLeast = q.length - (q.lastByte() === CR ? 1 : 0);
      if (atLeast > this.#maxLength) throw new FrameTooLargeError(this.#maxLength);
      return undefined;
    }
    const len = nl > 0 && q.byteAt(nl - 1) === CR ? nl - 1 : nl;
    if (len > this.#maxLength) throw new FrameTooLargeError(this.#maxLength, len);
    const line = q.take(len);
    q.skip(nl + 1 - len);
    return this.#convert(line);
  }

  protected decodeEnd(): T | undefined {
    const q = this.queue;
    if (q.length === 0) return undefined;
    // The last line may lack its newline; decode() has already checked its length.
    const len = q.lastByte() === CR ? q.length - 1 : q.length;
    const line = q.take(len);
    q.skip(q.length);
    return this.#convert(line);
  }
}

const UTF16 = new Set(['utf16le', 'utf-16le', 'ucs2', 'ucs-2']);

/**
 * A decoder of lines ending in `\n`; a `\r` right before the `\n` is removed too, so both Unix and
 * network (`\r\n`) line ends work. At end of stream a last line without newline is returned.
 *
 * @example
 * ```ts
 * const lines = lineDecoder({ maxLength: 4096 });
 * let line: string | null;
 * while ((line = await conn.readFrame(lines)) !== null) await conn.write(encodeLine(line.toUpperCase()));
 * ```
 */
export function lineDecoder(options: LineDecoderOptions & { encoding: null }): Decoder<Buffer>;
export function lineDecoder(options: LineDecoderOptions & { encoding?: BufferEncoding }): Decoder<string>;
export function lineDecoder(options: LineDecoderOptions): Decoder<string | Buffer>;
export function lineDecoder(options: LineDecoderOptions): Decoder<string | Buffer> {
  checkKeys(options, LINE_DECODER_KEYS, '', 'lineDecoder: ');
  const maxLength = checkMaxLength(options?.maxLength, 'lineDecoder');
  const encoding = options.encoding === undefined ? 'utf8' : options.encoding;
  if (encoding === null) return new LineDecoder<Buffer>(maxLength, (line) => line);
  if (!Buffer.isEncoding(encoding) || UTF16.has(encoding.toLowerCase())) {
    throw new InvalidOptionError(`lineDecoder: unsupported encoding ${describeValue(encoding)}`);
  }
  return new LineDecoder<string>(maxLength, (line) => line.toString(encoding));
}

/**
 * One line's bytes: `text` followed by `\n`. Throws `InvalidFrameError` if `text` contains a `\n`
 * (it would arrive as two lines: refusing it stops line injection) or ends with `\r` (a line
 * decoder takes `\r\n` for the line end and would drop it), and `FrameTooLargeError` if it is
 * longer than `maxLength` bytes. A string is encoded with `encoding`; for `hex` and `base64`,
 * characters that do not decode are skipped, as `Buffer.from` skips them.
 */
export function encodeLine(text: string | Uint8Array, options?: EncodeLineOptions): Buffer {
  const { encoding = 'utf8', maxLength } = optionsObject(options, ENCODE_LINE_KEYS, 'encodeLine: ');
  if (typeof encoding !== 'string' || !Buffer.isEncoding(encoding)) {
    throw new InvalidOptionError(`encodeLine: unsupported encoding ${describeValue(encoding)}`);
  }
  let out: Buffer;
  let len: number;
  if (typeof text === 'string') {
    // For hex and base64, byteLength is an upper bound (invalid characters are skipped): the
    // line is what write() wrote, never the rest of an uninitialised buffer.
    out = Buffer.allocUnsafe(Buffer.byteLength(text, encoding) + 1);
    len = out.write(text, 0, out.length - 1, encoding);
  } else {
    len = text.byteLength;
    out = Buffer.allocUnsafe(len + 1);
    out.set(text);
  }
  if (maxLength !== undefined) {
    const max = checkInt(maxLength, 'encodeLine: maxLength', 0);
    if (len > max) throw new FrameTooLargeError(max, len);
  }
  out[len] = LF;
  if (len + 1 < out.length) out = out.subarray(0, len + 1);
  if (out.indexOf(LF) !== len) throw new InvalidFrameError('line contains a newline');
  // A decoder takes "\r\n" for a line end: a line ending in "\r" would come back without it.
  if (len > 0 && out[len - 1] === CR)
    throw new InvalidFrameError('line ends with "\\r", which a line decoder strips');
  return out;
}
