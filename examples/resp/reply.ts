/**
 * RESP2 reply encoding into one growing output buffer, so a whole pipelined batch of replies goes
 * out in a single `conn.write()`.
 *
 * @module
 */

const CRLF_LEN = 2;
/** Bulk values at least this big are queued as they are instead of being copied into the batch. */
const ZERO_COPY_MIN = 64 * 1024;
/** Under half of Node's 8 KiB pool, so a connection's first buffer is a cheap slice of the shared pool. */
const MIN_CAPACITY = 4000;

/** Canned replies used on hot paths. */
export const OK = Buffer.from('+OK\r\n');
export const PONG = Buffer.from('+PONG\r\n');
export const NIL = Buffer.from('$-1\r\n');
export const EMPTY_ARRAY = Buffer.from('*0\r\n');

/**
 * Collects RESP2 replies for a batch of commands.
 *
 * It bump-allocates in a buffer: {@link ReplyWriter.take} hands out the bytes written since the
 * previous take and never writes over them again, so they can go to the socket without a copy.
 */
export class ReplyWriter {
  /** Size of each fresh buffer: small for one connection's batches, larger for one shared writer. */
  private readonly capacity: number;
  private buf: Buffer;
  /** Start of the bytes not yet taken. */
  private start = 0;
  private pos = 0;
  /** Earlier pieces of this batch, when a big value was queued without copying. */
  private pieces: Buffer[] = [];
  private piecesLength = 0;

  constructor(capacity = MIN_CAPACITY) {
    this.capacity = capacity;
    this.buf = Buffer.allocUnsafe(capacity);
  }

  /** Bytes of replies written and not yet taken. */
  get length(): number {
    return this.piecesLength + this.pos - this.start;
  }

  /** Hands out everything written since the last call, as the buffers to write in order. */
  takePieces(): Buffer[] {
    const out = this.pieces;
    if (this.pos > this.start) out.push(this.buf.subarray(this.start, this.pos));
    this.start = this.pos;
    this.pieces = [];
    this.piecesLength = 0;
    return out;
  }

  /**
   * Everything written since the last take, as one buffer, or `undefined` if nothing was (a
   * service's `output`: see `respService`). Takes one after the other are adjacent views of one
   * buffer until it fills.
   */
  take(): Buffer | undefined {
    if (this.pieces.length === 0) {
      if (this.pos === this.start) return undefined;
      const reply = this.buf.subarray(this.start, this.pos);
      this.start = this.pos;
      return reply;
    }
    const pieces = this.takePieces();
    return pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
  }

  /** Bytes that are already a complete reply (see {@link OK}, {@link NIL}, ...). */
  raw(reply: Uint8Array): void {
    this.reserve(reply.length);
    this.buf.set(reply, this.pos);
    this.pos += reply.length;
  }

  /** `+text` (text must not contain CR or LF). */
  simple(text: string): void {
    this.reserve(text.length + 3);
    this.buf[this.pos++] = 0x2b;
    this.pos += this.buf.write(text, this.pos, 'latin1');
    this.crlf();
  }

  /**
   * `-message`, encoded as latin1 so that argument bytes quoted in it (decoded as latin1) come back
   * unchanged; CR and LF become spaces, as Redis does.
   */
  error(message: string): void {
    const line = message.replace(/[\r\n]/g, ' ');
    this.reserve(line.length + 3);
    this.buf[this.pos++] = 0x2d;
    this.pos += this.buf.write(line, this.pos, 'latin1');
    this.crlf();
  }

  /** `:n`. */
  integer(n: number | bigint): void {
    this.reserve(24);
    this.buf[this.pos++] = 0x3a;
    this.digits(n);
    this.crlf();
  }

  /** `$len\r\n...\r\n`, or `$-1` for null. */
  bulk(value: Uint8Array | null): void {
    if (value === null) {
      this.raw(NIL);
      return;
    }
    const len = value.length;
    if (len >= ZERO_COPY_MIN) {
      this.reserve(24);
      this.header(0x24, len);
      this.flushPiece();
      this.pieces.push(value as Buffer);
      this.piecesLength += len;
      this.reserve(CRLF_LEN);
      this.crlf();
      return;
    }
    this.reserve(len + 24);
    this.header(0x24, len);
    this.buf.set(value, this.pos);
    this.pos += len;
    this.crlf();
  }

  /** `*n\r\n`: the elements follow as separate replies. */
  arrayHeader(n: number): void {
    this.reserve(24);
    this.header(0x2a, n);
  }

  private header(type: number, n: number): void {
    this.buf[this.pos++] = type;
    this.digits(n);
    this.crlf();
  }

  private crlf(): void {
    this.buf[this.pos++] = 0x0d;
    this.buf[this.pos++] = 0x0a;
  }

  private digits(n: number | bigint): void {
    if (typeof n === 'number' && n >= 0 && n < 10) {
      this.buf[this.pos++] = 0x30 + n;
      return;
    }
    this.pos += this.buf.write(String(n), this.pos, 'latin1');
  }

  /** Moves the untaken bytes into pieces, so a zero-copy value can follow them in order. */
  private flushPiece(): void {
    if (this.pos > this.start) {
      this.pieces.push(this.buf.subarray(this.start, this.pos));
      this.piecesLength += this.pos - this.start;
      this.start = this.pos;
    }
  }

  /** Makes room for n more bytes after pos, in a fresh buffer if needed (taken bytes are never moved). */
  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const pending = this.pos - this.start;
    const next = Buffer.allocUnsafe(Math.max(this.capacity, (pending + n) * 2));
    this.buf.copy(next, 0, this.start, this.pos);
    this.buf = next;
    this.start = 0;
    this.pos = pending;
  }
}
