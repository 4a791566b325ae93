/**
 * Fuzz properties of every parser of untrusted input: the address parser (src/address.ts), the
 * framing codecs (src/codec/), the RESP example's request decoder (examples/resp/) and the PROXY
 * protocol parser (src/proxy-protocol.ts).
 *
 * One list, two drivers: `npm run fuzz` (test/fuzz/run.ts) runs each property 10,000 times with a
 * fresh seed, and test/fuzz.test.ts runs the same properties a few hundred times with a fixed seed.
 * A property throws (an assertion, or an error that escaped the parser) to report a failure.
 *
 * They are written as a fuzzer's oracles, not as unit tests: random and mutated inputs, random
 * chunking, and checks that hold for any input (only the documented typed errors escape, errors
 * stick, `maxLength` and the buffered bytes stay bounded, every call makes progress or changes
 * nothing, the outcome does not depend on how the bytes were split, what is decoded is exactly
 * what the stream holds). Besides, inputs built from a model give exact answers: addresses from a
 * host and a port (accepted exactly when both are valid), RESP commands around each limit, PROXY
 * headers that must parse to the very header they encode, and the same with one defect, which must
 * be refused (IPv6 text is checked against Node's own printing, CRC32C against a bitwise one). The
 * hand-written examples live in the unit tests (test/codec.test.ts, test/resp-protocol.test.ts,
 * test/proxy-protocol.test.ts, test/address.test.ts).
 *
 * @module
 */

import assert from 'node:assert/strict';
import { isIP, SocketAddress } from 'node:net';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { MAX_HEADER_LINE, type RespCommand, RespDecoder } from '../../examples/resp/decoder.js';
import { splitInlineArgs } from '../../examples/resp/inline.js';
import { INT64_MAX, INT64_MIN, parseInt64 } from '../../examples/resp/integer.js';
import {
  formatAddress,
  type ListenSpec,
  type Network,
  parseAddress,
  parseNetwork,
  toBoundAddress,
} from '../../src/address.js';
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
} from '../../src/codec/index.js';
import {
  FrameTooLargeError,
  IncompleteFrameError,
  InvalidAddressError,
  InvalidFrameError,
  InvalidOptionError,
  ProxyProtocolError,
  TcpServerError,
} from '../../src/errors.js';
import {
  crc32c,
  maxProxyHeaderLength,
  PP2_SUBTYPE_SSL,
  PP2_TYPE,
  type ProxyHeader,
  type ProxyInetAddress,
  type ProxyTlv,
  type ProxyVersions,
  parseProxyHeader,
} from '../../src/proxy-protocol.js';

/** What a property fuzzes; the runner sums run counts and timings per target. */
export type FuzzTarget =
  | 'address'
  | 'codec/line'
  | 'codec/delimiter'
  | 'codec/length-prefixed'
  | 'codec/options'
  | 'resp'
  | 'proxy-protocol';

export interface FuzzProperty {
  target: FuzzTarget;
  /** Unique; `FUZZ_ONLY` matches it. */
  name: string;
  property: fc.IProperty<unknown>;
}

// =============================================================================================
// Shared helpers

/**
 * fast-check 4 sizes every array and string `'small'` by default: whatever its `maxLength`, it
 * generates at most about 10 elements. The generators below that need long inputs (noise streams,
 * many chunk cuts, long paths and numbers) say `size: 'max'` so that their `maxLength` is reached.
 */
const FULL = { size: 'max' } as const;

/** The class of each code a parser of input may throw: a code must come with its class. */
const CLASS_OF: Record<string, abstract new (...args: never[]) => TcpServerError> = {
  ERR_FRAME_TOO_LARGE: FrameTooLargeError,
  ERR_INVALID_FRAME: InvalidFrameError,
  ERR_INCOMPLETE_FRAME: IncompleteFrameError,
  ERR_INVALID_ADDRESS: InvalidAddressError,
  ERR_INVALID_OPTION: InvalidOptionError,
  ERR_PROXY_PROTOCOL: ProxyProtocolError,
};

/** The codes a decoder may throw (src/codec/decoder.ts, src/errors.ts). */
const DECODER_CODES = ['ERR_FRAME_TOO_LARGE', 'ERR_INVALID_FRAME', 'ERR_INCOMPLETE_FRAME'] as const;
/** The codes an encoder may throw for a payload it refuses. */
const ENCODER_CODES = ['ERR_FRAME_TOO_LARGE', 'ERR_INVALID_FRAME'] as const;

/** Returns `err` if it is a typed error with one of `codes` (and of the class of its code); fails otherwise. */
function typed(err: unknown, codes: readonly string[]): TcpServerError {
  if (!(err instanceof TcpServerError) || !codes.includes(err.code)) {
    assert.fail(`expected a typed error (${codes.join(', ')}), got ${inspect(err)}`);
  }
  const cls = CLASS_OF[err.code];
  assert.ok(cls !== undefined && err instanceof cls, `${err.name} carries the code ${err.code}`);
  assert.ok(err.message.length > 0, 'a typed error says what is wrong');
  return err;
}

/** The typed error `fn` throws with one of `codes`, or undefined if it returns. */
function attempt<T>(fn: () => T, codes: readonly string[]): { value: T } | { error: TcpServerError } {
  try {
    return { value: fn() };
  } catch (err) {
    return { error: typed(err, codes) };
  }
}

/**
 * How a stream arrives: cut at these positions (any order, repeats give empty chunks) or byte by
 * byte, and drained (next() until nothing) after every `drainEvery` chunks, as a reader that falls
 * behind the socket would.
 */
interface Chunking {
  cuts: number[] | 'bytes';
  drainEvery: number;
}

const chunking: fc.Arbitrary<Chunking> = fc.record({
  cuts: fc.oneof(
    { weight: 6, arbitrary: fc.array(fc.nat(), { maxLength: 40, ...FULL }) },
    { weight: 2, arbitrary: fc.array(fc.nat(), { minLength: 40, maxLength: 400, ...FULL }) },
    { weight: 1, arbitrary: fc.constant('bytes' as const) },
  ),
  drainEvery: fc.oneof({ weight: 4, arbitrary: fc.constant(1) }, fc.integer({ min: 2, max: 6 })),
});

/** Cuts `stream` as `how` says, each chunk a fresh buffer, as a socket delivers them. */
function split(stream: Buffer, how: Chunking): Buffer[] {
  if (how.cuts === 'bytes') return Array.from(stream, (b) => Buffer.from([b]));
  const points = how.cuts.map((c) => c % (stream.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(Buffer.from(stream.subarray(prev, p)));
    prev = p;
  }
  chunks.push(Buffer.from(stream.subarray(prev)));
  return chunks;
}

/** Bytes over a small alphabet (the bytes that matter to a codec) mixed with any byte. */
const bytesOver = (alphabet: readonly number[], maxLength: number): fc.Arbitrary<Buffer> =>
  fc
    .array(
      fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...alphabet) }, fc.integer({ min: 0, max: 255 })),
      { maxLength, ...FULL },
    )
    .map((a) => Buffer.from(a));

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

/** One edit of a fuzzer's mutator. `at` and `len` are reduced modulo the input's size. */
interface Mutation {
  op: number;
  at: number;
  len: number;
  byte: number;
}

const mutations: fc.Arbitrary<Mutation[]> = fc.array(
  fc.record({
    op: fc.nat({ max: 7 }),
    at: fc.nat(),
    len: fc.integer({ min: 1, max: 8 }),
    byte: fc.oneof(fc.constantFrom(0x00, 0x0a, 0x0d, 0x20, 0x7f, 0x80, 0xff), fc.nat({ max: 255 })),
  }),
  { minLength: 1, maxLength: 4 },
);

/**
 * Applies the edits to a copy of `input`: flip a bit, overwrite a byte, insert, delete, duplicate a
 * slice, truncate, swap two bytes, add or subtract one (length fields off by one).
 */
function mutate(input: Buffer, edits: Mutation[]): Buffer {
  let b = Buffer.from(input);
  for (const m of edits) {
    const at = m.at % (b.length + 1);
    const i = b.length === 0 ? -1 : m.at % b.length;
    switch (m.op) {
      case 0:
        if (i >= 0) b[i] = b[i]! ^ (1 << (m.byte & 7));
        break;
      case 1:
        if (i >= 0) b[i] = m.byte;
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, at), Buffer.alloc(m.len, m.byte), b.subarray(at)]);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at + m.len), b.subarray(at)]);
        break;
      case 5:
        b = b.subarray(0, at);
        break;
      case 6:
        if (i >= 0) {
          const j = (i + m.len) % b.length;
          const t = b[i]!;
          b[i] = b[j]!;
          b[j] = t;
        }
        break;
      default:
        if (i >= 0) b[i] = (b[i]! + (m.byte & 1 ? 1 : 255)) & 0xff;
    }
  }
  return b;
}

/** A valid input, the same mutated, or noise: the three kinds of input a fuzzer feeds. */
function validMutatedOrNoise(valid: fc.Arbitrary<Buffer>, noise: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.oneof(
    valid,
    fc.tuple(valid, mutations).map(([v, m]) => mutate(v, m)),
    noise,
  );
}

// ---------------------------------------------------------------------------------------------
// Driving a decoder

interface Driven<T> {
  frames: T[];
  /** The code of the error that ended the stream, if one did. */
  code?: string;
  error?: TcpServerError;
}

interface DriveOptions<T> {
  /** Most bytes a drained decoder may hold (right after a push: this plus the chunk). */
  held: number;
  codes: readonly string[];
  /** The limits a FrameTooLargeError may name. */
  limits: readonly number[];
  /** Extra next() calls after each one that returned nothing: they must change nothing. */
  extra: number;
  check: (frame: T) => void;
}

/** Options for a well-formed stream: no error may end it, and only `held` bytes may wait. */
function wellFormed<T>(held: number): DriveOptions<T> {
  return { held, codes: [], limits: [], extra: 0, check: () => {} };
}

/**
 * Feeds `chunks` the way `conn.readFrame` does (push, next() until undefined, end() at the end;
 * draining after every `drainEvery` chunks) and checks what must hold for any input: push adds
 * exactly the chunk to `buffered`; `buffered` stays within `held` (plus what was pushed since the
 * last drain); every frame consumes bytes (so draining ends: no hang); a next() that returns
 * nothing consumes no frame's bytes and, repeated, changes nothing; only typed errors escape, and
 * they stick (the same error again, nothing held, pushes ignored).
 */
function drive<T>(decoder: Decoder<T>, chunks: Buffer[], o: DriveOptions<T>, drainEvery = 1): Driven<T> {
  const frames: T[] = [];
  let atEnd = -1; // buffered right before end(), for IncompleteFrameError.buffered
  let pushed = 0; // bytes pushed since the last drain
  try {
    for (const [index, chunk] of chunks.entries()) {
      const before = decoder.buffered;
      decoder.push(chunk);
      pushed += chunk.length;
      assert.equal(decoder.buffered, before + chunk.length, 'push() adds the chunk to buffered');
      assert.ok(decoder.buffered <= o.held + pushed, `buffered ${decoder.buffered} > ${o.held} + ${pushed}`);
      if ((index + 1) % drainEvery !== 0 && index + 1 < chunks.length) continue;
      pushed = 0;
      for (;;) {
        const held = decoder.buffered;
        const frame = decoder.next();
        if (frame === undefined) {
          assert.ok(decoder.buffered <= held, 'next() returned nothing but took bytes in');
          break;
        }
        o.check(frame);
        frames.push(frame);
        assert.ok(decoder.buffered < held, 'a frame consumes bytes');
      }
      for (let i = 0; i < o.extra; i++) {
        const held = decoder.buffered;
        assert.equal(decoder.next(), undefined, 'next() again, with no new bytes, found a frame');
        assert.equal(decoder.buffered, held, 'next() again, with no new bytes, changed buffered');
      }
      assert.ok(decoder.buffered <= o.held, `buffered ${decoder.buffered} > ${o.held} after draining`);
    }
    for (;;) {
      atEnd = decoder.buffered;
      const frame = decoder.end();
      if (frame === undefined) break;
      o.check(frame);
      frames.push(frame);
      assert.ok(decoder.buffered < atEnd, 'a frame consumes bytes');
    }
    assert.equal(decoder.buffered, 0, 'end() returned nothing but bytes are still held');
    return { frames };
  } catch (err) {
    const e = typed(err, o.codes);
    if (e instanceof FrameTooLargeError) {
      assert.ok(o.limits.includes(e.maxLength), `FrameTooLargeError names ${e.maxLength}, not a limit`);
    }
    if (e instanceof IncompleteFrameError) {
      assert.ok(atEnd > 0 && e.buffered === atEnd, `IncompleteFrameError.buffered ${e.buffered} != ${atEnd}`);
    }
    // The stream cannot be resynchronized: the same error, nothing held, new bytes ignored.
    assert.equal(decoder.buffered, 0, 'a failed decoder holds no bytes');
    decoder.push(Buffer.from('x\r\n'));
    assert.equal(decoder.buffered, 0, 'a failed decoder takes no bytes');
    assert.throws(
      () => decoder.next(),
      (x) => x === err,
    );
    assert.throws(
      () => decoder.end(),
      (x) => x === err,
    );
    return { frames, code: e.code, error: e };
  }
}

const hexOf = (d: Driven<Buffer>) => ({ frames: d.frames.map((f) => f.toString('hex')), code: d.code });

/** Decodes `stream` whole and as `how` cuts it: both must give the same frames and the same error. */
function wholeAndSplit(
  make: () => Decoder<Buffer>,
  stream: Buffer,
  how: Chunking,
  o: DriveOptions<Buffer>,
): Driven<Buffer> {
  const whole = drive(make(), [Buffer.from(stream)], o);
  const parts = drive(make(), split(stream, how), o, how.drainEvery);
  assert.deepEqual(hexOf(parts), hexOf(whole), 'the outcome depends on how the bytes were split');
  return whole;
}

// =============================================================================================
// address: parseNetwork, parseAddress, formatAddress, toBoundAddress

const NETWORKS: Network[] = ['tcp', 'tcp4', 'tcp6', 'unix'];
const network = fc.constantFrom(...NETWORKS);
/** sun_path less its NUL, as address.ts has it. */
const UNIX_PATH_MAX = process.platform === 'linux' ? 107 : 103;

