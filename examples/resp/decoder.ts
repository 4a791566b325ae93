/**
 * A streaming RESP2 request decoder: multibulk (`*N\r\n$len\r\n...`) and inline commands, with
 * pipelining and commands split anywhere across chunks.
 *
 * It parses in place with offsets and returns arguments as `subarray`s of the received bytes, so a
 * command costs no copy and no string building. The arguments stay valid after later `push()`es:
 * the decoder never writes over bytes it has handed out (it grows into fresh buffers instead of
 * compacting), so callers that keep an argument beyond the current batch should copy it only to
 * avoid pinning a large socket chunk in memory.
 *
 * @module
 */

import type { Decoder } from '../../src/codec/decoder.js';
import {
  FrameTooLargeError,
  IncompleteFrameError,
  InvalidFrameError,
  InvalidOptionError,
} from '../../src/errors.js';
import { splitInlineArgs } from './inline.js';

/** A decoded command: the command name followed by its arguments, as raw bytes. */
export type RespCommand = Buffer[];

/** Limits of a {@link RespDecoder}. Each one bounds the memory a single client can make us hold. */
export interface RespDecoderOptions {
  /** Largest bulk argument, in bytes (Redis's `proto-max-bulk-len`). Default 512 MiB. */
  maxBulkLength?: number;
  /** Largest inline command line, in bytes, without its `\n`. Default 64 KiB, as Redis. */
  maxInlineLength?: number;
  /** Most arguments in one multibulk command. Default 1024 * 1024. */
  maxArgs?: number;
  /**
   * Most bytes of one multibulk command, headers included (Redis's `client-query-buffer-limit`).
   * Default 1 GiB. Without it a client could buffer `maxArgs * maxBulkLength` bytes.
   */
  maxRequestLength?: number;
}

/** Default {@link RespDecoderOptions.maxBulkLength}: 512 MiB. */
export const DEFAULT_MAX_BULK_LENGTH = 512 * 1024 * 1024;
/** Default {@link RespDecoderOptions.maxInlineLength}: 64 KiB. */
export const DEFAULT_MAX_INLINE_LENGTH = 64 * 1024;
/** Default {@link RespDecoderOptions.maxArgs}: 1024 * 1024. */
export const DEFAULT_MAX_ARGS = 1024 * 1024;
/** Default {@link RespDecoderOptions.maxRequestLength}: 1 GiB. */
export const DEFAULT_MAX_REQUEST_LENGTH = 1024 * 1024 * 1024;
/**
 * Longest `*N` / `$N` header line, CRLF included: `*`, `-`, 19 digits, CRLF. The header parser
 * rejects a prefix as soon as it cannot become valid, so a partial header never holds more.
 */
export const MAX_HEADER_LINE = 23;

const CR = 0x0d;
const LF = 0x0a;
const STAR = 0x2a;
const DOLLAR = 0x24;

/** parseHeader() results besides a position. */
const NEED_MORE = -1;
const INVALID = -2;

const EMPTY = Buffer.alloc(0);

/**
 * Decodes RESP2 requests into {@link RespCommand}s. Implements the framework's `Decoder`, so
 * `conn.readFrame(decoder)` drives it and the bytes it holds keep the connection out of `idle`.
 *
 * Errors are sticky: after a throw the buffered bytes are dropped and every later call throws the
 * same error, since the stream cannot be resynchronized.
 */
export class RespDecoder implements Decoder<RespCommand> {
  readonly maxBulkLength: number;
  readonly maxInlineLength: number;
  readonly maxArgs: number;
  readonly maxRequestLength: number;

  /** Received bytes live in buf[start, tail). Bytes before start may still be referenced by callers. */
  private buf: Buffer = EMPTY;
  private start = 0;
  private tail = 0;
  /** True when buf was allocated here, so its spare capacity past `tail` is ours to fill. */
  private owned = false;

