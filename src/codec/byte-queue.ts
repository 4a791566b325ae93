/**
 * Internal: a FIFO of received chunks with a resumable delimiter search. Chunks are never copied
 * on push and never mutated; a frame that lies within one chunk is returned as a subarray of it.
 *
 * @internal
 * @module
 */

const EMPTY = Buffer.alloc(0);

/** Compact the chunk array once this many consumed slots have piled up at its front. */
const COMPACT_AT = 64;

export function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

export class ByteQueue {
  #chunks: Buffer[] = [];
  /** Index in #chunks of the first live chunk. */
  #head = 0;
  /** Bytes of #chunks[#head] already consumed. */
  #offset = 0;
  #length = 0;

  // Search state, so that bytes already searched are never searched again (no O(n^2) on a slow
  // trickle of a long frame). Reset by every consume, because positions are relative to the front.
  #scanChunk = 0;
  #scanOffset = 0;
  #scanned = 0;
  /** The last (delimiter length - 1) searched bytes: a delimiter may straddle two chunks. */
  #tail: Buffer = EMPTY;

  get length(): number {
    return this.#length;
  }

  /** Bytes from the front already searched by {@link indexOf} without a match. */
  get scanned(): number {
    return this.#scanned;
  }

  /** Up to (delimiter length - 1) last searched bytes. */
  get tail(): Buffer {
    return this.#tail;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#offset = 0;
    this.#length = 0;
    this.#resetScan();
  }

  /** The byte at `pos` (0 = front). `pos` must be < length. */
  byteAt(pos: number): number {
    let i = this.#head;
    pos += this.#offset;
    for (;;) {
      const c = this.#chunks[i]!;
      if (pos < c.length) return c[pos]!;
      pos -= c.length;
      i++;
    }
  }

  /** The last byte held, or -1 when empty. */
  lastByte(): number {
    if (this.#length === 0) return -1;
    const c = this.#chunks[this.#chunks.length - 1]!;
    return c[c.length - 1]!;
  }

  /** `len` bytes from `pos` without consuming them: a subarray when they lie in one chunk. */
  peek(pos: number, len: number): Buffer {
    let i = this.#head;
    pos += this.#offset;
    while (pos >= this.#chunks[i]!.length) pos -= this.#chunks[i++]!.length;
    const c = this.#chunks[i]!;
    if (pos + len <= c.length) return c.subarray(pos, pos + len);
    const out = Buffer.allocUnsafe(len);
    let n = 0;
    while (n < len) {
      const part = this.#chunks[i++]!.subarray(pos, pos + len - n);
      out.set(part, n);
      n += part.length;
      pos = 0;
    }
    return out;
  }

  /**
   * Position of the first `delim` lying entirely within the first `limit` bytes, or -1. Resumes
   * where the previous unsuccessful call stopped.
   */
  indexOf(delim: Buffer, limit: number): number {
    const m = delim.length;
    const end = Math.min(limit, this.#length);
    while (this.#scanned < end) {
      const chunk = this.#chunks[this.#scanChunk]!;
      const piece = chunk.subarray(
        this.#scanOffset,
        Math.min(chunk.length, this.#scanOffset + (end - this.#scanned)),
      );
      if (m > 1 && this.#tail.length > 0) {
        // A match found here necessarily starts in the tail, so it precedes any match in `piece`.
        const window = Buffer.concat([this.#tail, piece.subarray(0, m - 1)]);
        const i = window.indexOf(delim);
        if (i >= 0) return this.#scanned - this.#tail.length + i;
      }
      const j = piece.indexOf(delim);
      if (j >= 0) return this.#scanned + j;
      if (m > 1) {
        this.#tail =
          piece.length >= m - 1
            ? piece.subarray(piece.length - (m - 1))
            : Buffer.concat([this.#tail, piece]).subarray(-(m - 1));
      }
      this.#scanned += piece.length;
      this.#scanOffset += piece.length;
      if (this.#scanOffset === chunk.length) {
        this.#scanChunk++;
        this.#scanOffset = 0;
      }
    }
    return -1;
  }

  /** Remove and return the first `n` bytes: a subarray when they lie in one chunk, else one copy. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[this.#head]!;
    let out: Buffer;
    if (first.length - this.#offset >= n) {
      out = first.subarray(this.#offset, this.#offset + n);
    } else {
      out = this.peek(0, n);
    }
    this.skip(n);
    return out;
  }

  /** Drop the first `n` bytes (`n` <= length). */
  skip(n: number): void {
    this.#length -= n;
    while (n > 0) {
      const c = this.#chunks[this.#head]!;
      const avail = c.length - this.#offset;
      if (n < avail) {
        this.#offset += n;
        break;
      }
      n -= avail;
      this.#chunks[this.#head++] = EMPTY; // let the GC have it
      this.#offset = 0;
    }
    if (this.#head === this.#chunks.length) {
      this.#chunks = [];
      this.#head = 0;
    } else if (this.#head >= COMPACT_AT && this.#head * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
    this.#resetScan();
  }

  #resetScan(): void {
    this.#scanChunk = this.#head;
    this.#scanOffset = this.#offset;
    this.#scanned = 0;
    this.#tail = EMPTY;
  }
}
