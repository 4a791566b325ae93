/**
 * Drive a graceful shutdown from process signals, the way Kubernetes, systemd and a terminal do:
 * the first SIGTERM/SIGINT drains (optionally after a close delay during which the server keeps
 * serving but reports not-ready), a second one forces the remaining connections closed at once.
 *
 * @module
 */

import { InvalidOptionError } from './errors.js';
import type { ShutdownReport } from './server.js';
import { duration } from './timers.js';

/** What `close()` resolves with: the server's {@link ShutdownReport}. */
export type SignalShutdownReport = ShutdownReport;

/**
 * The part of a `Server` that {@link shutdownOnSignals} uses. A `tcpserver` `Server` has all of it;
 * anything else with the same shape works too.
 */
export interface SignalShutdownTarget {
  /** Marks the server not-ready (readiness probes fail) while it keeps serving. */
  setReady(ready: boolean): void;
  /** Graceful shutdown; a later call with an earlier deadline tightens the first one. */
  close(options?: { timeout?: number }): Promise<SignalShutdownReport>;
  /** Live counters; `open` is the number of connections not yet closed. */
  stats(): { open: number };
  /** Settles once the server has fully stopped, whoever stopped it. */
  readonly stopped: Promise<SignalShutdownReport>;
  /** Optional: the `'shutdown'` event tells the effective grace period when `timeout` is not given. */
  once?(event: 'shutdown', listener: (info: { timeout: number }) => void): unknown;
}

/** A pino-compatible logger: `logger.info({ ...fields }, 'message')`. */
export interface SignalLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  /** pino's; called before `process.exit` so buffered lines are not lost. */
  flush?: () => void;
}

/** Options of {@link shutdownOnSignals}. */
export interface ShutdownOnSignalsOptions {
  /** Signals that start (first) and force (second) the shutdown. Default `['SIGTERM', 'SIGINT']`. */
  signals?: NodeJS.Signals[];
  /**
   * Grace period in ms for the connections still open once the listener is closed; passed to
   * `srv.close({ timeout })`. Default: the server's own `shutdownTimeout`.
   */
  timeout?: number;
  /**
   * Ms between the first signal and closing the listener, during which the server keeps accepting
   * and serving but `srv.ready` is false, so load balancers and Kubernetes endpoints stop sending
   * new connections first. Default 0.
   */
  closeDelay?: number;
  /**
   * When true, the process exits once a signal-started shutdown is over: code 0 after a clean drain
   * (`report.forced === 0`), 1 after a forced one. Default false: it never exits by itself.
   */
  exit?: boolean;
  /** Where progress goes (pino-compatible). Without one, nothing is printed. */
  logger?: SignalLogger;
  /** Ms between progress lines (open connections, time left) during the drain. 0 disables. Default 1000. */
  progressInterval?: number;
}

/** What {@link shutdownOnSignals} returns. */
export interface SignalShutdown {
  /**
   * Resolves with the server's shutdown report once it has stopped (whether a signal or something
   * else stopped it). The signal listeners are gone by then.
   */
  readonly done: Promise<SignalShutdownReport>;
  /** Removes the signal listeners and timers now; a shutdown already started goes on. */
  dispose(): void;
}

/** Exit code used after a forced shutdown (and after a failed one). */
export const FORCED_EXIT_CODE = 1;

/**
 * Installs signal listeners that shut `srv` down gracefully.
 *
 * - First signal: `srv.setReady(false)`; after `closeDelay` ms (the server keeps serving meanwhile)
 *   `srv.close({ timeout })`. Progress (open connections, time left) is logged every
 *   `progressInterval` ms, with a hint that a second signal forces.
 * - Second signal (any of `signals`): `srv.close({ timeout: 0 })`, which destroys what is left now.
 * - Once the server has stopped: the final report is logged, the listeners are removed, and with
 *   `exit: true` the process exits (0 clean, 1 forced).
 *
 * @example
 * ```ts
 * const srv = createServer({ address: ':7000', handler, logger });
 * await srv.listen();
 * shutdownOnSignals(srv, { timeout: 25_000, closeDelay: 5_000, exit: true, logger });
 * ```
 */
