/**
 * Server: lifecycle, accept loop, connection tracking, and graceful shutdown.
 *
 * Lifecycle: `created` → (`listen()`) `serving` → (`close()`) `closing` → `stopped`. A server is
 * used once: after it stops, make a new one.
 *
 * Shutdown (DESIGN.md section 4) is event-driven: every connection reports its `closed` transition
 * through `onState` (and every other transition while someone observes them), and the close
 * completes from inside the change that removes the last one.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Server as NetServer, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createSecureContext, type SecureContext, TLSSocket } from 'node:tls';
import { type BoundAddress, formatAddress, toBoundAddress } from './address.js';
import { Conn, type ConnOwner, type ConnState, MAX_TIMER_MS } from './conn.js';
import { Context } from './context.js';
import { channels } from './diagnostics.js';
import {
  ConnClosedError,
  ConnectionAgeError,
  IdleTimeoutError,
  InvalidOptionError,
  ServerClosedError,
} from './errors.js';
import { bindListener, listenerFor, listenerForFd, type PendingListener } from './listen.js';
import { duration, type ResolvedOptions } from './options.js';
import { systemdListeners } from './systemd.js';

/** Counters and gauges of a server. `open` = `new + active + idle + closing`, always. */
export interface ServerStats {
  /** Connections open now, in any state but `closed`. */
  open: number;
  new: number;
  active: number;
  idle: number;
  closing: number;
  /** Connections accepted and handed a handler, since the start. */
  accepted: number;
  /** Connections closed at once: over `maxConnections`, or arriving during shutdown. */
  rejected: number;
  /** Accepted connections that have closed. */
  closed: number;
  /** Connections destroyed by a shutdown deadline. */
  forced: number;
  /** Handlers that threw or rejected (a peer closing the connection under them is not counted). */
  errors: number;
  /** Connections ended by `idleTimeout`. */
  idleTimeouts: number;
}

/** What `close()` and `serve()` resolve with. */
export interface ShutdownReport {
  /** Connections that ended on their own during the shutdown. */
  graceful: number;
  /** Connections destroyed at the deadline. */
  forced: number;
  /** From the first `close()` to the last connection gone, in ms. */
  durationMs: number;
}

/** Options of {@link Server.close}. */
export interface CloseOptions {
  /** Grace period in ms before the remaining connections are destroyed; default `shutdownTimeout`. */
  timeout?: number;
  /** Destroys the remaining connections when it aborts. */
  signal?: AbortSignal;
}

type Phase = 'created' | 'serving' | 'closing' | 'stopped';

/** One shutdown in progress. */
interface Shutdown {
  readonly startedAt: number;
  readonly promise: Promise<ShutdownReport>;
  readonly resolve: (report: ShutdownReport) => void;
  readonly reason: ServerClosedError;
  graceful: number;
  forced: number;
  deadlineAt: number;
  timer: NodeJS.Timeout | undefined;
  /** Undoes `signal` listeners once the shutdown is over. */
  cleanups: Array<() => void>;
}

const noop = (): void => {};

/**
 * What `tls.Server` uses when none is given: without a session id context, a client that
 * resumes a session after sending a certificate gets an internal-error alert.
 */
function defaultSessionIdContext(): string {
  return createHash('sha1').update(process.argv.join(' ')).digest('hex').slice(0, 32);
}

/**
 * A TCP (or unix, or TLS) server that runs one handler per connection and shuts down
 * gracefully. Build it with `newServer(...)` or `createServer({...})`.
 *
 * Events: `'listening'` (addresses), `'connState'` (conn, state, prev), `'handlerError'`
 * (error, conn), `'rejected'` (socket, reason), `'acceptError'` (error), `'ready'` (boolean),
 * `'shutdown'` ({ timeout }), `'close'` (report). It never emits `'error'`.
 */
export class Server extends EventEmitter implements ConnOwner {
  /** The `name` option, for logs. */
  readonly name: string;
  /** Resolves once the server accepts connections; rejects if it closes or fails before. */
  readonly serving: Promise<void>;
  /** Resolves with the shutdown report once the server has fully stopped. */
  readonly stopped: Promise<ShutdownReport>;
  readonly #options: ResolvedOptions;
  readonly #secureContext: SecureContext | undefined;
  #phase: Phase = 'created';
  #listening: Promise<BoundAddress[]> | undefined;
  /** True while listeners are being bound; a shutdown cannot complete before that ends. */
  #binding = false;
  #listeners: NetServer[] = [];
  #bound: BoundAddress[] = [];
  #readyFlag = true;
  #nextId = 1;
  readonly #conns = new Set<Conn>();
  readonly #totals = { accepted: 0, rejected: 0, closed: 0, forced: 0, errors: 0, idleTimeouts: 0 };
  #shutdown: Shutdown | undefined;
  /** A state change is being announced; changes made meanwhile wait in `#deferred`. */
  #notifying = false;
  readonly #deferred: Array<{ conn: Conn; state: ConnState; prev: ConnState }> = [];
  #markServing!: () => void;
  #failServing!: (error: Error) => void;
  #markStopped!: (report: ShutdownReport) => void;