/** Fragments that address parsers trip on, glued together in any order. */
const addressToken = fc.oneof(
  fc.constantFrom(
    '[',
    ']',
    ':',
    '::',
    '.',
    '@',
    '%',
    '-',
    '0',
    '00',
    '8080',
    '65535',
    '65536',
    '99999',
    '123456',
    '127.0.0.1',
    '::1',
    '::ffff:',
    'fe80::1%eth0',
    'localhost',
    'a-b',
    '.a',
    ' ',
    '\t',
    '\n',
    '\0',
    '/',
    '/tmp/s',
    'é',
    '\u{1f600}',
    '\ud800',
  ),
  fc.ipV4(),
  fc.ipV6(),
  fc.domain(),
  fc.nat(70_000).map(String),
  fc.string({ maxLength: 3 }),
);

const addressText = fc.oneof(
  fc.array(addressToken, { maxLength: 8 }).map((t) => t.join('')),
  fc.string({ unit: 'binary', maxLength: 30, ...FULL }),
  fc.string({ unit: fc.constantFrom(...'[]:.%@-0123456789abcdefABCDEF'), maxLength: 30, ...FULL }),
  // Around the unix path limit, in bytes: 1-byte, 2-byte and 4-byte characters.
  fc
    .tuple(
      fc.constantFrom('', '@', '/'),
      fc.constantFrom('a', 'é', '\u{1f600}'),
      fc.integer({ min: UNIX_PATH_MAX - 8, max: UNIX_PATH_MAX + 4 }),
    )
    .map(([start, unit, bytes]) => start + unit.repeat(Math.ceil(bytes / Buffer.byteLength(unit)))),
);

/** Likely-valid addresses (a host and a port), which the mutations below then break. */
const hostPort = fc
  .tuple(
    fc.oneof(
      fc.ipV4(),
      fc.ipV6().map((h) => `[${h}]`),
      fc.mixedCase(fc.ipV6()).map((h) => `[${h}]`),
      fc.constantFrom('[fe80::1%eth0]', '[::]', '[::ffff:127.0.0.1]', 'localhost', ''),
      fc.domain(),
    ),
    fc.nat(65_535),
    fc.constantFrom('', '0', '00'),
  )
  .map(([host, port, zeros]) => `${host}:${`${zeros}${port}`.slice(-5)}`);

export const addressInput = fc.oneof(
  addressText,
  hostPort,
  fc.tuple(hostPort, mutations).map(([s, m]) => mutate(latin1(s), m).toString('latin1')),
);

/** An object or an array that holds itself: what JSON.stringify cannot print. */
const cyclicValue: fc.Arbitrary<object> = fc.boolean().map((array) => {
  if (array) {
    const a: unknown[] = [];
    a.push(a);
    return a;
  }
  const o: Record<string, unknown> = {};
  o.self = o;
  return o;
});

/**
 * Whatever can be a value of a config file or of the code that builds options: BigInts (a YAML
 * loader's intAsBigInt), objects without a prototype (util.parseArgs, querystring.parse), boxed
 * values, Maps, Sets, Dates, typed and sparse arrays, symbols, functions, and cyclic objects.
 */
const configValue: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.anything({
      maxDepth: 2,
      withBigInt: true,
      withNullPrototype: true,
      withBoxedValues: true,
      withMap: true,
      withSet: true,
      withDate: true,
      withTypedArray: true,
      withSparseArray: true,
      withObjectString: true,
      withUnicodeString: true,
    }),
  },
  { weight: 1, arbitrary: cyclicValue },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(Symbol('option'), () => 0, 0n, -1n, 2n ** 64n) },
);

/** Checks a spec parseAddress returned for `address` on `net`. */
function checkSpec(net: Network, address: string, spec: ListenSpec): void {
  assert.equal(spec.network, net);
  if (spec.network === 'unix') {
    assert.ok(Buffer.byteLength(spec.path) <= UNIX_PATH_MAX, `path of ${Buffer.byteLength(spec.path)} bytes`);
    assert.equal(spec.abstract, address.startsWith('@'));
    assert.equal(spec.path, spec.abstract ? `\0${address.slice(1)}` : address);
    assert.ok(!spec.path.includes('\0', 1) && (spec.abstract || !spec.path.includes('\0')), 'NUL in a path');
    return;
  }
  assert.ok(Number.isInteger(spec.port) && spec.port >= 0 && spec.port <= 65535, `port ${spec.port}`);
  assert.equal(Number(address.slice(address.lastIndexOf(':') + 1)), spec.port, 'port is the last field');
  assert.equal(spec.ipv6Only, net === 'tcp6');
  if (spec.host === undefined) {
    assert.ok(net === 'tcp' && address.startsWith(':'), 'host left out only for tcp ":port"');
    return;
  }
  const family = isIP(spec.host);
  if (address.startsWith(':')) {
    // Go's ":port": every interface of the network's family.
    assert.equal(spec.host, net === 'tcp4' ? '0.0.0.0' : '::');
    return;
  }
  assert.ok(spec.host.length > 0, 'empty host');
  assert.ok(!/[\s[\]/\0]/u.test(spec.host), `host ${JSON.stringify(spec.host)}`);
  if (net === 'tcp4') assert.notEqual(family, 6, `IPv6 host ${spec.host} on tcp4`);
  if (net === 'tcp6') assert.notEqual(family, 4, `IPv4 host ${spec.host} on tcp6`);
  if (family === 0) assert.match(spec.host, /^[A-Za-z0-9.-]+$/, 'a host name');
  assert.equal(address.startsWith('['), family === 6, 'IPv6 host exactly when in brackets');
}

/**
 * A host as written in an address, and the spec's host on each network where it is valid (a
 * network left out refuses it). Only clear-cut cases: IP addresses, domain names, Go's empty host,
 * and junk no reading of the grammar accepts.
 */
interface HostCase {
  text: string;
  host: Partial<Record<Network, string | undefined>>;
}

const junkChar = fc.constantFrom(
  ' ',
  '\t',
  '\n',
  '\0',
  '_',
  '/',
  '\\',
  '*',
  '!',
  '#',
  '?',
  '%',
  ',',
  ';',
  '@',
  'é',
  '\u{1f600}',
);

const hostCase: fc.Arbitrary<HostCase> = fc.oneof(
  // Go's ":port": every interface, of the network's family.
  fc.constant<HostCase>({ text: '', host: { tcp: undefined, tcp4: '0.0.0.0', tcp6: '::' } }),
  fc.ipV4().map((ip): HostCase => ({ text: ip, host: { tcp: ip, tcp4: ip } })),
  fc
    .oneof(
      fc.ipV6(),
      fc.mixedCase(fc.ipV6()),
      fc.tuple(fc.ipV6(), fc.constantFrom('eth0', '1', 'en0.5')).map(([ip, zone]) => `${ip}%${zone}`),
    )
    .map((ip): HostCase => ({ text: `[${ip}]`, host: { tcp: ip, tcp6: ip } })),
  fc
    .oneof(fc.domain(), fc.constantFrom('localhost', 'a', 'a-b', 'A1.b2', 'xn--bcher-kva.example'))
    .map((name): HostCase => ({ text: name, host: { tcp: name, tcp4: name, tcp6: name } })),
  // Junk: refused on every network.
  fc
    .oneof(
      fc.ipV6(), // an IPv6 address must be in brackets
      fc.ipV4().map((ip) => `[${ip}]`),
      fc.domain().map((name) => `[${name}]`),
      fc.constantFrom(
        '[]',
        '[::1',
        '[::1]x',
        '[::1]]',
        '[[::1]]',
        '[::1%]',
        '[1::2::3]',
        '[:::]',
        '[12345::]',
        'a_b',
        'under_score.example',
      ),
      fc
        .tuple(fc.domain(), fc.nat(), junkChar)
        .map(
          ([name, at, c]) => name.slice(0, at % (name.length + 1)) + c + name.slice(at % (name.length + 1)),
        ),
      fc
        .tuple(fc.domain(), fc.constantFrom('.', '-'), fc.boolean())
        .map(([name, c, first]) => (first ? c + name : name + c)),
    )
    .map((text): HostCase => ({ text, host: {} })),
);

/** A port as written, and its number when valid: 1 to 5 ASCII digits, at most 65535. */
const portCase: fc.Arbitrary<{ text: string; port: number | undefined }> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.tuple(fc.nat(65_535), fc.nat(4)).map(([port, zeros]) => {
      const padded = '0'.repeat(zeros) + String(port);
      return { text: padded.length <= 5 ? padded : String(port), port };
    }),
  },
  fc
    .oneof(
      fc.oneof(fc.constant(65_536), fc.integer({ min: 65_536, max: 10_000_000 })).map(String),
      fc.constantFrom(
        '',
        '000000',
        '-1',
        '+1',
        ' 1',
        '1 ',
        '80\n',
        '0x10',
        '1e3',
        '1.0',
        '1_0',
        '\u0663', // ARABIC-INDIC DIGIT THREE
        '\uff18\uff10', // FULLWIDTH 80
      ),
    )
    .map((text) => ({ text, port: undefined })),
);

/** A unix address around the sun_path limit, maybe with a NUL; `@` starts an abstract name. */
const unixCase = fc
  .record({
    start: fc.constantFrom('', '', '/', './', '@', '@/'),
    body: fc.string({ unit: 'grapheme', maxLength: 12 }),
    unit: fc.constantFrom('a', '/', ' ', ':', '\n', 'é', '\u{1f600}', '\ud800'),
    bytes: fc.oneof(fc.nat(16), fc.integer({ min: UNIX_PATH_MAX - 6, max: UNIX_PATH_MAX + 3 })),
    nul: fc.option(fc.nat(), { freq: 4 }),
  })
  .map(({ start, body, unit, bytes, nul }) => {
    let text = start + body;
    while (Buffer.byteLength(text) < bytes) text += unit;
    if (nul !== null) {
      const at = nul % (text.length + 1);
      text = `${text.slice(0, at)}\0${text.slice(at)}`;
    }
    return text;
  });

const addressProperties: FuzzProperty[] = [
  {
    target: 'address',
    name: 'parseNetwork / parseAddress: a value that is not a string (a BigInt, a cyclic object...) is an InvalidAddressError',
    property: fc.property(
      fc.oneof(configValue, cyclicValue, fc.bigInt()).filter((v) => typeof v !== 'string'),
      network,
      (value, net) => {
        for (const parse of [(): unknown => parseNetwork(value), (): unknown => parseAddress(net, value)]) {
          const r = attempt(parse, ['ERR_INVALID_ADDRESS']);
          assert.ok('error' in r, `${inspect(value)} accepted`);
        }
      },
    ),
  },
  {
    target: 'address',
    name: 'parseNetwork: any value is a network name or an InvalidAddressError',
    property: fc.property(
      fc.oneof(configValue, fc.constantFrom(...NETWORKS), addressText, fc.mixedCase(network)),
      (value) => {
        const r = attempt(() => parseNetwork(value), ['ERR_INVALID_ADDRESS']);
        if ('value' in r) assert.ok(NETWORKS.includes(r.value) && r.value === value);
        else assert.ok(!NETWORKS.includes(value as Network), `${inspect(value)} refused`);
      },
    ),
  },
  {
    target: 'address',
    name: 'parseAddress: any input is a well-formed spec or an InvalidAddressError',
    property: fc.property(
      network,
      fc.oneof({ weight: 9, arbitrary: addressInput }, { weight: 1, arbitrary: configValue }),
      (net, address) => {
        const r = attempt(() => parseAddress(net, address), ['ERR_INVALID_ADDRESS']);
        if ('error' in r) return;
        assert.equal(typeof address, 'string');
        checkSpec(net, address as string, r.value);
        assert.deepEqual(parseAddress(net, address), r.value, 'not deterministic');
      },
    ),
  },
  {
    target: 'address',
    name: 'parseAddress -> formatAddress -> parseAddress is a fixpoint (unix via toBoundAddress)',
    property: fc.property(network, addressInput, (net, address) => {
      const r = attempt(() => parseAddress(net, address), ['ERR_INVALID_ADDRESS']);
      if ('error' in r) return;
      const spec = r.value;
      if (spec.network === 'unix') {
        // What net.Server.address() reports for it, formatted: the address as written.
        const bound = toBoundAddress('unix', spec.path);
        assert.equal(formatAddress(bound), address);
        assert.deepEqual(parseAddress('unix', formatAddress(bound)), spec);
        return;
      }
      if (spec.host === undefined) return;
      const text = formatAddress({ network: spec.network, host: spec.host, port: spec.port });
      const again = parseAddress(net, text);
      assert.deepEqual(again, spec, `${address} -> ${text}`);
      assert.equal(formatAddress({ network: spec.network, host: spec.host, port: spec.port }), text);
    }),
  },
  {
    target: 'address',
    name: 'toBoundAddress -> formatAddress -> parseAddress gives back the bound host, port or path',
    property: fc.property(
      fc.oneof(
        fc.tuple(fc.constantFrom<Network>('tcp', 'tcp4', 'unix'), fc.ipV4(), fc.constant('IPv4')),
        fc.tuple(fc.constantFrom<Network>('tcp', 'tcp6', 'unix'), fc.ipV6(), fc.constant('IPv6')),
      ),
      fc.nat(65_535),
      fc.oneof(
        fc.string({ unit: 'binary', minLength: 1, maxLength: 40, ...FULL }),
        fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: UNIX_PATH_MAX, ...FULL }),
      ),
      fc.boolean(),
      ([net, ip, family], port, path, abstract) => {
        const bound = toBoundAddress(net, { address: ip, family, port });
        const spec = parseAddress(bound.network, formatAddress(bound));
        assert.ok(spec.network !== 'unix' && spec.host === ip && spec.port === port, formatAddress(bound));
        // A unix socket: a path as the kernel reports it, or an abstract name (leading NUL).
        const raw = abstract ? `\0${path}` : path;
        if (raw.startsWith('@') || path.includes('\0') || Buffer.byteLength(raw) > UNIX_PATH_MAX) return;
        const text = formatAddress(toBoundAddress('unix', raw));
        assert.deepEqual(parseAddress('unix', text), { network: 'unix', path: raw, abstract });
        // Not bound: a typed error, not a crash.
        assert.throws(() => toBoundAddress(net, null), InvalidAddressError);
      },
    ),
  },
  {
    target: 'address',
    name: 'parseAddress: host:port is accepted exactly when host and port are valid on the network, as written',
    property: fc.property(
      fc.constantFrom<Network>('tcp', 'tcp4', 'tcp6'),
      hostCase,
      portCase,
      (net, h, p) => {
        const address = `${h.text}:${p.text}`;
        const r = attempt(() => parseAddress(net, address), ['ERR_INVALID_ADDRESS']);
        if (p.port === undefined || !(net in h.host)) {
          assert.ok(
            'error' in r,
            `${JSON.stringify(address)} accepted on ${net}: ${inspect('value' in r && r.value)}`,
          );
          return;
        }
        assert.ok(
          'value' in r,
          `${JSON.stringify(address)} refused on ${net}: ${'error' in r && r.error.message}`,
        );
        assert.deepEqual(r.value, {
          network: net,
          host: h.host[net],
          port: p.port,
          ipv6Only: net === 'tcp6',
        });
      },
    ),
  },
  {
    target: 'address',
    name: 'parseAddress: a unix address is accepted exactly when non-empty, NUL-free and within sun_path; @name is abstract',
    property: fc.property(unixCase, (address) => {
      const r = attempt(() => parseAddress('unix', address), ['ERR_INVALID_ADDRESS']);
      const abstract = address.startsWith('@');
      const valid =
        address !== '' &&
        address !== '@' &&
        !address.includes('\0') &&
        Buffer.byteLength(address) <= UNIX_PATH_MAX &&
        (!abstract || process.platform === 'linux');
      if (!valid) {
        assert.ok('error' in r, `${JSON.stringify(address)} accepted`);
        return;
      }
      assert.ok('value' in r, `${JSON.stringify(address)} refused: ${'error' in r && r.error.message}`);
      const path = abstract ? `\0${address.slice(1)}` : address;
      assert.deepEqual(r.value, { network: 'unix', path, abstract });
    }),
  },
];