export function shutdownOnSignals(
  srv: SignalShutdownTarget,
  options: ShutdownOnSignalsOptions = {},
): SignalShutdown {
  const {
    signals = ['SIGTERM', 'SIGINT'],
    timeout,
    closeDelay = 0,
    exit = false,
    logger,
    progressInterval = 1000,
  } = options;
  if (!Array.isArray(signals) || signals.length === 0) {
    throw new InvalidOptionError('signals must be a non-empty array of signal names');
  }
  if (timeout !== undefined) duration('timeout', timeout, true);
  duration('closeDelay', closeDelay, false);
  duration('progressInterval', progressInterval, false);

  let phase: 'waiting' | 'draining' | 'closing' | 'forced' = 'waiting';
  let disposed = false;
  let signalled = false;
  let drainTimer: NodeJS.Timeout | undefined;
  let progressTimer: NodeJS.Timeout | undefined;
  let drainEndsAt = 0;
  let closeDeadline: number | undefined;

  const startClose = (closeTimeout: number | undefined): void => {
    closeDeadline =
      closeTimeout === undefined || !Number.isFinite(closeTimeout) ? undefined : Date.now() + closeTimeout;
    if (closeTimeout === undefined) {
      // The server applies its own shutdownTimeout and announces it in 'shutdown' (emitted
      // synchronously inside close()), which gives the progress lines a deadline to count down to.
      srv.once?.('shutdown', (info) => {
        if (closeDeadline === undefined && Number.isFinite(info.timeout))
          closeDeadline = Date.now() + info.timeout;
      });
    }
    // A rejection here also rejects `srv.stopped`, which `done` reports; do not leave it unhandled.
    srv.close(closeTimeout === undefined ? {} : { timeout: closeTimeout }).catch(() => {});
  };

  const progress = (): void => {
    const open = srv.stats().open;
    const now = Date.now();
    if (phase === 'draining') {
      const closeInMs = Math.max(0, drainEndsAt - now);
      logger?.info(
        { open, ready: false, closeInMs },
        `draining: not ready, ${open} connection(s) open, listener closes in ${seconds(closeInMs)}`,
      );
    } else if (closeDeadline === undefined) {
      logger?.info({ open }, `shutting down: waiting for ${open} connection(s)`);
    } else {
      const remainingMs = Math.max(0, closeDeadline - now);
      logger?.info(
        { open, remainingMs },
        `shutting down: waiting for ${open} connection(s), ${seconds(remainingMs)} left before forcing`,
      );
    }
  };

  const first = (signal: NodeJS.Signals): void => {
    signalled = true;
    srv.setReady(false);
    const open = srv.stats().open;
    logger?.info(
      { signal, open, closeDelay, timeout },
      `received ${signal}, shutting down gracefully (${open} connection(s) open)`,
    );
    logger?.info({ signal }, forceHint(signal));
    if (progressInterval > 0 && logger) {
      progressTimer = setInterval(progress, progressInterval);
      // Progress alone must never keep the process alive.
      progressTimer.unref();
    }
    if (closeDelay > 0) {
      phase = 'draining';
      drainEndsAt = Date.now() + closeDelay;
      drainTimer = setTimeout(() => {
        drainTimer = undefined;
        phase = 'closing';
        logger?.info({ closeDelay, open: srv.stats().open }, 'close delay over, closing the listener');
        startClose(timeout);
      }, closeDelay);
    } else {
      phase = 'closing';
      startClose(timeout);
    }
  };

  const force = (signal: NodeJS.Signals): void => {
    phase = 'forced';
    if (drainTimer) clearTimeout(drainTimer);
    drainTimer = undefined;
    logger?.warn(
      { signal, open: srv.stats().open },
      `received ${signal} again, forcing the remaining connections closed`,
    );
    startClose(0);
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (phase === 'waiting') first(signal);
    else if (phase !== 'forced') force(signal);
  };

  for (const signal of signals) process.on(signal, onSignal);

  const dispose = (): void => {
    if (disposed) return;
    disposed = true;
    for (const signal of signals) process.removeListener(signal, onSignal);
    if (progressTimer) clearInterval(progressTimer);
    progressTimer = undefined;
  };

  const done = srv.stopped.then(
    (report) => {
      dispose();
      if (signalled) {
        logger?.info(
          { graceful: report.graceful, forced: report.forced, durationMs: report.durationMs },
          `shutdown complete: ${report.graceful} graceful, ${report.forced} forced, in ${Math.round(report.durationMs)} ms`,
        );
        if (exit) exitProcess(report.forced === 0 ? 0 : FORCED_EXIT_CODE, logger);
      }
      return report;
    },
    (err: unknown) => {
      dispose();
      if (signalled) {
        logger?.error({ err }, 'shutdown failed');
        if (exit) exitProcess(FORCED_EXIT_CODE, logger);
      }
      throw err;
    },
  );
  // `done` is informational; a caller that ignores it must not get an unhandled rejection.
  done.catch(() => {});

  return { done, dispose };
}

function forceHint(signal: NodeJS.Signals): string {
  return signal === 'SIGINT' ? 'Press Ctrl-C again to force' : `Send ${signal} again to force`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

function exitProcess(code: number, logger: SignalLogger | undefined): void {
  process.exitCode = code;
  try {
    logger?.flush?.();
  } catch {
    // A logger that cannot flush must not turn a clean exit into a crash.
  }
  process.exit(code);
}