  /** @internal Use `newServer` or `createServer`. */
  constructor(options: ResolvedOptions) {
    super();
    this.#options = options;
    this.name = options.name;
    this.#secureContext =
      options.tls === undefined
        ? undefined
        : createSecureContext({ sessionIdContext: defaultSessionIdContext(), ...options.tls });
    this.serving = new Promise<void>((resolve, reject) => {
      this.#markServing = resolve;
      this.#failServing = reject;
    });
    this.serving.catch(noop); // a rejection nobody awaits is not an error

    this.stopped = new Promise<ShutdownReport>((resolve) => {
      this.#markStopped = resolve;
    });
  }

  /** True while the server accepts connections (listening, not yet closing). */
  get isServing(): boolean {
    return this.#phase === 'serving';
  }

  /** True from the first `close()` until the server has stopped. */
  get isClosing(): boolean {
    return this.#phase === 'closing';
  }

  /** True once the server has fully stopped. */
  get isStopped(): boolean {
    return this.#phase === 'stopped';
  }

  /** True while serving, not closing, and not marked unready with `setReady(false)`. */
  get ready(): boolean {
    return this.#phase === 'serving' && this.#readyFlag;
  }

  /**
   * Marks the server ready or not ready without changing what it does: during a drain delay it
   * keeps serving while health checks see it as unready. Emits `'ready'` when `ready` changes.
   */
  setReady(ready: boolean): void {
    const before = this.ready;
    this.#readyFlag = ready;
    if (this.ready !== before) this.emit('ready', this.ready);
  }

