/**
 * tcpserver: a TCP server framework for Node.js with a correct, fast graceful shutdown.
 *
 * ```ts
 * import * as tcpserver from 'tcpserver';
 * const srv = tcpserver.newServer(
 *   tcpserver.network('tcp'),
 *   tcpserver.address(':8080'),
 *   tcpserver.handler(async (ctx, conn) => {
 *     for await (const chunk of conn) await conn.write(chunk);
 *   }),
 * );
 * await srv.serve(signal);
 * ```
 *
 * @module
 */
import { applyOptions, type Option, resolveOptions, type ServerOptions } from './options.js';
import { Server } from './server.js';

export type { RefuseReason, RejectReason } from './accept.js';
export type { BoundAddress, ListenSpec, Network } from './address.js';
export { formatAddress } from './address.js';
export * from './codec/index.js';
export type { ConnState, IoOptions } from './conn.js';
export { Conn } from './conn.js';
export { Context } from './context.js';
export { channels } from './diagnostics.js';
export * from './errors.js';
export type { FdUsage } from './fd-watch.js';
export type { HealthAddress, HealthServer, HealthServerOptions, HealthTarget } from './health.js';
export { healthServer } from './health.js';
export type { Handler, ListenerOption, Logger, MinDataRate, Option, ServerOptions } from './options.js';
export {
  address,
  fdCheckInterval,
  firstRequestGrace,
  frameTimeout,
  handler,
  handshakeTimeout,
  idleTimeout,
  keepAlive,
  lingerTimeout,
  listener,
  logger,
  maxConnectionAge,
  maxConnections,
  minDataRate,
  name,
  network,
  noDelay,
  proxyProtocol,
  random,
  reusePort,
  service,
  shutdownSpread,
  shutdownTimeout,
  tls,
} from './options.js';
export { removePidFile, writePidFile } from './pid-file.js';
export type {
  ProxyHeader,
  ProxyInetAddress,
  ProxySsl,
  ProxyTlv,
  ProxyUnixAddress,
  ProxyVersions,
} from './proxy-protocol.js';
export {
  crc32c,
  maxProxyHeaderLength,
  PP2_CLIENT,
  PP2_SUBTYPE_SSL,
  PP2_TYPE,
  parseProxyHeader,
} from './proxy-protocol.js';
export type { ProxyFailure, ProxyProtocolOptions } from './proxy-stage.js';
export type { CloseOptions, FdRecoveredInfo, ServerStats, ShutdownReport } from './server.js';
export { Server } from './server.js';
export type { Reply, Service, ServiceOutput } from './service.js';
export type {
  ShutdownOnSignalsOptions,
  SignalLogger,
  SignalShutdown,
  SignalShutdownReport,
  SignalShutdownTarget,
} from './signals.js';
export { shutdownOnSignals } from './signals.js';
export type { SystemdListener } from './systemd.js';
export { SystemdActivationError, systemdListeners } from './systemd.js';
export type { Random } from './timers.js';
export { MAX_DELAY_MS, seededRandom } from './timers.js';

/**
 * Builds a server from option functions, the seed's form:
 * `newServer(network('tcp'), address(':8080'), handler(fn))`. Throws a typed error for a bad
 * option, before anything binds.
 */
export function newServer(...options: Option[]): Server {
  return new Server(resolveOptions(applyOptions(options)));
}

/**
 * Builds a server from one options object, Node's form:
 * `createServer({ network: 'tcp', address: ':8080', handler })`. Same validation as `newServer`.
 */
export function createServer(options: ServerOptions): Server {
  return new Server(resolveOptions(options));
}
