/**
 * Server: the lifecycle of one server, and the book of its connections.
 *
 * ```
 *   created --listen()--> serving --close()--> closing --last connection gone--> stopped
 *      \________________ close() before listen, or listen failed _______________/
 * ```
 *
 * A server is used once: after it stops, make a new one. What happens between a listener
 * accepting a socket and the handler running is the accept pipeline (`accept.ts`); the graceful
 * shutdown is `shutdown.ts`; both are walked through in docs/architecture.md.
 *
 * @module
 */
import { EventEmitter } from 'node:events';
import type { Server as NetServer, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  type AcceptHost,
  AcceptPipeline,
  REFUSE_REASONS,
  type RefuseReason,
  type RejectReason,
} from './accept.js';
import { type BoundAddress, formatAddress, toBoundAddress } from './address.js';
import {
  type Conn,
  type ConnOwner,
  type ConnState,
  type LimitError,
  lingerQueue,
  type ReadLimits,
} from './conn.js';
import { ConnList } from './conn-list.js';
import { channels } from './diagnostics.js';
import { ConnClosedError, InvalidOptionError, ServerClosedError } from './errors.js';
import { type FdUsage, watchFds } from './fd-watch.js';
import {
  bindListener,
  listenerFor,
  listenerForFd,
  type PendingListener,
  releaseSocketFile,
} from './listen.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import { checkReusePort, type ResolvedOptions } from './options.js';
import type { ResolvedService } from './service.js';
import { Shutdown, type ShutdownHost, type ShutdownReport } from './shutdown.js';
import {
  kAdoptFd,
  kCancelReason,
  kCtx,
  kLingerQueue,
  kListeners,
  kOnHandlerError,
  kOnLingerTimeout,
  kOnState,
  kOnTimeout,
  kOwnsSocketFiles,
  kReadLimits,
  kReusePort,
  kService,
  kWatching,
} from './symbols.js';
import { systemdListeners } from './systemd.js';
import { duration, type FixedDelayQueue } from './timers.js';

export type { RefuseReason, RejectReason } from './accept.js';
export type { ShutdownReport } from './shutdown.js';

/** Counters and gauges of a server. `open` = `new + active + idle + closing`, always. */
export interface ServerStats {
  /** Connections open now, in any state but `closed`. */
  open: number;
  new: number;
  active: number;
  idle: number;
  closing: number;
  /** Connections accepted (they became connections, in state `new`), since the start. */
  accepted: number;
  /** Sockets closed at once, never connections: over `maxConnections`, or arriving during shutdown. */
  rejected: number;
  /** Connections closed in the accept pipeline before their handler ran, by reason. */
  refused: Record<RefuseReason, number>;
  /** Accepted connections that have closed. */
  closed: number;
  /** Connections destroyed by a shutdown deadline. */
  forced: number;
  /** Handlers that threw or rejected (a peer closing the connection under them is not counted). */
  errors: number;
  /** Connections ended by `idleTimeout` (gracefully when idle, cut off when holding half a frame). */
  idleTimeouts: number;
  /** Connections ended because a frame took longer than `frameTimeout`. */
  frameTimeouts: number;
  /** Connections ended because a frame arrived slower than `minDataRate`. */
  minDataRateTimeouts: number;
  /** Connections dropped because the peer did not answer our FIN within `lingerTimeout`. */
  lingerTimeouts: number;
  /**
   * Times the process ran out of file descriptors while this server served (each episode once,
   * from `'fdExhausted'` to `'fdRecovered'`). Connections libuv closed meanwhile are counted
   * nowhere: Node never sees them.
   */
  fdExhaustions: number;
}

/** The payload of `'fdRecovered'`: the descriptors now, and how long they had run out. */
export interface FdRecoveredInfo extends FdUsage {
  readonly durationMs: number;
}

/** Options of {@link Server.close}. */
export interface CloseOptions {
  /** Grace period in ms before the remaining connections are destroyed; default `shutdownTimeout`. */
  timeout?: number;
  /** Destroys the remaining connections when it aborts. */
  signal?: AbortSignal;
  /** Spread the ending of idle connections over this many ms; default `shutdownSpread`. */
  spread?: number;
}