  /**
   * Binds the listeners and starts accepting. Resolves the bound addresses (`:0` reports the
   * real port). Rejects with a `ListenError` whose `code` is the OS code (`EADDRINUSE`, ...),
   * after which the server is stopped. Calling it again returns the same result.
   */
  listen(): Promise<BoundAddress[]> {
    if (this.#listening === undefined) {
      if (this.#phase !== 'created') return Promise.reject(new ServerClosedError());
      this.#listening = this.#bindAll();
    }
    return this.#listening;
  }

  /**
   * Listens if needed, serves, and resolves with the shutdown report once the server has fully
   * stopped. Aborting `signal` starts `close({ timeout: shutdownTimeout })`.
   */
  async serve(signal?: AbortSignal): Promise<ShutdownReport> {
    if (this.#phase === 'created' && !signal?.aborted) await this.listen();
    if (signal !== undefined) {
      const onAbort = (): void => void this.close();
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        void this.stopped.then(() => signal.removeEventListener('abort', onAbort));
      }
    }
    return this.stopped;
  }

  /** The addresses the server is bound to (empty before `listen()` resolves). */
  addresses(): BoundAddress[] {
    return this.#bound.slice();
  }

  /** A snapshot of the connection gauges and counters. */
  stats(): ServerStats {
    // Gauges are counted here, not on every transition: the hot path stays free of bookkeeping.
    const gauges = { open: 0, new: 0, active: 0, idle: 0, closing: 0 };
    for (const conn of this.#conns) {
      const state = conn.state;
      if (state === 'closed') continue; // its removal is still being announced
      gauges[state]++;
      gauges.open++;
    }
    return { ...gauges, ...this.#totals };
  }

  /**
   * Graceful shutdown (DESIGN.md section 4): stops accepting at once, aborts every `ctx.signal`,
   * ends idle connections now and active ones the moment they go idle, and resolves with a
   * report the instant the last connection is gone. At the deadline (`timeout`, default
   * `shutdownTimeout`; or `signal` aborting) the rest are destroyed and counted as forced.
   * Idempotent: later calls share the first one's result, and an earlier deadline tightens it
   * (`close({ timeout: 0 })` forces at once).
   */
  close(options: CloseOptions = {}): Promise<ShutdownReport> {
    let timeout: number;
    try {
      timeout =
        options.timeout === undefined
          ? this.#options.shutdownTimeout
          : duration('timeout', options.timeout, true);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#shutdown === undefined && this.#phase === 'stopped') return this.stopped; // listen failed
    const shutdown = this.#shutdown ?? this.#beginShutdown(timeout);
    if (this.#phase === 'closing') {
      this.#tighten(shutdown, timeout);
      const signal = options.signal;
      if (signal !== undefined) {
        const force = (): void => this.#tighten(shutdown, 0);
        if (signal.aborted) force();
        else {
          signal.addEventListener('abort', force, { once: true });
          shutdown.cleanups.push(() => signal.removeEventListener('abort', force));
        }
      }
    }
    return shutdown.promise;
  }

  /** Closes the server gracefully (`await using srv = ...`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close().then(noop);
  }

  /**
   * @internal Called by each connection on every state change. A change made from inside a
   * listener (say `conn.end()` in a `'connState'` handler) is applied after the current one has
   * reached every listener, so all of them see transitions, and counts, in order.
   */
  onState(conn: Conn, state: ConnState, prev: ConnState): void {
    if (this.#notifying) {
      this.#deferred.push({ conn, state, prev });
      return;
    }
    this.#notifying = true;
    try {
      this.#applyState(conn, state, prev);
      for (let next = this.#deferred.shift(); next !== undefined; next = this.#deferred.shift()) {
        this.#applyState(next.conn, next.state, next.prev);
      }
    } finally {
      this.#notifying = false;
    }
  }

  #applyState(conn: Conn, state: ConnState, prev: ConnState): void {
    if (state === 'closed') {
      this.#conns.delete(conn);
      this.#totals.closed++;
      const shutdown = this.#shutdown;
      if (shutdown !== undefined) {
        if (conn.forced) {
          shutdown.forced++;
          this.#totals.forced++;
        } else shutdown.graceful++;
      }
    }
    try {
      this.#publishState(conn, state, prev);
    } finally {
      // A listener that throws must not leave a shutdown waiting forever.
      if (state === 'closed' && this.#phase === 'closing') this.#finishIfDone();
    }
  }

  /**
   * @internal True when someone observes state changes: only then does a connection report
   * transitions other than `closed` (stats() counts states when asked).
   */
  get watching(): boolean {
    return this.listenerCount('connState') > 0 || channels.connState.hasSubscribers;
  }

  /** @internal Called when a connection saw no bytes either way for `idleTimeout` ms. */
  onIdleTimeout(conn: Conn): void {
    this.#totals.idleTimeouts++;
    this.#options.logger?.debug({ conn: conn.id }, 'idle timeout');
    // Stuck (a write the peer never drains, or a peer that never closes after our FIN): drop it.
    // Otherwise end it the graceful way, as a shutdown would.
    if (conn.state === 'closing' || conn.needsDrain) conn.destroy();
    else conn.drain(new IdleTimeoutError(this.#options.idleTimeout));
  }

  async #bindAll(): Promise<BoundAddress[]> {
    this.#binding = true;
    try {
      for (const listener of this.#pendingListeners()) {
        await bindListener(listener);
        this.#listeners.push(listener.server);
      }
    } catch (error) {
      this.#binding = false;
      for (const server of this.#listeners) server.close();
      this.#listeners = [];
      this.#failServing(error as Error);
      if (this.#phase === 'created') this.#stop({ graceful: 0, forced: 0, durationMs: 0 });
      else this.#finishIfDone();
      throw error;
    }
    for (const server of this.#listeners) {
      server.on('connection', this.#onConnection);
      // Accept errors after binding (EMFILE is handled by libuv; others land here): report, never crash.
      server.on('error', (error) => {
        this.emit('acceptError', error);
        this.#options.logger?.warn({ err: error }, 'accept error');
      });
      this.#bound.push(toBoundAddress(this.#options.network, server.address()));
    }
    this.#binding = false;
    if (this.#phase === 'closing') {
      // close() was called while binding: finish it now that the listeners exist.
      this.#closeListeners();
      this.#finishIfDone();
      return this.addresses();
    }
    this.#phase = 'serving';
    const addresses = this.addresses();
    this.#options.logger?.info({ name: this.name, addresses: addresses.map(formatAddress) }, 'listening');
    if (channels.listening.hasSubscribers) channels.listening.publish({ server: this, addresses });
    this.emit('listening', addresses);
    this.#markServing();
    if (this.ready) this.emit('ready', true); // not if a 'listening' listener began a shutdown
    return addresses;
  }

  #pendingListeners(): PendingListener[] {
    const { listener, listen } = this.#options;
    if (listener === undefined) return [listenerFor(listen!, this.#describeAddress())];
    if (listener === 'systemd') return systemdListeners().map(({ fd }) => listenerForFd(fd));
    if ('fd' in listener) return [listenerForFd(listener.fd)];
    if (listener.listening)
      return [{ server: listener, bind: undefined, label: 'listener', unixPath: undefined }];
    if (listen === undefined) {
      throw new InvalidOptionError(
        'the listener given is not listening and no address was set to bind it to',
      );
    }
    const bound = listenerFor(listen, this.#describeAddress());
    bound.server = listener;
    return [bound];
  }

  #describeAddress(): string {
    const spec = this.#options.listen!;
    if (spec.network === 'unix') return spec.abstract ? `@${spec.path.slice(1)}` : spec.path;
    return formatAddress({ network: spec.network, host: spec.host ?? '', port: spec.port });
  }

  readonly #onConnection = (socket: Socket): void => {
    const options = this.#options;
    if (this.#phase !== 'serving') {
      this.#reject(socket, 'closing');
      return;
    }
    if (this.#conns.size >= options.maxConnections) {
      this.#reject(socket, 'maxConnections');
      return;
    }
    if (options.noDelay) socket.setNoDelay(true);
    if (options.keepAlive) socket.setKeepAlive(true, options.keepAliveInitialDelay);
    const id = this.#nextId++;
    const secure = this.#secureContext;
    const stream = secure === undefined ? socket : this.#wrapTls(socket, secure);
    const conn = new Conn(this, id, stream, new Context(this, id), options.idleTimeout);
    this.#conns.add(conn);
    this.#totals.accepted++;
    this.#publishState(conn, 'new', undefined);
    if (options.maxConnectionAge > 0 && options.maxConnectionAge <= MAX_TIMER_MS) {
      this.#limitAge(conn, options.maxConnectionAge);
    }
    if (secure === undefined) conn.run(this.#options.handler);
    else this.#afterHandshake(conn, stream as TLSSocket);
  };

  #wrapTls(socket: Socket, secureContext: SecureContext): TLSSocket {
    // Every server-side option (ALPN, SNI, PSK, client certificates, tracing) as tls.Server takes them.
    return new TLSSocket(socket, { ...this.#options.tls, isServer: true, secureContext });
  }

  /** Drains the connection once it is `age` ms old: it ends at its next idle moment. */
  #limitAge(conn: Conn, age: number): void {
    const timer = setTimeout(() => conn.drain(new ConnectionAgeError(age)), age);
    conn.socket.once('close', () => clearTimeout(timer));
  }

  /** A TLS connection stays `new` until its handshake completes, within `handshakeTimeout`. */
  #afterHandshake(conn: Conn, socket: TLSSocket): void {
    const limit = this.#options.handshakeTimeout;
    const timer = limit <= MAX_TIMER_MS ? setTimeout(() => socket.destroy(), limit) : undefined;
    const onClose = (): void => clearTimeout(timer);
    socket.once('close', onClose);
    socket.once('secure', () => {
      clearTimeout(timer);
      socket.off('close', onClose);
      if (!this.#authorize(socket)) {
        socket.destroy();
        return;
      }
      if (conn.state === 'new') conn.run(this.#options.handler);
    });
  }

  /**
   * Client-certificate check, as `tls.Server` does for its own sockets (a bare `TLSSocket` does
   * not): with `requestCert`, sets `authorized` / `authorizationError`, and refuses an
   * unverified peer unless `rejectUnauthorized` is false.
   */
  #authorize(socket: TLSSocket): boolean {
    const tls = this.#options.tls!;
    if (tls.requestCert !== true) return true;
    const handle = (
      socket as unknown as { _handle: { verifyError(): (Error & { code?: string }) | null } | null }
    )._handle;
    const error = handle?.verifyError() ?? null;
    if (error === null) {
      socket.authorized = true;
      return true;
    }
    socket.authorized = false;
    // As tls.Server does: the OpenSSL code, e.g. 'DEPTH_ZERO_SELF_SIGNED_CERT'.
    (socket as unknown as { authorizationError: string }).authorizationError = error.code ?? error.message;
    return tls.rejectUnauthorized === false;
  }

  #reject(socket: Socket, reason: 'closing' | 'maxConnections'): void {
    this.#totals.rejected++;
    socket.on('error', noop); // a reset from the peer must not surface as an uncaught error
    socket.destroy();
    if (channels.rejected.hasSubscribers) channels.rejected.publish({ server: this, socket, reason });
    if (this.listenerCount('rejected') > 0) this.emit('rejected', socket, reason);
  }

  /** @internal A handler threw or rejected: its connection is destroyed, the error reported. */
  onHandlerError(conn: Conn, error: unknown): void {
    const logger = this.#options.logger;
    if (this.#isClosure(conn, error)) {
      // The peer went away or the server cancelled the handler: not the handler's fault.
      logger?.debug({ conn: conn.id, err: error }, 'connection closed under the handler');
      return;
    }
    this.#totals.errors++;
    logger?.error({ conn: conn.id, err: error }, 'handler failed');
    if (channels.handlerError.hasSubscribers) channels.handlerError.publish({ server: this, conn, error });
    this.emit('handlerError', error, conn);
  }

  /** True for errors that mean "the connection ended" or "you were cancelled", not a bug. */
  #isClosure(conn: Conn, error: unknown): boolean {
    if (error instanceof ConnClosedError) return true;
    const reason = conn.ctx.cancelReason;
    return reason !== undefined && (error === reason || (error instanceof Error && error.cause === reason));
  }

  #publishState(conn: Conn, state: ConnState, prev: ConnState | undefined): void {
    if (channels.connState.hasSubscribers) channels.connState.publish({ server: this, conn, state, prev });
    if (this.listenerCount('connState') > 0) this.emit('connState', conn, state, prev);
  }

  #beginShutdown(timeout: number): Shutdown {
    let resolve!: (report: ShutdownReport) => void;
    const promise = new Promise<ShutdownReport>((r) => {
      resolve = r;
    });
    const shutdown: Shutdown = {
      startedAt: performance.now(),
      promise,
      resolve,
      reason: new ServerClosedError('server is shutting down'),
      graceful: 0,
      forced: 0,
      deadlineAt: Number.POSITIVE_INFINITY,
      timer: undefined,
      cleanups: [],
    };
    this.#shutdown = shutdown;
    const wasReady = this.ready;
    this.#phase = 'closing';
    this.#failServing(new ServerClosedError('server closed before it started serving'));
    this.#options.logger?.info({ name: this.name, open: this.#conns.size, timeout }, 'shutting down');
    if (channels.shutdown.hasSubscribers) channels.shutdown.publish({ server: this, timeout });
    this.emit('shutdown', { timeout });
    if (wasReady) this.emit('ready', false);
    this.#closeListeners();
    for (const conn of this.#conns) conn.drain(shutdown.reason);
    queueMicrotask(() => this.#finishIfDone());
    return shutdown;
  }

  #closeListeners(): void {
    for (const server of this.#listeners) {
      server.off('connection', this.#onConnection);
      server.on('connection', (socket: Socket) => this.#reject(socket, 'closing'));
      server.close();
    }
  }

  /** Moves the deadline earlier (never later); `0` destroys what is left now. */
  #tighten(shutdown: Shutdown, timeout: number): void {
    const at = performance.now() + timeout;
    if (at >= shutdown.deadlineAt) return;
    shutdown.deadlineAt = at;
    if (shutdown.timer !== undefined) clearTimeout(shutdown.timer);
    shutdown.timer = undefined;
    if (timeout === 0) this.#forceAll(shutdown);
    else if (timeout <= MAX_TIMER_MS) {
      shutdown.timer = setTimeout(() => this.#forceAll(shutdown), timeout);
    }
  }

  #forceAll(shutdown: Shutdown): void {
    if (this.#conns.size > 0) {
      this.#options.logger?.warn({ name: this.name, open: this.#conns.size }, 'shutdown deadline: forcing');
    }
    for (const conn of this.#conns) conn.force(shutdown.reason);
  }

  #finishIfDone(): void {
    const shutdown = this.#shutdown;
    if (shutdown === undefined || this.#phase !== 'closing' || this.#conns.size > 0) return;
    // A bind still in progress must finish (and have its listeners closed) before we report.
    if (this.#binding) return;
    if (shutdown.timer !== undefined) clearTimeout(shutdown.timer);
    for (const cleanup of shutdown.cleanups) cleanup();
    const report: ShutdownReport = {
      graceful: shutdown.graceful,
      forced: shutdown.forced,
      durationMs: performance.now() - shutdown.startedAt,
    };
    this.#stop(report);
    shutdown.resolve(report);
  }

  #stop(report: ShutdownReport): void {
    this.#phase = 'stopped';
    this.#options.logger?.info({ name: this.name, ...report }, 'stopped');
    if (channels.close.hasSubscribers) channels.close.publish({ server: this, report });
    this.emit('close', report);
    this.#markStopped(report);
  }
}