// =============================================================================================
// codec/line: lineDecoder, encodeLine

const LF = 0x0a;
const CR = 0x0d;

/** The lines of `stream` as lineDecoder must cut them: every `\n` ends one, a `\r` before it goes. */
function lines(stream: Buffer, maxLength: number): Driven<Buffer> {
  const frames: Buffer[] = [];
  let start = 0;
  for (let nl = stream.indexOf(LF); nl >= 0; nl = stream.indexOf(LF, start)) {
    const end = nl > start && stream[nl - 1] === CR ? nl - 1 : nl;
    if (end - start > maxLength) return { frames, code: 'ERR_FRAME_TOO_LARGE' };
    frames.push(stream.subarray(start, end));
    start = nl + 1;
  }
  // The last line needs no newline; a `\r` ending it is the first half of a line end.
  let end = stream.length;
  if (end > start && stream[end - 1] === CR) end--;
  if (end - start > maxLength) return { frames, code: 'ERR_FRAME_TOO_LARGE' };
  if (stream.length > start) frames.push(stream.subarray(start, end));
  return { frames };
}

/**
 * Every encoding encodeLine takes. For hex and base64, Buffer.byteLength is only an upper bound (a
 * character that does not decode is skipped): the line must still be exactly Buffer.from's bytes.
 */
const ENCODE_ENCODINGS: BufferEncoding[] = [
  'utf8',
  'utf-8',
  'latin1',
  'binary',
  'ascii',
  'utf16le',
  'ucs2',
  'ucs-2',
  'hex',
  'base64',
  'base64url',
];
const DECODE_ENCODINGS: BufferEncoding[] = ['utf8', 'latin1', 'ascii', 'hex', 'base64', 'base64url'];

/** Text with line ends, lone surrogates, multi-byte characters. */
const lineText = fc.string({
  unit: fc.oneof(
    { weight: 1, arbitrary: fc.constantFrom('\n', '\r', '\ud800', '\udfff', 'é', '\u{1f600}', '\u0a0d') },
    { weight: 4, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  ),
  maxLength: 40,
  ...FULL,
});

/** Any text as a base-N encoding: random, over its alphabet, bytes encoded then corrupted, or long. */
const encodedText = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEFxyz+/=-_ !\r\n'), maxLength: 40, ...FULL }),
  fc.string({ unit: 'binary', maxLength: 16 }),
  fc
    .tuple(bytesOver([LF, CR], 30), fc.constantFrom<BufferEncoding>('hex', 'base64', 'base64url'))
    .map(([b, enc]) => b.toString(enc)),
  fc
    .tuple(bytesOver([LF, CR], 30), fc.constantFrom<BufferEncoding>('hex', 'base64', 'base64url'), mutations)
    .map(([b, enc, m]) => mutate(latin1(b.toString(enc)), m).toString('latin1')),
  // Mostly characters that do not decode: a large allocation of which little is written.
  fc.string({ unit: fc.constantFrom('!', '*', ' ', '=', '.', 'A'), maxLength: 2000, ...FULL }),
);

const validLines = fc
  .array(fc.tuple(bytesOver([0x0d, 0x61], 30), fc.boolean()), { maxLength: 10 })
  .map((ls) =>
    Buffer.concat(
      ls.map(([l, crlf]) => {
        const body = l.filter((b) => b !== LF);
        return Buffer.concat([body, Buffer.from(crlf ? '\r\n' : '\n')]);
      }),
    ),
  );

const lineProperties: FuzzProperty[] = [
  {
    target: 'codec/line',
    name: 'lineDecoder: random and corrupted streams in any split are cut exactly, bounded, typed errors only',
    property: fc.property(
      validMutatedOrNoise(validLines, bytesOver([LF, CR, 0x61], 200)),
      fc.nat({ max: 40 }),
      chunking,
      fc.nat({ max: 2 }),
      fc.constantFrom(...DECODE_ENCODINGS),
      (stream, maxLength, how, extra, encoding) => {
        const o: DriveOptions<Buffer> = {
          held: maxLength + 1, // a line of maxLength bytes, and a `\r` that may start its `\r\n`
          codes: DECODER_CODES,
          limits: [maxLength],
          extra,
          check: (f) => assert.ok(f.length <= maxLength && !f.includes(LF), `frame of ${f.length} bytes`),
        };
        const got = wholeAndSplit(() => lineDecoder({ maxLength, encoding: null }), stream, how, o);
        assert.deepEqual(hexOf(got), hexOf(lines(stream, maxLength)));
        // Decoding to strings is the same, line for line.
        const text = drive(
          lineDecoder({ maxLength, encoding }),
          split(stream, how),
          {
            ...o,
            check: (s) => assert.equal(typeof s, 'string'),
          },
          how.drainEvery,
        );
        assert.deepEqual(
          { frames: text.frames, code: text.code },
          { frames: got.frames.map((f) => f.toString(encoding)), code: got.code },
        );
      },
    ),
  },
  {
    target: 'codec/line',
    name: 'encodeLine -> lineDecoder round-trips any text or bytes; refuses exactly newlines, a final \\r and overlong text',
    property: fc.property(
      fc.array(
        fc.oneof(
          lineText,
          encodedText,
          bytesOver([LF, CR], 40).map((b) => new Uint8Array(b)),
          // A view into a larger buffer: only its own bytes count.
          fc
            .tuple(bytesOver([LF, CR], 40), fc.nat(), fc.nat())
            .map(([b, s, e]) => b.subarray(Math.min(s, e) % (b.length + 1), Math.max(s, e) % (b.length + 1))),
        ),
        { maxLength: 8 },
      ),
      fc.constantFrom(...ENCODE_ENCODINGS),
      fc.oneof(fc.constant(null), fc.nat({ max: 60 })),
      chunking,
      (payloads, encoding, maxLength, how) => {
        const wire: Buffer[] = [];
        const want: Buffer[] = [];
        for (const p of payloads) {
          const bytes = typeof p === 'string' ? Buffer.from(p, encoding) : Buffer.from(p);
          const opts = maxLength === null ? { encoding } : { encoding, maxLength };
          const r = attempt(() => encodeLine(p, opts), ENCODER_CODES);
          if (maxLength !== null && bytes.length > maxLength) {
            assert.ok('error' in r && r.error instanceof FrameTooLargeError, 'overlong text accepted');
          } else if (bytes.includes(LF)) {
            assert.ok('error' in r && r.error instanceof InvalidFrameError, 'a newline accepted');
          } else if (bytes.at(-1) === CR) {
            // The decoder would take it for half of a `\r\n` and drop it.
            assert.ok('error' in r && r.error instanceof InvalidFrameError, 'a final \\r accepted');
          } else {
            assert.ok('value' in r, `refused: ${'error' in r ? r.error.message : ''}`);
            assert.deepEqual(r.value, Buffer.concat([bytes, Buffer.from([LF])]));
            wire.push(r.value);
            want.push(bytes);
          }
        }
        const max = Math.max(0, ...want.map((w) => w.length + 1));
        const got = drive(
          lineDecoder({ maxLength: max, encoding: null }),
          split(Buffer.concat(wire), how),
          wellFormed(max + 1),
          how.drainEvery,
        );
        assert.deepEqual(hexOf(got), hexOf({ frames: want }));
      },
    ),
  },
  {
    target: 'codec/line',
    name: "encodeLine with 'hex' / 'base64' / 'base64url': the line is exactly Buffer.from's bytes, every time",
    property: fc.property(
      encodedText,
      fc.constantFrom<BufferEncoding>('hex', 'base64', 'base64url'),
      fc.oneof(fc.constant(null), fc.nat({ max: 40 })),
      (text, encoding, maxLength) => {
        // Buffer.byteLength(text, encoding) is only an upper bound: a character that does not
        // decode is skipped. Nothing past what is written may reach the line (no stray bytes).
        const bytes = Buffer.from(text, encoding);
        const opts = maxLength === null ? { encoding } : { encoding, maxLength };
        const r = attempt(() => encodeLine(text, opts), ENCODER_CODES);
        if (maxLength !== null && bytes.length > maxLength) {
          assert.ok('error' in r && r.error instanceof FrameTooLargeError, 'overlong text accepted');
          assert.equal(r.error.maxLength, maxLength);
          assert.ok(r.error.message.startsWith(`frame of ${bytes.length} bytes `), r.error.message);
        } else if (bytes.includes(LF) || bytes.at(-1) === CR) {
          assert.ok('error' in r && r.error instanceof InvalidFrameError, `${inspect(bytes)} accepted`);
        } else {
          assert.ok('value' in r, `refused: ${'error' in r ? r.error.message : ''}`);
          assert.deepEqual(r.value, Buffer.concat([bytes, Buffer.from([LF])]));
          assert.deepEqual(encodeLine(text, opts), r.value, 'the same text gave another line');
        }
      },
    ),
  },
  {
    target: 'codec/line',
    name: 'encodeLine refuses a line whose bytes end in \\r with InvalidFrameError: lineDecoder would strip it',
    property: fc.property(
      // No \n, nor 0x8a (an ASCII string of it is a \n).
      bytesOver([LF, CR], 40).map((b) =>
        Buffer.concat([b.filter((x) => (x & 0x7f) !== LF), Buffer.from([CR])]),
      ),
      fc.constantFrom('bytes', 'utf8', 'latin1', 'ascii', 'hex', 'base64', 'base64url'),
      fc.oneof(fc.constant(null), fc.nat({ max: 60 })),
      (raw, as, maxLength) => {
        // The bytes themselves, or a string that encodes to bytes ending in \r.
        const encoding = as === 'bytes' ? undefined : as;
        const text = encoding === undefined ? new Uint8Array(raw) : raw.toString(encoding);
        const bytes = typeof text === 'string' ? Buffer.from(text, encoding) : raw;
        assert.ok(bytes.at(-1) === CR && !bytes.includes(LF), inspect(bytes));
        // Why it is refused: the decoder takes the \r for half of a \r\n and drops it.
        const decoder = lineDecoder({ maxLength: bytes.length, encoding: null });
        decoder.push(Buffer.concat([bytes, Buffer.from([LF])]));
        assert.deepEqual(decoder.next(), bytes.subarray(0, -1));
        const opts = {
          ...(encoding === undefined ? {} : { encoding }),
          ...(maxLength === null ? {} : { maxLength }),
        };
        const r = attempt(() => encodeLine(text, opts), ENCODER_CODES);
        assert.ok('error' in r, `${inspect(bytes)} accepted`);
        if (maxLength !== null && bytes.length > maxLength) assert.ok(r.error instanceof FrameTooLargeError);
        else assert.ok(r.error instanceof InvalidFrameError, r.error.message);
      },
    ),
  },
];

// =============================================================================================
// codec/delimiter: delimiterDecoder, delimiterEncoder

/** Delimiters that overlap themselves, or not, over a 3-byte alphabet (so they occur often). */
const delimiter = fc
  .array(fc.constantFrom(0x00, 0x61, 0x62), { minLength: 1, maxLength: 4 })
  .map((a) => Buffer.from(a));

/** Length of the longest end of `rest` that is a start of `delim` (a delimiter still arriving). */
function partialDelimiter(rest: Buffer, delim: Buffer): number {
  for (let k = Math.min(rest.length, delim.length - 1); k > 0; k--) {
    if (rest.subarray(rest.length - k).equals(delim.subarray(0, k))) return k;
  }
  return 0;
}

