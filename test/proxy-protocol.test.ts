import assert from 'node:assert/strict';
import { isIPv4, isIPv6, SocketAddress } from 'node:net';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { InvalidOptionError, ProxyProtocolError } from '../src/errors.js';
import {
  crc32c,
  maxProxyHeaderLength,
  PP2_CLIENT,
  PP2_SUBTYPE_SSL,
  PP2_TYPE,
  type ProxyHeader,
  type ProxyInetAddress,
  type ProxySsl,
  type ProxyTlv,
  type ProxyVersions,
  parseProxyHeader,
} from '../src/proxy-protocol.js';
import { inet4, inet6, SIG, tlv, unixBlock } from './fixtures/proxy-blocks.js';

// A fixed seed keeps the suite deterministic; FC_SEED / FC_RUNS explore further.
const RUNS = {
  numRuns: Number(process.env.FC_RUNS ?? 200),
  seed: process.env.FC_SEED === undefined ? 20_250_117 : Number(process.env.FC_SEED),
};
const VERSIONS: ProxyVersions[] = ['v1', 'v2', 'any'];

// ---------------------------------------------------------------------------------------------
// Test-only encoder and reference implementations, written the obvious way.

const latin1 = (s: string) => Buffer.from(s, 'latin1');

/** CRC-32C bit by bit, no table: the reference the module's table-driven one is checked against. */
function crcReference(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

interface V2Options {
  verCmd?: number;
  fam?: number;
  /** The address block, as is. */
  block?: Buffer;
  /** TLVs, encoded, or raw bytes after the block. */
  tlvs?: Buffer[];
  /** Append a CRC32C TLV: true for the right checksum, a number for that one. */
  crc?: boolean | number;
  /** Overrides the length field. */
  length?: number;
}

/** Encodes a v2 header; a CRC32C TLV, if asked for, comes last. */
function v2(o: V2Options = {}): Buffer {
  const parts = [...(o.tlvs ?? [])];
  if (o.crc !== undefined && o.crc !== false) parts.push(tlv(PP2_TYPE.CRC32C, Buffer.alloc(4)));
  const rest = Buffer.concat([o.block ?? Buffer.alloc(0), ...parts]);
  const fixed = Buffer.alloc(16);
  SIG.copy(fixed);
  fixed[12] = o.verCmd ?? 0x21;
  fixed[13] = o.fam ?? 0x11;
  fixed.writeUInt16BE(o.length ?? rest.length, 14);
  const out = Buffer.concat([fixed, rest]);
  if (o.crc !== undefined && o.crc !== false) {
    out.writeUInt32BE(typeof o.crc === 'number' ? o.crc : crcReference(out), out.length - 4);
  }
  return out;
}

const fullHex = (words: number[]) => words.map((w) => w.toString(16).padStart(4, '0')).join(':');
/** What Node prints for these IPv6 words: the oracle of the module's own formatting. */
const nodeIpv6 = (words: number[]) => new SocketAddress({ address: fullHex(words), family: 'ipv6' }).address;

/** What parseProxyHeader does with `bytes`: the header, undefined, or the error's message. */
function outcome(bytes: Buffer, versions?: ProxyVersions): ProxyHeader | undefined | { error: string } {
  try {
    return parseProxyHeader(bytes, versions);
  } catch (err) {
    if (!(err instanceof ProxyProtocolError) || err.code !== 'ERR_PROXY_PROTOCOL') throw err;
    return { error: err.message };
  }
}

function throwsProxy(bytes: Buffer | string, message: RegExp, versions?: ProxyVersions): void {
  const buf = typeof bytes === 'string' ? latin1(bytes) : bytes;
  assert.throws(
    () => parseProxyHeader(buf, versions),
    (err: unknown) => {
      assert.ok(err instanceof ProxyProtocolError, `not a ProxyProtocolError: ${String(err)}`);
      assert.equal(err.code, 'ERR_PROXY_PROTOCOL');
      assert.match(err.message, message);
      return true;
    },
  );
}

const addressOf = (a: ProxyHeader['source']) => (a as ProxyInetAddress | undefined)?.address;
const hasControl = (s: string) => [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);

function parse(bytes: Buffer | string, versions?: ProxyVersions): ProxyHeader | undefined {
  return parseProxyHeader(typeof bytes === 'string' ? latin1(bytes) : bytes, versions);
}

/** Every strict prefix of `bytes` needs more; `bytes` itself gives the header. */
function assertByteByByte(bytes: Buffer, versions?: ProxyVersions): ProxyHeader {
  for (let i = 0; i < bytes.length; i++) {
    assert.equal(parseProxyHeader(bytes.subarray(0, i), versions), undefined, `prefix of ${i} bytes`);
  }
  const header = parseProxyHeader(bytes, versions);
  assert.ok(header !== undefined);
  assert.equal(header.length, bytes.length);
  return header;
}

// ---------------------------------------------------------------------------------------------
// Generators of valid headers, with the header each must parse to.

interface Case {
  bytes: Buffer;
  header: ProxyHeader;
}

const port = fc.integer({ min: 0, max: 65535 });
const words = fc.array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), {
  minLength: 8,
  maxLength: 8,
});

/** IPv6 words written one of several valid ways: Node's, full, uppercase, with an IPv4 tail. */
function ipv6Style(w: number[], style: 'node' | 'full' | 'upper' | 'v4tail'): string {
  if (style === 'node') return nodeIpv6(w);
  if (style === 'full') return fullHex(w);
  if (style === 'upper') return nodeIpv6(w).toUpperCase();
  const head = w.slice(0, 6).map((x) => x.toString(16));
  return `${head.join(':')}:${w[6]! >> 8}.${w[6]! & 0xff}.${w[7]! >> 8}.${w[7]! & 0xff}`;
}

const ipv6Text = fc
  .tuple(
    words,
    fc.constantFrom('node', 'full', 'upper', 'v4tail') as fc.Arbitrary<Parameters<typeof ipv6Style>[1]>,
  )
  .map(([w, style]): [string, number[]] => [ipv6Style(w, style), w]);

const v1Tcp4 = fc.tuple(fc.ipV4(), fc.ipV4(), port, port).map(
  ([a, b, p, q]): Case => ({
    bytes: latin1(`PROXY TCP4 ${a} ${b} ${p} ${q}\r\n`),
    header: header1('TCP4', { address: a, port: p }, { address: b, port: q }, 0),
  }),
);

const v1Tcp6 = fc
  .tuple(ipv6Text, ipv6Text, port, port)
  .map(
    ([[a, aw], [b, bw], p, q]): Case => ({
      bytes: latin1(`PROXY TCP6 ${a} ${b} ${p} ${q}\r\n`),
      header: header1('TCP6', { address: nodeIpv6(aw), port: p }, { address: nodeIpv6(bw), port: q }, 0),
    }),
  )
  // Two long forms and 5-digit ports can exceed the 107 bytes, rightly refused: not a valid case.
  .filter((c) => c.bytes.length <= 107);

// Anything but CR and LF may follow UNKNOWN, up to the 107 bytes.
const v1Unknown = fc
  .option(
    fc.array(
      fc.integer({ min: 0, max: 255 }).filter((b) => b !== 10 && b !== 13),
      { maxLength: 107 - 15 - 1 },
    ),
  )
  .map((rest): Case => {
    const tail = rest === null ? Buffer.alloc(0) : Buffer.from([0x20, ...rest]);
    return {
      bytes: Buffer.concat([latin1('PROXY UNKNOWN'), tail, latin1('\r\n')]),
      header: header1('UNSPEC', undefined, undefined, 0),
    };
  });

function header1(
  family: 'TCP4' | 'TCP6' | 'UNSPEC',
  source: ProxyHeader['source'],
  destination: ProxyHeader['destination'],
  length: number,
): ProxyHeader {
  const protocol = family === 'UNSPEC' ? 'UNSPEC' : 'STREAM';
  return { version: 1, command: 'PROXY', family, protocol, source, destination, length, tlvs: [] };
}

