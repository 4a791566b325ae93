/**
 * Server options: the options object of `createServer`, the option functions of `newServer`,
 * and their validation (everything is checked before anything binds).
 *
 * @module
 */
import type { Server as NetServer } from 'node:net';
import type { TlsOptions } from 'node:tls';
import { type ListenSpec, type Network, parseAddress, parseNetwork } from './address.js';
import type { Conn } from './conn.js';
import type { Context } from './context.js';
import { InvalidOptionError } from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import { type ProxyProtocolOptions, type ResolvedProxyOptions, resolveProxyOptions } from './proxy-stage.js';
import { type ResolvedService, resolveService, type Service } from './service.js';
import { describeValue as describe, duration, flag, type Random, timeLimit } from './timers.js';

/** The per-connection function a server runs. It owns the connection until it returns. */
export type Handler = (ctx: Context, conn: Conn) => void | Promise<void>;

/** A pino-compatible logger: the library calls these with `(object, message)`. */
export interface Logger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** A listener that already exists: a `net.Server`, an inherited descriptor, or systemd's. */
export type ListenerOption = NetServer | { fd: number } | 'systemd';

/** Everything a server can be configured with. Only `handler` (or `service`) is required. */
export interface ServerOptions {
  /** A name for logs and diagnostics. Default `"tcpserver"`. */
  name?: string;
  /** `tcp` (dual-stack, default), `tcp4`, `tcp6` or `unix`. */
  network?: Network;
  /** Go-style address: `:8080`, `127.0.0.1:0`, `[::1]:8080`, a unix path or `@abstract`. */
  address?: string;
  /** The connection handler: one call per connection (the stream mode). Required unless `service`. */
  handler?: Handler;
  /**
   * Serve a request/reply protocol instead of running a handler (the service mode): a decoder
   * and a function from one frame to its reply, called from the data path. Exactly one of
   * `handler` and `service`.
   */
  // biome-ignore lint/suspicious/noExplicitAny: a server serves any frame type; each Service<T> is checked where it is written
  service?: Service<any>;
  /** Serve TLS with these `node:tls` options (`key`, `cert`, `ca`, `requestCert`, `ALPNProtocols`...). */
  tls?: TlsOptions;
  /** Serve on a listener that already exists instead of binding `address`. */
  listener?: ListenerOption;
  /** At most this many open connections; beyond it new ones are closed at once and counted. */
  maxConnections?: number;
  /**
   * End a connection after this many ms without a byte either way, whatever it holds: an idle
   * one ends gracefully, one holding half a frame or unread input is ended too (FIN if its writes
   * can flush, destroyed otherwise) and its pending read rejects with `ERR_IDLE_TIMEOUT`.
   * `0` (default) disables it.
   */
  idleTimeout?: number;
  /**
   * The longest a frame may take to arrive once its first byte has (`readFrame` and `frames()`),
   * in ms: a peer dripping a frame byte by byte is never idle, and this ends it (Node http's
   * `headersTimeout`, Go's `ReadHeaderTimeout`). The pending read rejects with
   * `ERR_FRAME_TIMEOUT`. `0` (default) disables it.
   */
  frameTimeout?: number;
  /**
   * The slowest a long frame may arrive (`readFrame` and `frames()`), as Kestrel's
   * `MinRequestBodyDataRate`: once a frame has taken `grace` ms (default 5000), it must have
   * come at `bytesPerSecond` or faster on average, or the pending read rejects with
   * `ERR_MIN_DATA_RATE` and the connection is ended. Off by default.
   */
  minDataRate?: MinDataRate;
  /**
   * End a connection gracefully once it is this many ms old (at its next idle moment), so
   * long-lived clients reconnect and spread over new instances. `0` (default) disables it.
   */
  maxConnectionAge?: number;
  /** Drop a TLS peer that has not completed its handshake after this many ms. Default 10 000. */
  handshakeTimeout?: number;
  /**
   * Read a PROXY protocol header (v1 or v2, HAProxy's spec) from trusted peers before anything
   * else; the connection then reports the header's addresses. Off by default, never auto-detected.
   */
  proxyProtocol?: ProxyProtocolOptions;
  /** Grace period of `close()` without `timeout` and of `serve(signal)`. Default 10 000 ms. */
  shutdownTimeout?: number;
  /**
   * Spread the ending of idle connections at shutdown over this many ms (each at a random moment;
   * capped at 90% of the shutdown deadline), so their clients do not all reconnect at once.
   * `0` (default) ends them all at once. `close({ spread })` overrides it.
   */
  shutdownSpread?: number;
  /**
   * At shutdown, a connection that has not sent a byte yet and was accepted less than this many
   * ms ago keeps the rest of that time (measured to within an eighth of it, never less) for its
   * first request, which may have been on its way as the listener closed; the request is
   * answered, then the connection ends. One silent for longer raced nothing: it ends at once, as
   * an idle one. Go's net/http gives new connections 5 s from their accept. Capped at 90% of the
   * shutdown deadline. Default 1000; `0` ends them all at once.
   */
  firstRequestGrace?: number;
  /**
   * After our FIN is flushed, how many ms the peer gets to close its side before the socket is
   * dropped (nginx's `lingering_timeout`). Default 2000; `Infinity` waits as long as the peer does.
   */
  lingerTimeout?: number;
  /**
   * How often, in ms, the server checks the process's descriptors against its limit while it
   * serves (Linux, from `/proc`): running out makes libuv close waiting connections unseen, and
   * this makes it visible as the `'fdExhausted'` and `'fdRecovered'` events and
   * `stats().fdExhaustions`. Default 1000; `0` disables it.
   */
  fdCheckInterval?: number;
  /** Uniform random numbers in [0, 1) for spread closing and age jitter. Default `Math.random`. */
  random?: Random;
  /**
   * Bind with `SO_REUSEPORT`, so several processes (cluster workers, containers on the host
   * network) each bind the same port and the kernel spreads connections between them. Linux and
   * FreeBSD, on Node.js >= 22.12; `listen()` checks with a trial bind and rejects with
   * `ReusePortUnsupportedError` where it does not work (Node 20 ignores the option). Default `false`.
   */
  reusePort?: boolean;
  /** Disable Nagle's algorithm on accepted sockets. Default `true`. */
  noDelay?: boolean;
  /** TCP keep-alive: `false` (default), `true`, or the initial delay in ms. */
  keepAlive?: boolean | number;
  /** Structured logging, pino-compatible. The library prints nothing without it. */
  logger?: Logger;
}