const delimiterProperties: FuzzProperty[] = [
  {
    target: 'codec/delimiter',
    name: 'delimiterDecoder: random and corrupted streams in any split are cut exactly, bounded, typed errors only',
    property: fc.property(
      delimiter,
      fc.nat({ max: 12 }),
      fc.boolean(),
      fc.array(bytesOver([0x00, 0x61, 0x62], 16), { maxLength: 10 }),
      bytesOver([0x00, 0x61, 0x62], 120),
      mutations,
      fc.nat({ max: 2 }),
      chunking,
      (delim, maxLength, keep, payloads, noise, edits, kind, how) => {
        const m = delim.length;
        const valid = Buffer.concat(payloads.flatMap((p) => [p, delim]));
        const stream = kind === 0 ? valid : kind === 1 ? mutate(valid, edits) : noise;
        const whole = wholeAndSplit(
          () => delimiterDecoder({ delimiter: delim, maxLength, keepDelimiter: keep }),
          stream,
          how,
          {
            held: maxLength + m - 1, // a frame of maxLength bytes and all but the last byte of its delimiter
            codes: DECODER_CODES,
            limits: [maxLength],
            extra: 1,
            check: (f) => {
              const body = keep ? f.subarray(0, f.length - m) : f;
              assert.ok(body.length <= maxLength, `frame of ${body.length} bytes`);
              if (keep) assert.ok(f.subarray(body.length).equals(delim), 'kept delimiter missing');
              // The delimiter cut at its first occurrence: none starts inside the frame.
              assert.equal(Buffer.concat([body, delim]).indexOf(delim), body.length, 'cut past a delimiter');
            },
          },
        );
        // The frames, delimiters put back, are the stream's start; what is left explains the end.
        const taken = Buffer.concat(whole.frames.flatMap((f) => (keep ? [f] : [f, delim])));
        assert.ok(stream.subarray(0, taken.length).equals(taken), 'frames are not the stream');
        const rest = stream.subarray(taken.length);
        const at = rest.indexOf(delim);
        const tooLarge =
          at > maxLength || (at < 0 && rest.length - partialDelimiter(rest, delim) > maxLength);
        if (whole.code === undefined) assert.equal(rest.length, 0);
        else if (whole.code === 'ERR_FRAME_TOO_LARGE') assert.ok(tooLarge, 'too large, wrongly');
        else assert.ok(whole.code === 'ERR_INCOMPLETE_FRAME' && at < 0 && rest.length > 0 && !tooLarge);
      },
    ),
  },
  {
    target: 'codec/delimiter',
    name: 'delimiterEncoder -> delimiterDecoder round-trips; the encoder refuses exactly what would decode differently',
    property: fc.property(
      fc.oneof(delimiter, fc.constantFrom(Buffer.from('\r\n'), Buffer.from('é'), Buffer.from('\u{1f600}'))),
      fc.array(
        fc.oneof(
          bytesOver([0x00, 0x61, 0x62], 16),
          fc.string({
            unit: fc.constantFrom('a', 'b', '\0', 'é', '\u{1f600}', '\ud83d', '\r', '\n'),
            maxLength: 8,
          }),
        ),
        { maxLength: 10 },
      ),
      fc.oneof(fc.constant(null), fc.nat({ max: 16 })),
      fc.boolean(),
      chunking,
      (delim, payloads, maxLength, keep, how) => {
        const encode: FrameEncoder =
          maxLength === null
            ? delimiterEncoder({ delimiter: delim })
            : delimiterEncoder({ delimiter: delim, maxLength });
        const wire: Buffer[] = [];
        const want: Buffer[] = [];
        for (const p of payloads) {
          const bytes = Buffer.from(p); // a string as UTF-8
          const r = attempt(() => encode(p), ENCODER_CODES);
          if (maxLength !== null && bytes.length > maxLength) {
            assert.ok('error' in r && r.error instanceof FrameTooLargeError, 'overlong payload accepted');
          } else if (Buffer.concat([bytes, delim]).indexOf(delim) !== bytes.length) {
            assert.ok('error' in r && r.error instanceof InvalidFrameError, 'ambiguous payload accepted');
          } else {
            assert.ok('value' in r, `refused: ${'error' in r ? r.error.message : ''}`);
            assert.deepEqual(r.value, Buffer.concat([bytes, delim]));
            wire.push(r.value);
            want.push(keep ? r.value : bytes);
          }
        }
        const max = Math.max(0, ...want.map((w) => w.length));
        const got = drive(
          delimiterDecoder({ delimiter: delim, maxLength: max, keepDelimiter: keep }),
          split(Buffer.concat(wire), how),
          wellFormed(max + delim.length),
          how.drainEvery,
        );
        assert.deepEqual(hexOf(got), hexOf({ frames: want }));
      },
    ),
  },
];

// =============================================================================================
// codec/length-prefixed: lengthPrefixedDecoder, lengthPrefixedEncoder

const fieldLength = fc.constantFrom<LengthFieldLength>(1, 2, 4);

interface LengthLayout {
  maxLength: number;
  lengthFieldLength: LengthFieldLength;
  littleEndian: boolean;
  lengthFieldOffset: number;
  lengthAdjustment: number;
  initialBytesToStrip: number;
}

const lengthLayout: fc.Arbitrary<LengthLayout> = fc.record({
  maxLength: fc.nat({ max: 24 }),
  lengthFieldLength: fieldLength,
  littleEndian: fc.boolean(),
  lengthFieldOffset: fc.nat({ max: 3 }),
  lengthAdjustment: fc.integer({ min: -8, max: 4 }),
  initialBytesToStrip: fc.nat({ max: 10 }),
});

/** Frames valid for `o`, as wire bytes: offset bytes, the field, then value + adjustment bytes. */
function lengthFrames(o: LengthLayout, bodies: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const body of bodies) {
    const len = Math.max(body.length, o.initialBytesToStrip - o.lengthFieldOffset - o.lengthFieldLength);
    const value = len - o.lengthAdjustment;
    if (value < 0 || value >= 2 ** (8 * o.lengthFieldLength)) continue;
    const head = Buffer.alloc(o.lengthFieldOffset + o.lengthFieldLength, 0x5a);
    if (o.littleEndian) head.writeUIntLE(value, o.lengthFieldOffset, o.lengthFieldLength);
    else head.writeUIntBE(value, o.lengthFieldOffset, o.lengthFieldLength);
    parts.push(head, Buffer.concat([body, Buffer.alloc(len - body.length)]));
  }
  return Buffer.concat(parts);
}

const lengthProperties: FuzzProperty[] = [
  {
    target: 'codec/length-prefixed',
    name: 'lengthPrefixedDecoder: random and corrupted streams, any layout, any split: exact frames, bounded, typed',
    property: fc.property(
      lengthLayout,
      fc.array(bytesOver([0x00], 26), { maxLength: 8 }),
      bytesOver([0x00, 0x01, 0x02, 0xff], 120),
      mutations,
      fc.nat({ max: 2 }),
      chunking,
      (o, bodies, noise, edits, kind, how) => {
        const valid = lengthFrames(o, bodies);
        const stream = kind === 0 ? valid : kind === 1 ? mutate(valid, edits) : noise;
        const header = o.lengthFieldOffset + o.lengthFieldLength;
        const whole = wholeAndSplit(() => lengthPrefixedDecoder(o), stream, how, {
          // A header announcing maxLength bytes, and all of them but the last.
          held: header + o.maxLength - 1,
          codes: DECODER_CODES,
          limits: [o.maxLength],
          extra: 1,
          check: (f) =>
            assert.ok(f.length <= header + o.maxLength - o.initialBytesToStrip, `${f.length} bytes`),
        });
        // Each frame is what the header at its position announces; what is left explains the end.
        let pos = 0;
        const announced = () => {
          const at = pos + o.lengthFieldOffset;
          const w = o.lengthFieldLength;
          return (o.littleEndian ? stream.readUIntLE(at, w) : stream.readUIntBE(at, w)) + o.lengthAdjustment;
        };
        for (const f of whole.frames) {
          const end = pos + header + announced();
          assert.ok(f.equals(stream.subarray(pos + o.initialBytesToStrip, end)), 'not the announced bytes');
          pos = end;
        }
        const left = stream.length - pos;
        if (whole.code === undefined) {
          assert.equal(left, 0);
        } else if (left < header) {
          assert.equal(whole.code, 'ERR_INCOMPLETE_FRAME');
        } else {
          const n = announced();
          const code =
            n < 0
              ? 'ERR_INVALID_FRAME'
              : n > o.maxLength
                ? 'ERR_FRAME_TOO_LARGE'
                : o.initialBytesToStrip > header + n
                  ? 'ERR_INVALID_FRAME'
                  : 'ERR_INCOMPLETE_FRAME';
          assert.equal(whole.code, code);
          if (code === 'ERR_INCOMPLETE_FRAME') assert.ok(left < header + n);
        }
      },
    ),
  },
  {
    target: 'codec/length-prefixed',
    name: 'lengthPrefixedEncoder -> lengthPrefixedDecoder round-trips; the encoder refuses exactly what the field cannot say',
    property: fc.property(
      fieldLength,
      fc.boolean(),
      fc.integer({ min: -4, max: 6 }),
      fc.oneof(fc.constant(null), fc.nat({ max: 300 })),
      fc.array(
        fc.oneof(
          { weight: 4, arbitrary: bytesOver([0x00], 12) },
          { weight: 1, arbitrary: fc.integer({ min: 250, max: 300 }).map((n) => Buffer.alloc(n, 7)) },
          { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 6 }) },
        ),
        { maxLength: 8 },
      ),
      fc.boolean(),
      chunking,
      (width, littleEndian, lengthAdjustment, maxLength, payloads, keepHeader, how) => {
        const encode = lengthPrefixedEncoder(
          maxLength === null
            ? { lengthFieldLength: width, littleEndian, lengthAdjustment }
            : { lengthFieldLength: width, littleEndian, lengthAdjustment, maxLength },
        );
        const fieldMax = 2 ** (8 * width) - 1;
        const wire: Buffer[] = [];
        const want: Buffer[] = [];
        for (const p of payloads) {
          const bytes = Buffer.from(p);
          const r = attempt(() => encode(p), ENCODER_CODES);
          const value = bytes.length - lengthAdjustment;
          if ((maxLength !== null && bytes.length > maxLength) || value > fieldMax) {
            assert.ok('error' in r && r.error instanceof FrameTooLargeError, 'overlong payload accepted');
          } else if (value < 0) {
            assert.ok('error' in r && r.error instanceof InvalidFrameError, 'short payload accepted');
          } else {
            assert.ok('value' in r, `refused: ${'error' in r ? r.error.message : ''}`);
            assert.equal(r.value.length, width + bytes.length);
            assert.ok(r.value.subarray(width).equals(bytes), 'payload changed');
            wire.push(r.value);
            want.push(keepHeader ? r.value : bytes);
          }
        }
        const max = Math.max(0, ...wire.map((w) => w.length - width));
        const decoder = lengthPrefixedDecoder({
          maxLength: max,
          lengthFieldLength: width,
          littleEndian,
          lengthAdjustment,
          ...(keepHeader ? { initialBytesToStrip: 0 } : {}),
        });
        const got = drive(decoder, split(Buffer.concat(wire), how), wellFormed(width + max), how.drainEvery);
        assert.deepEqual(hexOf(got), hexOf({ frames: want }));
      },
    ),
  },
];

// =============================================================================================
// codec/options: the options of every codec factory

/** Each factory with the keys its options take; `make` builds it, or encodes 'a' for encodeLine. */
const CODEC_FACTORIES: {
  name: string;
  keys: readonly string[];
  make: (options: never) => unknown;
  /** What `make` returns is a FrameEncoder. */
  encoder?: true;
  /** The codes `make` may throw besides ERR_INVALID_OPTION. */
  codes?: readonly string[];
}[] = [
  { name: 'lineDecoder', keys: ['maxLength', 'encoding'], make: (o) => lineDecoder(o) },
  {
    name: 'delimiterDecoder',
    keys: ['delimiter', 'maxLength', 'keepDelimiter'],
    make: (o) => delimiterDecoder(o),
  },
  {
    name: 'delimiterEncoder',
    keys: ['delimiter', 'maxLength'],
    make: (o) => delimiterEncoder(o),
    encoder: true,
  },
  {
    name: 'lengthPrefixedDecoder',
    keys: [
      'maxLength',
      'lengthFieldLength',
      'littleEndian',
      'lengthFieldOffset',
      'lengthAdjustment',
      'initialBytesToStrip',
    ],
    make: (o) => lengthPrefixedDecoder(o),
  },
  {
    name: 'lengthPrefixedEncoder',
    keys: ['lengthFieldLength', 'littleEndian', 'lengthAdjustment', 'maxLength'],
    make: (o) => lengthPrefixedEncoder(o),
    encoder: true,
  },
  {
    name: 'encodeLine',
    keys: ['maxLength', 'encoding'],
    make: (o) => encodeLine('a', o),
    codes: ['ERR_FRAME_TOO_LARGE'],
  },
];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** `options` with only the given keys (so that their values are checked, not an unknown key refused). */
function onlyKeys(options: unknown, keys: readonly string[]): unknown {
  if (!isObject(options)) return options;
  return Object.fromEntries(keys.filter((k) => Object.hasOwn(options, k)).map((k) => [k, options[k]]));
}

/** Options as a caller may pass them: any value, or an object of the codecs' keys with any values. */
const codecOptions: fc.Arbitrary<unknown> = fc.oneof(
  configValue,
  fc.constantFrom<unknown>(null, undefined, 0, 'x', [], 1n, Symbol('options'), () => ({})),
  {
    weight: 4,
    arbitrary: fc.record(
      {
        maxLength: fc.oneof(fc.nat({ max: 10 }), configValue),
        encoding: fc.oneof(
          fc.constantFrom('utf8', 'UTF-8', 'latin1', 'hex', 'base64', 'utf16le', 'ucs-2', 'nope', '', null),
          configValue,
        ),
        delimiter: fc.oneof(fc.constantFrom('\n', '', 'ab', '\r\n'), configValue),
        keepDelimiter: fc.oneof(fc.boolean(), configValue),
        lengthFieldLength: fc.oneof(fc.constantFrom(1, 2, 3, 4), configValue),
        littleEndian: fc.oneof(fc.boolean(), configValue),
        lengthFieldOffset: fc.oneof(fc.nat({ max: 4 }), configValue),
        lengthAdjustment: fc.oneof(fc.integer({ min: -3, max: 3 }), configValue),
        initialBytesToStrip: fc.oneof(fc.nat({ max: 4 }), configValue),
      },
      { requiredKeys: [] },
    ),
  },
);

const optionsProperties: FuzzProperty[] = [
  {
    target: 'codec/options',
    name: 'codec factories: any options construct a codec or throw InvalidOptionError; a non-object is refused',
    property: fc.property(codecOptions, (options) => {
      const notObject = options !== undefined && !isObject(options);
      for (const f of CODEC_FACTORIES) {
        for (const opts of [options, onlyKeys(options, f.keys)]) {
          const r = attempt(() => f.make(opts as never), ['ERR_INVALID_OPTION', ...(f.codes ?? [])]);
          if (notObject) {
            assert.ok(
              'error' in r && r.error instanceof InvalidOptionError,
              `${f.name}(${inspect(opts)}) accepted`,
            );
          }
          if ('value' in r && f.encoder) attempt(() => (r.value as FrameEncoder)('a'), ENCODER_CODES);
        }
      }
      // encodeLine: an encoding Node does not know is refused, not left to Buffer to throw.
      const encoding = isObject(options) ? options.encoding : undefined;
      if (encoding !== undefined && !(typeof encoding === 'string' && Buffer.isEncoding(encoding))) {
        const r = attempt(() => encodeLine('a', { encoding } as never), ['ERR_INVALID_OPTION']);
        assert.ok('error' in r, `encodeLine with encoding ${inspect(encoding)} accepted`);
      }
    }),
  },
];