  /** The multibulk command being assembled, or null between commands. */
  private args: Buffer[] | null = null;
  /** Arguments of `args` still to come. */
  private remaining = 0;
  /** Length announced by the current `$` header, or -1 while that header is still to be read. */
  private bulkLen = -1;
  /** Bytes of the current multibulk command already consumed (they count as buffered). */
  private frameBytes = 0;
  /** How far past `start` an inline line was already searched for `\n`, so it is never rescanned. */
  private scanned = 0;
  /** Value of the header parsed by parseHeader(). */
  private headerValue = 0;
  private failure: unknown = undefined;
  private failed = false;

  constructor(options: RespDecoderOptions = {}) {
    this.maxBulkLength = checkLimit(options.maxBulkLength, DEFAULT_MAX_BULK_LENGTH, 'maxBulkLength');
    this.maxInlineLength = checkLimit(options.maxInlineLength, DEFAULT_MAX_INLINE_LENGTH, 'maxInlineLength');
    this.maxArgs = checkLimit(options.maxArgs, DEFAULT_MAX_ARGS, 'maxArgs');
    this.maxRequestLength = checkLimit(
      options.maxRequestLength,
      DEFAULT_MAX_REQUEST_LENGTH,
      'maxRequestLength',
    );
  }

  /** Bytes received and not yet returned in a command, including a half-assembled command's arguments. */
  get buffered(): number {
    return this.tail - this.start + this.frameBytes;
  }

