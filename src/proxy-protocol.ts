/**
 * The PROXY protocol header, versions 1 (text) and 2 (binary), as HAProxy's `doc/proxy-protocol.txt`
 * specifies it: the block a load balancer (HAProxy, AWS NLB, Envoy, nginx...) writes at the start of
 * a connection to pass on the client's address. This module only parses; it does no I/O.
 *
 * The parser is incremental and stateless: call {@link parseProxyHeader} with all the bytes received
 * so far; it answers "need more" (`undefined`) only while they can still become a valid header, so a
 * peer that does not speak the protocol is refused on its first byte, not after a timeout.
 *
 * @module
 */

import { isUtf8 } from 'node:buffer';
import { InvalidOptionError, ProxyProtocolError } from './errors.js';
import { describeValue } from './timers.js';

/** Which header versions a listener accepts. The header is required either way: never guessed. */
export type ProxyVersions = 'v1' | 'v2' | 'any';

/** An IPv4 or IPv6 endpoint of the proxied connection. */
export interface ProxyInetAddress {
  /** As Node prints it: dotted IPv4 (`'192.0.2.1'`), compressed lowercase IPv6 (`'2001:db8::1'`). */
  address: string;
  port: number;
}

/** A UNIX socket endpoint of the proxied connection (v2 only). */
export interface ProxyUnixAddress {
  /**
   * The path, without its NUL padding; an abstract socket name as `'@name'` (the way `ss` and
   * `netstat` print it); `''` for an unnamed socket (all NULs), what a connecting client usually has.
   */
  path: string;
}

/** A v2 Type-Length-Value vector, as received. */
export interface ProxyTlv {
  type: number;
  /** The value bytes: a copy, so a header never keeps the caller's (possibly large) buffer alive. */
  value: Buffer;
}

/** A decoded `PP2_TYPE_SSL` TLV: how the client reached the proxy over TLS. */
export interface ProxySsl {
  /** Bit field of {@link PP2_CLIENT}: TLS used, a client certificate on the connection / session. */
  client: number;
  /** Zero if the client presented a certificate and it was verified, non-zero otherwise. */
  verify: number;
  /** `PP2_SUBTYPE_SSL_VERSION`, e.g. `'TLSv1.3'`. */
  version?: string;
  /** `PP2_SUBTYPE_SSL_CN`: the Common Name of the client certificate's subject. */
  cn?: string;
  /** `PP2_SUBTYPE_SSL_CIPHER`, e.g. `'ECDHE-RSA-AES128-GCM-SHA256'`. */
  cipher?: string;
  /** `PP2_SUBTYPE_SSL_SIG_ALG`, e.g. `'RSA-SHA256'`. */
  sigAlg?: string;
  /** `PP2_SUBTYPE_SSL_KEY_ALG`, e.g. `'RSA2048'`. */
  keyAlg?: string;
  /** Every sub-TLV in order, raw, the decoded ones included. */
  tlvs: ProxyTlv[];
}

/** A complete, valid PROXY protocol header. */
export interface ProxyHeader {
  version: 1 | 2;
  /** `'LOCAL'` (v2 only): the proxy's own connection, e.g. a health check; use the real endpoints. */
  command: 'PROXY' | 'LOCAL';
  /** The address family as sent: v1 `UNKNOWN` and v2 `AF_UNSPEC` are `'UNSPEC'`. */
  family: 'TCP4' | 'TCP6' | 'UNIX' | 'UNSPEC';
  /**
   * The transport as sent: `'STREAM'` (v1 TCP4 / TCP6, v2 `STREAM`) or `'UNSPEC'` (v1 `UNKNOWN`,
   * v2 `UNSPEC`). Datagram transports are refused.
   */
  protocol: 'STREAM' | 'UNSPEC';
  /**
   * The client's endpoint; undefined for `LOCAL`, for family or protocol `'UNSPEC'` (the spec says
   * to ignore the address information then), and for v1 `UNKNOWN`.
   */
  source: ProxyInetAddress | ProxyUnixAddress | undefined;
  /** The endpoint the client connected to; undefined exactly when `source` is. */
  destination: ProxyInetAddress | ProxyUnixAddress | undefined;
  /** The header's exact length in bytes: the connection's payload starts at this offset. */
  length: number;
  /** Every v2 TLV in order, raw, the decoded ones included (empty for v1). */
  tlvs: ProxyTlv[];
  /** `PP2_TYPE_ALPN`: the negotiated application protocol, e.g. `h2`. */
  alpn?: Buffer;
  /** `PP2_TYPE_AUTHORITY`: the host name the client asked for (TLS SNI). */
  authority?: string;
  /** `PP2_TYPE_UNIQUE_ID`: the proxy's opaque id of the connection, at most 128 bytes. */
  uniqueId?: Buffer;
  /** `PP2_TYPE_SSL`, decoded. */
  ssl?: ProxySsl;
  /** `PP2_TYPE_NETNS`: the name of the network namespace the proxy accepted the connection in. */
  netns?: string;
  /** `PP2_TYPE_CRC32C`: the header's checksum as received. Present only once verified. */
  crc32c?: number;
}

