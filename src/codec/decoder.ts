/**
 * The contract every framing decoder implements. `conn.readFrame(decoder)` drives it structurally,
 * so a hand-written decoder that follows these rules works there too.
 *
 * @module
 */

/**
 * Splits a byte stream into frames of type `T`.
 *
 * The driver pushes each received chunk, then calls {@link Decoder.next} until it returns
 * `undefined`, and at end of stream calls {@link Decoder.end}. Decoders are synchronous and keep no
 * reference to the driver.
 */
export interface Decoder<T> {
  /** Bytes held that are not yet returned as a frame (counts as buffered input for the connection's state). */
  readonly buffered: number;
  /** Append received bytes. Must be cheap (no copying of the whole buffer per chunk if avoidable). */
  push(chunk: Buffer): void;
  /** Next complete frame, or undefined if more bytes are needed. Throws FrameTooLargeError / InvalidFrameError (src/errors.ts). */
  next(): T | undefined;
  /** Called at end of stream after next() returned undefined: returns a last frame if the codec allows one (e.g. a final line without newline), undefined if nothing is buffered, and throws IncompleteFrameError if a partial frame remains. */
  end(): T | undefined;
}

/** Turns one payload into the bytes of one frame, ready for `conn.write()`. */
export type FrameEncoder = (payload: string | Uint8Array) => Buffer;