// =============================================================================================
// resp: RespDecoder, splitInlineArgs, parseInt64 (examples/resp/)

const SPACE = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);
const isSpace = (c: number) => SPACE.has(c);

/** One argument, written inline so that splitInlineArgs gives its bytes back. */
function inlineArg(arg: Buffer, style: number, upper: boolean): string {
  const printable = (c: number) => c > 0x20 && c < 0x7f;
  if (style === 0 && arg.length > 0 && arg.every((c) => printable(c) && c !== 0x22 && c !== 0x27)) {
    return arg.toString('latin1');
  }
  if (style === 1 && !arg.includes(LF) && arg.at(-1) !== 0x5c) {
    // Single quotes: only \' is an escape, so a trailing backslash would eat the closing quote.
    return `'${arg.toString('latin1').replace(/'/g, "\\'")}'`;
  }
  const named = new Map([
    [LF, 'n'],
    [CR, 'r'],
    [0x09, 't'],
    [0x08, 'b'],
    [0x07, 'a'],
  ]);
  let out = '"';
  for (const c of arg) {
    if (c === 0x22 || c === 0x5c) out += `\\${String.fromCharCode(c)}`;
    else if (named.has(c) && (c + arg.length) % 2 === 0) out += `\\${named.get(c)}`;
    else if (printable(c) || c === 0x20) out += String.fromCharCode(c);
    else {
      const hex = c.toString(16).padStart(2, '0');
      out += `\\x${upper ? hex.toUpperCase() : hex}`;
    }
  }
  return `${out}"`;
}

/** A command as multibulk, or as an inline line of plain, single-quoted and double-quoted arguments. */
const respRequest = fc
  .record({
    args: fc.array(
      fc.oneof(
        { weight: 12, arbitrary: bytesOver([0x20, 0x22, 0x27, 0x5c, 0x0a, 0x0d, 0x2a, 0x78], 20) },
        // Now and then one larger than the decoder's first buffer (1 KiB), which it must outgrow.
        fc.integer({ min: 200, max: 3000 }).map((n) => Buffer.alloc(n, 0x61 + (n % 26))),
      ),
      { minLength: 1, maxLength: 5 },
    ),
    inline: fc.boolean(),
    styles: fc.array(fc.nat({ max: 2 }), { minLength: 5, maxLength: 5 }),
    gaps: fc.array(fc.constantFrom(' ', '  ', '\t', ' \t '), { minLength: 6, maxLength: 6 }),
    crlf: fc.boolean(),
    upper: fc.boolean(),
    blanks: fc.nat({ max: 3 }),
  })
  .map(({ args, inline, styles, gaps, crlf, upper, blanks }) => {
    if (!inline) {
      const parts = [latin1(`*${args.length}\r\n`)];
      for (const a of args) parts.push(latin1(`$${a.length}\r\n`), a, latin1('\r\n'));
      return { args, wire: Buffer.concat(parts) };
    }
    // A line may start with blanks, but not with `*` (a multibulk header).
    const first = args[0]![0] === 0x2a ? 2 : styles[0]!;
    const words = args.map((a, i) => inlineArg(a, i === 0 ? first : styles[i]!, upper));
    // Blanks before the first argument and after the last are not arguments.
    const lead = blanks & 1 ? gaps[0]! : '';
    const trail = blanks & 2 ? gaps[5]! : '';
    const line = lead + words.map((w, i) => (i === 0 ? w : gaps[i]! + w)).join('') + trail;
    return { args, wire: latin1(`${line}${crlf ? '\r\n' : '\n'}`) };
  });

/** Blank lines and empty multibulk commands, which the decoder skips. */
const respEmpty = fc.constantFrom('\r\n', '\n', ' \t\r\n', '*0\r\n', '*-1\r\n').map(latin1);

const respNoise = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        '*',
        '$',
        '\r\n',
        '\r',
        '\n',
        '-',
        '0',
        '1',
        '2',
        '9',
        ' ',
        '"',
        "'",
        '\\',
        '\\x',
        'ff',
      ),
      fc.constantFrom('*1\r\n', '*2\r\n', '$1\r\n', '$0\r\n', '$-1\r\n', '$99\r\n', '*-0\r\n', '*01\r\n'),
      fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)),
    ),
    { maxLength: 80, ...FULL },
  )
  .map((t) => latin1(t.join('')));

export const respPipeline = fc.array(
  fc.oneof({ weight: 5, arbitrary: respRequest.map((r) => r.wire) }, respEmpty),
  {
    maxLength: 6,
  },
);

const respLimits = fc.record({
  maxBulkLength: fc.integer({ min: 1, max: 24 }),
  maxInlineLength: fc.integer({ min: 1, max: 80 }),
  maxArgs: fc.integer({ min: 1, max: 6 }),
  maxRequestLength: fc.integer({ min: 1, max: 120 }),
});

const argsHex = (d: Driven<RespCommand>) => ({
  frames: d.frames.map((c) => c.map((a) => a.toString('hex'))),
  code: d.code,
});

const respProperties: FuzzProperty[] = [
  {
    target: 'resp',
    name: 'RespDecoder: random and corrupted pipelines in any split: typed errors only, limits honoured, split-invariant',
    property: fc.property(
      validMutatedOrNoise(
        respPipeline.map((p) => Buffer.concat(p)),
        respNoise,
      ),
      respLimits,
      chunking,
      fc.nat({ max: 2 }),
      (stream, limits, how, extra) => {
        const o: DriveOptions<RespCommand> = {
          // A whole inline line, or a multibulk command's headers and bodies and the next `$` header.
          held: Math.max(limits.maxInlineLength, limits.maxRequestLength + MAX_HEADER_LINE),
          codes: DECODER_CODES,
          limits: [limits.maxBulkLength, limits.maxInlineLength, limits.maxRequestLength],
          extra,
          check: (cmd) => {
            assert.ok(cmd.length > 0, 'an empty command returned');
            const bytes = cmd.reduce((n, a) => n + a.length, 0);
            const inlineBound = limits.maxInlineLength;
            for (const a of cmd) assert.ok(Buffer.isBuffer(a));
            // Multibulk: at most maxArgs of at most maxBulkLength, within maxRequestLength; inline:
            // what fits in maxInlineLength.
            const multibulk =
              cmd.length <= limits.maxArgs &&
              cmd.every((a) => a.length <= limits.maxBulkLength) &&
              bytes <= limits.maxRequestLength;
            assert.ok(multibulk || bytes <= inlineBound, `command of ${cmd.length} args, ${bytes} bytes`);
          },
        };
        const whole = drive(new RespDecoder(limits), [Buffer.from(stream)], o);
        const parts = drive(new RespDecoder(limits), split(stream, how), o, how.drainEvery);
        // Compared after all pushes: arguments handed out early must not be overwritten since.
        assert.deepEqual(argsHex(parts), argsHex(whole), 'the outcome depends on how the bytes were split');
      },
    ),
  },
  {
    target: 'resp',
    name: 'RespDecoder: multibulk and quoted inline commands of any bytes round-trip in any split',
    property: fc.property(
      fc.array(
        fc.oneof(
          { weight: 4, arbitrary: respRequest },
          respEmpty.map((wire) => ({ args: [], wire })),
        ),
        {
          maxLength: 8,
        },
      ),
      chunking,
      (requests, how) => {
        const stream = Buffer.concat(requests.map((r) => r.wire));
        const got = drive(new RespDecoder(), split(stream, how), wellFormed(stream.length), how.drainEvery);
        const want = requests.filter((r) => r.args.length > 0).map((r) => r.args);
        assert.deepEqual(argsHex(got), argsHex({ frames: want }));
      },
    ),
  },
  {
    target: 'resp',
    name: 'RespDecoder: multibulk commands within maxArgs, maxBulkLength and maxRequestLength are decoded, one past a limit is refused',
    property: fc.property(
      fc.record({
        maxBulkLength: fc.integer({ min: 1, max: 24 }),
        maxArgs: fc.integer({ min: 1, max: 6 }),
        maxRequestLength: fc.integer({ min: 1, max: 160 }),
      }),
      // Argument lengths around the limits, two commands in a row.
      fc.array(fc.array(fc.nat(27), { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 2 }),
      fc.nat(255),
      chunking,
      (limits, commands, fill, how) => {
        const wire: Buffer[] = [];
        const want: RespCommand[] = [];
        let refusal: { code: string; limit?: number } | undefined;
        for (const lengths of commands) {
          const args = lengths.map((n, i) => Buffer.alloc(n, (fill + i) & 0xff));
          wire.push(latin1(`*${args.length}\r\n`));
          for (const a of args) wire.push(latin1(`$${a.length}\r\n`), a, latin1('\r\n'));
          if (refusal !== undefined) continue;
          // The decoder's checks, header by header: the count, then each bulk and the running total.
          if (args.length > limits.maxArgs) {
            refusal = { code: 'ERR_INVALID_FRAME' };
            continue;
          }
          let bytes = `*${args.length}\r\n`.length;
          for (const a of args) {
            bytes += `$${a.length}\r\n`.length + a.length + 2;
            if (a.length > limits.maxBulkLength)
              refusal = { code: 'ERR_FRAME_TOO_LARGE', limit: limits.maxBulkLength };
            else if (bytes > limits.maxRequestLength)
              refusal = { code: 'ERR_FRAME_TOO_LARGE', limit: limits.maxRequestLength };
            if (refusal !== undefined) break;
          }
          if (refusal === undefined) want.push(args);
        }
        const got = drive(
          new RespDecoder({ ...limits, maxInlineLength: 1 }),
          split(Buffer.concat(wire), how),
          {
            held: limits.maxRequestLength + MAX_HEADER_LINE,
            codes: DECODER_CODES,
            limits: [limits.maxBulkLength, limits.maxRequestLength],
            extra: 1,
            check: () => {},
          },
          how.drainEvery,
        );
        assert.deepEqual(argsHex(got), argsHex({ frames: want, code: refusal?.code }));
        if (refusal?.limit !== undefined) {
          assert.ok(
            got.error instanceof FrameTooLargeError && got.error.maxLength === refusal.limit,
            'names the limit',
          );
        }
      },
    ),
  },
  {
    target: 'resp',
    name: 'splitInlineArgs: any bytes give null or arguments; reads only its range; quote-free lines split on blanks',
    property: fc.property(
      bytesOver([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x22, 0x27, 0x5c, 0x78, 0x61, 0x30], 60),
      fc.nat(),
      fc.nat(),
      (buf, s, e) => {
        const start = Math.min(s, e) % (buf.length + 1);
        const end = Math.max(s, e) % (buf.length + 1);
        const got = splitInlineArgs(buf, start, end);
        // Only buf[start, end) matters: the same bytes alone split the same way.
        const alone = Buffer.from(buf.subarray(start, end));
        const hex = (r: Buffer[] | null) => r?.map((a) => a.toString('hex')) ?? null;
        assert.deepEqual(hex(got), hex(splitInlineArgs(alone, 0, alone.length)), 'read outside its range');
        if (got === null) {
          assert.ok(alone.includes(0x22) || alone.includes(0x27), 'null without a quote');
          return;
        }
        const total = got.reduce((n, a) => n + a.length, 0);
        assert.ok(total <= alone.length, `${total} bytes out of ${alone.length}`);
        if (!alone.includes(0x22) && !alone.includes(0x27)) {
          const words: string[] = [];
          let word = '';
          for (const c of alone) {
            if (isSpace(c)) {
              if (word !== '') words.push(word);
              word = '';
            } else word += String.fromCharCode(c);
          }
          if (word !== '') words.push(word);
          assert.deepEqual(
            got.map((a) => a.toString('latin1')),
            words,
          );
        }
      },
    ),
  },
  {
    target: 'resp',
    name: "parseInt64: any bytes are null or exactly the integer Redis's string2ll reads",
    property: fc.property(
      fc.oneof(
        fc.string({ unit: fc.constantFrom(...'-+ 0123456789'), maxLength: 22, ...FULL }),
        fc.bigInt({ min: INT64_MIN - 10n, max: INT64_MAX + 10n }).map(String),
        fc
          .constantFrom(INT64_MAX, INT64_MIN, INT64_MAX + 1n, INT64_MIN - 1n, 10n ** 15n, -(10n ** 15n))
          .map(String),
        fc.string({ unit: 'binary', maxLength: 6 }),
      ),
      (text) => {
        const bytes = Buffer.from(text, 'utf8');
        const got = parseInt64(bytes);
        const canonical = /^(0|-?[1-9][0-9]*)$/.test(bytes.toString('latin1'));
        const big = canonical ? BigInt(bytes.toString('latin1')) : undefined;
        if (big === undefined || big > INT64_MAX || big < INT64_MIN) {
          assert.equal(got, null);
          return;
        }
        assert.ok(got !== null, `${text} refused`);
        assert.equal(BigInt(got), big);
        const digits = text.replace('-', '').length;
        assert.equal(typeof got, digits <= 15 ? 'number' : 'bigint');
      },
    ),
  },
];

// =============================================================================================
// proxy-protocol: parseProxyHeader

const VERSIONS: ProxyVersions[] = ['v1', 'v2', 'any'];
const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
const ADDRESS_BLOCK = [0, 12, 36, 216];

/** v1 lines from plausible and implausible fields, with any line end, then some payload. */
export const v1Header = fc
  .record({
    family: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('TCP4', 'TCP6', 'UNKNOWN') },
      fc.constantFrom('TCP', 'tcp4', 'UDP4', '', 'TCP4 '),
    ),
    addresses: fc.array(
      fc.oneof(
        fc.ipV4(),
        fc.ipV6(),
        fc.mixedCase(fc.ipV6()),
        fc.constantFrom('::', '::ffff:1.2.3.4', '01.2.3.4', '1.2.3', '256.1.1.1', '1::2::3', 'fe80::1%1', ''),
      ),
      { minLength: 2, maxLength: 2 },
    ),
    ports: fc.array(fc.oneof(fc.nat(65_535).map(String), fc.constantFrom('65536', '01', '-1', '', '99999')), {
      minLength: 2,
      maxLength: 2,
    }),
    fields: fc.nat({ max: 6 }),
    end: fc.constantFrom('\r\n', '\r\n', '\r\n', '\n', '\r', '', ' \r\n'),
    payload: bytesOver([0x0d, 0x0a], 20),
  })
  .map(({ family, addresses, ports, fields, end, payload }) => {
    const all = ['PROXY', family, ...addresses, ...ports];
    const line = all.slice(0, Math.max(2, fields)).join(' ');
    return Buffer.concat([latin1(line + end), payload]);
  });

