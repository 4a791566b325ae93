/**
 * Frames of a connection as an async iterable.
 *
 * @module
 */

import type { IoOptions } from '../conn.js';
import type { Decoder } from './decoder.js';

/** Anything that reads frames the way `Conn.readFrame` does. */
export interface FrameSource {
  readFrame<T>(decoder: Decoder<T>, opts?: IoOptions): Promise<T | null>;
}

/**
 * Iterates the frames `decoder` cuts from `conn` until the end of the stream, that is, until
 * `conn.readFrame(decoder, opts)` resolves `null` (the peer's FIN, or a graceful shutdown reaching
 * this connection while no frame is half received). Errors of `readFrame` (`ERR_FRAME_TOO_LARGE`,
 * `ERR_INCOMPLETE_FRAME`, `ERR_READ_TIMEOUT`, ...) are thrown from the loop. `opts` applies to
 * each wait for more bytes. Breaking out of the loop leaves the connection open, and the decoder
 * keeps any bytes already received.
 *
 * @example
 * ```ts
 * for await (const line of frames(conn, lineDecoder({ maxLength: 4096 }))) {
 *   await conn.write(encodeLine(line.toUpperCase()));
 * }
 * ```
 */
export async function* frames<T>(
  conn: FrameSource,
  decoder: Decoder<T>,
  opts?: IoOptions,
): AsyncGenerator<T, void> {
  for (;;) {
    const frame = await conn.readFrame(decoder, opts);
    if (frame === null) return;
    yield frame;
  }
}
