/**
 * Prometheus metrics for a server, over `prom-client` (an optional peer dependency: install it
 * yourself; only this entry point, `tcpserver/metrics`, loads it).
 *
 * Gauges and counters are read from `srv.stats()` when the registry is scraped, so they are exact
 * and agree with `stats()` even when `instrument()` runs after connections were accepted. The two
 * histograms are fed by the server's events: `'connState'` (a connection's life, `new` to
 * `closed`) and `'close'` (the shutdown report).
 *
 * @module
 */

import type { EventEmitter } from 'node:events';
import { Counter, Gauge, register as globalRegistry, Histogram, type Registry } from 'prom-client';
import { InvalidOptionError } from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import type { ServerStats } from './server.js';
import { describeValue } from './timers.js';

/** The counters `srv.stats()` returns that the metrics read. */
export type MetricsStats = Omit<ServerStats, 'open'>;

/** The part of a `Server` that {@link instrument} uses: its stats, readiness, and its events. */
export interface MetricsTarget extends Pick<EventEmitter, 'on' | 'off'> {
  stats(): MetricsStats;
  readonly ready: boolean;
}

/** Options of {@link instrument}. */
export interface InstrumentOptions {
  /** Registry to register the metrics in. Default: prom-client's global `register`. */
  registry?: Registry;
  /** Prefix of every metric name. Default `tcpserver_`. Use one per server on a shared registry. */
  prefix?: string;
  /** Buckets of the connection duration histogram, in seconds. */
  connectionDurationBuckets?: number[];
  /** Buckets of the shutdown duration histogram, in seconds. */
  shutdownDurationBuckets?: number[];
}

/** What {@link instrument} returns. */
export interface Instrumentation {
  /** Names of the metrics registered, prefix included. */
  readonly metricNames: readonly string[];
  /** Stops listening to the server and removes the metrics from the registry. */
  dispose(): void;
}

/** Connection states reported by the `connections` gauge (the open ones; `closed` is a counter). */
export const OPEN_STATES = ['new', 'active', 'idle', 'closing'] as const;

const DEFAULT_CONNECTION_BUCKETS = [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600];
const DEFAULT_SHUTDOWN_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

const INSTRUMENT_OPTION_KEYS: KnownKeys<InstrumentOptions> = {
  registry: true,
  prefix: true,
  connectionDurationBuckets: true,
  shutdownDurationBuckets: true,
};

/**
 * Registers metrics for `srv` (names shown with the default prefix):
 *
 * | metric | type | meaning |
 * | --- | --- | --- |
 * | `tcpserver_connections{state}` | gauge | open connections by state: new, active, idle, closing |
 * | `tcpserver_ready` | gauge | 1 while `srv.ready`, else 0 |
 * | `tcpserver_connections_accepted_total` | counter | connections accepted |
 * | `tcpserver_connections_rejected_total` | counter | connections closed at once (over `maxConnections`, or while shutting down) |
 * | `tcpserver_connections_closed_total` | counter | connections that reached `closed` |
 * | `tcpserver_connections_forced_total` | counter | connections destroyed at a shutdown deadline |
 * | `tcpserver_handler_errors_total` | counter | handlers that threw or rejected |
 * | `tcpserver_idle_timeouts_total` | counter | connections closed by `idleTimeout` |
 * | `tcpserver_frame_timeouts_total` | counter | connections cut off by `frameTimeout` |
 * | `tcpserver_min_data_rate_timeouts_total` | counter | connections cut off by `minDataRate` |
 * | `tcpserver_linger_timeouts_total` | counter | connections dropped because the peer did not answer our FIN within `lingerTimeout` |
 * | `tcpserver_fd_exhaustions_total` | counter | times the process ran out of file descriptors while serving (`'fdExhausted'`) |
 * | `tcpserver_connections_refused_total{reason}` | counter | connections closed in the accept pipeline (PROXY header, TLS handshake), by reason |
 * | `tcpserver_connection_duration_seconds` | histogram | accept to close, per connection |
 * | `tcpserver_shutdown_duration_seconds` | histogram | `close()` start to full stop |
 *
 * @example
 * ```ts
 * import { instrument } from 'tcpserver/metrics';
 * import { register } from 'prom-client';
 * instrument(srv);
 * // expose `await register.metrics()` on your metrics endpoint
 * ```
 */
