import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  type Decoder,
  delimiterDecoder,
  delimiterEncoder,
  encodeLine,
  type FrameEncoder,
  type LengthFieldLength,
  lengthPrefixedDecoder,
  lengthPrefixedEncoder,
  lineDecoder,
} from '../src/codec/index.js';
import { FrameTooLargeError, InvalidFrameError, InvalidOptionError, TcpServerError } from '../src/errors.js';

// A fixed seed keeps the suite deterministic; FC_SEED / FC_RUNS explore further.
const RUNS = {
  numRuns: Number(process.env.FC_RUNS ?? 200),
  seed: process.env.FC_SEED === undefined ? 20_240_611 : Number(process.env.FC_SEED),
};
const TYPED = new Set(['ERR_FRAME_TOO_LARGE', 'ERR_INVALID_FRAME', 'ERR_INCOMPLETE_FRAME']);

interface Outcome<T> {
  frames: T[];
  error?: string;
}

/** Cuts `stream` at the given positions (any order, duplicates allowed: empty chunks too). */
function split(stream: Buffer, cuts: number[]): Buffer[] {
  const points = cuts.map((c) => c % (stream.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(stream.subarray(prev, p));
    prev = p;
  }
  chunks.push(stream.subarray(prev));
  return chunks;
}

/**
 * Drives a decoder the way `conn.readFrame` does, checking the memory bound: after draining, at
 * most `held` bytes remain; right after a push, at most `held` plus the largest chunk so far.
 * Only the codec's typed errors may escape, and they stick.
 */
function drive<T>(decoder: Decoder<T>, chunks: Buffer[], held: number): Outcome<T> {
  const frames: T[] = [];
  let largest = 0;
  try {
    for (const chunk of chunks) {
      largest = Math.max(largest, chunk.length);
      decoder.push(chunk);
      assert.ok(decoder.buffered <= held + largest, `buffered ${decoder.buffered} > ${held} + ${largest}`);
      for (let f = decoder.next(); f !== undefined; f = decoder.next()) frames.push(f);
      assert.ok(decoder.buffered <= held, `buffered ${decoder.buffered} > ${held} after draining`);
    }
    for (let f = decoder.end(); f !== undefined; f = decoder.end()) frames.push(f);
    assert.equal(decoder.buffered, 0);
    return { frames };
  } catch (err) {
    if (!(err instanceof TcpServerError) || !TYPED.has(err.code)) throw err;
    // The stream cannot be resynchronized: the same error again, and nothing held.
    assert.throws(
      () => decoder.next(),
      (e) => e === err,
    );
    assert.throws(
      () => decoder.end(),
      (e) => e === err,
    );
    assert.equal(decoder.buffered, 0);
    return { frames, error: err.code };
  }
}

const hex = (o: Outcome<Buffer>) => ({ frames: o.frames.map((f) => f.toString('hex')), error: o.error });

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

/**
 * Encodes each payload: the wire bytes and payloads of those the encoder took, and the error codes
 * of those it refused (for the caller to check).
 */
function encodeAll(encode: FrameEncoder, payloads: Buffer[]) {
  const frames: Buffer[] = [];
  const valid: Buffer[] = [];
  const refused: (string | undefined)[] = [];
  for (const p of payloads) {
    try {
      frames.push(encode(p));
      valid.push(p);
    } catch (err) {
      refused.push((err as TcpServerError).code);
    }
  }
  return { wire: Buffer.concat(frames), valid, refused };
}

/** Pushes each chunk and collects frames; end() at the end. Throws through. */
function decodeChunks<T>(decoder: Decoder<T>, chunks: (string | Buffer)[]): T[] {
  const frames: T[] = [];
  for (const c of chunks) {
    decoder.push(typeof c === 'string' ? Buffer.from(c, 'latin1') : c);
    for (let f = decoder.next(); f !== undefined; f = decoder.next()) frames.push(f);
  }
  for (let f = decoder.end(); f !== undefined; f = decoder.end()) frames.push(f);
  return frames;
}

// Streams over a small alphabet, so that delimiters, partial delimiters and small lengths are common.
const bytes = (alphabet: number[], maxLength = 120) =>
  fc
    .array(fc.oneof(fc.constantFrom(...alphabet), fc.integer({ min: 0, max: 255 })), { maxLength })
    .map((a) => Buffer.from(a));
const cuts = fc.array(fc.nat(), { maxLength: 25 });

// Reference models: the whole stream at once, written the obvious way.

function lineReference(stream: Buffer, max: number): Outcome<Buffer> {
  const frames: Buffer[] = [];
  let start = 0;
  for (let nl = stream.indexOf(10, start); nl >= 0; nl = stream.indexOf(10, start)) {
    const end = nl > start && stream[nl - 1] === 13 ? nl - 1 : nl;
    if (end - start > max) return { frames, error: 'ERR_FRAME_TOO_LARGE' };
    frames.push(stream.subarray(start, end));
    start = nl + 1;
  }
  const rest = stream.subarray(start);
  const cr = rest.at(-1) === 13 ? 1 : 0;
  if (rest.length - cr > max) return { frames, error: 'ERR_FRAME_TOO_LARGE' };
  if (rest.length > 0) frames.push(rest.subarray(0, rest.length - cr));
  return { frames };
}

function delimiterReference(stream: Buffer, delim: Buffer, max: number, keep: boolean): Outcome<Buffer> {
  const frames: Buffer[] = [];
  let start = 0;
  for (let at = stream.indexOf(delim, start); at >= 0; at = stream.indexOf(delim, start)) {
    if (at - start > max) return { frames, error: 'ERR_FRAME_TOO_LARGE' };
    frames.push(stream.subarray(start, keep ? at + delim.length : at));
    start = at + delim.length;
  }
  const rest = stream.subarray(start);
  let partial = 0; // the longest end of `rest` that starts a delimiter
  for (let k = Math.min(rest.length, delim.length - 1); k > 0; k--) {
    if (rest.subarray(rest.length - k).equals(delim.subarray(0, k))) {
      partial = k;
      break;
    }
  }
  if (rest.length - partial > max) return { frames, error: 'ERR_FRAME_TOO_LARGE' };
  if (rest.length > 0) return { frames, error: 'ERR_INCOMPLETE_FRAME' };
  return { frames };
}

interface LengthOptions {
  maxLength: number;
  lengthFieldLength: LengthFieldLength;
  littleEndian: boolean;
  lengthFieldOffset: number;
  lengthAdjustment: number;
  initialBytesToStrip: number;
}

function lengthReference(stream: Buffer, o: LengthOptions): Outcome<Buffer> {
  const frames: Buffer[] = [];
  const header = o.lengthFieldOffset + o.lengthFieldLength;
  let pos = 0;
  while (pos < stream.length) {
    if (stream.length - pos < header) return { frames, error: 'ERR_INCOMPLETE_FRAME' };
    const at = pos + o.lengthFieldOffset;
    const value = o.littleEndian
      ? stream.readUIntLE(at, o.lengthFieldLength)
      : stream.readUIntBE(at, o.lengthFieldLength);
    const remaining = value + o.lengthAdjustment;
    if (remaining < 0) return { frames, error: 'ERR_INVALID_FRAME' };
    if (remaining > o.maxLength) return { frames, error: 'ERR_FRAME_TOO_LARGE' };
    if (o.initialBytesToStrip > header + remaining) return { frames, error: 'ERR_INVALID_FRAME' };
    if (stream.length - pos < header + remaining) return { frames, error: 'ERR_INCOMPLETE_FRAME' };
    frames.push(stream.subarray(pos + o.initialBytesToStrip, pos + header + remaining));
    pos += header + remaining;
  }
  return { frames };
}

describe('lineDecoder', () => {
  // Text lines: no `\n`, and no trailing `\r` (it would be read as part of the line end).
  const line = fc
    .string({ unit: 'binary', maxLength: 30 })
    .map((s) => s.replace(/\n/g, '').replace(/\r+$/, ''));

  test('any split of a stream of lines decodes to the same lines', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(line, fc.boolean()), { maxLength: 15 }),
        fc.boolean(),
        fc.nat({ max: 3 }),
        cuts,
        (lines, lastTerminated, slack, cutAt) => {
          const texts = lines.map(([text]) => text);
          const stream = Buffer.from(
            lines
              .map(
                ([text, crlf], i) =>
                  text + (i < lines.length - 1 || lastTerminated ? (crlf ? '\r\n' : '\n') : ''),
              )
              .join(''),
          );
          const maxLength = Math.max(0, ...texts.map((t) => Buffer.byteLength(t))) + slack;
          const out = drive(lineDecoder({ maxLength }), split(stream, cutAt), maxLength + 1);
          // An unterminated empty last line is no line at all.
          const expected = !lastTerminated && texts.at(-1) === '' ? texts.slice(0, -1) : texts;
          assert.deepEqual(out, { frames: expected });
        },
      ),
      RUNS,
    );
  });

  test('encodeLine then decode round-trips', () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 15 }), cuts, (texts, cutAt) => {
        const maxLength = Math.max(0, ...texts.map((t) => Buffer.byteLength(t)));
        const stream = Buffer.concat(texts.map((t) => encodeLine(t, { maxLength })));
        assert.deepEqual(drive(lineDecoder({ maxLength }), split(stream, cutAt), maxLength + 1), {
          frames: texts,
        });
      }),
      RUNS,
    );
  });

  test('random bytes: same result as the reference for any split; bounded memory; typed errors', () => {
    fc.assert(
      fc.property(bytes([10, 13, 97]), fc.nat({ max: 12 }), cuts, (stream, maxLength, cutAt) => {
        const out = drive(lineDecoder({ maxLength, encoding: null }), split(stream, cutAt), maxLength + 1);
        assert.deepEqual(hex(out), hex(lineReference(stream, maxLength)));
      }),
      RUNS,
    );
  });

  test('a line of exactly maxLength bytes is accepted, one more byte is not', () => {
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 3 }), ['abc\n', 'def\r\n', 'ghi']), [
      'abc',
      'def',
      'ghi',
    ]);
    assert.equal(
      codeOf(() => decodeChunks(lineDecoder({ maxLength: 3 }), ['abcd\n'])),
      'ERR_FRAME_TOO_LARGE',
    );
    assert.equal(
      codeOf(() => decodeChunks(lineDecoder({ maxLength: 3 }), ['abcd\r\n'])),
      'ERR_FRAME_TOO_LARGE',
    );
    assert.equal(
      codeOf(() => decodeChunks(lineDecoder({ maxLength: 3 }), ['abcd'])),
      'ERR_FRAME_TOO_LARGE',
    );
    // Multi-byte characters: the limit is in bytes.
    assert.equal(
      codeOf(() =>
        decodeChunks(
          lineDecoder({ maxLength: 3 }),
          ['é\n', 'éé\n'].map((s) => Buffer.from(s)),
        ),
      ),
      'ERR_FRAME_TOO_LARGE',
    );
  });

  test('an overlong line fails as soon as it is known, before its newline arrives', () => {
    const d = lineDecoder({ maxLength: 4 });
    d.push(Buffer.from('abcd'));
    assert.equal(d.next(), undefined);
    d.push(Buffer.from('\r')); // may still be the `\r` of a `\r\n`: not yet too long
    assert.equal(d.next(), undefined);
    assert.equal(d.buffered, 5);
    d.push(Buffer.from('\n'));
    assert.equal(d.next(), 'abcd');
    d.push(Buffer.from('abcde'));
    assert.throws(() => d.next(), { code: 'ERR_FRAME_TOO_LARGE', maxLength: 4 });
    assert.equal(d.buffered, 0);
    d.push(Buffer.from('more\n')); // ignored: the stream is broken
    assert.equal(d.buffered, 0);
    assert.throws(() => d.next(), { code: 'ERR_FRAME_TOO_LARGE' });
  });

  test('CRLF split across chunks, and a lone CR kept inside a line', () => {
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 10 }), ['ab\r', '\ncd', '\r', '', '\n']), [
      'ab',
      'cd',
    ]);
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 10 }), ['a\rb\n', '\r\r\n']), ['a\rb', '\r']);
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 10 }), ['a', '\r', '\r', '\n']), ['a\r']);
  });

  test('empty lines, and end() with and without a last unterminated line', () => {
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 0 }), ['\n\r\n', '\n']), ['', '', '']);
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 5 }), ['a\nlast']), ['a', 'last']);
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 5 }), ['a\nlast\r']), ['a', 'last']);
    const d = lineDecoder({ maxLength: 5 });
    assert.equal(d.end(), undefined);
    d.push(Buffer.from('x'));
    assert.equal(d.next(), undefined);
    assert.equal(d.end(), 'x');
    assert.equal(d.end(), undefined);
  });

  test('encoding: strings by default, Buffers with null, others by name', () => {
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 8 }), [Buffer.from('héllo\n')]), ['héllo']);
    assert.deepEqual(decodeChunks(lineDecoder({ maxLength: 8, encoding: 'hex' }), ['\x01\xff\n']), ['01ff']);
    const [frame] = decodeChunks(lineDecoder({ maxLength: 8, encoding: null }), ['ab\n']);
    assert.ok(Buffer.isBuffer(frame));
    assert.equal(frame.toString(), 'ab');
    assert.throws(() => lineDecoder({ maxLength: 8, encoding: 'utf16le' }), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => lineDecoder({ maxLength: 8, encoding: 'nope' as BufferEncoding }), {
      code: 'ERR_INVALID_OPTION',
    });
  });

  test('a line within one chunk is returned without copying', () => {
    const d = lineDecoder({ maxLength: 8, encoding: null });
    const chunk = Buffer.from('ab\ncd\n');
    d.push(chunk);
    const a = d.next()!;
    const b = d.next()!;
    assert.equal(a.buffer, chunk.buffer);
    assert.equal(b.byteOffset, chunk.byteOffset + 3);
  });

  test('a long line trickling in byte by byte is not rescanned (linear time)', () => {
    const n = 200_000;
    const d = lineDecoder({ maxLength: n, encoding: null });
    const started = process.hrtime.bigint();
    const byte = Buffer.from('x');
    for (let i = 0; i < n; i++) {
      d.push(byte);
      assert.equal(d.next(), undefined);
    }
    d.push(Buffer.from('\n'));
    assert.equal(d.next()!.length, n);
    // Quadratic rescanning would take minutes; linear takes tens of milliseconds.
    assert.ok(Number(process.hrtime.bigint() - started) / 1e6 < 3000);
  });

  test('encodeLine refuses newlines and overlong text', () => {
    assert.equal(encodeLine('hi').toString(), 'hi\n');
    assert.equal(encodeLine(Buffer.from('hi'), { maxLength: 2 }).toString(), 'hi\n');
    assert.equal(encodeLine('').toString(), '\n');
    assert.throws(() => encodeLine('a\nb'), { code: 'ERR_INVALID_FRAME' });
    assert.throws(() => encodeLine('abc', { maxLength: 2 }), { code: 'ERR_FRAME_TOO_LARGE' });
    assert.throws(() => encodeLine('é', { maxLength: 1 }), { code: 'ERR_FRAME_TOO_LARGE' });
  });

  test('maxLength is mandatory and validated', () => {
    assert.throws(() => lineDecoder({} as never), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => lineDecoder({ maxLength: -1 }), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => lineDecoder({ maxLength: Number.POSITIVE_INFINITY }), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => lineDecoder({ maxLength: 1.5 }), { code: 'ERR_INVALID_OPTION' });
  });
});