/** The v2 TLV types registered by the spec, to read {@link ProxyHeader.tlvs}. */
export const PP2_TYPE = Object.freeze({
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  NETNS: 0x30,
  /** First of the 16 types reserved for application-specific data (AWS uses 0xEA). */
  MIN_CUSTOM: 0xe0,
  MAX_CUSTOM: 0xef,
  MIN_EXPERIMENT: 0xf0,
  MAX_EXPERIMENT: 0xf7,
  MIN_FUTURE: 0xf8,
  MAX_FUTURE: 0xff,
} as const);

/** The sub-TLV types of a `PP2_TYPE_SSL` TLV, to read {@link ProxySsl.tlvs}. */
export const PP2_SUBTYPE_SSL = Object.freeze({
  VERSION: 0x21,
  CN: 0x22,
  CIPHER: 0x23,
  SIG_ALG: 0x24,
  KEY_ALG: 0x25,
} as const);

/** The bits of {@link ProxySsl.client}. */
export const PP2_CLIENT = Object.freeze({
  /** The client connected over TLS. */
  SSL: 0x01,
  /** The client presented a certificate on this connection. */
  CERT_CONN: 0x02,
  /** The client presented a certificate at least once in this TLS session. */
  CERT_SESS: 0x04,
} as const);

const CR = 0x0d;
const LF = 0x0a;
const V1_MAX = 107; // "PROXY UNKNOWN <39> <39> 65535 65535\r\n", the spec's worst case
const V2_FIXED = 16;
const V2_MAX = V2_FIXED + 0xffff;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_SIGNATURE = Buffer.from('PROXY', 'latin1');
const FAMILIES = ['UNSPEC', 'TCP4', 'TCP6', 'UNIX'] as const;
const FAMILY_NAMES = ['AF_UNSPEC', 'AF_INET', 'AF_INET6', 'AF_UNIX'];
// Size of the address block per family: 2 addresses + 2 ports (INET, INET6), 2 x 108-byte paths (UNIX).
const ADDRESS_BLOCK = [0, 12, 36, 216];
const UNIX_PATH = 108;
const MAX_UNIQUE_ID = 128;
const TLV_HEADER = 3;

/**
 * Upper bound of a header's size for `versions`: 107 bytes for v1, 16 + 65535 for v2 (and `'any'`).
 * A stage reading the header never needs to buffer more: {@link parseProxyHeader} has answered by then.
 */
export function maxProxyHeaderLength(versions: ProxyVersions): number {
  return checkVersions(versions, 'maxProxyHeaderLength') === 'v1' ? V1_MAX : V2_MAX;
}

/**
 * Parses the PROXY protocol header at the start of `bytes`, which must start with one: it is never
 * auto-detected (the spec forbids guessing, as any client could then spoof its address).
 *
 * Returns `undefined` while more bytes are needed, that is while `bytes` is the start of a header
 * that may still turn out valid; the header once complete (the payload begins at `header.length`;
 * bytes past it are not looked at); and throws `ProxyProtocolError`, naming what is wrong, as soon
 * as `bytes` cannot start a valid header for `versions` (default `'any'`): a stranger is refused on
 * its first byte. A v2 header's address block and TLVs are checked once all of it has arrived, as
 * its length field announced; its fixed 16 bytes, and a v1 line, are checked as they arrive.
 *
 * Throws nothing else for any `bytes` (an invalid `versions` is an `InvalidOptionError`). Each call
 * is O(1) for an incomplete v2 header and O(107) for v1, so a peer trickling bytes costs little.
 *
 * @example
 * ```ts
 * const header = parseProxyHeader(received, 'v2');
 * if (header !== undefined) {
 *   const client = header.command === 'PROXY' ? header.source : undefined;
 *   const payload = received.subarray(header.length);
 * }
 * ```
 */
