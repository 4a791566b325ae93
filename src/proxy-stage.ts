/**
 * The PROXY protocol stage of the accept pipeline: trust, then the header, under its timeout.
 *
 * - Opt-in (`proxyProtocol` option), never auto-detected: from a trusted peer the header is
 *   required, and a trusted peer that sends anything else is refused.
 * - A peer that is not trusted is closed before any of its bytes is parsed or passed on: a
 *   client cannot spoof its address by writing a header itself.
 * - The header's bytes never reach the handler; payload that arrived in the same segment is put
 *   back into the socket (`unshift`) and reaches the handler (or the TLS handshake) intact.
 * - Bytes are gathered into one buffer that grows geometrically, and the parser checks a partial
 *   v2 header in O(1), so a byte-at-a-time peer costs O(n), not O(n²).
 *
 * The parser itself is pure and lives in `proxy-protocol.ts`.
 *
 * @module
 */
import { BlockList, isIP, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { InvalidOptionError, ProxyProtocolError } from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import {
  maxProxyHeaderLength,
  type ProxyHeader,
  type ProxyVersions,
  parseProxyHeader,
} from './proxy-protocol.js';
import { DeadlineQueue, describeValue, fieldSlot, type Slotted, timeLimit } from './timers.js';

/** The `proxyProtocol` option. */
export interface ProxyProtocolOptions {
  /**
   * Who may send a header: IPv4 and IPv6 addresses and CIDR subnets (`'10.0.0.0/8'`,
   * `'2001:db8::/32'`, `'127.0.0.1'`), or `'unix'` for peers on a unix socket listener. Required.
   * IPv4 entries also match IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) of a dual-stack listener.
   */
  trusted: readonly string[];
  /** Header versions accepted: `'v1'`, `'v2'` or `'any'` (default). */
  versions?: ProxyVersions;
  /** ms a trusted peer gets to send its whole header, from accept. Default 5000 (the spec asks for >= 3 s). */
  timeout?: number;
}

/** The `proxyProtocol` option, validated. */
export interface ResolvedProxyOptions {
  trusted: BlockList;
  trustUnix: boolean;
  versions: ProxyVersions;
  timeout: number;
}

/** Why the stage refused a connection. */
export type ProxyFailure = 'proxy-untrusted' | 'proxy-invalid' | 'proxy-timeout' | 'proxy-incomplete';

const PROXY_OPTION_KEYS: KnownKeys<ProxyProtocolOptions> = { trusted: true, versions: true, timeout: true };

/** Validates the `proxyProtocol` option; throws `ERR_INVALID_OPTION` naming the bad part. */
export function resolveProxyOptions(value: unknown): ResolvedProxyOptions {
  if (value === null || typeof value !== 'object') {
    throw new InvalidOptionError(
      `proxyProtocol must be an object { trusted, versions?, timeout? }, got ${describeValue(value)}`,
    );
  }
  checkKeys(value, PROXY_OPTION_KEYS, 'proxyProtocol.');
  const { trusted, versions = 'any', timeout = 5_000 } = value as ProxyProtocolOptions;
  if (!Array.isArray(trusted) || trusted.length === 0) {
    throw new InvalidOptionError(
      `proxyProtocol.trusted must be a non-empty array of addresses or CIDR subnets, got ${describeValue(trusted)}`,
    );
  }
  const list = new BlockList();
  let trustUnix = false;
  for (const entry of trusted) {
    if (entry === 'unix') {
      trustUnix = true;
      continue;
    }
    addTrusted(list, entry);
  }
  if (versions !== 'v1' && versions !== 'v2' && versions !== 'any') {
    throw new InvalidOptionError(
      `proxyProtocol.versions must be 'v1', 'v2' or 'any', got ${describeValue(versions)}`,
    );
  }
  return { trusted: list, trustUnix, versions, timeout: timeLimit('proxyProtocol.timeout', timeout) };
}

function addTrusted(list: BlockList, entry: unknown): void {
  const bad = (why: string): InvalidOptionError =>
    new InvalidOptionError(`proxyProtocol.trusted: ${describeValue(entry)} ${why}`);
  if (typeof entry !== 'string') throw bad("is not a string (an address, a CIDR subnet, or 'unix')");
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const family = isIP(address);
  if (family === 0) throw bad('is not an IPv4 or IPv6 address or CIDR subnet');
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (slash === -1) {
    list.addAddress(address, type);
    return;
  }
  const prefixText = entry.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > (family === 4 ? 32 : 128)) {
    throw bad(`has a bad prefix length (0 to ${family === 4 ? 32 : 128})`);
  }
  list.addSubnet(address, prefix, type);
}