/** `fn` throws an instance of `cls` (not merely an error with its code), with `code`, its message containing `message`. */
function throwsTyped(
  fn: () => unknown,
  cls: abstract new (...args: never[]) => TcpServerError,
  code: string,
  message: string,
): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof cls, `expected a ${cls.name}, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.ok(
      err.message.includes(message),
      `${JSON.stringify(err.message)} lacks ${JSON.stringify(message)}`,
    );
    return true;
  });
}

// Regressions of the defects the fuzz suite found (test/fuzz/properties.ts).
describe('encodeLine: defects found by fuzzing', () => {
  test("'hex' / 'base64' / 'base64url': the line is exactly the decoded bytes, never uninitialised memory", () => {
    // Buffer.byteLength is an upper bound for these encodings: characters that do not decode are
    // skipped, as Buffer.from skips them, and no byte of the rest of the buffer is sent.
    assert.deepEqual(encodeLine('zz', { encoding: 'hex' }), Buffer.from([0x0a]));
    assert.deepEqual(encodeLine('aGk=', { encoding: 'base64' }), Buffer.from('hi\n'));
    assert.deepEqual(encodeLine('aGk', { encoding: 'base64url' }), Buffer.from('hi\n'));
    assert.deepEqual(encodeLine('6869zz', { encoding: 'hex' }), Buffer.from('hi\n'));
    assert.deepEqual(encodeLine('!!!!', { encoding: 'base64' }), Buffer.from('\n'));
    const junk = '!'.repeat(1000); // Buffer.byteLength says 750 bytes; none decodes
    for (let i = 0; i < 200; i++) {
      Buffer.allocUnsafe(751).fill(0x2a); // leave other data in the pool for a stray byte to show
      assert.deepEqual(encodeLine(junk, { encoding: 'base64' }), Buffer.from('\n'), `call ${i}`);
    }
    // maxLength counts the bytes written, not the estimate (5 bytes for '!!!!aGk=').
    assert.deepEqual(encodeLine('!!!!aGk=', { encoding: 'base64', maxLength: 2 }), Buffer.from('hi\n'));
    throwsTyped(
      () => encodeLine('!!!!aGk=', { encoding: 'base64', maxLength: 1 }),
      FrameTooLargeError,
      'ERR_FRAME_TOO_LARGE',
      'frame of 2 bytes exceeds the maximum length of 1 bytes',
    );
  });

  test('options that are not an object, and an unknown encoding, are InvalidOptionError (not TypeError)', () => {
    throwsTyped(
      () => encodeLine('x', null as never),
      InvalidOptionError,
      'ERR_INVALID_OPTION',
      'encodeLine: options must be an object, got null',
    );
    throwsTyped(
      () => lengthPrefixedEncoder(null as never),
      InvalidOptionError,
      'ERR_INVALID_OPTION',
      'lengthPrefixedEncoder: options must be an object, got null',
    );
    throwsTyped(
      () => encodeLine('x', 'utf8' as never),
      InvalidOptionError,
      'ERR_INVALID_OPTION',
      'encodeLine: options must be an object, got "utf8"',
    );
    throwsTyped(
      () => encodeLine('x', { encoding: 'nope' as never }),
      InvalidOptionError,
      'ERR_INVALID_OPTION',
      'encodeLine: unsupported encoding "nope"',
    );
    throwsTyped(
      () => encodeLine('x', { encoding: null as never }),
      InvalidOptionError,
      'ERR_INVALID_OPTION',
      'encodeLine: unsupported encoding null',
    );
    // Leaving the options out is still the default.
    assert.deepEqual(encodeLine('x', undefined), Buffer.from('x\n'));
    assert.deepEqual(lengthPrefixedEncoder(undefined)('x'), Buffer.from([0, 0, 0, 1, 0x78]));
  });

  test("a line ending in '\\r' is refused with InvalidFrameError: a line decoder would strip it", () => {
    const message = 'line ends with "\\r", which a line decoder strips';
    throwsTyped(() => encodeLine('a\r'), InvalidFrameError, 'ERR_INVALID_FRAME', message);
    throwsTyped(() => encodeLine('\r'), InvalidFrameError, 'ERR_INVALID_FRAME', message);
    throwsTyped(() => encodeLine(Buffer.from('ok\r')), InvalidFrameError, 'ERR_INVALID_FRAME', message);
    throwsTyped(
      () => encodeLine('610d', { encoding: 'hex' }),
      InvalidFrameError,
      'ERR_INVALID_FRAME',
      message,
    );
    // Why: the decoder reads 'a\r\n' as the line 'a'.
    const decoder = lineDecoder({ maxLength: 10 });
    decoder.push(Buffer.from('a\r\n'));
    assert.equal(decoder.next(), 'a');
    // A \r elsewhere, or a last byte that is not 0x0d, is sent as is.
    assert.deepEqual(encodeLine('\ra'), Buffer.from('\ra\n'));
    assert.deepEqual(encodeLine('a\r', { encoding: 'utf16le' }), Buffer.from([0x61, 0, 0x0d, 0, 0x0a]));
  });
});

describe('delimiterDecoder', () => {
  const delimiter = fc
    .array(fc.constantFrom(0, 1, 2), { minLength: 1, maxLength: 4 })
    .map((a) => Buffer.from(a));

  test('encode then decode round-trips, for any split', () => {
    fc.assert(
      fc.property(
        delimiter,
        fc.array(bytes([0, 1, 2], 20), { maxLength: 12 }),
        fc.boolean(),
        cuts,
        (delim, payloads, keepDelimiter, cutAt) => {
          const { wire, valid, refused } = encodeAll(delimiterEncoder({ delimiter: delim }), payloads);
          for (const code of refused) assert.equal(code, 'ERR_INVALID_FRAME');
          const maxLength = Math.max(0, ...valid.map((p) => p.length));
          const out = drive(
            delimiterDecoder({ delimiter: delim, maxLength, keepDelimiter }),
            split(wire, cutAt),
            maxLength + delim.length - 1,
          );
          const expected = keepDelimiter ? valid.map((p) => Buffer.concat([p, delim])) : valid;
          assert.deepEqual(hex(out), hex({ frames: expected }));
        },
      ),
      RUNS,
    );
  });

  test('random bytes: same result as the reference for any split; bounded memory; typed errors', () => {
    fc.assert(
      fc.property(
        delimiter,
        bytes([0, 1, 2]),
        fc.nat({ max: 12 }),
        fc.boolean(),
        cuts,
        (delim, stream, maxLength, keepDelimiter, cutAt) => {
          const out = drive(
            delimiterDecoder({ delimiter: delim, maxLength, keepDelimiter }),
            split(stream, cutAt),
            maxLength + delim.length - 1,
          );
          assert.deepEqual(hex(out), hex(delimiterReference(stream, delim, maxLength, keepDelimiter)));
        },
      ),
      RUNS,
    );
  });

  test('a delimiter split across chunks in every way is found', () => {
    const stream = Buffer.from('ab\r\n\r\ncd\r\n\r\n');
    for (let i = 0; i <= stream.length; i++) {
      for (let j = i; j <= stream.length; j++) {
        const chunks = [stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)];
        const frames = decodeChunks(delimiterDecoder({ delimiter: '\r\n\r\n', maxLength: 2 }), chunks);
        assert.deepEqual(
          frames.map((f) => f.toString()),
          ['ab', 'cd'],
        );
      }
    }
    // Overlapping partial matches: `aab` in `aaab`.
    assert.deepEqual(
      decodeChunks(delimiterDecoder({ delimiter: 'aab', maxLength: 5 }), ['xa', 'a', 'aab', 'a', 'ab']).map(
        String,
      ),
      ['xaa', ''],
    );
  });

  test('exactly maxLength is accepted, one more byte is not, and is detected early', () => {
    const ok = decodeChunks(delimiterDecoder({ delimiter: '||', maxLength: 3 }), ['abc||', 'de|', '|']);
    assert.deepEqual(ok.map(String), ['abc', 'de']);
    assert.equal(
      codeOf(() => decodeChunks(delimiterDecoder({ delimiter: '||', maxLength: 3 }), ['abcd||'])),
      'ERR_FRAME_TOO_LARGE',
    );
    const d = delimiterDecoder({ delimiter: '||', maxLength: 3 });
    d.push(Buffer.from('abc|')); // `|` may start the delimiter
    assert.equal(d.next(), undefined);
    d.push(Buffer.from('x'));
    assert.throws(() => d.next(), { code: 'ERR_FRAME_TOO_LARGE' });
  });

  test('empty frames, keepDelimiter, and end() inside a frame', () => {
    assert.deepEqual(
      decodeChunks(delimiterDecoder({ delimiter: '\0', maxLength: 0 }), ['\0\0', '\0']).map((f) => f.length),
      [0, 0, 0],
    );
    assert.deepEqual(
      decodeChunks(delimiterDecoder({ delimiter: Uint8Array.of(0), maxLength: 2, keepDelimiter: true }), [
        'a\0b',
        '\0',
      ]).map(String),
      ['a\0', 'b\0'],
    );
    const d = delimiterDecoder({ delimiter: ';', maxLength: 9 });
    d.push(Buffer.from('a;partial'));
    assert.equal(d.next()!.toString(), 'a');
    assert.equal(d.next(), undefined);
    assert.throws(() => d.end(), { code: 'ERR_INCOMPLETE_FRAME', buffered: 7 });
    assert.equal(delimiterDecoder({ delimiter: ';', maxLength: 9 }).end(), undefined);
  });

  test('encoder refuses payloads that would decode differently', () => {
    const enc = delimiterEncoder({ delimiter: 'aa', maxLength: 3 });
    assert.equal(enc('b').toString(), 'baa');
    assert.throws(() => enc('a'), { code: 'ERR_INVALID_FRAME' }); // `aaa` decodes as '' + 'a...'
    assert.throws(() => enc('baab'), { code: 'ERR_FRAME_TOO_LARGE' });
    assert.throws(() => delimiterEncoder({ delimiter: ';' })('x;y'), { code: 'ERR_INVALID_FRAME' });
  });

  test('options are validated', () => {
    assert.throws(() => delimiterDecoder({ delimiter: '', maxLength: 1 }), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => delimiterDecoder({ delimiter: ';' } as never), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => delimiterEncoder({ delimiter: new Uint8Array(0) }), { code: 'ERR_INVALID_OPTION' });
  });
});

describe('lengthPrefixedDecoder', () => {
  const width = fc.constantFrom<LengthFieldLength>(1, 2, 4);

  test('encode then decode round-trips, for any split', () => {
    fc.assert(
      fc.property(
        width,
        fc.boolean(),
        fc.integer({ min: -4, max: 4 }),
        fc.array(bytes([0, 1], 300), { maxLength: 10 }),
        cuts,
        (lengthFieldLength, littleEndian, lengthAdjustment, payloads, cutAt) => {
          const encode = lengthPrefixedEncoder({ lengthFieldLength, littleEndian, lengthAdjustment });
          const { wire, valid, refused } = encodeAll(encode, payloads);
          for (const code of refused) assert.ok(TYPED.has(code!), `untyped refusal: ${code}`);
          const maxLength = Math.max(0, ...valid.map((p) => p.length));
          const decoder = lengthPrefixedDecoder({
            maxLength,
            lengthFieldLength,
            littleEndian,
            lengthAdjustment,
          });
          const out = drive(decoder, split(wire, cutAt), maxLength + lengthFieldLength);
          assert.deepEqual(hex(out), hex({ frames: valid }));
        },
      ),
      RUNS,
    );
  });

  test('random bytes with random options: same result as the reference for any split; bounded memory', () => {
    fc.assert(
      fc.property(
        fc.record({
          maxLength: fc.nat({ max: 20 }),
          lengthFieldLength: width,
          littleEndian: fc.boolean(),
          lengthFieldOffset: fc.nat({ max: 2 }),
          lengthAdjustment: fc.integer({ min: -6, max: 3 }),
          initialBytesToStrip: fc.nat({ max: 8 }),
        }),
        bytes([0, 0, 0, 1, 2, 3]),
        cuts,
        (options, stream, cutAt) => {
          const held = options.maxLength + options.lengthFieldOffset + options.lengthFieldLength;
          const out = drive(lengthPrefixedDecoder(options), split(stream, cutAt), held);
          assert.deepEqual(hex(out), hex(lengthReference(stream, options)));
        },
      ),
      RUNS,
    );
  });

  test('a payload of exactly maxLength is accepted; a header announcing one more fails at once', () => {
    const enc = lengthPrefixedEncoder({ lengthFieldLength: 2 });
    const ok = decodeChunks(lengthPrefixedDecoder({ maxLength: 3, lengthFieldLength: 2 }), [
      enc('abc'),
      enc(''),
    ]);
    assert.deepEqual(ok.map(String), ['abc', '']);
    const d = lengthPrefixedDecoder({ maxLength: 3, lengthFieldLength: 2 });
    d.push(Buffer.from([0, 4])); // no payload byte yet
    assert.throws(() => d.next(), { code: 'ERR_FRAME_TOO_LARGE', maxLength: 3 });
    const big = lengthPrefixedDecoder({ maxLength: 1000 });
    big.push(Buffer.from([0xff, 0xff, 0xff, 0xff])); // 4 GiB announced: refused, nothing allocated
    assert.throws(() => big.next(), { code: 'ERR_FRAME_TOO_LARGE' });
  });

  test('a header split across chunks, byte by byte, in both byte orders', () => {
    for (const littleEndian of [false, true]) {
      const frame = lengthPrefixedEncoder({ littleEndian })(Buffer.alloc(300, 7));
      const d = lengthPrefixedDecoder({ maxLength: 300, littleEndian });
      const frames = decodeChunks(
        d,
        [...frame].map((b) => Buffer.of(b)),
      );
      assert.equal(frames.length, 1);
      assert.deepEqual(frames[0], Buffer.alloc(300, 7));
    }
  });

  test("Netty's documented layouts", () => {
    const hello = Buffer.from('HELLO, WORLD');
    // Length 0x000C at offset 1 between two 1-byte header fields; strip HDR1 and the length.
    const d1 = lengthPrefixedDecoder({
      maxLength: 13,
      lengthFieldOffset: 1,
      lengthFieldLength: 2,
      lengthAdjustment: 1,
      initialBytesToStrip: 3,
    });
    const f1 = decodeChunks(d1, [Buffer.concat([Buffer.of(0xca, 0x00, 0x0c, 0xfe), hello])]);
    assert.deepEqual(f1, [Buffer.concat([Buffer.of(0xfe), hello])]);
    // Same, but the length (0x0010) counts the whole message.
    const d2 = lengthPrefixedDecoder({
      maxLength: 13,
      lengthFieldOffset: 1,
      lengthFieldLength: 2,
      lengthAdjustment: -3,
      initialBytesToStrip: 3,
    });
    const f2 = decodeChunks(d2, [Buffer.concat([Buffer.of(0xca, 0x00, 0x10, 0xfe), hello])]);
    assert.deepEqual(f2, [Buffer.concat([Buffer.of(0xfe), hello])]);
    // Keep the header: initialBytesToStrip 0.
    const d3 = lengthPrefixedDecoder({ maxLength: 12, lengthFieldLength: 2, initialBytesToStrip: 0 });
    const wire = Buffer.concat([Buffer.of(0x00, 0x0c), hello]);
    assert.deepEqual(decodeChunks(d3, [wire]), [wire]);
  });

  test('a negative computed length, or a frame shorter than the bytes to strip, is invalid', () => {
    const d = lengthPrefixedDecoder({ maxLength: 10, lengthFieldLength: 1, lengthAdjustment: -2 });
    d.push(Buffer.of(1));
    assert.throws(() => d.next(), { code: 'ERR_INVALID_FRAME' });
    const e = lengthPrefixedDecoder({ maxLength: 10, lengthFieldLength: 1, initialBytesToStrip: 3 });
    e.push(Buffer.of(1, 9));
    assert.throws(() => e.next(), { code: 'ERR_INVALID_FRAME' });
  });

  test('end() inside a header or a payload is an incomplete frame; empty frames are frames', () => {
    const a = lengthPrefixedDecoder({ maxLength: 5 });
    a.push(Buffer.of(0, 0));
    assert.equal(a.next(), undefined);
    assert.throws(() => a.end(), { code: 'ERR_INCOMPLETE_FRAME', buffered: 2 });
    const b = lengthPrefixedDecoder({ maxLength: 5 });
    b.push(Buffer.of(0, 0, 0, 2, 1));
    assert.equal(b.next(), undefined);
    assert.equal(b.buffered, 5);
    assert.throws(() => b.end(), { code: 'ERR_INCOMPLETE_FRAME', buffered: 5 });
    const c = lengthPrefixedDecoder({ maxLength: 0, lengthFieldLength: 1 });
    assert.deepEqual(decodeChunks(c, [Buffer.of(0, 0)]), [Buffer.alloc(0), Buffer.alloc(0)]);
  });

  test('a frame within one chunk is returned without copying', () => {
    const chunk = Buffer.concat([lengthPrefixedEncoder()('abc'), lengthPrefixedEncoder()('de')]);
    const d = lengthPrefixedDecoder({ maxLength: 5 });
    d.push(chunk);
    assert.equal(d.next()!.buffer, chunk.buffer);
    assert.equal(d.next()!.byteOffset, chunk.byteOffset + 11);
  });

  test('encoder limits: maxLength, field width, lengthAdjustment', () => {
    assert.throws(() => lengthPrefixedEncoder({ maxLength: 2 })('abc'), { code: 'ERR_FRAME_TOO_LARGE' });
    assert.equal(lengthPrefixedEncoder({ lengthFieldLength: 1 })(Buffer.alloc(255)).length, 256);
    assert.throws(() => lengthPrefixedEncoder({ lengthFieldLength: 1 })(Buffer.alloc(256)), {
      code: 'ERR_FRAME_TOO_LARGE',
    });
    // The field counts itself: 253 payload bytes + 2 = 255 is the most a 1-byte field can say.
    const selfCounting = lengthPrefixedEncoder({ lengthFieldLength: 1, lengthAdjustment: -1 });
    assert.equal(selfCounting(Buffer.alloc(254))[0], 255);
    assert.throws(() => selfCounting(Buffer.alloc(255)), { code: 'ERR_FRAME_TOO_LARGE' });
    assert.throws(() => lengthPrefixedEncoder({ lengthAdjustment: 2 })('a'), { code: 'ERR_INVALID_FRAME' });
    assert.deepEqual(
      [...lengthPrefixedEncoder({ lengthFieldLength: 2, littleEndian: true })('abc')],
      [3, 0, 97, 98, 99],
    );
  });

  test('options are validated', () => {
    assert.throws(() => lengthPrefixedDecoder({} as never), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => lengthPrefixedDecoder(undefined as never), { code: 'ERR_INVALID_OPTION' });
    assert.throws(() => lengthPrefixedDecoder({ maxLength: 1, lengthFieldLength: 3 as never }), {
      code: 'ERR_INVALID_OPTION',
    });
    assert.throws(() => lengthPrefixedDecoder({ maxLength: 1, lengthFieldOffset: -1 }), {
      code: 'ERR_INVALID_OPTION',
    });
    assert.throws(() => lengthPrefixedDecoder({ maxLength: 1, lengthAdjustment: 0.5 }), {
      code: 'ERR_INVALID_OPTION',
    });
    assert.throws(() => lengthPrefixedEncoder({ lengthFieldLength: 8 as never }), {
      code: 'ERR_INVALID_OPTION',
    });
  });
});
