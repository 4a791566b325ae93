/**
 * The accept pipeline: what happens between a listener accepting a socket and the handler
 * running (docs/architecture.md, "Accept pipeline").
 *
 * 1. **Policy**: while the server is not serving, or already holds `maxConnections`, the socket
 *    is closed at once and counted as `rejected`; it never becomes a connection.
 * 2. **Adopt**: TCP options are set, a `Conn` is made in state `new` and tracked, and its maximum
 *    age (with ±10% jitter, so connections made together do not all end together) is scheduled.
 * 3. **Stages**, in order, while the connection is `new`: the PROXY protocol header (trusted peers
 *    only), then the TLS handshake. Each has its own deadline (`proxyProtocol.timeout`,
 *    `handshakeTimeout`). A stage that fails closes the connection and counts it as `refused`,
 *    by reason. A slow peer in a stage holds only its own socket: stages are event-driven.
 *    A shutdown closes connections still in a stage at once (they have no request yet).
 * 4. **Serve**: the connection reads from its final stream (the `TLSSocket` after a handshake),
 *    with the PROXY header's addresses, and the handler runs.
 *
 * @module
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { AcceptClock } from './accept-clock.js';
import { ageSlot, Conn } from './conn.js';
import type { ConnList } from './conn-list.js';
import { ConnectionAgeError } from './errors.js';
import type { ResolvedOptions } from './options.js';
import type { ProxyHeader } from './proxy-protocol.js';
import { type ProxyFailure, ProxyStage } from './proxy-stage.js';
import type { Server } from './server.js';
import { kEndWhenIdle, kRun, kServe } from './symbols.js';
import { DeadlineQueue, jitter } from './timers.js';
import { type TlsFailure, TlsStage } from './tls.js';

/** Why an accepted socket was closed at once, before it became a connection. */
export type RejectReason = 'closing' | 'maxConnections';

/** Why a connection was closed in the accept pipeline, before its handler ran. */
export type RefuseReason = ProxyFailure | TlsFailure;

/** Every reason a connection can be refused, for counters that always list them all. */
export const REFUSE_REASONS: readonly RefuseReason[] = Object.freeze([
  'proxy-untrusted',
  'proxy-invalid',
  'proxy-timeout',
  'proxy-incomplete',
  'tls-handshake',
  'tls-timeout',
]);

/** What the pipeline needs from its server. */
export interface AcceptHost {
  /** The server: it owns the connections (they report to it) and is their `ctx.server`. */
  readonly server: Server;
  /** True while the server accepts (serving, not closing). */
  readonly accepting: boolean;
  /** The open connections. */
  readonly conns: ConnList;
  /** Step 1 failed: the socket is closed at once and counted. */
  reject(socket: Socket, reason: RejectReason): void;
  /** Step 2: the connection exists (state `new`): track it, count it, announce it. */
  adopt(conn: Conn): void;
  /** Step 3 failed: the connection is being closed; count and report why. */
  refuse(conn: Conn, reason: RefuseReason, error: Error | undefined): void;
}

const ageFraction = 0.1;

/** The accept pipeline of one server. `onConnection` is every listener's `'connection'` listener. */
export class AcceptPipeline {
  readonly #host: AcceptHost;
  readonly #options: ResolvedOptions;
  readonly #proxy: ProxyStage | undefined;
  readonly #tls: TlsStage | undefined;
  /** Connections with a maximum age, ended at their next idle moment once it is reached. */
  readonly #ages: DeadlineQueue<Conn> | undefined;
  /** When connections were accepted, for `firstRequestGrace` (none without a grace). */
  readonly #clock: AcceptClock | undefined;
  #nextId = 1;

  constructor(host: AcceptHost, options: ResolvedOptions) {
    this.#host = host;
    this.#options = options;
    this.#proxy = options.proxyProtocol === undefined ? undefined : new ProxyStage(options.proxyProtocol);
    this.#tls = options.tls === undefined ? undefined : new TlsStage(options.tls, options.handshakeTimeout);
    const age = options.maxConnectionAge;
    if (age > 0 && age !== Infinity) {
      this.#ages = new DeadlineQueue<Conn>(
        (conn) => conn[kEndWhenIdle](new ConnectionAgeError(age)),
        ageSlot,
      );
    }
    const grace = options.firstRequestGrace;
    if (grace > 0) {
      // Accept times to within an eighth of the grace: a connection may wait that much longer.
      const step = Math.max(1, grace / 8);
      this.#clock = new AcceptClock(step, grace + step);
    }
  }

  readonly onConnection = (socket: Socket): void => {
    const host = this.#host;
    const options = this.#options;
    // 1. Policy.
    if (!host.accepting || host.conns.size >= options.maxConnections) {
      host.reject(socket, host.accepting ? 'maxConnections' : 'closing');
      return;
    }
    // 2. Adopt.
    if (options.noDelay) socket.setNoDelay(true);
    if (options.keepAlive) socket.setKeepAlive(true, options.keepAliveInitialDelay);
    const id = this.#nextId++;
    const clock = this.#clock;
    const ages = this.#ages;
    // One clock read serves both (none when neither is configured).
    const now = clock !== undefined || ages !== undefined ? performance.now() : 0;
    clock?.accepted(id, now);
    const conn = new Conn(host.server, id, socket);
    host.adopt(conn);
    if (ages !== undefined) {
      ages.add(conn, now + jitter(options.maxConnectionAge, ageFraction, options.random));
    }
    // 3. Stages.
    const proxy = this.#proxy;
    if (proxy === undefined) this.#afterProxy(conn, socket, undefined);
    else {
      proxy.start(
        socket,
        (header) => this.#afterProxy(conn, socket, header),
        (reason, error) => this.#refused(conn, reason, error),
      );
    }
  };

  /** The latest moment `conn` can have been accepted (see `AcceptClock`). */
  acceptedBy(conn: Conn): number {
    return this.#clock?.acceptedBy(conn.id) ?? -Infinity;
  }

  /** The connection closed: forget its deadlines. */
  connClosed(conn: Conn): void {
    this.#ages?.delete(conn);
  }

  #afterProxy(conn: Conn, socket: Socket, header: ProxyHeader | undefined): void {
    const tls = this.#tls;
    if (tls === undefined) this.#serve(conn, socket, header);
    else {
      tls.start(
        socket,
        (tlsSocket) => this.#serve(conn, tlsSocket, header),
        (reason, error) => this.#refused(conn, reason, error),
      );
    }
  }

  /** 4. Serve. */
  #serve(conn: Conn, stream: Socket, header: ProxyHeader | undefined): void {
    if (conn.state !== 'new') {
      stream.destroy(); // a shutdown closed it meanwhile
      return;
    }
    conn[kServe](stream, header, this.#options.idleTimeout);
    conn[kRun](this.#options.handler);
  }

  #refused(conn: Conn, reason: RefuseReason, error: Error | undefined): void {
    conn.socket.destroy();
    // A shutdown that closed it in a stage is not the peer's failure.
    if (this.#host.accepting) this.#host.refuse(conn, reason, error);
  }
}