export function parseProxyHeader(bytes: Buffer, versions: ProxyVersions = 'any'): ProxyHeader | undefined {
  checkVersions(versions, 'parseProxyHeader');
  if (bytes.length === 0) return undefined;
  if (bytes[0] === V1_SIGNATURE[0]) {
    if (versions !== 'v2') return parseV1(bytes);
    if (startsLike(bytes, V1_SIGNATURE)) {
      throw new ProxyProtocolError('PROXY protocol: got a v1 header ("PROXY ...") but only v2 is accepted');
    }
  } else if (bytes[0] === V2_SIGNATURE[0]) {
    if (versions !== 'v1') return parseV2(bytes);
    if (startsLike(bytes, V2_SIGNATURE)) {
      throw new ProxyProtocolError('PROXY protocol: got a v2 signature but only v1 is accepted');
    }
  }
  const expected = versions === 'any' ? '' : ` ${versions}`;
  throw new ProxyProtocolError(`PROXY protocol: expected a${expected} header, got ${quote(bytes)}`);
}

function checkVersions(versions: unknown, where: string): ProxyVersions {
  if (versions !== 'v1' && versions !== 'v2' && versions !== 'any') {
    throw new InvalidOptionError(
      `${where}: versions must be 'v1', 'v2' or 'any', not ${describeValue(versions)}`,
    );
  }
  return versions;
}

/** Whether `bytes` and `signature` agree on their common length. */
function startsLike(bytes: Buffer, signature: Buffer): boolean {
  const n = Math.min(bytes.length, signature.length);
  return bytes.compare(signature, 0, n, 0, n) === 0;
}

// ---------------------------------------------------------------------------------------------
// Version 1: "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"

const V1_FIELDS = ['source address', 'destination address', 'source port', 'destination port'];

function parseV1(bytes: Buffer): ProxyHeader | undefined {
  // The CR of the CRLF ends the line at offset 105 at the latest (107 bytes in all); a CR or LF can
  // appear nowhere else, and the spec refuses either alone as a line end.
  const scan = Math.min(bytes.length, V1_MAX - 1);
  let end = -1;
  for (let i = 0; i < scan; i++) {
    const b = bytes[i];
    if (b === LF) {
      throw new ProxyProtocolError(
        `PROXY v1: LF without CR at offset ${i} in ${quote(bytes.subarray(0, i + 1))}`,
      );
    }
    if (b === CR) {
      if (i + 1 < bytes.length && bytes[i + 1] !== LF) {
        throw new ProxyProtocolError(
          `PROXY v1: CR not followed by LF at offset ${i} in ${quote(bytes.subarray(0, i + 2))}`,
        );
      }
      end = i;
      break;
    }
  }
  // Once a CR is seen, only its LF may follow: the line must already be complete and valid.
  const complete = end >= 0;
  const line = bytes.toString('latin1', 0, complete ? end : scan);
  const header = checkV1Line(line, complete);
  if (!complete) {
    if (bytes.length >= V1_MAX - 1) {
      throw new ProxyProtocolError(`PROXY v1: no CRLF within ${V1_MAX} bytes in ${quote(line)}`);
    }
    return undefined;
  }
  if (end + 1 >= bytes.length) return undefined;
  header!.length = end + 2;
  return header;
}

/**
 * Checks the line (without CRLF) field by field. When the line is not `complete` yet, its last field
 * may be the start of a valid one. Returns the header (length to be filled) when `complete`.
 */