const v1Case = fc.oneof(v1Tcp4, v1Tcp6, v1Unknown).map((c) => {
  c.header.length = c.bytes.length;
  return c;
});

const bytesOf = (maxLength: number, minLength = 0) =>
  fc.uint8Array({ minLength, maxLength }).map((a) => Buffer.from(a));
const asciiString = (maxLength: number, minLength = 0) =>
  fc.string({
    unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
    minLength,
    maxLength,
  });
// Non-NUL path bytes (a path is cut at its first NUL).
const pathString = (maxLength: number, minLength: number) =>
  fc.string({
    unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
    minLength,
    maxLength,
  });

type Address = { block: Buffer; source: ProxyHeader['source']; destination: ProxyHeader['destination'] };

const unixEnd = fc.oneof(
  pathString(108, 1).map((p) => ({ raw: p, path: p })),
  pathString(107, 1).map((p) => ({ raw: `\0${p}`, path: `@${p}` })),
  fc.constant({ raw: '', path: '' }),
);

function addressFor(fam: number): fc.Arbitrary<Address> {
  switch (fam) {
    case 1:
      return fc.tuple(fc.ipV4(), fc.ipV4(), port, port).map(([a, b, p, q]) => ({
        block: inet4(a, b, p, q),
        source: { address: a, port: p },
        destination: { address: b, port: q },
      }));
    case 2:
      return fc.tuple(words, words, port, port).map(([a, b, p, q]) => ({
        block: inet6(a, b, p, q),
        source: { address: nodeIpv6(a), port: p },
        destination: { address: nodeIpv6(b), port: q },
      }));
    case 3:
      return fc.tuple(unixEnd, unixEnd).map(([a, b]) => ({
        block: unixBlock(a.raw, b.raw),
        source: { path: a.path },
        destination: { path: b.path },
      }));
    default:
      return fc.constant({ block: Buffer.alloc(0), source: undefined, destination: undefined });
  }
}

type Known = Partial<Pick<ProxyHeader, 'alpn' | 'authority' | 'uniqueId' | 'ssl' | 'netns'>>;
interface TlvModel {
  tlv: ProxyTlv;
  known: Known;
}

const RAW_TYPES = [0x00, 0x06, 0x10, 0x21, 0x31, 0xe0, 0xea, 0xef, 0xf0, 0xf8, 0xff];

const sslModel = fc
  .tuple(
    fc.integer({ min: 0, max: 7 }),
    fc.integer({ min: 0, max: 0xffffffff }),
    fc.record(
      {
        version: asciiString(12),
        cn: fc.string({ unit: 'grapheme', maxLength: 10 }),
        cipher: asciiString(30),
        sigAlg: asciiString(12),
        keyAlg: asciiString(12),
      },
      { requiredKeys: [] },
    ),
    fc.array(fc.tuple(fc.constantFrom(0x26, 0x27, 0x00, 0xff), bytesOf(10)), { maxLength: 2 }),
  )
  .map(([client, verify, fields, extra]): TlvModel => {
    const subtypes = {
      version: PP2_SUBTYPE_SSL.VERSION,
      cn: PP2_SUBTYPE_SSL.CN,
      cipher: PP2_SUBTYPE_SSL.CIPHER,
      sigAlg: PP2_SUBTYPE_SSL.SIG_ALG,
      keyAlg: PP2_SUBTYPE_SSL.KEY_ALG,
    };
    const ssl: ProxySsl = { client, verify, tlvs: [] };
    for (const [key, value] of Object.entries(fields) as [keyof typeof subtypes, string][]) {
      ssl[key] = value;
      ssl.tlvs.push({ type: subtypes[key], value: Buffer.from(value) });
    }
    for (const [type, value] of extra) ssl.tlvs.push({ type, value });
    const head = Buffer.alloc(5);
    head[0] = client;
    head.writeUInt32BE(verify, 1);
    const value = Buffer.concat([head, ...ssl.tlvs.map((t) => tlv(t.type, t.value))]);
    return { tlv: { type: PP2_TYPE.SSL, value }, known: { ssl } };
  });

/** TLVs: each registered type at most once, any number of NOOP and unregistered ones, any order. */
const tlvModels = fc
  .tuple(
    fc.record(
      {
        alpn: bytesOf(16).map(
          (v): TlvModel => ({ tlv: { type: PP2_TYPE.ALPN, value: v }, known: { alpn: v } }),
        ),
        authority: fc.string({ unit: 'grapheme', maxLength: 10 }).map(
          (s): TlvModel => ({
            tlv: { type: PP2_TYPE.AUTHORITY, value: Buffer.from(s) },
            known: { authority: s },
          }),
        ),
        uniqueId: bytesOf(128).map(
          (v): TlvModel => ({ tlv: { type: PP2_TYPE.UNIQUE_ID, value: v }, known: { uniqueId: v } }),
        ),
        netns: asciiString(20).map(
          (s): TlvModel => ({ tlv: { type: PP2_TYPE.NETNS, value: Buffer.from(s) }, known: { netns: s } }),
        ),
        ssl: sslModel,
      },
      { requiredKeys: [] },
    ),
    fc.array(
      fc
        .tuple(fc.constantFrom(PP2_TYPE.NOOP, ...RAW_TYPES), bytesOf(20))
        .map(([type, value]): TlvModel => ({ tlv: { type, value }, known: {} })),
      { maxLength: 4 },
    ),
    fc.array(fc.nat()),
  )
  .map(([known, raw, keys]) => {
    const all = [...Object.values(known), ...raw];
    const order = all.map((m, i) => ({ m, k: keys[i] ?? i }));
    order.sort((a, b) => a.k - b.k);
    return order.map((o) => o.m);
  });

const v2Case = fc
  .tuple(
    fc.constantFrom(0, 1), // LOCAL, PROXY
    fc.integer({ min: 0, max: 3 }),
    fc.constantFrom(0, 1), // UNSPEC, STREAM
    tlvModels,
    fc.boolean(), // CRC32C
    fc.option(fc.integer({ min: 0, max: 300 })), // NOOP padding
  )
  .chain(([cmd, fam, proto, tlvs, crc, padding]) =>
    addressFor(cmd === 1 ? fam : 0).map((addr): Case => {
      const models = [...tlvs];
      if (padding !== null) {
        models.push({ tlv: { type: PP2_TYPE.NOOP, value: Buffer.alloc(padding) }, known: {} });
      }
      const bytes = v2({
        verCmd: 0x20 | cmd,
        fam: (fam << 4) | proto,
        block: addr.block,
        tlvs: models.map((m) => tlv(m.tlv.type, m.tlv.value)),
        crc,
      });
      const header: ProxyHeader = {
        version: 2,
        command: cmd === 1 ? 'PROXY' : 'LOCAL',
        family: (['UNSPEC', 'TCP4', 'TCP6', 'UNIX'] as const)[fam]!,
        protocol: proto === 1 ? 'STREAM' : 'UNSPEC',
        source: cmd === 1 && proto === 1 ? addr.source : undefined,
        destination: cmd === 1 && proto === 1 ? addr.destination : undefined,
        length: bytes.length,
        tlvs: models.map((m) => m.tlv),
      };
      for (const m of models) Object.assign(header, m.known);
      if (crc) {
        const value = bytes.subarray(bytes.length - 4);
        header.tlvs.push({ type: PP2_TYPE.CRC32C, value: Buffer.from(value) });
        header.crc32c = value.readUInt32BE(0);
      }
      return { bytes, header };
    }),
  );

const anyCase = fc.oneof(v1Case, v2Case);

// ---------------------------------------------------------------------------------------------

describe('crc32c', () => {
  test('the check value of "123456789" is 0xE3069283', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(0)), 0);
  });

  test('matches a bitwise reference, and chains over pieces', () => {
    fc.assert(
      fc.property(bytesOf(300), fc.nat(), (bytes, cut) => {
        const k = cut % (bytes.length + 1);
        assert.equal(crc32c(bytes), crcReference(bytes));
        assert.equal(crc32c(bytes.subarray(k), crc32c(bytes.subarray(0, k))), crc32c(bytes));
      }),
      RUNS,
    );
  });
});