const CLOSE_OPTION_KEYS: KnownKeys<CloseOptions> = { timeout: true, signal: true, spread: true };

type Phase = 'created' | 'serving' | 'closing' | 'stopped';

const noop = (): void => {};

/** A listener, as `EventEmitter`'s methods type it. */
type Listener = Parameters<EventEmitter['on']>[1];

/**
 * A TCP (or unix, or TLS) server that runs one handler per connection and shuts down
 * gracefully. Build it with `newServer(...)` or `createServer({...})`.
 *
 * Events: `'listening'` (addresses), `'connState'` (conn, state, prev), `'handlerError'`
 * (error, conn), `'rejected'` (socket, reason), `'refused'` (conn, reason, error), `'acceptError'`
 * (error), `'timeout'` (conn, error), `'fdExhausted'` ({ open, limit }), `'fdRecovered'`
 * ({ open, limit, durationMs }), `'ready'` (boolean), `'shutdown'` ({ timeout }), `'close'` (report). It never emits
 * `'error'`.
 */
export class Server extends EventEmitter implements ConnOwner {
  /** The `name` option, for logs. */
  readonly name: string;
  /** Resolves once the server accepts connections; rejects if it closes or fails before. */
  readonly serving: Promise<void>;
  /** Resolves with the shutdown report once the server has fully stopped. */
  readonly stopped: Promise<ShutdownReport>;
  readonly #options: ResolvedOptions;
  readonly #accept: AcceptPipeline;
  #phase: Phase = 'created';
  #listening: Promise<BoundAddress[]> | undefined;
  /** True while listeners are being bound; a shutdown cannot complete before that ends. */
  #binding = false;
  #listeners: PendingListener[] = [];
  /** An inherited descriptor to serve instead of binding `address` (an upgrade's new process). */
  #adoptFd: number | undefined;
  /** Closing removes the socket files of unix listeners ({@link kOwnsSocketFiles}). */
  #ownsSocketFiles = true;
  #bound: BoundAddress[] = [];
  #readyFlag = true;
  #reusePort: boolean;
  readonly #conns = new ConnList();
  /** `'connState'` has a listener: kept by the listener methods (see `#recount`). */
  #stateListeners = false;
  readonly #totals = {
    accepted: 0,
    rejected: 0,
    closed: 0,
    forced: 0,
    errors: 0,
    idleTimeouts: 0,
    frameTimeouts: 0,
    minDataRateTimeouts: 0,
    lingerTimeouts: 0,
    fdExhaustions: 0,
  };
  readonly #readLimits: ReadLimits;
  readonly #lingerQueue: FixedDelayQueue<Conn> | undefined;
  readonly #refused = Object.fromEntries(REFUSE_REASONS.map((reason) => [reason, 0])) as Record<
    RefuseReason,
    number
  >;
  #shutdown: Shutdown | undefined;
  /** Stops the descriptor watch (set while serving with `fdCheckInterval`). */
  #unwatchFds: (() => void) | undefined;
  /** When the descriptors ran out (`performance.now()`), while they are. */
  #fdExhaustedAt: number | undefined;
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
    this.#reusePort = options.reusePort;
    this.#readLimits = {
      idleTimeout: options.idleTimeout,
      frameTimeout: options.frameTimeout,
      ...options.minDataRate,
    };
    this.name = options.name;
    this.#lingerQueue = lingerQueue(options.lingerTimeout);
    this.#accept = new AcceptPipeline(this.#acceptHost(), options);
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
   * Marks the server ready or not ready without changing what it does: during a close delay it
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
    return { ...gauges, ...this.#totals, refused: { ...this.#refused } };
  }

  /**
   * Graceful shutdown, as docs/architecture.md ("Shutdown") walks through it: stops accepting at
   * once, aborts every `ctx.signal`, ends idle connections now (or spread over `spread` ms) and
   * active ones the moment they go idle, and resolves with a report the instant the last
   * connection is gone. At the deadline (`timeout`, default `shutdownTimeout`; or `signal`
   * aborting) the rest are destroyed and counted as forced. Idempotent: later calls share the
   * first one's result, and an earlier deadline tightens it (`close({ timeout: 0 })` forces now).
   */
  close(options: CloseOptions = {}): Promise<ShutdownReport> {
    let timeout: number;
    let spread: number;
    try {
      checkKeys(options, CLOSE_OPTION_KEYS, '', 'close: ');
      timeout =
        options.timeout === undefined
          ? this.#options.shutdownTimeout
          : duration('timeout', options.timeout, true);
      spread =
        options.spread === undefined
          ? this.#options.shutdownSpread
          : duration('spread', options.spread, false);
    } catch (error) {
      return Promise.reject(error);
    }
    let shutdown = this.#shutdown;
    if (shutdown === undefined) {
      if (this.#phase === 'stopped') return this.stopped; // listen failed
      shutdown = new Shutdown(this.#shutdownHost(), this.#options.random);
      this.#shutdown = shutdown;
      shutdown.begin(timeout, spread, this.#options.firstRequestGrace);
    } else shutdown.tighten(timeout);
    if (options.signal !== undefined) shutdown.watch(options.signal);
    return shutdown.promise;
  }

  /** Closes the server gracefully (`await using srv = ...`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close().then(noop);
  }

  /** Binds with `reusePort` from now on; throws where the option could not apply. */
  [kReusePort](): void {
    if (this.#reusePort) return;
    if (this.#phase !== 'created' || this.#listening !== undefined) {
      throw new InvalidOptionError(
        `server ${this.name} is already listening: reusePort must be set before listen()`,
      );
    }
    checkReusePort(this.#options.listen, this.#options.listener);
    this.#reusePort = true;
  }

  /** Serves the inherited descriptor `fd` instead of binding (an upgrade's new process). */
  [kAdoptFd](fd: number): void {
    if (this.#phase !== 'created' || this.#listening !== undefined) {
      throw new InvalidOptionError(`server ${this.name} is already listening: it cannot take over fd ${fd}`);
    }
    this.#adoptFd = fd;
    // The process that handed it over (or systemd) serves it too, until told otherwise.
    this.#ownsSocketFiles = false;
  }

  /** Its bound listeners: the `net.Server`s, and the descriptor each was inherited as, if known. */
  get [kListeners](): ReadonlyArray<{ server: NetServer; fd: number | undefined }> {
    return this.#listeners.map((l) => ({
      server: l.server,
      fd: l.bind !== undefined && 'fd' in l.bind ? l.bind.fd : undefined,
    }));
  }

  /**
   * Whether closing its listeners removes their socket files: only the process that serves a file
   * alone does. An upgrade passes this on with the listener: the old process gives it up once the
   * new one is ready, which takes it if the old one had it (not for a socket systemd made).
   */
  get [kOwnsSocketFiles](): boolean {
    return this.#ownsSocketFiles && this.#listeners.some((listener) => listener.socketFile !== undefined);
  }

  set [kOwnsSocketFiles](owns: boolean) {
    this.#ownsSocketFiles = owns;
  }

  // -- What connections report (module-private symbols: not part of the public API) -----------

  /**
   * Every state change of a connection. A change made from inside a listener (say `conn.end()`
   * in a `'connState'` handler) is applied after the current one has reached every listener, so
   * all of them see transitions, and counts, in order.
   */
  [kOnState](conn: Conn, state: ConnState, prev: ConnState): void {
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

  /** True when someone observes state changes: only then are transitions other than `closed` reported. */
  get [kWatching](): boolean {
    return this.#stateListeners || channels.connState.hasSubscribers;
  }

  // -- EventEmitter's listener methods, each followed by a recount of `'connState'` listeners -----
  // A connection changes state twice per request; `listenerCount()` there is a megamorphic keyed
  // load each time (docs/architecture.md, "Connection states"). Every way to add or remove a
  // listener goes through one of these (`once` and the `node:events` helpers call them too), so
  // the flag they keep is exact, also after `removeAllListeners()`.

  override addListener(event: string | symbol, listener: Listener): this {
    super.addListener(event, listener);
    return this.#recount(event);
  }

  override on(event: string | symbol, listener: Listener): this {
    super.on(event, listener);
    return this.#recount(event);
  }

  override once(event: string | symbol, listener: Listener): this {
    super.once(event, listener);
    return this.#recount(event);
  }

  override prependListener(event: string | symbol, listener: Listener): this {
    super.prependListener(event, listener);
    return this.#recount(event);
  }

  override prependOnceListener(event: string | symbol, listener: Listener): this {
    super.prependOnceListener(event, listener);
    return this.#recount(event);
  }

  override removeListener(event: string | symbol, listener: Listener): this {
    super.removeListener(event, listener);
    return this.#recount(event);
  }

  override off(event: string | symbol, listener: Listener): this {
    super.off(event, listener);
    return this.#recount(event);
  }

  override removeAllListeners(event?: string | symbol): this {
    // It removes every event's listeners only when called without an argument, not with undefined.
    if (event === undefined) super.removeAllListeners();
    else super.removeAllListeners(event);
    return this.#recount(event ?? 'connState');
  }

  #recount(event: string | symbol): this {
    if (event === 'connState') this.#stateListeners = this.listenerCount('connState') > 0;
    return this;
  }

  get [kLingerQueue](): FixedDelayQueue<Conn> | undefined {
    return this.#lingerQueue;
  }

  get [kReadLimits](): ReadLimits {
    return this.#readLimits;
  }

  get [kService](): ResolvedService | undefined {
    return this.#options.service;
  }

  /**
   * A read limit ends a connection: silent for `idleTimeout`, or a frame slower than
   * `frameTimeout` / `minDataRate` (a slow or dripping peer, which is worth a warning).
   */
  [kOnTimeout](conn: Conn, error: LimitError): void {
    const logger = this.#options.logger;
    if (error.code === 'ERR_IDLE_TIMEOUT') {
      this.#totals.idleTimeouts++;
      logger?.debug({ conn: conn.id }, 'idle timeout');
    } else {
      if (error.code === 'ERR_FRAME_TIMEOUT') this.#totals.frameTimeouts++;
      else this.#totals.minDataRateTimeouts++;
      logger?.warn({ conn: conn.id, remote: conn.remoteAddress, err: error }, 'slow frame: connection ended');
    }
    if (channels.timeout.hasSubscribers) channels.timeout.publish({ server: this, conn, error });
    if (this.listenerCount('timeout') > 0) this.emit('timeout', conn, error);
  }

  [kOnLingerTimeout](conn: Conn): void {
    this.#totals.lingerTimeouts++;
    this.#options.logger?.debug(
      { conn: conn.id, lingerTimeout: this.#options.lingerTimeout },
      'linger timeout',
    );
  }

  /** A handler threw or rejected: its connection is destroyed, the error reported. */
  [kOnHandlerError](conn: Conn, error: unknown): void {
    const logger = this.#options.logger;
    if (isClosure(conn, error)) {
      // The peer went away or the server cancelled the handler: not the handler's fault.
      logger?.debug({ conn: conn.id, err: error }, 'connection closed under the handler');
      return;
    }
    this.#totals.errors++;
    logger?.error({ conn: conn.id, err: error }, 'handler failed');
    if (channels.handlerError.hasSubscribers) channels.handlerError.publish({ server: this, conn, error });
    this.emit('handlerError', error, conn);
  }

  // -- Internals --------------------------------------------------------------------------------

  #applyState(conn: Conn, state: ConnState, prev: ConnState): void {
    if (state === 'closed') {
      this.#conns.delete(conn);
      this.#totals.closed++;
      this.#accept.connClosed(conn);
      this.#shutdown?.connClosed(conn);
    }
    try {
      this.#publishState(conn, state, prev);
    } finally {
      // A listener that throws must not leave a shutdown waiting forever.
      if (state === 'closed') this.#shutdown?.finishIfDone();
    }
  }

  #publishState(conn: Conn, state: ConnState, prev: ConnState | undefined): void {
    if (channels.connState.hasSubscribers) channels.connState.publish({ server: this, conn, state, prev });
    if (this.#stateListeners) this.emit('connState', conn, state, prev);
  }

  async #bindAll(): Promise<BoundAddress[]> {
    this.#binding = true;
    // An inherited descriptor (an upgrade, socket activation) may have connections queued, which
    // node:net accepts as soon as it listens: they wait here until every listener is bound, then
    // go through the accept pipeline (docs/architecture.md, "Binding").
    const early: Socket[] = [];
    const hold = (socket: Socket): void => {
      socket.on('error', noop);
      early.push(socket);
    };
    try {
      for (const listener of this.#pendingListeners()) {
        listener.server.on('connection', hold);
        await bindListener(listener);
        this.#listeners.push(listener);
      }
    } catch (error) {
      this.#binding = false;
      for (const listener of this.#listeners) {
        listener.server.close();
        if (this.#ownsSocketFiles) releaseSocketFile(listener);
      }
      this.#listeners = [];
      // Empty with today's listeners: of those that can fail after an earlier one listens (a
      // systemd set of descriptors), none waits on I/O first, so no connection is accepted in
      // between. Kept so that a listener that does wait can never leave a held peer hanging.
      for (const socket of early) this.#reject(socket, 'closing');
      this.#failServing(error as Error);
      if (this.#phase === 'created') this.#stop({ graceful: 0, forced: 0, durationMs: 0 });
      else this.#shutdown?.finishIfDone();
      throw error;
    }
    for (const { server, socketFile } of this.#listeners) {
      server.off('connection', hold);
      server.on('connection', this.#accept.onConnection);
      // Accept errors after binding (EMFILE is handled by libuv; others land here): report, never crash.
      server.on('error', (error) => {
        this.emit('acceptError', error);
        this.#options.logger?.warn({ err: error }, 'accept error');
      });
      // A unix socket bound under a temporary name reports that name: report the path it serves.
      this.#bound.push(toBoundAddress(this.#options.network, socketFile?.path ?? server.address()));
    }
    this.#binding = false;
    if (this.#phase === 'closing') {
      // close() was called while binding: finish it now that the listeners exist.
      this.#closeListeners();
      for (const socket of early) this.#reject(socket, 'closing');
      this.#shutdown?.finishIfDone();
      return this.addresses();
    }
    this.#phase = 'serving';
    if (this.#options.fdCheckInterval > 0)
      this.#unwatchFds = watchFds(this.#options.fdCheckInterval, (usage) => this.#onFdUsage(usage));
    const addresses = this.addresses();
    this.#options.logger?.info({ name: this.name, addresses: addresses.map(formatAddress) }, 'listening');
    if (channels.listening.hasSubscribers) channels.listening.publish({ server: this, addresses });
    this.emit('listening', addresses);
    this.#markServing();
    if (this.ready) this.emit('ready', true); // not if a 'listening' listener began a shutdown
    for (const socket of early) {
      socket.off('error', noop);
      // One its peer closed while it waited was never a connection.
      if (!socket.destroyed) this.#accept.onConnection(socket);
    }
    return addresses;
  }

  #pendingListeners(): PendingListener[] {
    const { listener, listen } = this.#options;
    if (this.#adoptFd !== undefined) {
      const adopted = listenerForFd(this.#adoptFd);
      if (listen?.network === 'unix' && !listen.abstract) adopted.unixPath = listen.path;
      return [adopted];
    }
    if (listener === undefined) return [listenerFor(listen!, this.#describeAddress(), this.#reusePort)];
    if (listener === 'systemd') return systemdListeners().map(({ fd }) => listenerForFd(fd));
    if ('fd' in listener) return [listenerForFd(listener.fd)];
    if (listener.listening)
      return [{ server: listener, bind: undefined, label: 'listener', unixPath: undefined }];
    if (listen === undefined) {
      throw new InvalidOptionError(
        'the listener given is not listening and no address was set to bind it to',
      );
    }
    const bound = listenerFor(listen, this.#describeAddress(), this.#reusePort);
    bound.server = listener;
    return [bound];
  }

  #describeAddress(): string {
    const spec = this.#options.listen!;
    if (spec.network === 'unix') return spec.abstract ? `@${spec.path.slice(1)}` : spec.path;
    return formatAddress({ network: spec.network, host: spec.host ?? '', port: spec.port });
  }

  /**
   * One sample of the process's descriptors: reports the moment they run out and the moment
   * they are back, never in between (docs/architecture.md, "Descriptor exhaustion").
   */
  #onFdUsage(usage: FdUsage): void {
    const exhausted = usage.open >= usage.limit;
    const since = this.#fdExhaustedAt;
    if (exhausted === (since !== undefined)) return;
    const { open, limit } = usage;
    const logger = this.#options.logger;
    if (exhausted) {
      this.#fdExhaustedAt = performance.now();
      this.#totals.fdExhaustions++;
      const info: FdUsage = { open, limit };
      logger?.warn(info, 'file descriptors exhausted: new connections are closed as they arrive');
      if (channels.fdExhausted.hasSubscribers) channels.fdExhausted.publish({ server: this, ...info });
      this.emit('fdExhausted', info);
    } else {
      this.#fdExhaustedAt = undefined;
      const info: FdRecoveredInfo = { open, limit, durationMs: performance.now() - since! };
      logger?.info(info, 'file descriptors available again');
      if (channels.fdRecovered.hasSubscribers) channels.fdRecovered.publish({ server: this, ...info });
      this.emit('fdRecovered', info);
    }
  }

  #closeListeners(): void {
    this.#unwatchFds?.();
    this.#unwatchFds = undefined;
    for (const listener of this.#listeners) {
      const { server } = listener;
      server.off('connection', this.#accept.onConnection);
      server.on('connection', (socket: Socket) => this.#reject(socket, 'closing'));
      server.close();
      if (this.#ownsSocketFiles) releaseSocketFile(listener);
    }
  }

  #reject(socket: Socket, reason: RejectReason): void {
    this.#totals.rejected++;
    socket.on('error', noop); // a reset from the peer must not surface as an uncaught error
    socket.destroy();
    if (channels.rejected.hasSubscribers) channels.rejected.publish({ server: this, socket, reason });
    if (this.listenerCount('rejected') > 0) this.emit('rejected', socket, reason);
  }

  #refuse(conn: Conn, reason: RefuseReason, error: Error | undefined): void {
    this.#refused[reason]++;
    this.#options.logger?.warn(
      { conn: conn.id, reason, err: error },
      'connection refused in the accept pipeline',
    );
    if (channels.refused.hasSubscribers) channels.refused.publish({ server: this, conn, reason, error });
    if (this.listenerCount('refused') > 0) this.emit('refused', conn, reason, error);
  }

  #stop(report: ShutdownReport): void {
    this.#phase = 'stopped';
    this.#options.logger?.info({ name: this.name, ...report }, 'stopped');
    if (channels.close.hasSubscribers) channels.close.publish({ server: this, report });
    this.emit('close', report);
    this.#markStopped(report);
  }

  /** The view of this server the accept pipeline works with. */
  #acceptHost(): AcceptHost {
    const server = this;
    return {
      server,
      get accepting() {
        return server.#phase === 'serving';
      },
      conns: this.#conns,
      reject: (socket, reason) => this.#reject(socket, reason),
      adopt: (conn) => {
        this.#conns.add(conn);
        this.#totals.accepted++;
        this.#publishState(conn, 'new', undefined);
      },
      refuse: (conn, reason, error) => this.#refuse(conn, reason, error),
    };
  }

  /** The view of this server its shutdown works with. */
  #shutdownHost(): ShutdownHost {
    const server = this;
    return {
      name: this.name,
      logger: this.#options.logger,
      conns: this.#conns,
      get binding() {
        return server.#binding;
      },
      announce: (timeout) => {
        const wasReady = this.ready;
        this.#phase = 'closing';
        this.#failServing(new ServerClosedError('server closed before it started serving'));
        this.#options.logger?.info({ name: this.name, open: this.#conns.size, timeout }, 'shutting down');
        if (channels.shutdown.hasSubscribers) channels.shutdown.publish({ server: this, timeout });
        this.emit('shutdown', { timeout });
        if (wasReady) this.emit('ready', false);
      },
      acceptedBy: (conn) => this.#accept.acceptedBy(conn),
      closeListeners: () => this.#closeListeners(),
      countForced: () => void this.#totals.forced++,
      stop: (report) => this.#stop(report),
    };
  }
}

/** True for errors that mean "the connection ended" or "you were cancelled", not a bug. */
function isClosure(conn: Conn, error: unknown): boolean {
  if (error instanceof ConnClosedError) return true;
  const reason = conn[kCtx][kCancelReason];
  return reason !== undefined && (error === reason || (error instanceof Error && error.cause === reason));
}