function checkV1Line(line: string, complete: boolean): ProxyHeader | undefined {
  // The spec wants exactly one space between fields: an empty field is a doubled or stray space.
  const fields = line.split(' ');
  const open = complete ? -1 : fields.length - 1; // the field still being received, if any
  const keyword = fields[0]!;
  if (open === 0 ? !'PROXY'.startsWith(keyword) : keyword !== 'PROXY') {
    throw new ProxyProtocolError(`PROXY v1: expected "PROXY", got ${quote(keyword)}`);
  }
  const family = fields[1];
  if (family === undefined) {
    if (complete) throw new ProxyProtocolError('PROXY v1: missing the protocol family after "PROXY"');
    return undefined;
  }
  if (open === 1) {
    if (!['TCP4', 'TCP6', 'UNKNOWN'].some((f) => f.startsWith(family))) throw badFamily(family);
    return undefined;
  }
  if (family === '') {
    throw new ProxyProtocolError(
      'PROXY v1: empty protocol family (fields are separated by exactly one space)',
    );
  }
  if (family === 'UNKNOWN') {
    // "the receiver must ignore anything presented before the CRLF": addresses, if any, unchecked.
    return v1Header('UNSPEC', undefined, undefined);
  }
  if (family !== 'TCP4' && family !== 'TCP6') throw badFamily(family);
  for (let k = 2; k < 6; k++) {
    const field = fields[k];
    const name = `${family} ${V1_FIELDS[k - 2]}`;
    if (field === undefined) {
      if (complete) throw new ProxyProtocolError(`PROXY v1: missing the ${name}`);
      return undefined;
    }
    const partial = k === open;
    if (field === '' && !partial) {
      throw new ProxyProtocolError(`PROXY v1: empty ${name} (fields are separated by exactly one space)`);
    }
    const problem = k < 4 ? addressProblem(field, family, partial) : portProblem(field, partial);
    if (problem !== undefined) {
      const value = problem === 'is over 65535' ? field : quote(field);
      throw new ProxyProtocolError(`PROXY v1: ${name} ${value} ${problem}`);
    }
  }
  if (fields.length > 6) {
    // Even empty: a space after the destination port can start nothing valid.
    const extra = quote(` ${fields.slice(6).join(' ')}`);
    throw new ProxyProtocolError(`PROXY v1: unexpected ${extra} after the destination port`);
  }
  if (!complete) return undefined;
  const [, , src, dst, srcPort, dstPort] = fields as [string, string, string, string, string, string];
  const text =
    family === 'TCP4' ? (a: string) => a : (a: string) => formatIpv6(parseIpv6(a, false) as number[]);
  return v1Header(
    family,
    { address: text(src), port: Number(srcPort) },
    { address: text(dst), port: Number(dstPort) },
  );
}

function badFamily(family: string): ProxyProtocolError {
  return new ProxyProtocolError(`PROXY v1: unknown protocol family ${quote(family)} (TCP4, TCP6 or UNKNOWN)`);
}

function v1Header(
  family: 'TCP4' | 'TCP6' | 'UNSPEC',
  source: ProxyInetAddress | undefined,
  destination: ProxyInetAddress | undefined,
): ProxyHeader {
  const protocol = family === 'UNSPEC' ? 'UNSPEC' : 'STREAM';
  return { version: 1, command: 'PROXY', family, protocol, source, destination, length: 0, tlvs: [] };
}

/** Why `field` is not an address of `family` (or the start of one, if `partial`); undefined if it is. */
function addressProblem(field: string, family: 'TCP4' | 'TCP6', partial: boolean): string | undefined {
  if (family === 'TCP4') {
    const problem = ipv4Problem(field, partial);
    return problem !== undefined && field.includes(':') ? `${problem} (an IPv6 address needs TCP6)` : problem;
  }
  // An IPv6 address has a colon before any dot (an embedded IPv4 comes last).
  if (!field.includes(':') && field.includes('.')) {
    return 'is not an IPv6 address (an IPv4 address needs TCP4)';
  }
  const result = parseIpv6(field, partial);
  return typeof result === 'string' ? result : undefined;
}

/**
 * Why `s` is not a dotted-quad IPv4 address, or, if `partial`, the start of one; undefined if it is.
 * The spec refuses leading zeros: some parsers would read them as octal.
 */
function ipv4Problem(s: string, partial: boolean): string | undefined {
  const parts = s.split('.');
  if (parts.length > 4) return 'has more than 4 numbers';
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '') {
      if (partial && i === parts.length - 1) continue;
      return 'is not an IPv4 address (empty number)';
    }
    if (!/^[0-9]+$/.test(part)) return 'is not an IPv4 address';
    if (part.length > 1 && part[0] === '0') return 'has a leading zero';
    if (part.length > 3 || Number(part) > 255) return 'has a number over 255';
  }
  if (!partial && parts.length < 4) return 'has fewer than 4 numbers';
  return undefined;
}

/** Why `s` is not a decimal port (or the start of one, if `partial`); undefined if it is. */
function portProblem(s: string, partial: boolean): string | undefined {
  if (s === '') return partial ? undefined : 'is empty';
  if (!/^[0-9]+$/.test(s)) return 'is not a decimal number';
  if (s.length > 1 && s[0] === '0') return 'has a leading zero';
  // A prefix of a valid port is a valid port, so the start of a port over 65535 is refused at once.
  if (s.length > 5 || Number(s) > 65535) return 'is over 65535';
  return undefined;
}

const COLON = 0x3a;
const DOT = 0x2e;

/**
 * Parses IPv6 text (RFC 4291 section 2.2: 1 to 4 hex digits per group, at most one `::`, maybe an
 * embedded IPv4 address last) into its 8 16-bit words, or says why it is not one. If `partial`, `s`
 * may be the start of an address: every state this accepts can still be completed, so an answer
 * other than a string means "valid so far" (the words are then not computed).
 */
