/**
 * Framing codecs: turn a TCP byte stream into messages and back. Every decoder has a mandatory
 * `maxLength`, so a peer can never make the server buffer without bound, and plugs into
 * `conn.readFrame(decoder)` (bytes held in a decoder count as buffered input, so the connection is
 * not idle mid-frame and a graceful shutdown waits for the frame to complete).
 *
 * | Framing        | Decoder                   | Encoder                   |
 * | -------------- | ------------------------- | ------------------------- |
 * | `\n` / `\r\n`  | {@link lineDecoder}       | {@link encodeLine}        |
 * | any delimiter  | {@link delimiterDecoder}  | {@link delimiterEncoder}  |
 * | length field   | {@link lengthPrefixedDecoder} | {@link lengthPrefixedEncoder} |
 *
 * Errors are typed: `FrameTooLargeError` (`ERR_FRAME_TOO_LARGE`), `InvalidFrameError`
 * (`ERR_INVALID_FRAME`), `IncompleteFrameError` (`ERR_INCOMPLETE_FRAME`, the stream ended mid-frame).
 * After a decoder throws, it keeps throwing the same error: the stream cannot be resynchronized.
 *
 * Frames that lie within one received chunk are subarrays of it (no copy); keep that in mind if you
 * retain many small frames for a long time (`Buffer.from(frame)` detaches one).
 *
 * @module
 */

export type { Decoder, FrameEncoder } from './decoder.js';
export type { DelimiterDecoderOptions, DelimiterEncoderOptions } from './delimiter.js';
export { delimiterDecoder, delimiterEncoder } from './delimiter.js';
export type { FrameSource } from './frames.js';
export { frames } from './frames.js';
export type {
  LengthFieldLength,
  LengthPrefixedDecoderOptions,
  LengthPrefixedEncoderOptions,
} from './length-prefixed.js';
export { lengthPrefixedDecoder, lengthPrefixedEncoder } from './length-prefixed.js';
export type { EncodeLineOptions, LineDecoderOptions } from './line.js';
export { encodeLine, lineDecoder } from './line.js';