/** See {@link ServerOptions.minDataRate}. */
export interface MinDataRate {
  /** Average bytes per second a frame must arrive at, counted from its first byte. */
  bytesPerSecond: number;
  /** How long a frame may take before the rate applies, in ms. Default 5000. */
  grace?: number;
}

/** One option of the seed-style constructor `newServer(...options)`. */
export type Option = (options: ServerOptions) => void;

/** Options after validation, with defaults applied (internal: not exported from the package). */
export interface ResolvedOptions {
  name: string;
  network: Network;
  /** Absent when a `listener` was given without an address. */
  listen: ListenSpec | undefined;
  /** Exactly one of `handler` and `service` is set. */
  handler: Handler | undefined;
  service: ResolvedService | undefined;
  tls: TlsOptions | undefined;
  listener: ListenerOption | undefined;
  maxConnections: number;
  idleTimeout: number;
  frameTimeout: number;
  /** `bytesPerSecond` 0: no minimum. */
  minDataRate: { bytesPerSecond: number; grace: number };
  maxConnectionAge: number;
  handshakeTimeout: number;
  proxyProtocol: ResolvedProxyOptions | undefined;
  shutdownTimeout: number;
  shutdownSpread: number;
  firstRequestGrace: number;
  lingerTimeout: number;
  fdCheckInterval: number;
  random: Random;
  reusePort: boolean;
  noDelay: boolean;
  keepAlive: boolean;
  keepAliveInitialDelay: number;
  logger: Logger | undefined;
}