function parseIpv6(s: string, partial: boolean): number[] | string {
  const head: number[] = []; // groups before the '::'
  let tail: number[] | undefined; // groups after it, once seen
  let group = '';
  let i = 0;
  if (s.charCodeAt(0) === COLON) {
    if (s.length === 1) return partial ? [] : 'is not an IPv6 address';
    if (s.charCodeAt(1) !== COLON) return 'starts with a single colon';
    tail = [];
    i = 2;
  }
  const count = () => head.length + (tail?.length ?? 0);
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === COLON) {
      if (group === '') {
        // A colon right after a colon: the '::' (a leading one was taken above).
        if (tail !== undefined) return "has more than one '::'";
        tail = [];
        continue;
      }
      (tail ?? head).push(Number.parseInt(group, 16));
      group = '';
      // A single colon must be followed by a group, or by a second colon if there is no '::' yet.
      if (tail === undefined ? head.length > 7 : count() > 6) return 'has more than 8 groups';
      continue;
    }
    if (c === DOT) {
      // An embedded IPv4 address: the last 32 bits, nothing after it.
      const v4 = s.slice(i - group.length);
      if (tail === undefined ? count() !== 6 : count() > 5) return 'has an IPv4 part in the wrong place';
      const problem = ipv4Problem(v4, partial);
      if (problem !== undefined) {
        return problem.startsWith('is not') ? 'has an invalid IPv4 part' : `has an IPv4 part that ${problem}`;
      }
      if (partial) return [];
      const [a, b, c2, d] = v4.split('.').map(Number) as [number, number, number, number];
      (tail ?? head).push((a << 8) | b, (c2 << 8) | d);
      group = '';
      i = s.length;
      break;
    }
    const hex = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
    if (!hex) return 'is not an IPv6 address';
    if (group === '' && (tail === undefined ? head.length >= 8 : count() >= 7)) {
      return 'has more than 8 groups';
    }
    group += s[i];
    if (group.length > 4) return 'has a group of more than 4 hex digits';
  }
  if (partial) return [];
  if (group !== '') (tail ?? head).push(Number.parseInt(group, 16));
  else if (s.endsWith(':') && !s.endsWith('::')) return 'ends with a single colon';
  if (tail === undefined) return head.length === 8 ? head : 'has fewer than 8 groups';
  return [...head, ...new Array<number>(8 - count()).fill(0), ...tail];
}

/**
 * IPv6 words as Node (libuv's `inet_ntop`) prints them: lowercase, no leading zeros, the first
 * longest run of 2 or more zero groups as `::`, and IPv4-mapped / -compatible addresses dotted.
 */
