/**
 * Network names and Go-style addresses, parsed into what `net.Server.listen()` takes.
 *
 * @module
 */
import { isIP } from 'node:net';
import { InvalidAddressError } from './errors.js';
import { describeValue } from './timers.js';

/** The networks a server can listen on, named as in Go's `net.Listen`. */
export type Network = 'tcp' | 'tcp4' | 'tcp6' | 'unix';

const NETWORKS: ReadonlySet<string> = new Set<Network>(['tcp', 'tcp4', 'tcp6', 'unix']);

/** Where one listener is bound, as reported by `listen()` and `addresses()`. */
export type BoundAddress =
  | { network: 'tcp' | 'tcp4' | 'tcp6'; host: string; port: number }
  | { network: 'unix'; path: string };

/** A parsed address, ready for `net.Server.listen()`. */
export type ListenSpec =
  | { network: 'tcp' | 'tcp4' | 'tcp6'; host: string | undefined; port: number; ipv6Only: boolean }
  | { network: 'unix'; path: string; abstract: boolean };

/** Throws unless `value` names a supported network. */
export function parseNetwork(value: unknown): Network {
  if (typeof value !== 'string' || !NETWORKS.has(value)) {
    throw new InvalidAddressError(
      `unknown network ${describeValue(value)}: expected one of ${[...NETWORKS].join(', ')}`,
    );
  }
  return value as Network;
}

/**
 * Parses a Go-style address for `network`: `:8080`, `:0`, `127.0.0.1:8080`, `[::1]:8080`,
 * `localhost:0` for the TCP networks; a filesystem path or `@name` (Linux abstract socket) for
 * `unix`. Throws {@link InvalidAddressError} naming the bad part.
 */
export function parseAddress(network: Network, address: unknown): ListenSpec {
  if (typeof address !== 'string' || address === '') {
    throw new InvalidAddressError(`address must be a non-empty string, got ${describeValue(address)}`);
  }
  if (network === 'unix') return parseUnixAddress(address);

  let host: string;
  let portText: string;
  if (address.startsWith('[')) {
    const close = address.indexOf(']');
    if (close === -1) throw new InvalidAddressError(`address ${JSON.stringify(address)}: missing ']'`);
    host = address.slice(1, close);
    if (address[close + 1] !== ':') {
      throw new InvalidAddressError(`address ${JSON.stringify(address)}: missing ':port' after ']'`);
    }
    portText = address.slice(close + 2);
    if (isIP(host) !== 6) {
      throw new InvalidAddressError(`address ${JSON.stringify(address)}: "${host}" is not an IPv6 address`);
    }
  } else {
    const colon = address.lastIndexOf(':');
    if (colon === -1) {
      throw new InvalidAddressError(`address ${JSON.stringify(address)}: missing ':port'`);
    }
    host = address.slice(0, colon);
    portText = address.slice(colon + 1);
    if (host.includes(':')) {
      throw new InvalidAddressError(
        `address ${JSON.stringify(address)}: an IPv6 host must be in brackets, as in "[::1]:8080"`,
      );
    }
  }
  const port = parsePort(address, portText);
  const family = isIP(host);
  if (network === 'tcp4' && family === 6) {
    throw new InvalidAddressError(
      `address ${JSON.stringify(address)}: "${host}" is IPv6 but network is tcp4`,
    );
  }
  if (network === 'tcp6' && family === 4) {
    throw new InvalidAddressError(
      `address ${JSON.stringify(address)}: "${host}" is IPv4 but network is tcp6`,
    );
  }
  if (host === '') {
    // Go's ":port" means every interface: dual-stack for tcp (Node's default), one family otherwise.
    const any = network === 'tcp4' ? '0.0.0.0' : network === 'tcp6' ? '::' : undefined;
    return { network, host: any, port, ipv6Only: network === 'tcp6' };
  }
  if (family === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
    throw new InvalidAddressError(`address ${JSON.stringify(address)}: "${host}" is not a valid host`);
  }
  return { network, host, port, ipv6Only: network === 'tcp6' };
}

function parsePort(address: string, text: string): number {
  if (!/^\d{1,5}$/.test(text)) {
    throw new InvalidAddressError(
      `address ${JSON.stringify(address)}: port ${JSON.stringify(text)} is not a number from 0 to 65535`,
    );
  }
  const port = Number(text);
  if (port > 65535) {
    throw new InvalidAddressError(`address ${JSON.stringify(address)}: port ${port} is out of range 0-65535`);
  }
  return port;
}

/**
 * Longest unix socket path `bind(2)` takes, in bytes: `sun_path` is 108 bytes on Linux and 104
 * on the BSDs and macOS, less the terminating NUL. libuv silently truncates a longer path (Node
 * 20 then binds a file under another name, which `close()` does not remove), so refuse it here.
 */
const UNIX_PATH_MAX = process.platform === 'linux' ? 107 : 103;

function parseUnixAddress(address: string): ListenSpec {
  if (address.includes('\0')) {
    throw new InvalidAddressError(`unix address ${JSON.stringify(address)} contains a NUL byte`);
  }
  const bytes = Buffer.byteLength(address);
  if (bytes > UNIX_PATH_MAX) {
    throw new InvalidAddressError(
      `unix address ${JSON.stringify(address)} is ${bytes} bytes long: at most ${UNIX_PATH_MAX} fit in a socket address`,
    );
  }
  if (address.startsWith('@')) {
    if (process.platform !== 'linux') {
      throw new InvalidAddressError(`abstract unix address ${JSON.stringify(address)} needs Linux`);
    }
    if (address.length === 1) throw new InvalidAddressError('abstract unix address "@" has no name');
    // Node binds an abstract socket when the path starts with a NUL byte.
    return { network: 'unix', path: `\0${address.slice(1)}`, abstract: true };
  }
  return { network: 'unix', path: address, abstract: false };
}

/** Formats a bound address the way it was written: `127.0.0.1:8080`, `[::1]:8080`, a path, `@name`. */
export function formatAddress(bound: BoundAddress): string {
  if (bound.network === 'unix') return bound.path;
  return bound.host.includes(':') ? `[${bound.host}]:${bound.port}` : `${bound.host}:${bound.port}`;
}

/** Converts what `net.Server.address()` returns into a {@link BoundAddress}. */
export function toBoundAddress(
  network: Network,
  raw: ReturnType<import('node:net').Server['address']>,
): BoundAddress {
  if (typeof raw === 'string') {
    return { network: 'unix', path: raw.startsWith('\0') ? `@${raw.slice(1)}` : raw };
  }
  if (raw === null) throw new InvalidAddressError('listener is not bound');
  const net = network === 'unix' ? (raw.family === 'IPv6' ? 'tcp6' : 'tcp4') : network;
  return { network: net, host: raw.address, port: raw.port };
}