describe('constants and limits', () => {
  test('PP2 constants are the spec values, frozen', () => {
    assert.deepEqual(
      { ...PP2_TYPE },
      {
        ALPN: 0x01,
        AUTHORITY: 0x02,
        CRC32C: 0x03,
        NOOP: 0x04,
        UNIQUE_ID: 0x05,
        SSL: 0x20,
        NETNS: 0x30,
        MIN_CUSTOM: 0xe0,
        MAX_CUSTOM: 0xef,
        MIN_EXPERIMENT: 0xf0,
        MAX_EXPERIMENT: 0xf7,
        MIN_FUTURE: 0xf8,
        MAX_FUTURE: 0xff,
      },
    );
    assert.deepEqual(
      { ...PP2_SUBTYPE_SSL },
      { VERSION: 0x21, CN: 0x22, CIPHER: 0x23, SIG_ALG: 0x24, KEY_ALG: 0x25 },
    );
    assert.deepEqual({ ...PP2_CLIENT }, { SSL: 0x01, CERT_CONN: 0x02, CERT_SESS: 0x04 });
    for (const c of [PP2_TYPE, PP2_SUBTYPE_SSL, PP2_CLIENT]) assert.ok(Object.isFrozen(c));
  });

  test('maxProxyHeaderLength: 107 for v1, 16 + 65535 for v2 and any', () => {
    assert.equal(maxProxyHeaderLength('v1'), 107);
    assert.equal(maxProxyHeaderLength('v2'), 65551);
    assert.equal(maxProxyHeaderLength('any'), 65551);
  });

  test('an invalid versions argument is an InvalidOptionError (a programming error, not input)', () => {
    assert.throws(() => parseProxyHeader(Buffer.from('P'), 'v3' as ProxyVersions), InvalidOptionError);
    assert.throws(() => maxProxyHeaderLength('' as ProxyVersions), InvalidOptionError);
  });
});