/** A TLV: type, 16-bit length, value. */
const tlv = (type: number, value: Buffer): Buffer => {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
};

const tlvValue = fc.oneof(
  bytesOver([0x00, 0x7f, 0x80, 0xc3, 0xa9], 24),
  fc.string({ unit: 'grapheme', maxLength: 8 }).map((s) => Buffer.from(s)),
  fc.integer({ min: 125, max: 131 }).map((n) => Buffer.alloc(n, 1)), // around UNIQUE_ID's 128 bytes
);

/** A TLV of a registered, custom or unassigned type; SSL ones with sub-TLVs. */
const anyTlv: fc.Arbitrary<Buffer> = fc.oneof(
  fc
    .tuple(fc.constantFrom(0x01, 0x02, 0x04, 0x05, 0x30, 0xea, 0xe0, 0xf0, 0xff, 0x06, 0x21, 0x22), tlvValue)
    .map(([t, v]) => tlv(t, v)),
  fc
    .tuple(
      fc.nat({ max: 7 }),
      fc.nat({ max: 2 }).map((v) => Buffer.from([0, 0, 0, v])),
      fc.array(fc.tuple(fc.constantFrom(0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x00), tlvValue), {
        maxLength: 4,
      }),
    )
    .map(([client, verify, subs]) =>
      tlv(PP2_TYPE.SSL, Buffer.concat([Buffer.from([client]), verify, ...subs.map(([t, v]) => tlv(t, v))])),
    ),
);

/**
 * v2 headers: mostly valid fixed bytes, an address block of the family's size (or not), TLVs, a
 * CRC32C computed over the result (right or wrong), a length field true or off, then payload.
 */
export const v2Header = fc
  .record({
    verCmd: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0x20, 0x21) }, fc.nat({ max: 255 })),
    family: fc.nat({ max: 3 }),
    protocol: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 1) }, fc.nat({ max: 15 })),
    blockBytes: fc.uint8Array({ minLength: 216, maxLength: 216 }),
    blockDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.integer({ min: -3, max: 3 })),
    tlvs: fc.array(anyTlv, { maxLength: 4 }),
    edits: fc.option(mutations, { freq: 3 }),
    crc: fc.constantFrom('good', 'good', 'bad', 'none'),
    crcFirst: fc.boolean(),
    lengthDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, fc.integer({ min: -4, max: 4 })),
    payload: bytesOver([0x00], 12),
  })
  .map((h) => {
    const size = Math.max(0, ADDRESS_BLOCK[h.family]! + h.blockDelta);
    const block = Buffer.from(h.blockBytes.subarray(0, size));
    // The TLV area mutated before the checksum: garbled TLVs whose checksum still verifies.
    let area: Buffer = Buffer.concat(h.tlvs);
    if (h.edits !== null) area = mutate(area, h.edits);
    const crcTlv = h.crc === 'none' ? Buffer.alloc(0) : tlv(PP2_TYPE.CRC32C, Buffer.alloc(4));
    const rest = h.crcFirst ? [crcTlv, area] : [area, crcTlv];
    const fixed = Buffer.alloc(16);
    V2_SIGNATURE.copy(fixed);
    fixed[12] = h.verCmd;
    fixed[13] = (h.family << 4) | h.protocol;
    const header = Buffer.concat([fixed, block, ...rest]);
    const length = Math.min(0xffff, Math.max(0, header.length - 16 + h.lengthDelta));
    header.writeUInt16BE(length, 14);
    if (h.crc !== 'none') {
      const at = h.crcFirst ? 16 + block.length + 3 : header.length - 4;
      const sum = crc32c(header.subarray(0, 16 + length));
      header.writeUInt32BE(h.crc === 'good' ? sum : (sum ^ 1) >>> 0, at);
    }
    return Buffer.concat([header, h.payload]);
  });

const proxyNoise = fc.oneof(
  bytesOver([0x0d, 0x0a, 0x20, 0x00], 60),
  fc
    .tuple(
      fc.constantFrom(V2_SIGNATURE, latin1('PROXY '), latin1('PROXY TCP4 '), latin1('PROXY TCP6 ')),
      bytesOver([0x20, 0x0d], 60),
    )
    .map(([s, n]) => Buffer.concat([s, n])),
);

export const proxyInput = validMutatedOrNoise(fc.oneof(v1Header, v2Header), proxyNoise);

/** parseProxyHeader's answer, an error being only a ProxyProtocolError. */
function parseOutcome(bytes: Buffer, versions: ProxyVersions): ProxyHeader | undefined | 'error' {
  const r = attempt(() => parseProxyHeader(bytes, versions), ['ERR_PROXY_PROTOCOL']);
  return 'error' in r ? 'error' : r.value;
}

/** Whether two buffers share memory (small buffers share Node's pool, so compare ranges). */
const overlaps = (a: Buffer, b: Buffer): boolean =>
  a.length > 0 &&
  b.length > 0 &&
  a.buffer === b.buffer &&
  a.byteOffset < b.byteOffset + b.length &&
  b.byteOffset < a.byteOffset + a.length;

const encodeTlvs = (tlvs: ProxyHeader['tlvs']) => Buffer.concat(tlvs.map((t) => tlv(t.type, t.value)));

/** What holds of any header parsed from `bytes`. */
function checkHeader(h: ProxyHeader, bytes: Buffer, versions: ProxyVersions): void {
  assert.ok(versions === 'any' || h.version === (versions === 'v1' ? 1 : 2), `v${h.version} for ${versions}`);
  assert.ok(h.length <= bytes.length && h.length <= maxProxyHeaderLength(versions), `length ${h.length}`);
  assert.equal(h.source === undefined, h.destination === undefined, 'one endpoint without the other');
  for (const end of [h.source, h.destination]) {
    if (end === undefined) continue;
    if ('path' in end) {
      assert.ok(h.family === 'UNIX' && (end.path.startsWith('@') || !end.path.includes('\0')), end.path);
    } else {
      assert.equal(isIP(end.address), h.family === 'TCP4' ? 4 : 6, `${h.family} ${end.address}`);
      assert.ok(Number.isInteger(end.port) && end.port >= 0 && end.port <= 65535, `port ${end.port}`);
    }
  }
  if (h.source !== undefined)
    assert.ok(h.command === 'PROXY' && h.protocol === 'STREAM' && h.family !== 'UNSPEC');
  // The header keeps copies, never a view of the caller's bytes.
  for (const t of h.tlvs) assert.ok(!overlaps(t.value, bytes), 'a TLV value is a view of the input');
  if (h.version === 1) {
    assert.ok(h.command === 'PROXY' && h.tlvs.length === 0 && h.length <= 107);
    assert.ok(bytes.subarray(h.length - 2, h.length).equals(latin1('\r\n')), 'a v1 line ends with CRLF');
  } else {
    assert.equal(h.length, 16 + bytes.readUInt16BE(14));
    // The TLVs, re-encoded, are the bytes after the address block (LOCAL: after the 16 bytes, after
    // the family's block, or dropped).
    const tlvs = encodeTlvs(h.tlvs);
    const after = (n: number) => bytes.subarray(n, h.length);
    const family = bytes[13]! >> 4;
    if (h.command === 'PROXY')
      assert.ok(tlvs.equals(after(16 + ADDRESS_BLOCK[family]!)), 'TLVs are not the bytes');
    else
      assert.ok(
        h.tlvs.length === 0 || tlvs.equals(after(16)) || tlvs.equals(after(16 + ADDRESS_BLOCK[family]!)),
      );
    const crcs = h.tlvs.filter((t) => t.type === PP2_TYPE.CRC32C);
    assert.equal(h.crc32c !== undefined, crcs.length === 1, 'crc32c is there exactly when its TLV is');
    for (const t of h.tlvs) {
      if (t.type === PP2_TYPE.AUTHORITY) assert.equal(h.authority, t.value.toString('utf8'));
      if (t.type === PP2_TYPE.UNIQUE_ID) assert.ok(h.uniqueId?.equals(t.value) && t.value.length <= 128);
      if (t.type === PP2_TYPE.ALPN) assert.ok(h.alpn?.equals(t.value));
    }
  }
  // Bytes past the header are not looked at; one byte less needs more.
  assert.deepEqual(parseProxyHeader(bytes.subarray(0, h.length), versions), h);
  assert.equal(parseProxyHeader(bytes.subarray(0, h.length - 1), versions), undefined);
}

// ---------------------------------------------------------------------------------------------
// Valid headers from a model, for the round trip: the wire bytes and the header they must parse to.

interface ProxyCase {
  wire: Buffer;
  expected: ProxyHeader;
}

/** CRC-32C bit by bit: the oracle of src's table-driven crc32c. */
function crc32cBitwise(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** An IPv6 address as Node prints it (libuv's inet_ntop): the oracle of the parser's text. */
const nodeIpv6 = (words: readonly number[]): string =>
  new SocketAddress({ address: words.map((w) => w.toString(16)).join(':'), family: 'ipv6' }).address;

const proxyPort = fc.oneof(fc.nat(65_535), fc.constantFrom(0, 1, 80, 65_535));

/** Eight 16-bit words, with the zero runs, IPv4-mapped and -compatible forms that printing special-cases. */
const ipv6Words: fc.Arbitrary<number[]> = fc.oneof(
  fc.array(fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.constantFrom(1, 0xffff), fc.nat(0xffff)), {
    minLength: 8,
    maxLength: 8,
  }),
  fc
    .tuple(fc.constantFrom(0, 0xffff), fc.nat(0xffff), fc.nat(0xffff))
    .map(([w5, w6, w7]) => [0, 0, 0, 0, 0, w5, w6, w7]),
);

/** How a v1 sender may write IPv6: `::` for any zero run (or none), zero-padded, upper case, IPv4 last. */
interface Ipv6Style {
  /** Which zero run `::` stands for (modulo their number), or none. */
  compress: number | null;
  pad: boolean;
  upper: boolean;
  v4: boolean;
}

const ipv6Style: fc.Arbitrary<Ipv6Style> = fc.record({
  compress: fc.option(fc.nat()),
  pad: fc.boolean(),
  upper: fc.boolean(),
  v4: fc.boolean(),
});

function ipv6Text(words: readonly number[], style: Ipv6Style): string {
  const hex = (w: number) => {
    const h = style.pad ? w.toString(16).padStart(4, '0') : w.toString(16);
    return style.upper ? h.toUpperCase() : h;
  };
  const groups = (style.v4 ? words.slice(0, 6) : words).map(hex);
  const v4 = style.v4 ? [`${words[6]! >> 8}.${words[6]! & 0xff}.${words[7]! >> 8}.${words[7]! & 0xff}`] : [];
  const runs: [number, number][] = [];
  for (let i = 0; i < groups.length; i++) {
    if (words[i] !== 0) continue;
    let j = i;
    while (j < groups.length && words[j] === 0) j++;
    runs.push([i, j]);
    i = j;
  }
  if (style.compress === null || runs.length === 0) return [...groups, ...v4].join(':');
  const [a, b] = runs[style.compress % runs.length]!;
  return `${groups.slice(0, a).join(':')}::${[...groups.slice(b), ...v4].join(':')}`;
}

export const v1Case: fc.Arbitrary<ProxyCase> = fc.oneof(
  fc
    .record({ src: fc.ipV4(), dst: fc.ipV4(), sp: proxyPort, dp: proxyPort })
    .map(({ src, dst, sp, dp }) =>
      v1Wire(
        `TCP4 ${src} ${dst} ${sp} ${dp}`,
        'TCP4',
        { address: src, port: sp },
        { address: dst, port: dp },
      ),
    ),
  fc
    .record({ src: ipv6Words, dst: ipv6Words, s1: ipv6Style, s2: ipv6Style, sp: proxyPort, dp: proxyPort })
    .map(({ src, dst, s1, s2, sp, dp }) => {
      let line = `TCP6 ${ipv6Text(src, s1)} ${ipv6Text(dst, s2)} ${sp} ${dp}`;
      // Padded forms with IPv4 may not fit in 107 bytes: then the shortest ones.
      if (line.length > 107 - 8) line = `TCP6 ${nodeIpv6(src)} ${nodeIpv6(dst)} ${sp} ${dp}`;
      const source = { address: nodeIpv6(src), port: sp };
      return v1Wire(line, 'TCP6', source, { address: nodeIpv6(dst), port: dp });
    }),
  // UNKNOWN: whatever follows it up to the CRLF is ignored.
  fc.option(bytesOver([0x20, 0x3a, 0x2e, 0x30], 100), { freq: 2 }).map((rest) => {
    const tail =
      rest === null ? '' : ` ${Buffer.from(rest.filter((b) => b !== CR && b !== LF)).toString('latin1')}`;
    return v1Wire(`UNKNOWN${tail}`.slice(0, 107 - 8), 'UNSPEC', undefined, undefined);
  }),
);

function v1Wire(
  rest: string,
  family: 'TCP4' | 'TCP6' | 'UNSPEC',
  source: ProxyInetAddress | undefined,
  destination: ProxyInetAddress | undefined,
): ProxyCase {
  const wire = latin1(`PROXY ${rest}\r\n`);
  const protocol = family === 'UNSPEC' ? 'UNSPEC' : 'STREAM';
  const expected: ProxyHeader = {
    version: 1,
    command: 'PROXY',
    family,
    protocol,
    source,
    destination,
    length: wire.length,
    tlvs: [],
  };
  return { wire, expected };
}

/** A TLV and where it goes: a header's TLVs are sorted by `at`. */
interface PlacedTlv {
  at: number;
  type: number;
  value: Buffer;
}

const placed = (type: fc.Arbitrary<number>, value: fc.Arbitrary<Buffer>): fc.Arbitrary<PlacedTlv> =>
  fc.record({ at: fc.nat(), type, value });
const byPlace = (tlvs: (PlacedTlv | null)[]): PlacedTlv[] =>
  tlvs.filter((t): t is PlacedTlv => t !== null).sort((a, b) => a.at - b.at);

const asciiBytes = (maxLength: number) =>
  fc.uint8Array({ max: 0x7f, maxLength, ...FULL }).map((a) => Buffer.from(a));
const utf8Bytes = (maxLength: number) =>
  fc.string({ unit: 'grapheme', maxLength, ...FULL }).map((text) => Buffer.from(text));

const sslCase = fc.record({
  at: fc.nat(),
  client: fc.nat(255),
  verify: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
  version: fc.option(placed(fc.constant(PP2_SUBTYPE_SSL.VERSION), asciiBytes(12))),
  cn: fc.option(placed(fc.constant(PP2_SUBTYPE_SSL.CN), utf8Bytes(12))),
  cipher: fc.option(placed(fc.constant(PP2_SUBTYPE_SSL.CIPHER), asciiBytes(30))),
  sigAlg: fc.option(placed(fc.constant(PP2_SUBTYPE_SSL.SIG_ALG), asciiBytes(12))),
  keyAlg: fc.option(placed(fc.constant(PP2_SUBTYPE_SSL.KEY_ALG), asciiBytes(12))),
  // Unregistered sub-types: raw, any number.
  others: fc.array(placed(fc.constantFrom(0x00, 0x20, 0x26, 0x7f, 0xff), bytesOver([0x00], 8)), {
    maxLength: 3,
  }),
});

/** Types the parser keeps only raw, any number of times: NOOP, custom, experimental, unassigned. */
const rawTlvType = fc.oneof(
  fc.constant(PP2_TYPE.NOOP),
  fc.integer({ min: PP2_TYPE.MIN_CUSTOM, max: PP2_TYPE.MAX_FUTURE }),
  fc.constantFrom(0x00, 0x06, 0x10, 0x1f, 0x21, 0x2f, 0x31, 0x7f, 0xdf),
);

/** A 108-byte sun_path: a path (then NUL and anything), an abstract name, or unnamed (all NULs). */
const unixField = fc
  .record({
    kind: fc.constantFrom('path', 'abstract', 'unnamed'),
    name: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 110, ...FULL }),
    junk: bytesOver([0x00], 20),
  })
  .map(({ kind, name, junk }) => {
    const field = Buffer.alloc(UNIX_SUN_PATH);
    if (kind === 'unnamed') return { field, path: '' };
    let text = name.replace(/\0/g, '_');
    const room = kind === 'path' ? UNIX_SUN_PATH : UNIX_SUN_PATH - 1;
    while (Buffer.byteLength(text) > room) text = [...text].slice(0, -1).join('');
    if (text === '') text = 'x';
    if (kind === 'abstract') {
      field.write(text, 1);
      return { field, path: `@${text}` };
    }
    const n = field.write(text, 0);
    // After the NUL that ends the path, the sender's buffer may hold anything.
    if (n + 1 < UNIX_SUN_PATH) junk.copy(field, n + 1, 0, UNIX_SUN_PATH - n - 1);
    return { field, path: text };
  });
