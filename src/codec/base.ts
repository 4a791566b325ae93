/**
 * Internal: what every built-in decoder shares, namely the chunk queue, option checks, and errors
 * that stick (a framing error leaves the stream unsynchronizable, so the decoder drops its bytes
 * and repeats the same error).
 *
 * @internal
 * @module
 */

import { InvalidOptionError } from '../errors.js';
import { describeValue } from '../timers.js';
import { asBuffer, ByteQueue } from './byte-queue.js';
import type { Decoder } from './decoder.js';

export abstract class BaseDecoder<T> implements Decoder<T> {
  protected readonly queue = new ByteQueue();
  #error: unknown;
  #failed = false;

  get buffered(): number {
    return this.queue.length;
  }

  push(chunk: Uint8Array): void {
    if (!this.#failed) this.queue.push(asBuffer(chunk));
  }

  next(): T | undefined {
    return this.#guard(() => this.decode());
  }

  end(): T | undefined {
    return this.#guard(() => this.decode() ?? this.decodeEnd());
  }

  /** The next complete frame, or undefined. */
  protected abstract decode(): T | undefined;
  /** At end of stream, once decode() found nothing: the last frame, undefined, or a throw. */
  protected abstract decodeEnd(): T | undefined;

  #guard(fn: () => T | undefined): T | undefined {
    if (this.#failed) throw this.#error;
    try {
      return fn();
    } catch (err) {
      this.#failed = true;
      this.#error = err;
      this.queue.clear();
      throw err;
    }
  }
}

/** Validates a required `maxLength`: an integer >= 0 (Infinity would defeat its purpose). */
export function checkMaxLength(value: unknown, where: string): number {
  if (value === undefined) throw new InvalidOptionError(`${where}: maxLength is required`);
  return checkInt(value, `${where}: maxLength`, 0);
}

export function checkInt(value: unknown, what: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidOptionError(`${what} must be an integer >= ${min}, got ${describeValue(value)}`);
  }
  return value;
}