export function instrument(srv: MetricsTarget, options: InstrumentOptions = {}): Instrumentation {
  checkKeys(options, INSTRUMENT_OPTION_KEYS, '', 'instrument: ');
  const {
    registry = globalRegistry,
    prefix = 'tcpserver_',
    connectionDurationBuckets = DEFAULT_CONNECTION_BUCKETS,
    shutdownDurationBuckets = DEFAULT_SHUTDOWN_BUCKETS,
  } = options;
  if (typeof prefix !== 'string' || !/^[a-zA-Z_:][a-zA-Z0-9_:]*$|^$/.test(prefix)) {
    throw new InvalidOptionError(`prefix ${describeValue(prefix)} is not a valid Prometheus name prefix`);
  }
  const registers = [registry];
  const names: string[] = [];
  const name = (n: string): string => {
    const full = prefix + n;
    if (registry.getSingleMetric(full)) {
      throw new InvalidOptionError(
        `metric ${full} is already registered: use another prefix or registry for each server`,
      );
    }
    names.push(full);
    return full;
  };

  // Names are all checked before anything is registered, so a clash leaves the registry as it was.
  const n = {
    connections: name('connections'),
    ready: name('ready'),
    accepted: name('connections_accepted_total'),
    rejected: name('connections_rejected_total'),
    closed: name('connections_closed_total'),
    forced: name('connections_forced_total'),
    errors: name('handler_errors_total'),
    idleTimeouts: name('idle_timeouts_total'),
    frameTimeouts: name('frame_timeouts_total'),
    minDataRateTimeouts: name('min_data_rate_timeouts_total'),
    lingerTimeouts: name('linger_timeouts_total'),
    fdExhaustions: name('fd_exhaustions_total'),
    refused: name('connections_refused_total'),
    connDuration: name('connection_duration_seconds'),
    shutdownDuration: name('shutdown_duration_seconds'),
  };

  const connections = new Gauge({
    name: n.connections,
    help: 'Open connections by state (new, active, idle, closing).',
    labelNames: ['state'],
    registers,
    collect() {
      const s = srv.stats();
      for (const state of OPEN_STATES) connections.set({ state }, s[state]);
    },
  });
  const ready = new Gauge({
    name: n.ready,
    help: '1 while the server is ready (serving, not draining, not marked unready), else 0.',
    registers,
    collect() {
      ready.set(srv.ready ? 1 : 0);
    },
  });

  // Counters mirror stats(): set, not incremented, at scrape time.
  type CountKey = {
    [K in keyof MetricsStats]: MetricsStats[K] extends number ? K : never;
  }[keyof MetricsStats];
  const fromStats = (metric: string, help: string, key: CountKey): Counter => {
    const counter: Counter = new Counter({
      name: metric,
      help,
      registers,
      collect() {
        counter.reset();
        counter.inc(srv.stats()[key]);
      },
    });
    return counter;
  };
  fromStats(n.accepted, 'Connections accepted.', 'accepted');
  fromStats(
    n.rejected,
    'Connections closed at once: over maxConnections, or while shutting down.',
    'rejected',
  );
  fromStats(n.closed, 'Connections that reached the closed state.', 'closed');
  fromStats(n.forced, 'Connections destroyed at a shutdown deadline.', 'forced');
  fromStats(n.errors, 'Connection handlers that threw or rejected.', 'errors');
  fromStats(n.idleTimeouts, 'Connections closed by idleTimeout.', 'idleTimeouts');
  fromStats(n.frameTimeouts, 'Connections closed: a frame took longer than frameTimeout.', 'frameTimeouts');
  fromStats(
    n.minDataRateTimeouts,
    'Connections closed: a frame arrived slower than minDataRate.',
    'minDataRateTimeouts',
  );
  fromStats(
    n.lingerTimeouts,
    'Connections dropped: no FIN from the peer within lingerTimeout of ours.',
    'lingerTimeouts',
  );
  fromStats(
    n.fdExhaustions,
    'Times the process ran out of file descriptors while serving (libuv then closes new connections unseen).',
    'fdExhaustions',
  );
  const refused: Counter = new Counter({
    name: n.refused,
    help: 'Connections closed in the accept pipeline before their handler ran, by reason.',
    labelNames: ['reason'],
    registers,
    collect() {
      refused.reset();
      for (const [reason, count] of Object.entries(srv.stats().refused)) refused.inc({ reason }, count);
    },
  });

  const connDuration = new Histogram({
    name: n.connDuration,
    help: 'Connection lifetime from accept to close, in seconds.',
    buckets: connectionDurationBuckets,
    registers,
  });
  const shutdownDuration = new Histogram({
    name: n.shutdownDuration,
    help: 'Graceful shutdown duration from close() to full stop, in seconds.',
    buckets: shutdownDurationBuckets,
    registers,
  });

  // Weak keys: a connection that never reports `closed` (it cannot, but) must not leak.
  const started = new WeakMap<object, number>();
  const onConnState = (conn: object, state: string): void => {
    if (state === 'new') started.set(conn, performance.now());
    else if (state === 'closed') {
      const t0 = started.get(conn);
      if (t0 !== undefined) {
        started.delete(conn);
        connDuration.observe((performance.now() - t0) / 1000);
      }
    }
  };
  const onClose = (report: { durationMs: number }): void => {
    shutdownDuration.observe(report.durationMs / 1000);
  };
  srv.on('connState', onConnState);
  srv.on('close', onClose);

  let disposed = false;
  return {
    metricNames: names,
    dispose() {
      if (disposed) return;
      disposed = true;
      srv.off('connState', onConnState);
      srv.off('close', onClose);
      for (const metric of names) registry.removeSingleMetric(metric);
    },
  };
}