/** Every key of {@link ServerOptions}: any other is refused. */
const SERVER_OPTION_KEYS: KnownKeys<ServerOptions> = {
  name: true,
  network: true,
  address: true,
  handler: true,
  service: true,
  tls: true,
  listener: true,
  maxConnections: true,
  idleTimeout: true,
  frameTimeout: true,
  minDataRate: true,
  maxConnectionAge: true,
  handshakeTimeout: true,
  proxyProtocol: true,
  shutdownTimeout: true,
  shutdownSpread: true,
  firstRequestGrace: true,
  lingerTimeout: true,
  fdCheckInterval: true,
  random: true,
  reusePort: true,
  noDelay: true,
  keepAlive: true,
  logger: true,
};

const MIN_DATA_RATE_KEYS: KnownKeys<MinDataRate> = { bytesPerSecond: true, grace: true };

/** Sets {@link ServerOptions.name}. */
export const name =
  (value: string): Option =>
  (o) =>
    void (o.name = value);
/** Sets {@link ServerOptions.network}. */
export const network =
  (value: Network): Option =>
  (o) =>
    void (o.network = value);
/** Sets {@link ServerOptions.address}. */
export const address =
  (value: string): Option =>
  (o) =>
    void (o.address = value);
/** Sets {@link ServerOptions.handler}. */
export const handler =
  (value: Handler): Option =>
  (o) =>
    void (o.handler = value);
/** Sets {@link ServerOptions.tls}. */
export const tls =
  (value: TlsOptions): Option =>
  (o) =>
    void (o.tls = value);
/** Sets {@link ServerOptions.listener}. */
export const listener =
  (value: ListenerOption): Option =>
  (o) =>
    void (o.listener = value);
/** Sets {@link ServerOptions.maxConnections}. */
export const maxConnections =
  (value: number): Option =>
  (o) =>
    void (o.maxConnections = value);
/** Sets {@link ServerOptions.service}. */
export const service =
  <T>(value: Service<T>): Option =>
  (o) =>
    void (o.service = value);
/** Sets {@link ServerOptions.idleTimeout}. */
export const idleTimeout =
  (ms: number): Option =>
  (o) =>
    void (o.idleTimeout = ms);
/** Sets {@link ServerOptions.frameTimeout}. */
export const frameTimeout =
  (ms: number): Option =>
  (o) =>
    void (o.frameTimeout = ms);
/** Sets {@link ServerOptions.minDataRate}. */
export const minDataRate =
  (value: MinDataRate): Option =>
  (o) =>
    void (o.minDataRate = value);
/** Sets {@link ServerOptions.maxConnectionAge}. */
export const maxConnectionAge =
  (ms: number): Option =>
  (o) =>
    void (o.maxConnectionAge = ms);
/** Sets {@link ServerOptions.handshakeTimeout}. */
export const handshakeTimeout =
  (ms: number): Option =>
  (o) =>
    void (o.handshakeTimeout = ms);
/** Sets {@link ServerOptions.proxyProtocol}. */
export const proxyProtocol =
  (value: ProxyProtocolOptions): Option =>
  (o) =>
    void (o.proxyProtocol = value);
/** Sets {@link ServerOptions.shutdownSpread}. */
export const shutdownSpread =
  (ms: number): Option =>
  (o) =>
    void (o.shutdownSpread = ms);
/** Sets {@link ServerOptions.firstRequestGrace}. */
export const firstRequestGrace =
  (ms: number): Option =>
  (o) =>
    void (o.firstRequestGrace = ms);