/** A socket waiting for its header; `slot` is its place in the timeout queue. */
interface Pending extends Slotted {
  readonly socket: Socket;
  readonly done: (header: ProxyHeader) => void;
  readonly fail: (reason: ProxyFailure, error: Error | undefined) => void;
  /** The bytes so far: `bytes.subarray(0, length)`. */
  bytes: Buffer | undefined;
  length: number;
  readonly onData: (chunk: Buffer) => void;
  /** The peer ended (FIN) or the socket closed before the header did. */
  readonly onClose: () => void;
}

/** The PROXY stage of one server: `start(socket, done, fail)`; exactly one of the two is called. */
export class ProxyStage {
  readonly #options: ResolvedProxyOptions;
  readonly #max: number;
  readonly #deadlines = new DeadlineQueue<Pending>(
    (pending) =>
      this.#fail(
        pending,
        'proxy-timeout',
        new ProxyProtocolError(`no complete PROXY header within ${this.#options.timeout} ms`),
      ),
    fieldSlot,
  );

  constructor(options: ResolvedProxyOptions) {
    this.#options = options;
    this.#max = maxProxyHeaderLength(options.versions);
  }

  start(socket: Socket, done: Pending['done'], fail: Pending['fail']): void {
    if (socket.remoteAddress === undefined && socket.localPort !== undefined) {
      // A TCP peer gone before we could read its address (a health check's connect-and-reset).
      socket.destroy();
      fail('proxy-incomplete', new ProxyProtocolError('connection closed before its PROXY header ended'));
      return;
    }
    if (!this.#trusts(socket)) {
      socket.destroy();
      fail(
        'proxy-untrusted',
        new ProxyProtocolError(
          `peer ${socket.remoteAddress ?? 'on a unix socket'} is not trusted to send a PROXY header`,
        ),
      );
      return;
    }
    const pending: Pending = {
      socket,
      done,
      fail,
      bytes: undefined,
      length: 0,
      slot: -1,
      onData: (chunk) => this.#onData(pending, chunk),
      onClose: () =>
        this.#fail(
          pending,
          'proxy-incomplete',
          new ProxyProtocolError('connection closed before its PROXY header ended'),
        ),
    };
    socket.on('data', pending.onData);
    socket.once('end', pending.onClose); // a FIN: listeners serve half-open peers, so no 'close' follows
    socket.once('close', pending.onClose);
    if (this.#options.timeout !== Infinity)
      this.#deadlines.add(pending, performance.now() + this.#options.timeout);
  }

  #trusts(socket: Socket): boolean {
    const address = socket.remoteAddress;
    if (address === undefined) return socket.localPort === undefined && this.#options.trustUnix;
    return this.#options.trusted.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4');
  }

  #onData(pending: Pending, chunk: Buffer): void {
    // The usual case: the whole header in the first segment, parsed in place.
    const bytes = pending.length === 0 ? chunk : this.#append(pending, chunk);
    const have = pending.length === 0 ? chunk.length : pending.length;
    let header: ProxyHeader | undefined;
    try {
      header = parseProxyHeader(
        have === bytes.length ? bytes : bytes.subarray(0, have),
        this.#options.versions,
      );
    } catch (error) {
      this.#fail(pending, 'proxy-invalid', error as Error);
      return;
    }
    if (header !== undefined) this.#finish(pending, header, bytes.subarray(header.length, have));
    else if (pending.length === 0) this.#append(pending, chunk);
  }

  /** Adds `chunk` to the pending bytes (never more than the longest header: the parser refuses before). */
  #append(pending: Pending, chunk: Buffer): Buffer {
    const length = pending.length + chunk.length;
    let bytes = pending.bytes;
    if (bytes === undefined || bytes.length < length) {
      const grown = Buffer.allocUnsafe(
        Math.min(Math.max(length, 2 * (bytes?.length ?? 64)), this.#max + chunk.length),
      );
      if (bytes !== undefined) bytes.copy(grown, 0, 0, pending.length);
      bytes = grown;
      pending.bytes = bytes;
    }
    chunk.copy(bytes, pending.length);
    pending.length = length;
    return bytes;
  }

  #finish(pending: Pending, header: ProxyHeader, rest: Buffer): void {
    const socket = pending.socket;
    this.#stop(pending);
    socket.pause();
    // Payload of the same segment goes back into the stream: the next reader gets it first.
    if (rest.length > 0) socket.unshift(Buffer.from(rest));
    pending.done(header);
  }

  #fail(pending: Pending, reason: ProxyFailure, error: Error): void {
    this.#stop(pending);
    pending.socket.destroy();
    pending.fail(reason, error);
  }

  #stop(pending: Pending): void {
    pending.socket.off('data', pending.onData);
    pending.socket.off('end', pending.onClose);
    pending.socket.off('close', pending.onClose);
    this.#deadlines.delete(pending);
    pending.bytes = undefined;
  }
}
