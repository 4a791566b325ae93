/**
 * The service mode (docs/architecture.md, "Service mode"): request/reply protocols served without
 * a coroutine per connection. The user gives a decoder and a function from one frame to its
 * reply; the connection decodes in its data path, calls the function per frame, and writes the
 * replies in request order, those of one received chunk in one write.
 *
 * This module holds the public shape and its validation; the data path is `Conn`'s.
 *
 * @module
 */
import type { Decoder } from './codec/decoder.js';
import type { Conn } from './conn.js';
import type { Context } from './context.js';
import { InvalidOptionError } from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import { describeValue as describe } from './timers.js';

/** A reply: bytes or a string to write, or `undefined` / `null` for no reply to this frame. */
export type Reply = string | Uint8Array | undefined | null;

/**
 * A buffer of the service's own that `call` writes its replies into instead of returning them
 * (`Service.output`), as a Netty handler writes to its channel and flushes once per read: the
 * replies to a pipelined batch then cost no object each.
 */
export interface ServiceOutput {
  /** Bytes written and not yet taken. */
  readonly length: number;
  /** Everything written since the last take, as one reply, or `undefined` when nothing was. */
  take(): Reply;
}

/**
 * A request/reply protocol (the `service` server option, instead of `handler`): Tower's
 * `Service`, Netty's `channelRead`. Replies are written in request order even when async ones
 * settle out of order.
 */
export interface Service<T = unknown> {
  /**
   * A fresh decoder for each connection (its `maxLength` bounds every frame), made when the
   * connection's first bytes arrive: one that never sends holds none. If it throws, that
   * connection is destroyed and the error reported as a handler error.
   */
  decoder: () => Decoder<T>;
  /**
   * The reply to one frame. A synchronous reply costs no promise and no microtask; a promise (or
   * any thenable) is awaited, while later frames are decoded and called meanwhile, up to
   * `maxInFlight`. Throwing or rejecting ends only this connection (destroyed, reported as a
   * handler error), unless `errorReply` turns the error into a reply.
   */
  call: (frame: T, ctx: Context, conn: Conn) => Reply | PromiseLike<Reply>;
  /**
   * Turns an error into a reply instead of ending the connection: one `call` threw or rejected
   * (the connection goes on), or the decoder refused the input (`ERR_FRAME_TOO_LARGE`,
   * `ERR_INVALID_FRAME`: the reply is the last, then the connection ends). Returning `undefined`
   * sends nothing. If it throws, the connection is destroyed and the error reported.
   */
  errorReply?: (error: unknown, conn: Conn) => Reply;
  /**
   * Async replies a connection may have pending at once; at the bound it stops decoding and
   * reading until one settles (read backpressure). Default 256.
   */
  maxInFlight?: number;
  /**
   * Where synchronous replies may be written instead of returned: a `call` (or `errorReply`) that
   * writes its reply here returns `undefined`. The connection takes what was written wherever
   * replies take their place: at the end of every decode pass (one write for a received chunk, as
   * always), right after a call whose reply must wait behind a pending async one, before a reply
   * that is returned, and whenever `length` reaches the socket's high-water mark (write
   * backpressure). One output may serve every connection: passes never nest, and each ends with
   * the output taken. An async reply is the value its promise resolves to; bytes written here by a
   * call that returns a promise go before that reply.
   */
  output?: ServiceOutput;
}

/** A service after validation, with defaults applied (internal). */
export interface ResolvedService {
  readonly decoder: () => Decoder<unknown>;
  readonly call: (frame: unknown, ctx: Context, conn: Conn) => Reply | PromiseLike<Reply>;
  readonly errorReply: ((error: unknown, conn: Conn) => Reply) | undefined;
  readonly maxInFlight: number;
  readonly output: ServiceOutput | undefined;
}

const SERVICE_KEYS: KnownKeys<Service> = {
  decoder: true,
  call: true,
  errorReply: true,
  maxInFlight: true,
  output: true,
};

/** Checks the `service` option. Throws `ERR_INVALID_OPTION` naming the bad value. */
export function resolveService(value: unknown): ResolvedService {
  if (value === null || typeof value !== 'object') {
    throw new InvalidOptionError(`service must be an object, got ${describe(value)}`);
  }
  checkKeys(value, SERVICE_KEYS, 'service.');
  const service = value as Service;
  for (const key of ['decoder', 'call'] as const) {
    if (typeof service[key] !== 'function') {
      throw new InvalidOptionError(`service.${key} must be a function, got ${describe(service[key])}`);
    }
  }
  if (service.errorReply !== undefined && typeof service.errorReply !== 'function') {
    throw new InvalidOptionError(
      `service.errorReply must be a function, got ${describe(service.errorReply)}`,
    );
  }
  const maxInFlight = service.maxInFlight ?? 256;
  if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1) {
    throw new InvalidOptionError(
      `service.maxInFlight must be a positive integer, got ${describe(service.maxInFlight)}`,
    );
  }
  const output = service.output;
  if (
    output !== undefined &&
    (output === null ||
      typeof output !== 'object' ||
      typeof output.take !== 'function' ||
      typeof output.length !== 'number')
  ) {
    throw new InvalidOptionError(
      `service.output must be an object with a take() method and a numeric length, got ${describe(output)}`,
    );
  }
  return {
    decoder: service.decoder,
    call: service.call as ResolvedService['call'],
    errorReply: service.errorReply,
    maxInFlight,
    output,
  };
}