  push(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0 || this.failed) return;
    const held = this.tail - this.start;
    if (held === 0) {
      // Common case: nothing pending, so adopt the chunk as is (zero copy).
      this.buf = chunk;
      this.start = 0;
      this.tail = n;
      this.owned = false;
      return;
    }
    if (this.owned && this.buf.length - this.tail >= n) {
      chunk.copy(this.buf, this.tail);
      this.tail += n;
      return;
    }
    // Grow into a fresh buffer (never compact in place: earlier arguments may point into buf).
    // Doubling keeps appends amortized O(1); while a bulk body is pending, the capacity is capped at
    // what that body still needs, so a huge `$len` alone never makes us allocate its size.
    const need = held + n;
    let cap = need * 2;
    if (this.bulkLen >= 0) cap = Math.min(cap, Math.max(need, this.bulkLen + 2));
    else cap = Math.min(cap, need + 64 * 1024);
    const next = Buffer.allocUnsafe(Math.max(cap, 1024));
    this.buf.copy(next, 0, this.start, this.tail);
    chunk.copy(next, held);
    this.buf = next;
    this.start = 0;
    this.tail = need;
    this.owned = true;
  }

  next(): RespCommand | undefined {
    if (this.failed) throw this.failure;
    let cmd: RespCommand | undefined;
    try {
      cmd = this.decode();
    } catch (err) {
      this.fail(err);
      throw err;
    }
    if (this.start === this.tail && this.tail !== 0) {
      // Everything is consumed: drop the chunk so an idle connection pins no receive buffer.
      this.buf = EMPTY;
      this.start = this.tail = 0;
      this.owned = false;
    }
    return cmd;
  }

  end(): RespCommand | undefined {
    const cmd = this.next();
    if (cmd !== undefined) return cmd;
    const buffered = this.buffered;
    if (buffered === 0) return undefined;
    const err = new IncompleteFrameError(buffered);
    this.fail(err);
    throw err;
  }

  private fail(err: unknown): void {
    this.failed = true;
    this.failure = err;
    this.buf = EMPTY;
    this.start = this.tail = this.frameBytes = this.scanned = 0;
    this.args = null;
  }

  private decode(): RespCommand | undefined {
    const buf = this.buf;
    const end = this.tail;
    for (;;) {
      let pos = this.start;
      let args = this.args;
      if (args === null) {
        if (pos >= end) return undefined;
        if (buf[pos] !== STAR) {
          const inline = this.decodeInline(buf, pos, end);
          if (inline === undefined) return undefined;
          if (inline.length === 0) continue; // an empty line, as Redis: skip it
          return inline;
        }
        const p = this.parseHeader(buf, pos + 1, end);
        if (p === NEED_MORE) return undefined;
        const count = this.headerValue;
        if (p === INVALID || count > this.maxArgs) throw protocolError('invalid multibulk length');
        this.start = p;
        if (count <= 0) continue; // `*0` and `*-1` are empty commands, skipped as Redis does
        this.frameBytes = p - pos;
        this.args = args = [];
        this.remaining = count;
        this.bulkLen = -1;
      }
      while (this.remaining > 0) {
        pos = this.start;
        let len = this.bulkLen;
        if (len < 0) {
          if (pos >= end) return undefined;
          if (buf[pos] !== DOLLAR) throw protocolError(`expected '$', got '${printable(buf[pos]!)}'`);
          const p = this.parseHeader(buf, pos + 1, end);
          if (p === NEED_MORE) return undefined;
          len = this.headerValue;
          if (p === INVALID || len < 0) throw protocolError('invalid bulk length');
          // Refused on the header alone, before any of the body is buffered.
          if (len > this.maxBulkLength) throw new FrameTooLargeError(this.maxBulkLength, len);
          const total = this.frameBytes + (p - pos) + len + 2;
          if (total > this.maxRequestLength) throw new FrameTooLargeError(this.maxRequestLength, total);
          this.frameBytes += p - pos;
          this.bulkLen = len;
          this.start = pos = p;
        }
        if (end - pos < len + 2) return undefined;
        if (buf[pos + len] !== CR || buf[pos + len + 1] !== LF) {
          throw protocolError('expected CRLF after bulk data');
        }
        args.push(buf.subarray(pos, pos + len));
        this.start = pos + len + 2;
        this.frameBytes += len + 2;
        this.bulkLen = -1;
        this.remaining--;
      }
      this.args = null;
      this.frameBytes = 0;
      return args;
    }
  }

  /** An inline command line at pos: its arguments, [] for a blank line, undefined if incomplete. */
  private decodeInline(buf: Buffer, pos: number, end: number): RespCommand | undefined {
    let nl = buf.indexOf(LF, pos + this.scanned);
    if (nl >= end) nl = -1; // found in the spare capacity of an owned buffer: not data
    if (nl < 0) {
      if (end - pos > this.maxInlineLength) throw new FrameTooLargeError(this.maxInlineLength);
      this.scanned = end - pos;
      return undefined;
    }
    if (nl - pos > this.maxInlineLength) throw new FrameTooLargeError(this.maxInlineLength, nl - pos);
    this.scanned = 0;
    this.start = nl + 1;
    const lineEnd = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl;
    const args = splitInlineArgs(buf, pos, lineEnd);
    if (args === null) throw protocolError('unbalanced quotes in request');
    return args;
  }

  /**
   * Parses a `*` / `$` header's integer at pos (just past the type byte), with Redis's rules: an
   * optional `-`, no `+`, no leading zeros, at most 19 digits, then CRLF. Stores the value in
   * headerValue and returns the position after the CRLF, or NEED_MORE / INVALID.
   */
  private parseHeader(buf: Buffer, pos: number, end: number): number {
    let p = pos;
    if (p >= end) return NEED_MORE;
    let negative = false;
    if (buf[p] === 0x2d) {
      negative = true;
      if (++p >= end) return NEED_MORE;
    }
    const first = p;
    let value = 0;
    let c = buf[p]!;
    while (c >= 0x30 && c <= 0x39) {
      value = value * 10 + (c - 0x30);
      if (++p - first > 19) return INVALID;
      if (p >= end) return NEED_MORE;
      c = buf[p]!;
    }
    const digits = p - first;
    if (digits === 0 || (digits > 1 && buf[first] === 0x30)) return INVALID;
    if (negative && buf[first] === 0x30) return INVALID;
    if (c !== CR) return INVALID;
    if (p + 1 >= end) return NEED_MORE;
    if (buf[p + 1] !== LF) return INVALID;
    // Beyond 2^53 the value is approximate, but any such value is far over every limit anyway.
    this.headerValue = negative ? -value : value;
    return p + 2;
  }
}

function protocolError(what: string): InvalidFrameError {
  return new InvalidFrameError(`Protocol error: ${what}`);
}

/** The byte as Redis would print it in `got 'x'`, escaped when it would break a reply line. */
function printable(byte: number): string {
  if (byte >= 0x20 && byte < 0x7f) return String.fromCharCode(byte);
  return `\\x${byte.toString(16).padStart(2, '0')}`;
}

function checkLimit(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidOptionError(`${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}