/** Sets {@link ServerOptions.fdCheckInterval}. */
export const fdCheckInterval =
  (ms: number): Option =>
  (o) =>
    void (o.fdCheckInterval = ms);
/** Sets {@link ServerOptions.lingerTimeout}. */
export const lingerTimeout =
  (ms: number): Option =>
  (o) =>
    void (o.lingerTimeout = ms);
/** Sets {@link ServerOptions.random}. */
export const random =
  (value: Random): Option =>
  (o) =>
    void (o.random = value);
/** Sets {@link ServerOptions.shutdownTimeout}. */
export const shutdownTimeout =
  (ms: number): Option =>
  (o) =>
    void (o.shutdownTimeout = ms);
/** Sets {@link ServerOptions.reusePort}. */
export const reusePort =
  (value: boolean): Option =>
  (o) =>
    void (o.reusePort = value);
/** Sets {@link ServerOptions.noDelay}. */
export const noDelay =
  (value: boolean): Option =>
  (o) =>
    void (o.noDelay = value);
/** Sets {@link ServerOptions.keepAlive}. */
export const keepAlive =
  (value: boolean | number): Option =>
  (o) =>
    void (o.keepAlive = value);
/** Sets {@link ServerOptions.logger}. */
export const logger =
  (value: Logger): Option =>
  (o) =>
    void (o.logger = value);

/** Validates `options` and applies defaults. Throws a typed error naming the bad value. */
export function resolveOptions(options: ServerOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError(`options must be an object, got ${describe(options)}`);
  }
  checkKeys(options, SERVER_OPTION_KEYS);
  const { handler: run, listener: existing } = options;
  let svc: ResolvedService | undefined;
  if (options.service !== undefined) {
    if (run !== undefined) throw new InvalidOptionError('handler and service are exclusive: give one');
    svc = resolveService(options.service);
  } else if (typeof run !== 'function') {
    throw new InvalidOptionError(`handler must be a function, got ${describe(run)}`);
  }
  const net = parseNetwork(options.network ?? 'tcp');
  if (existing !== undefined) checkListener(existing);
  let listen: ListenSpec | undefined;
  if (options.address !== undefined) listen = parseAddress(net, options.address);
  else if (existing === undefined) {
    throw new InvalidOptionError('address is required unless a listener is given');
  }
  if (options.name !== undefined && typeof options.name !== 'string') {
    throw new InvalidOptionError(`name must be a string, got ${describe(options.name)}`);
  }
  if (options.tls !== undefined && (options.tls === null || typeof options.tls !== 'object')) {
    throw new InvalidOptionError(`tls must be an object of node:tls options, got ${describe(options.tls)}`);
  }
  const maxConns = options.maxConnections ?? Number.POSITIVE_INFINITY;
  if (!(maxConns === Number.POSITIVE_INFINITY || (Number.isInteger(maxConns) && maxConns > 0))) {
    throw new InvalidOptionError(
      `maxConnections must be a positive integer or Infinity, got ${describe(options.maxConnections)}`,
    );
  }
  const keepAliveOpt = options.keepAlive ?? false;
  if (typeof keepAliveOpt !== 'boolean') duration('keepAlive', keepAliveOpt, false);
  if (options.logger !== undefined) checkLogger(options.logger);
  if (options.random !== undefined && typeof options.random !== 'function') {
    throw new InvalidOptionError(
      `random must be a function returning numbers in [0, 1), got ${describe(options.random)}`,
    );
  }
  const reuse = flag('reusePort', options.reusePort, false);
  if (reuse) checkReusePort(listen, existing);
  return {
    name: options.name ?? 'tcpserver',
    network: net,
    listen,
    handler: run,
    service: svc,
    tls: options.tls,
    listener: existing,
    maxConnections: maxConns,
    idleTimeout: duration('idleTimeout', options.idleTimeout ?? 0, false),
    frameTimeout: duration('frameTimeout', options.frameTimeout ?? 0, false),
    minDataRate: resolveMinDataRate(options.minDataRate),
    maxConnectionAge: duration('maxConnectionAge', options.maxConnectionAge ?? 0, true),
    handshakeTimeout: timeLimit('handshakeTimeout', options.handshakeTimeout ?? 10_000),
    proxyProtocol:
      options.proxyProtocol === undefined ? undefined : resolveProxyOptions(options.proxyProtocol),
    shutdownTimeout: duration('shutdownTimeout', options.shutdownTimeout ?? 10_000, true),
    shutdownSpread: duration('shutdownSpread', options.shutdownSpread ?? 0, false),
    firstRequestGrace: duration('firstRequestGrace', options.firstRequestGrace ?? 1_000, false),
    lingerTimeout: duration('lingerTimeout', options.lingerTimeout ?? 2_000, true),
    fdCheckInterval: duration('fdCheckInterval', options.fdCheckInterval ?? 1_000, false),
    random: options.random ?? Math.random,
    reusePort: reuse,
    noDelay: flag('noDelay', options.noDelay, true),
    keepAlive: keepAliveOpt !== false,
    keepAliveInitialDelay: typeof keepAliveOpt === 'number' ? keepAliveOpt : 0,
    logger: options.logger,
  };
}