function formatIpv6(words: ArrayLike<number>): string {
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) best = -1;
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === best) {
      out += i === 0 ? '::' : ':';
      i += bestLen - 1;
      continue;
    }
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      const hi = words[6]!;
      const lo = words[7]!;
      return `${out}${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
    }
    out += words[i]!.toString(16);
    if (i < 7) out += ':';
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Version 2: signature, version+command, family+protocol, length, address block, TLVs.

function parseV2(bytes: Buffer): ProxyHeader | undefined {
  if (!startsLike(bytes, V2_SIGNATURE)) {
    throw new ProxyProtocolError(`PROXY protocol: ${quote(bytes.subarray(0, 12))} is not a v2 signature`);
  }
  if (bytes.length <= 12) return undefined;
  const versionCommand = bytes[12]!;
  const version = versionCommand >> 4;
  const command = versionCommand & 0x0f;
  if (version !== 2) {
    throw new ProxyProtocolError(
      `PROXY v2: unsupported version ${version} (byte 13 is ${hex(versionCommand)})`,
    );
  }
  if (command > 1) throw new ProxyProtocolError(`PROXY v2: unknown command ${hex(command)} (LOCAL or PROXY)`);
  if (bytes.length <= 13) return undefined;
  const familyProtocol = bytes[13]!;
  const family = familyProtocol >> 4;
  const protocol = familyProtocol & 0x0f;
  if (family > 3) throw new ProxyProtocolError(`PROXY v2: unknown address family ${hex(family)}`);
  if (protocol === 2) throw new ProxyProtocolError('PROXY v2: DGRAM (UDP) is not supported, only STREAM');
  if (protocol > 2) throw new ProxyProtocolError(`PROXY v2: unknown transport protocol ${hex(protocol)}`);
  if (bytes.length < V2_FIXED) return undefined;

  // The length is always honoured, LOCAL included: AWS NLB pads its health checks' headers.
  const length = V2_FIXED + bytes.readUInt16BE(14);
  // LOCAL ignores the family and has no address block: AWS NLB sends LOCAL with AF_INET and puts
  // its TLVs right after the 16 bytes (its CRC32C TLV verifies only when read from there).
  const isProxy = command === 1;
  const block = isProxy ? ADDRESS_BLOCK[family]! : 0;
  if (length - V2_FIXED < block) {
    const name = FAMILY_NAMES[family];
    throw new ProxyProtocolError(
      `PROXY v2: length ${length - V2_FIXED} is shorter than the ${name} address block (${block} bytes)`,
    );
  }
  // The spec: "The receiver must not start to parse an address before the whole address block is
  // received". Waiting for the whole header also keeps a call O(1) however the bytes trickle in.
  if (bytes.length < length) return undefined;

  const header: ProxyHeader = {
    version: 2,
    command: isProxy ? 'PROXY' : 'LOCAL',
    family: FAMILIES[family]!,
    protocol: protocol === 1 ? 'STREAM' : 'UNSPEC',
    source: undefined,
    destination: undefined,
    length,
    tlvs: [],
  };
  if (isProxy && protocol === 1 && family !== 0) {
    const at = V2_FIXED;
    if (family === 1) {
      header.source = { address: formatIpv4(bytes, at), port: bytes.readUInt16BE(at + 8) };
      header.destination = { address: formatIpv4(bytes, at + 4), port: bytes.readUInt16BE(at + 10) };
    } else if (family === 2) {
      header.source = { address: formatIpv6(words(bytes, at)), port: bytes.readUInt16BE(at + 32) };
      header.destination = { address: formatIpv6(words(bytes, at + 16)), port: bytes.readUInt16BE(at + 34) };
    } else {
      header.source = { path: unixPath(bytes.subarray(at, at + UNIX_PATH)) };
      header.destination = { path: unixPath(bytes.subarray(at + UNIX_PATH, at + 2 * UNIX_PATH)) };
    }
  }
  const start = V2_FIXED + block;
  if (start < length) {
    if (isProxy) readTlvs(bytes, start, length, header);
    else readLocalTlvs(bytes, length, ADDRESS_BLOCK[family]!, header);
  }
  return header;
}

/**
 * LOCAL: the spec says to discard the address block but not where the TLVs start. AWS NLB puts
 * them right after the 16 bytes (with AF_INET in the family byte); a sender following the family
 * would put them after its address block. Both are tried, in that order. A LOCAL header is valid
 * whatever its block holds (the spec: accept it and use the real endpoints), so when neither
 * parses, its TLVs are dropped, not the connection.
 */
function readLocalTlvs(bytes: Buffer, length: number, block: number, header: ProxyHeader): void {
  for (const start of block === 0 ? [V2_FIXED] : [V2_FIXED, V2_FIXED + block]) {
    if (start >= length) continue;
    const attempt: ProxyHeader = { ...header, tlvs: [] };
    try {
      readTlvs(bytes, start, length, attempt);
    } catch (error) {
      if (error instanceof ProxyProtocolError) continue;
      throw error;
    }
    Object.assign(header, attempt);
    return;
  }
}

function formatIpv4(bytes: Buffer, at: number): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

function words(bytes: Buffer, at: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 8; i++) out.push(bytes.readUInt16BE(at + 2 * i));
  return out;
}

/** A 108-byte `sun_path`: up to the first NUL; a leading NUL makes it abstract, up to its last non-NUL. */
function unixPath(field: Buffer): string {
  if (field[0] === 0) {
    let last = field.length - 1;
    while (last > 0 && field[last] === 0) last--;
    return last === 0 ? '' : `@${field.toString('utf8', 1, last + 1)}`;
  }
  const nul = field.indexOf(0);
  return field.toString('utf8', 0, nul < 0 ? field.length : nul);
}

const ZERO_CRC = new Uint8Array(4);

/** Reads the TLVs of bytes[start, end) into `header`: raw into `tlvs`, the registered ones decoded. */
function readTlvs(bytes: Buffer, start: number, end: number, header: ProxyHeader): void {
  // One copy of the TLV area, sliced into values: the header must not pin the caller's buffer.
  const area = Buffer.from(bytes.subarray(start, end));
  const tlvs = splitTlvs(area, start, 'the header');
  header.tlvs = tlvs;
  // Each TLV's offset in the header, for the CRC and for messages.
  const offsets: number[] = [];
  let offset = start;
  for (const { value } of tlvs) {
    offsets.push(offset);
    offset += TLV_HEADER + value.length;
  }
  // The checksum first: on a corrupted header, a mismatch is the error that explains the rest.
  for (let i = 0; i < tlvs.length; i++) {
    const { type, value } = tlvs[i]!;
    if (type !== PP2_TYPE.CRC32C) continue;
    if (header.crc32c !== undefined) throw new ProxyProtocolError('PROXY v2: more than one CRC32C TLV');
    header.crc32c = checkCrc(bytes, end, offsets[i]!, value);
  }
  const seen = new Set<number>();
  for (let i = 0; i < tlvs.length; i++) {
    const { type, value } = tlvs[i]!;
    const name = NAMES.get(type);
    // NOOP is padding, unregistered types are the application's: both only raw, any number of them.
    if (name === undefined || type === PP2_TYPE.NOOP || type === PP2_TYPE.CRC32C) continue;
    if (seen.has(type)) throw new ProxyProtocolError(`PROXY v2: more than one ${name} TLV`);
    seen.add(type);
    switch (type) {
      case PP2_TYPE.ALPN:
        header.alpn = value;
        break;
      case PP2_TYPE.AUTHORITY:
        header.authority = utf8(value, name);
        break;
      case PP2_TYPE.UNIQUE_ID:
        if (value.length > MAX_UNIQUE_ID) {
          throw new ProxyProtocolError(
            `PROXY v2: UNIQUE_ID TLV of ${value.length} bytes (at most ${MAX_UNIQUE_ID})`,
          );
        }
        header.uniqueId = value;
        break;
      case PP2_TYPE.SSL:
        header.ssl = readSsl(value, offsets[i]! + TLV_HEADER);
        break;
      case PP2_TYPE.NETNS:
        header.netns = ascii(value, name);
        break;
    }
  }
}

const NAMES = new Map<number, string>([
  [PP2_TYPE.ALPN, 'ALPN'],
  [PP2_TYPE.AUTHORITY, 'AUTHORITY'],
  [PP2_TYPE.CRC32C, 'CRC32C'],
  [PP2_TYPE.NOOP, 'NOOP'],
  [PP2_TYPE.UNIQUE_ID, 'UNIQUE_ID'],
  [PP2_TYPE.SSL, 'SSL'],
  [PP2_TYPE.NETNS, 'NETNS'],
]);

type SslString = 'version' | 'cn' | 'cipher' | 'sigAlg' | 'keyAlg';

const SSL_NAMES = new Map<number, [SslString, string]>([
  [PP2_SUBTYPE_SSL.VERSION, ['version', 'SSL_VERSION']],
  [PP2_SUBTYPE_SSL.CN, ['cn', 'SSL_CN']],
  [PP2_SUBTYPE_SSL.CIPHER, ['cipher', 'SSL_CIPHER']],
  [PP2_SUBTYPE_SSL.SIG_ALG, ['sigAlg', 'SSL_SIG_ALG']],
  [PP2_SUBTYPE_SSL.KEY_ALG, ['keyAlg', 'SSL_KEY_ALG']],
]);

/**
 * Splits `area` into TLVs, which must fill it exactly. `base` is the area's offset in the header,
 * `where` names the area, both for messages.
 */
function splitTlvs(area: Buffer, base: number, where: string): ProxyTlv[] {
  const tlvs: ProxyTlv[] = [];
  let at = 0;
  while (at < area.length) {
    const left = area.length - at;
    if (left < TLV_HEADER) {
      const bytes = left === 1 ? '1 trailing byte' : `${left} trailing bytes`;
      throw new ProxyProtocolError(
        `PROXY v2: ${bytes} at the end of ${where} cannot hold a TLV (3 bytes at least)`,
      );
    }
    const type = area[at]!;
    const length = area.readUInt16BE(at + 1);
    if (length > left - TLV_HEADER) {
      const tlv = `TLV ${hex(type)} at offset ${base + at}`;
      throw new ProxyProtocolError(
        `PROXY v2: ${tlv} declares ${length} bytes but only ${left - TLV_HEADER} remain in ${where}`,
      );
    }
    tlvs.push({ type, value: area.subarray(at + TLV_HEADER, at + TLV_HEADER + length) });
    at += TLV_HEADER + length;
  }
  return tlvs;
}

/**
 * Verifies a CRC32C TLV whose header is at `at`: the spec's checksum of the whole header with the
 * 4 checksum bytes taken as zeros. Returns the checksum.
 */
function checkCrc(bytes: Buffer, end: number, at: number, value: Buffer): number {
  if (value.length !== 4) {
    throw new ProxyProtocolError(`PROXY v2: CRC32C TLV of ${value.length} bytes (exactly 4)`);
  }
  const field = at + TLV_HEADER;
  // Chained over the three parts rather than over a zeroed copy: nothing more is copied.
  let crc = crc32c(bytes.subarray(0, field));
  crc = crc32c(ZERO_CRC, crc);
  crc = crc32c(bytes.subarray(field + 4, end), crc);
  const expected = value.readUInt32BE(0);
  if (crc !== expected) {
    throw new ProxyProtocolError(
      `PROXY v2: CRC32C mismatch: header says ${hex8(expected)}, computed ${hex8(crc)}`,
    );
  }
  return expected;
}

/** Decodes a `PP2_TYPE_SSL` value, at `base` in the header. */
function readSsl(value: Buffer, base: number): ProxySsl {
  if (value.length < 5) {
    throw new ProxyProtocolError(
      `PROXY v2: SSL TLV of ${value.length} bytes (5 at least: client and verify)`,
    );
  }
  const ssl: ProxySsl = { client: value[0]!, verify: value.readUInt32BE(1), tlvs: [] };
  ssl.tlvs = splitTlvs(value.subarray(5), base + 5, 'the SSL TLV');
  const seen = new Set<number>();
  for (const { type, value: sub } of ssl.tlvs) {
    const entry = SSL_NAMES.get(type);
    if (entry === undefined) continue;
    const [key, name] = entry;
    if (seen.has(type)) throw new ProxyProtocolError(`PROXY v2: more than one ${name} sub-TLV`);
    seen.add(type);
    // The spec: the Common Name is UTF-8, the version and algorithm names US-ASCII.
    ssl[key] = type === PP2_SUBTYPE_SSL.CN ? utf8(sub, name) : ascii(sub, name);
  }
  return ssl;
}

function utf8(value: Buffer, name: string): string {
  if (!isUtf8(value)) {
    throw new ProxyProtocolError(`PROXY v2: ${name} TLV is not valid UTF-8: ${quote(value)}`);
  }
  return value.toString('utf8');
}

function ascii(value: Buffer, name: string): string {
  for (const b of value) {
    if (b > 0x7f) throw new ProxyProtocolError(`PROXY v2: ${name} TLV is not US-ASCII: ${quote(value)}`);
  }
  return value.toString('latin1');
}

// ---------------------------------------------------------------------------------------------

let crcTable: Int32Array | undefined;

function makeCrcTable(): Int32Array {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    // 0x82F63B78 is the Castagnoli polynomial 0x1EDC6F41, bit-reversed (the CRC is reflected).
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c;
  }
  return table;
}

/**
 * CRC-32C (Castagnoli, RFC 4960 appendix B / iSCSI), the checksum of a v2 header's `PP2_TYPE_CRC32C`
 * TLV. `initial` is a previous result, to checksum data in pieces: `crc32c(b, crc32c(a))` equals
 * `crc32c(a + b)`. Table-driven; the table is built on first use.
 *
 * @example
 * ```ts
 * crc32c(Buffer.from('123456789')); // 0xe3069283
 * ```
 */
export function crc32c(bytes: Uint8Array, initial = 0): number {
  crcTable ??= makeCrcTable();
  const table = crcTable;
  let crc = ~initial;
  for (let i = 0; i < bytes.length; i++) crc = table[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

// ---------------------------------------------------------------------------------------------

function hex(n: number): string {
  return `0x${n.toString(16).padStart(n > 0xf ? 2 : 1, '0')}`;
}

function hex8(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/**
 * At most `max` bytes (or latin1 characters) of untrusted input for an error message, quoted:
 * printable ASCII as is, the rest escaped, so a message never carries control bytes into a log.
 */
function quote(input: Uint8Array | string, max = 40): string {
  const n = Math.min(input.length, max);
  let out = '"';
  for (let i = 0; i < n; i++) {
    const c = typeof input === 'string' ? input.charCodeAt(i) : input[i]!;
    if (c === 0x22 || c === 0x5c) out += `\\${String.fromCharCode(c)}`;
    else if (c >= 0x20 && c < 0x7f) out += String.fromCharCode(c);
    else if (c === CR) out += '\\r';
    else if (c === LF) out += '\\n';
    else if (c === 0x09) out += '\\t';
    else out += `\\x${(c & 0xff).toString(16).padStart(2, '0')}`;
  }
  return input.length > max ? `${out}"...` : `${out}"`;
}