const UNIX_SUN_PATH = 108;

const v2Record = fc.record({
  local: fc.boolean(),
  family: fc.nat({ max: 3 }),
  stream: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, fc.constant(false)),
  inet: fc.tuple(fc.ipV4(), fc.ipV4()),
  inet6: fc.tuple(ipv6Words, ipv6Words),
  unix: fc.tuple(unixField, unixField),
  ports: fc.tuple(proxyPort, proxyPort),
  alpn: fc.option(placed(fc.constant(PP2_TYPE.ALPN), bytesOver([0x00], 16))),
  authority: fc.option(placed(fc.constant(PP2_TYPE.AUTHORITY), utf8Bytes(20))),
  uniqueId: fc.option(
    placed(
      fc.constant(PP2_TYPE.UNIQUE_ID),
      fc.oneof(
        bytesOver([0x00], 16),
        fc.integer({ min: 120, max: 128 }).map((n) => Buffer.alloc(n, 0x75)),
      ),
    ),
  ),
  ssl: fc.option(sslCase),
  netns: fc.option(placed(fc.constant(PP2_TYPE.NETNS), asciiBytes(16))),
  raw: fc.array(placed(rawTlvType, bytesOver([0x00], 16)), { maxLength: 4 }),
  crc: fc.option(fc.nat(), { freq: 2 }),
});
type V2Record = typeof v2Record extends fc.Arbitrary<infer T> ? T : never;

/** A v2 header as parts: what {@link assembleV2} turns into bytes, and what a defect alters. */
interface V2Parts {
  verCmd: number;
  famProto: number;
  block: Buffer;
  tlvs: ProxyTlv[];
}

/**
 * The bytes of `p`: the length field says what follows the 16 bytes, and every 4-byte CRC32C TLV
 * holds the checksum of the header (computed with them zero), or that checksum with a bit flipped.
 */
function assembleV2(p: V2Parts, crcFlip?: number): { wire: Buffer; crc: number | undefined } {
  const fixed = Buffer.alloc(16);
  V2_SIGNATURE.copy(fixed);
  fixed[12] = p.verCmd;
  fixed[13] = p.famProto;
  const wire = Buffer.concat([fixed, p.block, ...p.tlvs.map((t) => tlv(t.type, t.value))]);
  wire.writeUInt16BE(wire.length - 16, 14);
  const fields: number[] = [];
  let at = 16 + p.block.length;
  for (const t of p.tlvs) {
    if (t.type === PP2_TYPE.CRC32C && t.value.length === 4) fields.push(at + 3);
    at += 3 + t.value.length;
  }
  if (fields.length === 0) return { wire, crc: undefined };
  for (const f of fields) wire.fill(0, f, f + 4);
  const crc = crc32cBitwise(wire);
  const sent = crcFlip === undefined ? crc : (crc ^ (1 << (crcFlip % 32))) >>> 0;
  for (const f of fields) wire.writeUInt32BE(sent, f);
  return { wire, crc };
}

function buildV2(c: V2Record): ProxyCase & { parts: V2Parts } {
  const expected: ProxyHeader = {
    version: 2,
    command: c.local ? 'LOCAL' : 'PROXY',
    family: (['UNSPEC', 'TCP4', 'TCP6', 'UNIX'] as const)[c.family]!,
    protocol: c.stream ? 'STREAM' : 'UNSPEC',
    source: undefined,
    destination: undefined,
    length: 0,
    tlvs: [],
  };
  // The address block: PROXY only (LOCAL's TLVs follow the 16 bytes, as AWS NLB sends them).
  let block = Buffer.alloc(0);
  const [sp, dp] = c.ports;
  if (!c.local && c.family === 1) {
    block = Buffer.alloc(12);
    for (const [i, ip] of c.inet.entries()) {
      for (const [j, n] of ip.split('.').entries()) block[4 * i + j] = Number(n);
    }
    block.writeUInt16BE(sp, 8);
    block.writeUInt16BE(dp, 10);
    if (c.stream) {
      expected.source = { address: c.inet[0], port: sp };
      expected.destination = { address: c.inet[1], port: dp };
    }
  } else if (!c.local && c.family === 2) {
    block = Buffer.alloc(36);
    for (const [i, words] of c.inet6.entries()) {
      for (const [j, w] of words.entries()) block.writeUInt16BE(w, 16 * i + 2 * j);
    }
    block.writeUInt16BE(sp, 32);
    block.writeUInt16BE(dp, 34);
    if (c.stream) {
      expected.source = { address: nodeIpv6(c.inet6[0]), port: sp };
      expected.destination = { address: nodeIpv6(c.inet6[1]), port: dp };
    }
  } else if (!c.local && c.family === 3) {
    block = Buffer.concat([c.unix[0].field, c.unix[1].field]);
    if (c.stream) {
      expected.source = { path: c.unix[0].path };
      expected.destination = { path: c.unix[1].path };
    }
  }
  let ssl: PlacedTlv | null = null;
  if (c.ssl !== null) {
    const subs = byPlace([
      c.ssl.version,
      c.ssl.cn,
      c.ssl.cipher,
      c.ssl.sigAlg,
      c.ssl.keyAlg,
      ...c.ssl.others,
    ]);
    const head = Buffer.alloc(5);
    head[0] = c.ssl.client;
    head.writeUInt32BE(c.ssl.verify, 1);
    ssl = {
      at: c.ssl.at,
      type: PP2_TYPE.SSL,
      value: Buffer.concat([head, ...subs.map((t) => tlv(t.type, t.value))]),
    };
    const decoded: NonNullable<ProxyHeader['ssl']> = {
      client: c.ssl.client,
      verify: c.ssl.verify,
      tlvs: subs.map(({ type, value }) => ({ type, value })),
    };
    if (c.ssl.version !== null) decoded.version = c.ssl.version.value.toString('latin1');
    if (c.ssl.cn !== null) decoded.cn = c.ssl.cn.value.toString('utf8');
    if (c.ssl.cipher !== null) decoded.cipher = c.ssl.cipher.value.toString('latin1');
    if (c.ssl.sigAlg !== null) decoded.sigAlg = c.ssl.sigAlg.value.toString('latin1');
    if (c.ssl.keyAlg !== null) decoded.keyAlg = c.ssl.keyAlg.value.toString('latin1');
    expected.ssl = decoded;
  }
  const tlvs = byPlace([c.alpn, c.authority, c.uniqueId, ssl, c.netns, ...c.raw]);
  if (c.alpn !== null) expected.alpn = c.alpn.value;
  if (c.authority !== null) expected.authority = c.authority.value.toString('utf8');
  if (c.uniqueId !== null) expected.uniqueId = c.uniqueId.value;
  if (c.netns !== null) expected.netns = c.netns.value.toString('latin1');
  const parts: V2Parts = {
    verCmd: c.local ? 0x20 : 0x21,
    famProto: (c.family << 4) | (c.stream ? 1 : 0),
    block,
    tlvs: tlvs.map(({ type, value }) => ({ type, value })),
  };
  // The CRC32C TLV anywhere among the others.
  if (c.crc !== null) {
    parts.tlvs.splice(c.crc % (tlvs.length + 1), 0, { type: PP2_TYPE.CRC32C, value: Buffer.alloc(4) });
  }
  const { wire, crc } = assembleV2(parts);
  expected.tlvs = parts.tlvs.map(({ type, value }) => {
    if (type !== PP2_TYPE.CRC32C) return { type, value };
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc!);
    return { type, value: sum };
  });
  if (crc !== undefined) expected.crc32c = crc;
  expected.length = wire.length;
  return { wire, expected, parts };
}

export const v2Case: fc.Arbitrary<ProxyCase> = v2Record.map(buildV2);

// ---------------------------------------------------------------------------------------------
// Valid headers with one defect: each must be refused, with a ProxyProtocolError.

/** Invalid UTF-8 to insert into valid UTF-8 (a stray continuation, a lead without one, ...). */
const BAD_UTF8 = [[0x80], [0xc3], [0xff], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80]];

const insertAt = (value: Buffer, at: number, bytes: readonly number[]): Buffer => {
  const i = at % (value.length + 1);
  return Buffer.concat([value.subarray(0, i), Buffer.from(bytes), value.subarray(i)]);
};

const V2_DEFECTS = [
  'signature',
  'version',
  'command',
  'family',
  'protocol',
  'block-short',
  'tlv-overrun',
  'tlv-trailing',
  'unique-id-long',
  'authority-utf8',
  'netns-ascii',
  'ssl-ascii',
  'ssl-cn-utf8',
  'ssl-short',
  'ssl-trailing',
  'ssl-duplicate',
  'duplicate',
  'crc-mismatch',
  'crc-size',
] as const;