/** Applies seed-style option functions to a fresh options object. */
export function applyOptions(list: readonly Option[]): ServerOptions {
  const options: ServerOptions = {};
  for (const option of list) {
    if (typeof option !== 'function') {
      throw new InvalidOptionError(`newServer takes option functions, got ${describe(option)}`);
    }
    option(options);
  }
  return options;
}

function resolveMinDataRate(value: MinDataRate | undefined): ResolvedOptions['minDataRate'] {
  if (value === undefined) return { bytesPerSecond: 0, grace: 0 };
  if (value === null || typeof value !== 'object') {
    throw new InvalidOptionError(
      `minDataRate must be an object { bytesPerSecond, grace }, got ${describe(value)}`,
    );
  }
  checkKeys(value, MIN_DATA_RATE_KEYS, 'minDataRate.');
  const rate = value.bytesPerSecond;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
    throw new InvalidOptionError(
      `minDataRate.bytesPerSecond must be a positive number, got ${describe(rate)}`,
    );
  }
  return { bytesPerSecond: rate, grace: duration('minDataRate.grace', value.grace ?? 5_000, false) };
}

function checkListener(value: unknown): void {
  if (value === 'systemd') return;
  if (value !== null && typeof value === 'object') {
    if ('fd' in value && Number.isInteger(value.fd) && (value.fd as number) >= 0) return;
    if ('listen' in value && typeof value.listen === 'function' && 'on' in value) return;
  }
  throw new InvalidOptionError(`listener must be a net.Server, { fd } or 'systemd', got ${describe(value)}`);
}

/** `reusePort` applies to a TCP address the server binds itself. */
export function checkReusePort(listen: ListenSpec | undefined, existing: ListenerOption | undefined): void {
  if (listen === undefined || (existing !== undefined && !isUnboundServer(existing))) {
    throw new InvalidOptionError(
      'reusePort applies to an address the server binds, not to a listener that is already bound',
    );
  }
  if (listen.network === 'unix') {
    throw new InvalidOptionError('reusePort needs a TCP network (tcp, tcp4, tcp6), not unix');
  }
}

function isUnboundServer(value: ListenerOption): boolean {
  return typeof value === 'object' && 'listen' in value && !value.listening;
}

function checkLogger(value: unknown): void {
  const log = value as Record<string, unknown> | null;
  for (const level of ['debug', 'info', 'warn', 'error']) {
    if (log === null || typeof log !== 'object' || typeof log[level] !== 'function') {
      throw new InvalidOptionError(
        `logger must have a ${level}(obj, msg) method (pino-compatible), got ${describe(value)}`,
      );
    }
  }
}