describe('opt-in: bytes must start with a header', () => {
  test('nothing yet needs more', () => {
    for (const v of VERSIONS) assert.equal(parse(Buffer.alloc(0), v), undefined);
  });

  test('a first byte that starts no accepted signature is refused at once', () => {
    for (const first of ['G', '\x16', '\0', 'p', ' ', 'S', '\n']) {
      throwsProxy(first, /PROXY protocol: expected a header, got "/);
    }
    throwsProxy('GET / HTTP/1.1\r\n', /expected a header, got "GET \/ HTTP\/1\.1\\r\\n"/);
    throwsProxy('\x16\x03\x01', /expected a v1 header, got "\\x16\\x03\\x01"/, 'v1');
    throwsProxy('SSH-2.0', /expected a v2 header, got "SSH-2\.0"/, 'v2');
  });

  test("with 'v1', a v2 signature is refused naming it, from its first byte", () => {
    throwsProxy('\r', /got a v2 signature but only v1 is accepted/, 'v1');
    throwsProxy(v2({ block: inet4('1.2.3.4', '5.6.7.8', 1, 2) }), /v2 signature but only v1/, 'v1');
    // The v2 signature's first byte, then something else: a stranger, not v2.
    throwsProxy('\rX', /expected a v1 header/, 'v1');
  });

  test("with 'v2', a v1 header is refused naming it, from its first byte", () => {
    throwsProxy('P', /got a v1 header \("PROXY \.\.\."\) but only v2 is accepted/, 'v2');
    throwsProxy('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n', /v1 header .* only v2/, 'v2');
    throwsProxy('PUT /', /expected a v2 header, got "PUT \/"/, 'v2');
  });

  test('both versions are accepted by default and with any', () => {
    const one = latin1('PROXY UNKNOWN\r\n');
    const two = v2({ verCmd: 0x20, fam: 0 });
    for (const v of [undefined, 'any'] as const) {
      assert.equal(parse(one, v)?.version, 1);
      assert.equal(parse(two, v)?.version, 2);
    }
    assert.equal(parse(one, 'v1')?.version, 1);
    assert.equal(parse(two, 'v2')?.version, 2);
  });
});

describe('v1', () => {
  test('TCP4', () => {
    const h = parse('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
    assert.deepEqual(h, {
      version: 1,
      command: 'PROXY',
      family: 'TCP4',
      protocol: 'STREAM',
      source: { address: '192.168.0.1', port: 56324 },
      destination: { address: '192.168.0.11', port: 443 },
      length: 47,
      tlvs: [],
    });
  });

  test('TCP6, printed as Node prints it', () => {
    const h = parse('PROXY TCP6 2001:DB8:0000:0:0:0:0:1 ::ffff:192.0.2.1 0 65535\r\n');
    assert.deepEqual(h?.source, { address: '2001:db8::1', port: 0 });
    assert.deepEqual(h?.destination, { address: '::ffff:192.0.2.1', port: 65535 });
    const full = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    assert.equal(parse(`PROXY TCP6 ${full} ${full} 65535 65535\r\n`)?.length, 104); // the spec's TCP6 maximum
    const edge = parse('PROXY TCP6 :: 1:2:3:4:5:6:7:: 1 2\r\n');
    assert.deepEqual(edge?.source, { address: '::', port: 1 });
    assert.deepEqual(edge?.destination, { address: '1:2:3:4:5:6:7:0', port: 2 });
  });

  test('UNKNOWN, short or followed by anything up to CRLF, has no addresses', () => {
    for (const line of [
      'PROXY UNKNOWN\r\n',
      'PROXY UNKNOWN ffff:f...f:ffff anything  at\tall \x00\xff\r\n',
      `PROXY UNKNOWN ${'x'.repeat(107 - 16)}\r\n`, // 107 bytes exactly
    ]) {
      assert.deepEqual(parse(line), {
        version: 1,
        command: 'PROXY',
        family: 'UNSPEC',
        protocol: 'UNSPEC',
        source: undefined,
        destination: undefined,
        length: line.length,
        tlvs: [],
      });
    }
    throwsProxy(`PROXY UNKNOWN ${'x'.repeat(107 - 15)}\r\n`, /PROXY v1: no CRLF within 107 bytes/);
    throwsProxy('PROXY UNKNOWNX\r\n', /unknown protocol family "UNKNOWNX"/);
  });

  test("the spec's worst case of 107 bytes is accepted", () => {
    const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const line = `PROXY UNKNOWN ${f} ${f} 65535 65535\r\n`;
    assert.equal(line.length, 107);
    assert.equal(parse(line)?.length, 107);
  });

  test('no CRLF within 107 bytes is an error, right at the 106th byte', () => {
    const junk = `PROXY UNKNOWN ${'a'.repeat(200)}`;
    assert.equal(parse(junk.slice(0, 105)), undefined);
    throwsProxy(junk.slice(0, 106), /no CRLF within 107 bytes/);
    throwsProxy(junk, /no CRLF within 107 bytes/);
  });

  test('a lone CR or a LF without CR is an error', () => {
    throwsProxy('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', /LF without CR at offset 30/);
    throwsProxy('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', /CR not followed by LF at offset 30/);
    throwsProxy('PROXY UNKNOWN\r\r\n', /CR not followed by LF/);
    throwsProxy('PROXY UNKNOWN a\nb\r\n', /LF without CR/);
    // A CR alone at the end may still get its LF.
    assert.equal(parse('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r'), undefined);
  });

  test('a CR ends the line: what precedes it must be complete', () => {
    throwsProxy('PROXY TCP4 1.2.3.4 5.6.7.8 1\r', /missing the TCP4 destination port/);
    throwsProxy('PROXY\r', /missing the protocol family/);
    throwsProxy('PROXY TCP4 1.2.3\r', /source address "1\.2\.3" has fewer than 4 numbers/);
    throwsProxy('PROX\r\n', /expected "PROXY", got "PROX"/);
  });

  const errors: [string, RegExp][] = [
    // Family.
    ['PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', /unknown protocol family "TCP5"/],
    ['PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n', /unknown protocol family "tcp4"/],
    ['PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n', /expected "PROXY", got "PROXYTCP4"/],
    // Addresses.
    ['PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n', /TCP4 source address "1\.2\.3\.256" has a number over 255/],
    ['PROXY TCP4 1.2.3.4 05.6.7.8 1 2\r\n', /TCP4 destination address "05\.6\.7\.8" has a leading zero/],
    ['PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n', /has a leading zero/],
    ['PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n', /has more than 4 numbers/],
    ['PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n', /is not an IPv4 address/],
    ['PROXY TCP4 1.2.3.4 example.com 1 2\r\n', /destination address "example\.com" is not an IPv4 address/],
    [
      'PROXY TCP4 ::1 5.6.7.8 1 2\r\n',
      /TCP4 source address "::1" is not an IPv4 address \(an IPv6 address needs TCP6\)/,
    ],
    ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', /TCP6 source address "1\.2\.3\.4" is not an IPv6 address \(an IPv4/],
    ['PROXY TCP6 ::1 1:2:3:4:5:6:7 1 2\r\n', /destination address "1:2:3:4:5:6:7" has fewer than 8 groups/],
    ['PROXY TCP6 1::2::3 ::1 1 2\r\n', /has more than one '::'/],
    ['PROXY TCP6 12345:: ::1 1 2\r\n', /has a group of more than 4 hex digits/],
    ['PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n', /has more than 8 groups/],
    ['PROXY TCP6 :1::2 ::1 1 2\r\n', /starts with a single colon/],
    ['PROXY TCP6 1:2: ::1 1 2\r\n', /ends with a single colon/],
    ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', /"fe80::1%eth0" is not an IPv6 address/],
    ['PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n', /has an IPv4 part that has a leading zero/],
    ['PROXY TCP6 1:2:3:4:5:6::1.2.3.4 ::1 1 2\r\n', /has an IPv4 part in the wrong place/],
    // Ports.
    ['PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n', /PROXY v1: TCP4 source port 70000 is over 65535/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n', /destination port 65536 is over 65535/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n', /source port "080" has a leading zero/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n', /has a leading zero/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n', /source port "\+80" is not a decimal number/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', /"-1" is not a decimal number/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 0x50\r\n', /destination port "0x50" is not a decimal number/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n', /empty TCP4 destination port/],
    // Fields and spaces.
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', /missing the TCP4 destination port/],
    ['PROXY TCP4 1.2.3.4\r\n', /missing the TCP4 destination address/],
    ['PROXY TCP4\r\n', /missing the TCP4 source address/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', /unexpected " 3" after the destination port/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', /unexpected " " after the destination port/],
    [
      'PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n',
      /empty protocol family \(fields are separated by exactly one space\)/,
    ],
    [
      'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n',
      /empty TCP4 source address \(fields are separated by exactly one space\)/,
    ],
    ['PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n', /empty TCP4 source port/],
    [
      'PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n',
      /source address "1\.2\.3\.4\\t5\.6\.7\.8" has more than 4 numbers/,
    ],
    [' PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n', /expected a header/],
  ];

  test('malformed lines are refused, the message naming the bad value', () => {
    for (const [line, message] of errors) throwsProxy(line, message);
  });

  test('and refused as soon as the line cannot become valid, before its CRLF', () => {
    // Each prefix is refused, while the same one byte shorter still needs more.
    const early: [string, RegExp][] = [
      ['PROXYX', /expected "PROXY", got "PROXYX"/],
      ['PROXY  ', /empty protocol family/],
      ['PROXY TCP5', /unknown protocol family "TCP5"/],
      ['PROXY UNKNOWNX', /unknown protocol family "UNKNOWNX"/],
      ['PROXY TCP4 01', /"01" has a leading zero/],
      ['PROXY TCP4 256', /"256" has a number over 255/],
      ['PROXY TCP4 1.2.3.4.', /has more than 4 numbers/],
      ['PROXY TCP4 1:', /"1:" is not an IPv4 address \(an IPv6 address needs TCP6\)/],
      ['PROXY TCP4 1.2.3.4\t', /is not an IPv4 address/],
      ['PROXY TCP6 1.', /"1\." is not an IPv6 address/],
      ['PROXY TCP6 :::', /more than one '::'/],
      ['PROXY TCP6 :1', /starts with a single colon/],
      ['PROXY TCP6 12345', /more than 4 hex digits/],
      ['PROXY TCP6 1:2:3:4:5:6:7:8:', /more than 8 groups/],
      ['PROXY TCP6 1::2:3:4:5:6:7:', /more than 8 groups/],
      ['PROXY TCP6 1:2:3:4:5:1.', /IPv4 part in the wrong place/],
      ['PROXY TCP6 ::ffff:1.2.3.04', /IPv4 part that has a leading zero/],
      ['PROXY TCP6 fe80::1%', /is not an IPv6 address/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 +', /source port "\+" is not a decimal number/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 00', /source port "00" has a leading zero/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 70000', /PROXY v1: TCP4 source port 70000 is over 65535/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 65536', /destination port 65536 is over 65535/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ', /unexpected " " after the destination port/],
    ];
    for (const [prefix, message] of early) {
      assert.equal(parse(prefix.slice(0, -1)), undefined, prefix.slice(0, -1));
      throwsProxy(prefix, message);
    }
  });

  test('valid prefixes need more', () => {
    for (const prefix of [
      'P',
      'PROX',
      'PROXY',
      'PROXY ',
      'PROXY T',
      'PROXY U',
      'PROXY UNKNOWN',
      'PROXY UNKNOWN ',
      'PROXY TCP4 ',
      'PROXY TCP4 1',
      'PROXY TCP4 1.',
      'PROXY TCP4 255.255.255.25',
      'PROXY TCP4 1.2.3.4 5.6.7.8 0',
      'PROXY TCP4 1.2.3.4 5.6.7.8 6553',
      'PROXY TCP4 1.2.3.4 5.6.7.8 65535 1',
      'PROXY TCP6 :',
      'PROXY TCP6 ::',
      'PROXY TCP6 ::ffff:1.2.',
      'PROXY TCP6 1:2:3:4:5:6:7:',
      'PROXY TCP6 1:2:3:4:5:6:7::',
      'PROXY TCP6 1:2:3:4:5:6:1.2.3.4',
      'PROXY TCP6 abcd',
    ]) {
      assert.equal(parse(prefix), undefined, prefix);
    }
  });

  test('one byte at a time', () => {
    for (const line of [
      'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n',
      'PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 1 2\r\n',
      'PROXY UNKNOWN\r\n',
      'PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n',
    ]) {
      for (const v of ['v1', 'any'] as const) assertByteByByte(latin1(line), v);
    }
  });

  test('followed by payload in the same buffer: length points at the payload', () => {
    const line = 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n';
    const bytes = latin1(`${line}GET / HTTP/1.1\r\n\r\n`);
    const h = parse(bytes);
    assert.ok(h);
    assert.equal(h.length, line.length);
    assert.equal(bytes.subarray(h.length).toString(), 'GET / HTTP/1.1\r\n\r\n');
    // The payload may hold anything, CRs and LFs included.
    assert.equal(parse(latin1(`PROXY UNKNOWN\r\n\n\r\x00`))?.length, 15);
  });
});

describe('v2', () => {
  test('TCP over IPv4 (the example from the HAProxy-written capture)', () => {
    const bytes = Buffer.from('0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050', 'hex');
    assert.deepEqual(parse(bytes), {
      version: 2,
      command: 'PROXY',
      family: 'TCP4',
      protocol: 'STREAM',
      source: { address: '172.19.0.1', port: 42578 },
      destination: { address: '172.19.0.3', port: 80 },
      length: 28,
      tlvs: [],
    });
  });

  test('TCP over IPv6, printed as Node prints it', () => {
    const src = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1];
    const dst = [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304];
    const h = parse(v2({ fam: 0x21, block: inet6(src, dst, 1234, 443) }));
    assert.deepEqual(h?.source, { address: '2001:db8::1', port: 1234 });
    assert.deepEqual(h?.destination, { address: '::ffff:1.2.3.4', port: 443 });
    assert.equal(h?.family, 'TCP6');
  });

  test('any IPv6 address is printed exactly as Node prints it', () => {
    fc.assert(
      fc.property(words, (w) => {
        const h = parse(v2({ fam: 0x21, block: inet6(w, w, 1, 2) }));
        assert.equal(addressOf(h?.source), nodeIpv6(w));
      }),
      { ...RUNS, numRuns: RUNS.numRuns * 5 },
    );
  });

  test('UNIX: path up to the first NUL, abstract as @name, unnamed as empty', () => {
    const h = parse(v2({ fam: 0x31, block: unixBlock('/run/app.sock', '/var/lib/haproxy/x') }));
    assert.equal(h?.family, 'UNIX');
    assert.deepEqual(h?.source, { path: '/run/app.sock' });
    assert.deepEqual(h?.destination, { path: '/var/lib/haproxy/x' });
    // Bytes after the first NUL are padding, whatever they are.
    const junk = unixBlock('/a\0junk', '');
    assert.deepEqual(parse(v2({ fam: 0x31, block: junk }))?.source, { path: '/a' });
    assert.deepEqual(parse(v2({ fam: 0x31, block: junk }))?.destination, { path: '' });
    // Abstract: a leading NUL, the name up to its last non-NUL byte (NULs inside kept).
    const abs = parse(v2({ fam: 0x31, block: unixBlock('\0my-abstract', '\0a\0b') }));
    assert.deepEqual(abs?.source, { path: '@my-abstract' });
    assert.deepEqual(abs?.destination, { path: '@a\0b' });
    // A full 108-byte path has no NUL at all.
    const long = 'p'.repeat(108);
    assert.deepEqual(parse(v2({ fam: 0x31, block: unixBlock(long, long) }))?.source, { path: long });
    // UTF-8 paths.
    assert.deepEqual(parse(v2({ fam: 0x31, block: unixBlock('/tmp/é', '') }))?.source, { path: '/tmp/é' });
  });

  test('UNSPEC family or protocol: no addresses, the block still skipped', () => {
    const h = parse(v2({ fam: 0x00, tlvs: [tlv(0xe0, 'x')] }));
    assert.equal(h?.family, 'UNSPEC');
    assert.equal(h?.protocol, 'UNSPEC');
    assert.equal(h?.source, undefined);
    assert.deepEqual(h?.tlvs, [{ type: 0xe0, value: Buffer.from('x') }]);
    // AF_INET with protocol UNSPEC: "The receiver should ignore address information."
    const inet = parse(v2({ fam: 0x10, block: inet4('1.2.3.4', '5.6.7.8', 1, 2), tlvs: [tlv(0xe1, 'y')] }));
    assert.equal(inet?.family, 'TCP4');
    assert.equal(inet?.protocol, 'UNSPEC');
    assert.equal(inet?.source, undefined);
    assert.equal(inet?.destination, undefined);
    assert.deepEqual(inet?.tlvs, [{ type: 0xe1, value: Buffer.from('y') }]);
    assert.equal(parse(v2({ fam: 0x01 }))?.family, 'UNSPEC');
  });

  test('LOCAL: no addresses whatever the family, the length honoured, TLVs right after the 16 bytes', () => {
    assert.deepEqual(parse(v2({ verCmd: 0x20, fam: 0x00 })), {
      version: 2,
      command: 'LOCAL',
      family: 'UNSPEC',
      protocol: 'UNSPEC',
      source: undefined,
      destination: undefined,
      length: 16,
      tlvs: [],
    });
    for (const fam of [0x11, 0x21, 0x31, 0x00, 0x01]) {
      const h = parse(v2({ verCmd: 0x20, fam, tlvs: [tlv(0xea, 'a')] }));
      assert.equal(h?.command, 'LOCAL');
      assert.equal(h?.source, undefined);
      assert.deepEqual(h?.tlvs, [{ type: 0xea, value: Buffer.from('a') }]);
    }
  });

  test('LOCAL is accepted whatever its block holds: TLVs after the address block, or junk (dropped)', () => {
    // TLVs after a real AF_INET address block (a sender following the family byte).
    const block = Buffer.alloc(12, 7);
    const alpn = Buffer.from([0x01, 0x00, 0x02, 0x68, 0x32]); // ALPN "h2"
    const after = v2({ verCmd: 0x20, fam: 0x11, tlvs: [block, alpn] });
    const h = parseProxyHeader(after);
    assert.equal(h?.command, 'LOCAL');
    assert.equal(h?.alpn?.toString(), 'h2');
    assert.equal(h?.source, undefined);
    // Junk that parses as TLVs from neither offset: the header is still valid, with no TLVs.
    const junk = v2({ verCmd: 0x20, fam: 0, tlvs: [Buffer.from([0x04])] });
    const j = parseProxyHeader(junk);
    assert.equal(j?.command, 'LOCAL');
    assert.deepEqual(j?.tlvs, []);
    assert.equal(j?.length, junk.length);
  });

  test("AWS NLB's padded LOCAL health check header (as captured): CRC32C verified, NOOP padding", () => {
    // From kubernetes/kubernetes#57250: LOCAL, AF_INET/STREAM, length 84, a CRC32C TLV at byte 16
    // then a NOOP TLV of 74 zero bytes. The CRC only verifies with the TLVs read from byte 16.
    const capture = Buffer.concat([
      Buffer.from('0d0a0d0a000d0a515549540a20110054030004bce5951f04004a', 'hex'),
      Buffer.alloc(74),
    ]);
    const h = parse(Buffer.concat([capture, latin1('GET /health HTTP/1.1\r\n')]));
    assert.deepEqual(h, {
      version: 2,
      command: 'LOCAL',
      family: 'TCP4',
      protocol: 'STREAM',
      source: undefined,
      destination: undefined,
      length: 100,
      tlvs: [
        { type: PP2_TYPE.CRC32C, value: Buffer.from('bce5951f', 'hex') },
        { type: PP2_TYPE.NOOP, value: Buffer.alloc(74) },
      ],
      crc32c: 0xbce5951f,
    });
    assert.equal(parse(capture, 'v2')?.length, 100);
  });

  test('AWS NLB: padded LOCAL with UNSPEC, and PROXY with the 0xEA (VPC endpoint) TLV kept raw', () => {
    const vpce = Buffer.concat([Buffer.from([0x01]), latin1('vpce-0123456789abcdef0')]);
    const local = parse(
      v2({ verCmd: 0x20, fam: 0x00, tlvs: [tlv(0xea, vpce), tlv(0x04, Buffer.alloc(40))] }),
    );
    assert.equal(local?.command, 'LOCAL');
    assert.equal(local?.length, 16 + 3 + vpce.length + 3 + 40);
    assert.deepEqual(local?.tlvs[0], { type: 0xea, value: vpce });
    const proxy = parse(
      v2({ block: inet4('10.0.0.1', '10.0.0.2', 40000, 443), tlvs: [tlv(0xea, vpce)], crc: true }),
    );
    assert.deepEqual(proxy?.source, { address: '10.0.0.1', port: 40000 });
    assert.deepEqual(proxy?.tlvs[0], { type: 0xea, value: vpce });
    assert.equal(proxy?.alpn, undefined);
  });

  test('the registered TLVs are decoded, and all are kept raw in order', () => {
    const ssl = Buffer.concat([
      Buffer.from([PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS, 0, 0, 0, 0]),
      tlv(PP2_SUBTYPE_SSL.VERSION, 'TLSv1.3'),
      tlv(PP2_SUBTYPE_SSL.CN, 'client.example.com'),
      tlv(PP2_SUBTYPE_SSL.CIPHER, 'TLS_AES_256_GCM_SHA384'),
      tlv(PP2_SUBTYPE_SSL.SIG_ALG, 'RSA-SHA256'),
      tlv(PP2_SUBTYPE_SSL.KEY_ALG, 'RSA2048'),
      tlv(0x26, 'x25519'), // a later sub-type (SSL_GROUP): raw only
    ]);
    const tlvs = [
      tlv(PP2_TYPE.ALPN, 'h2'),
      tlv(PP2_TYPE.AUTHORITY, 'bücher.example'),
      tlv(PP2_TYPE.NOOP, Buffer.alloc(3)),
      tlv(PP2_TYPE.UNIQUE_ID, Buffer.alloc(128, 7)),
      tlv(PP2_TYPE.SSL, ssl),
      tlv(PP2_TYPE.NETNS, 'blue'),
      tlv(0xe5, Buffer.from([1, 2, 3])),
    ];
    const bytes = v2({ block: inet4('1.2.3.4', '5.6.7.8', 1, 2), tlvs, crc: true });
    const h = parse(bytes);
    assert.ok(h);
    assert.deepEqual(h.alpn, Buffer.from('h2'));
    assert.equal(h.authority, 'bücher.example');
    assert.deepEqual(h.uniqueId, Buffer.alloc(128, 7));
    assert.equal(h.netns, 'blue');
    assert.equal(h.crc32c, bytes.readUInt32BE(bytes.length - 4));
    assert.deepEqual(h.ssl, {
      client: 7,
      verify: 0,
      version: 'TLSv1.3',
      cn: 'client.example.com',
      cipher: 'TLS_AES_256_GCM_SHA384',
      sigAlg: 'RSA-SHA256',
      keyAlg: 'RSA2048',
      tlvs: [
        { type: 0x21, value: Buffer.from('TLSv1.3') },
        { type: 0x22, value: Buffer.from('client.example.com') },
        { type: 0x23, value: Buffer.from('TLS_AES_256_GCM_SHA384') },
        { type: 0x24, value: Buffer.from('RSA-SHA256') },
        { type: 0x25, value: Buffer.from('RSA2048') },
        { type: 0x26, value: Buffer.from('x25519') },
      ],
    });
    assert.deepEqual(
      h.tlvs.map((t) => t.type),
      [0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xe5, 0x03],
    );
    assert.deepEqual(h.tlvs[6], { type: 0xe5, value: Buffer.from([1, 2, 3]) });
    // SSL with a failed verification and no sub-TLVs.
    const bare = parse(
      v2({ tlvs: [tlv(PP2_TYPE.SSL, Buffer.from([1, 0, 0, 0, 9]))], block: Buffer.alloc(12) }),
    );
    assert.deepEqual(bare?.ssl, { client: 1, verify: 9, tlvs: [] });
  });

  test('zero-length TLVs are fine, ALPN and AUTHORITY included', () => {
    const h = parse(
      v2({
        block: Buffer.alloc(12),
        tlvs: [tlv(PP2_TYPE.NOOP, ''), tlv(0xe0, ''), tlv(PP2_TYPE.ALPN, ''), tlv(PP2_TYPE.AUTHORITY, '')],
      }),
    );
    assert.equal(h?.tlvs.length, 4);
    assert.deepEqual(h?.tlvs[1], { type: 0xe0, value: Buffer.alloc(0) });
    assert.deepEqual(h?.alpn, Buffer.alloc(0));
    assert.equal(h?.authority, '');
  });

  test('a length of 65535: all padding, or one big TLV, byte by byte too', () => {
    // Zero padding reads as zero-length TLVs of type 0 (65535 and every block size divide by 3).
    const pad = v2({ verCmd: 0x20, fam: 0x00, tlvs: [Buffer.alloc(65535)] });
    const h = parse(pad);
    assert.equal(h?.length, 65551);
    assert.equal(h?.tlvs.length, 65535 / 3);
    assert.ok(h?.tlvs.every((t) => t.type === 0 && t.value.length === 0));
    const big = v2({
      block: inet4('1.2.3.4', '5.6.7.8', 1, 2),
      tlvs: [tlv(PP2_TYPE.NOOP, Buffer.alloc(65520, 1))],
    });
    assert.equal(big.length, 65551);
    const one = assertByteByByte(big, 'v2');
    assert.equal(one.tlvs[0]?.value.length, 65520);
    assert.deepEqual(one.source, { address: '1.2.3.4', port: 1 });
  });

  test('one byte at a time', () => {
    for (const bytes of [
      v2({
        block: inet4('1.2.3.4', '5.6.7.8', 1, 2),
        tlvs: [tlv(PP2_TYPE.AUTHORITY, 'example.com')],
        crc: true,
      }),
      v2({ fam: 0x21, block: inet6([1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 1], 1, 2) }),
      v2({ fam: 0x31, block: unixBlock('/a', '\0b') }),
      v2({ verCmd: 0x20, fam: 0x00 }),
    ]) {
      for (const v of ['v2', 'any'] as const) assertByteByByte(bytes, v);
    }
  });

  test('followed by payload in the same buffer; a view of a longer buffer is not read past', () => {
    const header = v2({ block: inet4('1.2.3.4', '5.6.7.8', 1, 2), tlvs: [tlv(0xe0, 'abc')] });
    const whole = Buffer.concat([header, latin1('\r\n\r\n\0\r\nQUIT\npayload')]);
    assert.equal(parse(whole)?.length, header.length);
    // The view ends 1 byte short: the bytes after it in memory are not the caller's to give.
    assert.equal(parse(whole.subarray(0, header.length - 1)), undefined);
    const small = latin1('PROXY UNKNOWN\r\n');
    assert.equal(parse(small.subarray(0, 14)), undefined);
  });

  test('the header copies what it keeps: the input buffer may be reused', () => {
    const bytes = v2({
      block: Buffer.alloc(12),
      tlvs: [tlv(PP2_TYPE.ALPN, 'h2'), tlv(PP2_TYPE.UNIQUE_ID, 'id'), tlv(0xe0, 'raw')],
    });
    const h = parse(bytes);
    bytes.fill(0);
    assert.deepEqual(h?.alpn, Buffer.from('h2'));
    assert.deepEqual(h?.uniqueId, Buffer.from('id'));
    assert.deepEqual(h?.tlvs[2]?.value, Buffer.from('raw'));
    // Not a view of the input (both may sit in Node's Buffer pool, but never overlap).
    for (const { value } of h?.tlvs ?? []) {
      const disjoint =
        value.buffer !== bytes.buffer ||
        value.byteOffset >= bytes.byteOffset + bytes.length ||
        value.byteOffset + value.length <= bytes.byteOffset;
      assert.ok(disjoint);
    }
  });

  test('CRC32C: a good one is verified wherever the TLV is; a bad one is refused', () => {
    const block = inet4('1.2.3.4', '5.6.7.8', 1, 2);
    const good = v2({ block, tlvs: [tlv(0xe0, 'a')], crc: true });
    assert.equal(parse(good)?.crc32c, good.readUInt32BE(good.length - 4));
    // CRC first, then other TLVs.
    const first = v2({ block, tlvs: [tlv(PP2_TYPE.CRC32C, Buffer.alloc(4)), tlv(0xe0, 'after')] });
    first.writeUInt32BE(crcReference(first), 16 + 12 + 3);
    assert.ok(parse(first)?.crc32c !== undefined);
    const bad = v2({ block, tlvs: [tlv(0xe0, 'a')], crc: 0x12345678 });
    throwsProxy(bad, /PROXY v2: CRC32C mismatch: header says 0x12345678, computed 0x[0-9a-f]{8}/);
    // A bit flipped anywhere else in the header is caught too.
    const flipped = Buffer.from(good);
    flipped[17]! ^= 1;
    throwsProxy(flipped, /CRC32C mismatch/);
    // Checked before the other TLVs are decoded: the mismatch explains a corrupted value.
    const corrupt = v2({ block, tlvs: [tlv(PP2_TYPE.AUTHORITY, 'a')], crc: true });
    corrupt[16 + 12 + 3] = 0xff;
    throwsProxy(corrupt, /CRC32C mismatch/);
    throwsProxy(
      v2({ block, tlvs: [tlv(PP2_TYPE.CRC32C, Buffer.alloc(3))] }),
      /CRC32C TLV of 3 bytes \(exactly 4\)/,
    );
    throwsProxy(v2({ block, tlvs: [tlv(PP2_TYPE.CRC32C, Buffer.alloc(5))] }), /CRC32C TLV of 5 bytes/);
  });

  const block = inet4('1.2.3.4', '5.6.7.8', 1, 2);
  /** Two CRC32C TLVs, the first one right (computed with only its own field zeroed). */
  function twoCrcs(): Buffer {
    const bytes = v2({ block, tlvs: [tlv(PP2_TYPE.CRC32C, Buffer.alloc(4)), tlv(PP2_TYPE.CRC32C, 'abcd')] });
    bytes.writeUInt32BE(crcReference(bytes), 16 + 12 + 3);
    return bytes;
  }
  const v2errors: [Buffer, RegExp][] = [
    // Signature.
    [
      Buffer.from('0d0a0d0a000d0a515549540b21', 'hex'),
      /PROXY protocol: "\\r\\n\\r\\n\\x00\\r\\nQUIT\\x0b" is not a v2/,
    ],
    [Buffer.from('0d0a0d0a01', 'hex'), /is not a v2 signature/],
    // Version and command.
    [v2({ verCmd: 0x11, block }), /PROXY v2: unsupported version 1 \(byte 13 is 0x11\)/],
    [v2({ verCmd: 0x31, block }), /unsupported version 3/],
    [v2({ verCmd: 0x01, block }), /unsupported version 0/],
    [v2({ verCmd: 0x22, block }), /PROXY v2: unknown command 0x2 \(LOCAL or PROXY\)/],
    [v2({ verCmd: 0x2f, block }), /unknown command 0xf/],
    // Family and protocol.
    [v2({ fam: 0x41, block }), /PROXY v2: unknown address family 0x4/],
    [v2({ fam: 0xf1, block }), /unknown address family 0xf/],
    [v2({ fam: 0x12, block }), /PROXY v2: DGRAM \(UDP\) is not supported, only STREAM/],
    [v2({ fam: 0x32, block: unixBlock('', '') }), /DGRAM/],
    [v2({ verCmd: 0x20, fam: 0x02 }), /DGRAM/],
    [v2({ fam: 0x13, block }), /unknown transport protocol 0x3/],
    // Length shorter than the address block.
    [
      v2({ fam: 0x11, block: Buffer.alloc(11) }),
      /length 11 is shorter than the AF_INET address block \(12 bytes\)/,
    ],
    [v2({ fam: 0x21, block: Buffer.alloc(12) }), /length 12 is shorter than the AF_INET6 address block \(36/],
    [
      v2({ fam: 0x31, block: Buffer.alloc(215) }),
      /length 215 is shorter than the AF_UNIX address block \(216/,
    ],
    [v2({ fam: 0x10, block: Buffer.alloc(0) }), /shorter than the AF_INET address block/],
    // TLV structure.
    [
      v2({ block, tlvs: [Buffer.from([0xe0, 0x00, 0x05, 1, 2])] }),
      /TLV 0xe0 at offset 28 declares 5 bytes but only 2/,
    ],
    [
      v2({ block, tlvs: [tlv(0xe0, 'a'), Buffer.from([0x04])] }),
      /1 trailing byte at the end of the header cannot/,
    ],
    [
      v2({ block, tlvs: [Buffer.from([0x04, 0x00])] }),
      /2 trailing bytes at the end of the header cannot hold a TLV/,
    ],
    [v2({ verCmd: 0x21, fam: 0, tlvs: [Buffer.from([0x04])] }), /1 trailing byte/],
    // Registered TLV contents.
    [
      v2({ block, tlvs: [tlv(PP2_TYPE.UNIQUE_ID, Buffer.alloc(129))] }),
      /UNIQUE_ID TLV of 129 bytes \(at most 128\)/,
    ],
    [
      v2({ block, tlvs: [tlv(PP2_TYPE.AUTHORITY, Buffer.from([0x61, 0xff]))] }),
      /AUTHORITY TLV is not valid UTF-8: "a\\xff"/,
    ],
    [v2({ block, tlvs: [tlv(PP2_TYPE.NETNS, Buffer.from([0xc3, 0xa9]))] }), /NETNS TLV is not US-ASCII/],
    [v2({ block, tlvs: [tlv(PP2_TYPE.SSL, Buffer.alloc(4))] }), /SSL TLV of 4 bytes \(5 at least/],
    [
      v2({ block, tlvs: [tlv(PP2_TYPE.SSL, Buffer.from([1, 0, 0, 0, 0, 0x21, 0, 9, 0x41]))] }),
      /TLV 0x21 at offset 36 declares 9 bytes but only 1 remain in the SSL TLV/,
    ],
    [
      v2({ block, tlvs: [tlv(PP2_TYPE.SSL, Buffer.from([1, 0, 0, 0, 0, 0x21, 0]))] }),
      /2 trailing bytes at the end of the SSL TLV/,
    ],
    [
      v2({
        block,
        tlvs: [tlv(PP2_TYPE.SSL, Buffer.concat([Buffer.alloc(5), tlv(0x23, Buffer.from([0x80]))]))],
      }),
      /SSL_CIPHER TLV is not US-ASCII/,
    ],
    [
      v2({
        block,
        tlvs: [tlv(PP2_TYPE.SSL, Buffer.concat([Buffer.alloc(5), tlv(0x22, Buffer.from([0xc0, 0x80]))]))],
      }),
      /SSL_CN TLV is not valid UTF-8/,
    ],
    // Duplicates of decoded types would be ambiguous.
    [v2({ block, tlvs: [tlv(PP2_TYPE.ALPN, 'h2'), tlv(PP2_TYPE.ALPN, 'h1')] }), /more than one ALPN TLV/],
    [
      v2({ block, tlvs: [tlv(PP2_TYPE.AUTHORITY, 'a'), tlv(PP2_TYPE.AUTHORITY, 'b')] }),
      /more than one AUTHORITY/,
    ],
    [twoCrcs(), /more than one CRC32C TLV/],
    [
      v2({
        block,
        tlvs: [tlv(PP2_TYPE.SSL, Buffer.concat([Buffer.alloc(5), tlv(0x21, 'a'), tlv(0x21, 'b')]))],
      }),
      /more than one SSL_VERSION sub-TLV/,
    ],
  ];

  test('malformed headers are refused, the message naming what is wrong', () => {
    for (const [bytes, message] of v2errors) throwsProxy(bytes, message);
  });

  test('the fixed 16 bytes are checked as they arrive', () => {
    throwsProxy(Buffer.from('0d0a0d0a0d', 'hex'), /is not a v2 signature/);
    throwsProxy(Buffer.concat([SIG, Buffer.from([0x11])]), /unsupported version 1/);
    throwsProxy(Buffer.concat([SIG, Buffer.from([0x23])]), /unknown command 0x3/);
    throwsProxy(Buffer.concat([SIG, Buffer.from([0x21, 0x12])]), /DGRAM/);
    throwsProxy(Buffer.concat([SIG, Buffer.from([0x21, 0x51])]), /unknown address family 0x5/);
    throwsProxy(
      Buffer.concat([SIG, Buffer.from([0x21, 0x21, 0x00, 0x23])]),
      /length 35 is shorter than the AF_INET6/,
    );
    // Until then, and until the announced length is there, more is needed.
    for (let i = 0; i <= 16; i++) assert.equal(parse(v2({ block }).subarray(0, i)), undefined);
    assert.equal(parse(Buffer.concat([SIG, Buffer.from([0x21, 0x11, 0xff, 0xff])])), undefined);
    assert.equal(parse(v2({ block, length: 13 })), undefined);
    throwsProxy(Buffer.concat([v2({ block, length: 13 }), Buffer.from([0])]), /1 trailing byte/);
    throwsProxy(Buffer.concat([v2({ block, length: 14 }), Buffer.from([0, 0])]), /2 trailing bytes/);
  });

  test('messages are printable and truncated', () => {
    const r = outcome(Buffer.concat([Buffer.from([0x00, 0x1b, 0x7f, 0x22, 0x5c]), Buffer.alloc(100, 0x41)]));
    assert.ok(r !== undefined && 'error' in r);
    assert.ok(!hasControl(r.error), r.error);
    assert.match(r.error, /"\\x00\\x1b\\x7f\\"\\\\A+"\.\.\.$/);
    const long = outcome(latin1(`PROXY UNKNOWN ${'\x01'.repeat(120)}`));
    assert.ok(long !== undefined && 'error' in long);
    assert.ok(!hasControl(long.error), long.error);
    assert.ok(long.error.length < 250, long.error);
  });
});

describe('properties', () => {
  test('(1) any split point of header + payload: undefined before the end, the same header after', () => {
    fc.assert(
      fc.property(
        anyCase,
        bytesOf(40),
        fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
        (c, payload, cuts) => {
          const whole = Buffer.concat([c.bytes, payload]);
          const versions: ProxyVersions = c.header.version === 1 ? 'v1' : 'v2';
          for (const v of [versions, 'any'] as const) {
            assert.deepEqual(parseProxyHeader(whole, v), c.header);
            for (const cut of cuts) {
              const k = cut % (whole.length + 1);
              const got = parseProxyHeader(whole.subarray(0, k), v);
              if (k < c.bytes.length) assert.equal(got, undefined, `cut at ${k} of ${c.bytes.length}`);
              else assert.deepEqual(got, c.header);
            }
          }
        },
      ),
      RUNS,
    );
  });

  // Random bytes, and random bytes after a valid start, over a small alphabet as well.
  const starts = [
    Buffer.alloc(0),
    SIG,
    Buffer.concat([SIG, Buffer.from([0x21])]),
    Buffer.concat([SIG, Buffer.from([0x21, 0x11])]),
    Buffer.concat([SIG, Buffer.from([0x20, 0x00])]),
    latin1('PROXY '),
    latin1('PROXY TCP4 '),
    latin1('PROXY TCP6 '),
    latin1('PROXY UNKNOWN'),
  ];
  const noise = fc.oneof(
    bytesOf(300),
    fc
      .array(fc.constantFrom(...latin1('0123456789abcdefABCDEF:. \r\nPROXYTCUNKW'), 0, 0xff), {
        maxLength: 120,
      })
      .map((a) => Buffer.from(a)),
  );
  const randomInput = fc.tuple(fc.constantFrom(...starts), noise).map(([s, n]) => Buffer.concat([s, n]));

  test('(2) random input: only undefined, a header, or ProxyProtocolError; and never retracted', () => {
    fc.assert(
      fc.property(randomInput, fc.constantFrom(...VERSIONS), fc.nat(), (bytes, v, cut) => {
        const whole = outcome(bytes, v); // rethrows anything but ProxyProtocolError
        if (whole !== undefined && !('error' in whole)) assert.ok(whole.length <= bytes.length);
        // A prefix's answer stands: an error stays an error, a header stays the same header.
        const prefix = outcome(bytes.subarray(0, cut % (bytes.length + 1)), v);
        if (prefix !== undefined && 'error' in prefix) assert.ok(whole !== undefined && 'error' in whole);
        else if (prefix !== undefined) assert.deepEqual(whole, prefix);
      }),
      { ...RUNS, numRuns: RUNS.numRuns * 10 },
    );
  });

  test('(2b) a valid header corrupted anywhere: only undefined, a header, or ProxyProtocolError', () => {
    fc.assert(
      fc.property(anyCase, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (c, at, b, cut) => {
        const bytes = Buffer.from(c.bytes);
        bytes[at % bytes.length] = b;
        for (const v of VERSIONS) {
          outcome(bytes, v);
          outcome(bytes.subarray(0, cut % (bytes.length + 1)), v);
        }
      }),
      RUNS,
    );
  });

  test('(3) generated v1 and v2 headers round-trip', () => {
    fc.assert(
      fc.property(anyCase, (c) => {
        assert.deepEqual(parseProxyHeader(c.bytes), c.header);
      }),
      { ...RUNS, numRuns: RUNS.numRuns * 2 },
    );
  });

  test('(3b) v1 addresses: accepted exactly when Node accepts them, printed as Node prints them', () => {
    const v6 = fc.oneof(
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.'), maxLength: 45 }),
      ipv6Text.map(([t]) => t),
      fc.tuple(ipv6Text, fc.nat(), fc.constantFrom(...':.0aF')).map(([[t], at, ch]) => {
        const i = at % (t.length + 1);
        return t.slice(0, i) + ch + t.slice(i);
      }),
    );
    fc.assert(
      fc.property(v6, (s) => {
        const r = outcome(latin1(`PROXY TCP6 ${s} ::1 1 2\r\n`));
        if (isIPv6(s)) {
          assert.ok(r !== undefined && !('error' in r), `${s}: ${JSON.stringify(r)}`);
          const node = new SocketAddress({ address: s, family: 'ipv6' }).address;
          assert.equal(addressOf(r.source), node);
        } else {
          assert.ok(r !== undefined && 'error' in r, `${s} accepted`);
        }
      }),
      { ...RUNS, numRuns: RUNS.numRuns * 10 },
    );
    const v4 = fc.oneof(fc.string({ unit: fc.constantFrom(...'0123456789.'), maxLength: 16 }), fc.ipV4());
    fc.assert(
      fc.property(v4, (s) => {
        const r = outcome(latin1(`PROXY TCP4 ${s} 1.1.1.1 1 2\r\n`));
        if (isIPv4(s)) assert.deepEqual((r as ProxyHeader).source, { address: s, port: 1 });
        else assert.ok(r !== undefined && 'error' in r, `${s} accepted`);
      }),
      { ...RUNS, numRuns: RUNS.numRuns * 5 },
    );
  });

  test('(4) bounded: undefined only for inputs shorter than maxProxyHeaderLength', () => {
    const max = v2({ verCmd: 0x20, fam: 0x00, tlvs: [Buffer.alloc(65535)] });
    const longV1 = latin1(`PROXY UNKNOWN ${'a'.repeat(300)}`);
    const announced = fc.integer({ min: 0, max: 0xffff }).map((len) => {
      const b = Buffer.alloc(16 + len + 8);
      SIG.copy(b);
      b[12] = 0x20;
      b.writeUInt16BE(len, 14);
      return b;
    });
    const inputs = fc.oneof(
      randomInput,
      fc.constant(max),
      fc.constant(longV1),
      announced,
      anyCase.map((c) => Buffer.concat([c.bytes, Buffer.alloc(10)])),
    );
    fc.assert(
      fc.property(inputs, fc.nat(), fc.constantFrom(...VERSIONS), (bytes, cut, v) => {
        const input = bytes.subarray(0, cut % (bytes.length + 1));
        const r = outcome(input, v);
        if (r === undefined) assert.ok(input.length < maxProxyHeaderLength(v), `${input.length} bytes, ${v}`);
      }),
      RUNS,
    );
    // The edges: 106 bytes of a v1 line without CRLF, and 16 + 65535 bytes of v2.
    assert.equal(parse(longV1.subarray(0, 105), 'v1'), undefined);
    throwsProxy(longV1.subarray(0, 106), /no CRLF/, 'v1');
    assert.equal(parse(max.subarray(0, 65550), 'v2'), undefined);
    assert.equal(parse(max, 'v2')?.length, 65551);
  });
});