/** A valid PROXY (not LOCAL: its TLVs are dropped, not refused, when they do not parse) header with one defect. */
function v2Defect(
  c: V2Record,
  kind: (typeof V2_DEFECTS)[number],
  n: number,
  m: number,
  text: Buffer,
): Buffer {
  const { parts } = buildV2({ ...c, local: false });
  const p: V2Parts = { ...parts, tlvs: [...parts.tlvs] };
  const without = (type: number) => {
    p.tlvs = p.tlvs.filter((t) => t.type !== type);
  };
  const insert = (type: number, value: Buffer) => {
    p.tlvs.splice(n % (p.tlvs.length + 1), 0, { type, value });
  };
  const high = (value: Buffer) => insertAt(value, n, [[0x80, 0xff, 0xc3, 0x80 + (m % 0x80)][m % 4]!]);
  const ssl = (subs: Buffer[]) => Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), ...subs]);
  const sslString = [
    PP2_SUBTYPE_SSL.VERSION,
    PP2_SUBTYPE_SSL.CIPHER,
    PP2_SUBTYPE_SSL.SIG_ALG,
    PP2_SUBTYPE_SSL.KEY_ALG,
  ];
  const ascii = Buffer.from(text.map((b) => b & 0x7f));
  /** 0 (the first invalid value) half of the time, else anything below `range`. */
  const edge = (range: number) => (m % 2 === 0 ? 0 : (m >> 1) % range);
  switch (kind) {
    case 'signature': {
      const { wire } = assembleV2(p);
      wire[n % 12] = wire[n % 12]! ^ (1 << (m % 8));
      return wire;
    }
    case 'version':
      p.verCmd = ([3, 1, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15][edge(15)]! << 4) | 1;
      break;
    case 'command':
      p.verCmd = 0x20 | (2 + edge(14));
      break;
    case 'family':
      p.famProto = ((4 + edge(12)) << 4) | (p.famProto & 0x0f);
      break;
    case 'protocol':
      p.famProto = (p.famProto & 0xf0) | (2 + edge(14));
      break;
    case 'block-short': {
      const family = 1 + (n % 3);
      p.famProto = (family << 4) | 1;
      p.block = Buffer.alloc(ADDRESS_BLOCK[family]! - 1 - edge(ADDRESS_BLOCK[family]!));
      p.tlvs = [];
      break;
    }
    case 'tlv-overrun':
    case 'tlv-trailing': {
      if (p.tlvs.length === 0) insert(PP2_TYPE.NOOP, text);
      const { wire } = assembleV2(p);
      // The last TLV cut short by 1 or 2 bytes, or 1 or 2 bytes after it: the length says so.
      const k = 1 + (m % 2);
      const out =
        kind === 'tlv-overrun'
          ? wire.subarray(0, wire.length - k)
          : Buffer.concat([wire, text, Buffer.alloc(2)]).subarray(0, wire.length + k);
      out.writeUInt16BE(out.length - 16, 14);
      return out;
    }
    case 'unique-id-long':
      without(PP2_TYPE.UNIQUE_ID);
      insert(PP2_TYPE.UNIQUE_ID, Buffer.alloc(129 + edge(200), 0x75));
      break;
    case 'authority-utf8':
      without(PP2_TYPE.AUTHORITY);
      insert(
        PP2_TYPE.AUTHORITY,
        insertAt(Buffer.from(text.toString('utf8')), n, BAD_UTF8[m % BAD_UTF8.length]!),
      );
      break;
    case 'netns-ascii':
      without(PP2_TYPE.NETNS);
      insert(PP2_TYPE.NETNS, high(ascii));
      break;
    case 'ssl-ascii':
      without(PP2_TYPE.SSL);
      insert(PP2_TYPE.SSL, ssl([tlv(sslString[m % 4]!, high(ascii))]));
      break;
    case 'ssl-cn-utf8':
      without(PP2_TYPE.SSL);
      insert(
        PP2_TYPE.SSL,
        ssl([
          tlv(
            PP2_SUBTYPE_SSL.CN,
            insertAt(Buffer.from(text.toString('utf8')), n, BAD_UTF8[m % BAD_UTF8.length]!),
          ),
        ]),
      );
      break;
    case 'ssl-short':
      without(PP2_TYPE.SSL);
      insert(PP2_TYPE.SSL, Buffer.alloc(m % 5, 1));
      break;
    case 'ssl-trailing':
      without(PP2_TYPE.SSL);
      insert(PP2_TYPE.SSL, ssl([tlv(0x26, text), Buffer.alloc(1 + (m % 2))]));
      break;
    case 'ssl-duplicate': {
      without(PP2_TYPE.SSL);
      const sub = [...sslString, PP2_SUBTYPE_SSL.CN][m % 5]!;
      insert(PP2_TYPE.SSL, ssl([tlv(sub, ascii), tlv(0x26, text), tlv(sub, Buffer.from('x'))]));
      break;
    }
    case 'duplicate': {
      const [type, value] = (
        [
          [PP2_TYPE.ALPN, 'h2'],
          [PP2_TYPE.AUTHORITY, 'example.com'],
          [PP2_TYPE.UNIQUE_ID, 'id'],
          [PP2_TYPE.SSL, '\x01\0\0\0\0'],
          [PP2_TYPE.NETNS, 'ns'],
          [PP2_TYPE.CRC32C, '\0\0\0\0'],
        ] as const
      )[m % 6]!;
      without(type);
      insert(type, latin1(value));
      insert(type, latin1(value));
      break;
    }
    case 'crc-mismatch':
      if (!p.tlvs.some((t) => t.type === PP2_TYPE.CRC32C)) insert(PP2_TYPE.CRC32C, Buffer.alloc(4));
      return assembleV2(p, m).wire;
    case 'crc-size':
      without(PP2_TYPE.CRC32C);
      insert(PP2_TYPE.CRC32C, Buffer.alloc([0, 1, 2, 3, 5, 8][m % 6]!));
      break;
  }
  return assembleV2(p).wire;
}

const V1_DEFECTS = [
  'keyword',
  'family',
  'ipv4',
  'ipv6',
  'port',
  'space',
  'fields',
  'line-end',
  'too-long',
] as const;

/** A valid v1 TCP4 or TCP6 line with one defect. */
function v1Defect(
  src: string,
  dst: string,
  words: number[],
  ports: [number, number],
  kind: (typeof V1_DEFECTS)[number],
  n: number,
  m: number,
): Buffer {
  const v6 = kind === 'ipv6' || (kind !== 'ipv4' && (n & 1) === 1);
  const full = words.map((w) => w.toString(16)).join(':');
  const fields = [
    'PROXY',
    v6 ? 'TCP6' : 'TCP4',
    v6 ? nodeIpv6(words) : src,
    v6 ? full : dst,
    String(ports[0]),
    String(ports[1]),
  ];
  let end = '\r\n';
  const at = 2 + (n % 2); // which address
  switch (kind) {
    case 'keyword':
      fields[0] = ['PROXy', 'PROX', 'PROXYY', 'proxy', 'XPROXY'][m % 5]!;
      break;
    case 'family':
      fields[1] = ['TCP5', 'tcp4', 'UDP4', 'TCP', 'TCP44', 'UNKNOWNX', v6 ? 'TCP4' : 'TCP6'][m % 7]!;
      break;
    case 'ipv4': {
      const parts = fields[at]!.split('.');
      const i = m % 4;
      const bad = [`0${parts[i]}`, String(256 + (m % 2 === 0 ? 0 : m % 744)), '', 'a', '-1', '1 '][
        (n >> 1) % 6
      ]!;
      if ((n >> 1) % 8 === 6) parts.pop();
      else if ((n >> 1) % 8 === 7) parts.push('1');
      else parts[i] = bad;
      fields[at] = parts.join('.');
      break;
    }
    case 'ipv6':
      fields[at] = [
        `${full}:1`, // 9 groups
        `1${'0'.repeat(4)}:${full.slice(full.indexOf(':') + 1)}`, // a group of 5 digits
        `${full.slice(0, full.lastIndexOf(':'))}`, // 7 groups, no '::'
        `${full}:`,
        `:${full}`,
        `1::2::${m % 10}`,
        `g${full.slice(1)}`,
        `1.2.3.4::${m % 10}`,
        `::ffff:1.2.3.${256 + (m % 100)}`,
        `${full}%eth0`,
      ][m % 10]!;
      break;
    case 'port': {
      const i = 4 + ((n >> 1) % 2);
      fields[i] = [
        `0${fields[i]}`,
        String(65_536 + ((n >> 2) % 2 === 0 ? 0 : n % 34_464)),
        '100000',
        '+1',
        '-1',
        '1a',
        '0x1',
      ][m % 7]!;
      break;
    }
    case 'space': {
      const i = m % 6;
      if (i === 5) end = ` ${end}`;
      else fields[i] = `${fields[i]} `;
      break;
    }
    case 'fields':
      if (m % 2 === 0) fields.pop();
      else fields.push(String(m % 10));
      break;
    case 'line-end':
      end = ['\n', '\rx', '\r ', '\r\r', '\r\0', '\n\r'][m % 6]!;
      break;
    case 'too-long':
      // UNKNOWN ignores the rest of the line, but the line must end within 107 bytes.
      return latin1(`PROXY UNKNOWN ${'x'.repeat(92 + (m % 2 === 0 ? 0 : m % 60))}\r\n`);
  }
  return latin1(fields.join(' ') + end);
}

const proxyDefect: fc.Arbitrary<{ wire: Buffer; version: 'v1' | 'v2'; kind: string }> = fc.oneof(
  fc
    .record({
      c: v2Record,
      kind: fc.constantFrom(...V2_DEFECTS),
      n: fc.nat(),
      m: fc.nat(),
      text: bytesOver([0x61, 0x62], 12),
    })
    .map(({ c, kind, n, m, text }) => ({
      wire: v2Defect(c, kind, n, m, text),
      version: 'v2' as const,
      kind,
    })),
  fc
    .record({
      src: fc.ipV4(),
      dst: fc.ipV4(),
      words: ipv6Words,
      ports: fc.tuple(proxyPort, proxyPort),
      kind: fc.constantFrom(...V1_DEFECTS),
      n: fc.nat(),
      m: fc.nat(),
    })
    .map(({ src, dst, words, ports, kind, n, m }) => ({
      wire: v1Defect(src, dst, words, ports, kind, n, m),
      version: 'v1' as const,
      kind,
    })),
);

const proxyProperties: FuzzProperty[] = [
  {
    target: 'proxy-protocol',
    name: 'parseProxyHeader: random and corrupted v1/v2 headers give a well-formed header, need-more or ProxyProtocolError',
    property: fc.property(proxyInput, fc.constantFrom(...VERSIONS), (bytes, versions) => {
      const got = parseOutcome(bytes, versions);
      if (got === undefined) {
        assert.ok(bytes.length < maxProxyHeaderLength(versions), `need more after ${bytes.length} bytes`);
        return;
      }
      if (got === 'error') return;
      checkHeader(got, bytes, versions);
      // 'any' accepts it the same way.
      assert.deepEqual(parseProxyHeader(bytes, 'any'), got);
    }),
  },
  {
    target: 'proxy-protocol',
    name: 'parseProxyHeader: bytes arriving in any chunks are decided at once, the same way as all at once, for good',
    property: fc.property(proxyInput, fc.constantFrom(...VERSIONS), chunking, (bytes, versions, how) => {
      const whole = parseOutcome(bytes, versions);
      // As the stage does: all bytes received so far, after each chunk.
      let received = 0;
      let decided: ProxyHeader | 'error' | undefined;
      for (const chunk of split(bytes, how)) {
        received += chunk.length;
        const now = parseOutcome(bytes.subarray(0, received), versions);
        if (decided === undefined) decided = now;
        // A decision is never taken back: an error stays one, a header stays the same header.
        else if (decided === 'error') assert.equal(now, 'error', 'an error retracted');
        else assert.deepEqual(now, decided, 'a header changed with more bytes');
      }
      assert.deepEqual(decided, whole);
    }),
  },
  {
    target: 'proxy-protocol',
    name: 'parseProxyHeader: valid v1/v2 headers from a model, then payload, parse to exactly that header in any split',
    property: fc.property(
      fc.oneof(v1Case, v2Case),
      bytesOver([0x0d, 0x0a, 0x00], 24),
      bytesOver([0x0d, 0x0a, 0x00], 8),
      chunking,
      ({ wire, expected }, payload, before, how) => {
        const version = expected.version === 1 ? 'v1' : 'v2';
        const other = expected.version === 1 ? 'v2' : 'v1';
        assert.ok(wire.length <= maxProxyHeaderLength(version), `a header of ${wire.length} bytes`);
        // A view into a larger buffer, as a socket's chunk may be: only its own bytes count.
        const all = Buffer.concat([before, wire, payload]);
        const input = all.subarray(before.length);
        for (const versions of ['any', version] as const) {
          assert.deepEqual(parseProxyHeader(input, versions), expected, versions);
          assert.equal(parseProxyHeader(input.subarray(0, wire.length - 1), versions), undefined);
        }
        assert.throws(
          () => parseProxyHeader(input, other),
          (err) => typed(err, ['ERR_PROXY_PROTOCOL']) !== undefined,
        );
        // As the stage reads it: all bytes so far after each chunk; undefined until the header is in.
        let received = 0;
        for (const chunk of split(input, how)) {
          received += chunk.length;
          const got = parseProxyHeader(input.subarray(0, received), version);
          if (received < wire.length) assert.equal(got, undefined, `a header after ${received} bytes`);
          else assert.deepEqual(got, expected, `after ${received} bytes`);
        }
        // The header keeps copies: reusing the input buffer changes nothing in it.
        const header = parseProxyHeader(input, version);
        all.fill(0x55);
        assert.deepEqual(header, expected, 'the header changed with the input buffer');
      },
    ),
  },
  {
    target: 'proxy-protocol',
    name: 'parseProxyHeader: a valid v1/v2 header with one defect is refused with ProxyProtocolError, in any split',
    property: fc.property(
      proxyDefect,
      bytesOver([0x0d, 0x0a, 0x00], 16),
      chunking,
      ({ wire, version, kind }, payload, how) => {
        const input = Buffer.concat([wire, payload]);
        for (const versions of ['any', version] as const) {
          const got = parseOutcome(input, versions);
          assert.equal(got, 'error', `${kind}: ${inspect(wire)} gave ${inspect(got)} with ${versions}`);
          // Refused once the defect arrives, and for good, however the bytes are cut.
          let received = 0;
          let refused = false;
          for (const chunk of split(input, how)) {
            received += chunk.length;
            const now = parseOutcome(input.subarray(0, received), versions);
            if (refused) assert.equal(now, 'error', `${kind}: refusal retracted after ${received} bytes`);
            else assert.ok(now === undefined || now === 'error', `${kind}: a header after ${received} bytes`);
            refused = now === 'error';
          }
          assert.ok(refused, kind);
        }
      },
    ),
  },
];

/** Every property expected to hold, in the order they run. */
export const properties: FuzzProperty[] = [
  ...addressProperties,
  ...lineProperties,
  ...delimiterProperties,
  ...lengthProperties,
  ...optionsProperties,
  ...respProperties,
  ...proxyProperties,
];

// =============================================================================================
// Running a property, for both drivers

export interface FuzzRun {
  property: FuzzProperty;
  failed: boolean;
  runs: number;
  ms: number;
  /** fast-check's report (counterexample, seed, path, error) and how to replay it, when failed. */
  report?: string;
}

/** The command that replays a failure, or reruns everything with `seed`. */
export function replayCommand(seed: number, property?: FuzzProperty, path?: string): string {
  const only = property === undefined ? '' : ` FUZZ_ONLY='${property.name.replace(/'/g, "'\\''")}'`;
  const at = path === undefined ? '' : ` FUZZ_PATH='${path}'`;
  return `FUZZ_SEED=${seed}${only}${at} npm run fuzz`;
}

/** Runs `p` with fast-check; never throws for a failing property (the result says so). */
export function runProperty(p: FuzzProperty, numRuns: number, seed: number, path?: string): FuzzRun {
  const start = performance.now();
  const details = fc.check(p.property, { numRuns, seed, ...(path === undefined ? {} : { path }) });
  const ms = performance.now() - start;
  const run: FuzzRun = { property: p, failed: details.failed, runs: details.numRuns, ms };
  if (details.failed) {
    const report = fc.defaultReportMessage(details) ?? 'property failed';
    const error = inspect(details.errorInstance, { depth: 4 });
    const replay = replayCommand(seed, p, details.counterexamplePath ?? undefined);
    run.report = `${p.target}: ${p.name}\n${report}\nError: ${error}\n\nseed ${seed}; replay with: ${replay}`;
  }
  return run;
}
