/**
 * Drive a graceful shutdown from process signals, the way Kubernetes, systemd, pm2 and a terminal
 * do: the first SIGTERM/SIGINT drains (optionally after a close delay during which the server keeps
 * serving but reports not-ready), a second one forces the remaining connections closed at once.
 * Under pm2 it also speaks pm2's side of the IPC channel: `'ready'` once serving, `'shutdown'` as a
 * signal (docs/pm2.md).
 *
 * @module
 */

import { InvalidOptionError } from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import type { ShutdownReport } from './server.js';
import { duration, flag } from './timers.js';

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
  /**
   * Optional: resolves once the target accepts connections on every listener, rejects if it closes
   * first (a `Server`'s `serving`). The `'ready'` message waits for it, and so does the `'shutdown'`
   * message listener; without it, both happen at once.
   */
  readonly serving?: Promise<unknown>;
}

/** A pino-compatible logger: `logger.info({ ...fields }, 'message')`. */
export interface SignalLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  /**
   * pino's. Before `process.exit` it is called with a callback and the exit waits for it (at most
   * 1 s), so that lines still being written asynchronously are neither lost nor
   * overtaken by the lines pino's exit hook writes synchronously. A `flush()` that takes no callback is
   * called and the exit follows at once.
   */
  flush?: (cb?: (err?: Error | null) => void) => void;
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
  /**
   * Send `'ready'` to the parent process (`process.send('ready')`) once `srv.serving` has resolved,
   * that is once every listener is bound, unless a shutdown has begun by then. pm2's `wait_ready`
   * (`--wait-ready`) waits for it: on `pm2 start` before it reports the app online, on `pm2 reload`
   * before it stops the old process. Default: true when the process runs under pm2 (pm2 sets `pm_id`
   * in the environment and opens an IPC channel), false otherwise. `true` without an IPC channel
   * throws `ERR_INVALID_OPTION`.
   */
  readyMessage?: boolean;
  /**
   * Treat a `'shutdown'` message from the parent process like the first signal (a second message,
   * or a signal, forces). pm2 sends it instead of SIGINT on `pm2 stop`, `restart` and `delete` when
   * the app has `shutdown_with_message` (the way to stop an app where signals do not exist, as on
   * Windows). The listener is added once `srv.serving` has resolved and removed when the target
   * stops or on `dispose()`, so it never keeps alive a process that would otherwise exit. Default:
   * true under pm2, false otherwise. `true` without an IPC channel throws `ERR_INVALID_OPTION`.
   */
  shutdownMessage?: boolean;
  /**
   * Once a shutdown that a signal or a `'shutdown'` message started is over (and `exit` is false),
   * unref the IPC channel (`process.channel.unref()`): pm2's own `'message'` listener, and
   * node:cluster's in a cluster worker, would keep the process alive until pm2's SIGKILL at
   * `kill_timeout`. Unref'd, the process exits as soon as its own work is done, with its own exit
   * code, and can still send messages until then. Default: true under pm2, false otherwise. `true`
   * without an IPC channel throws `ERR_INVALID_OPTION`.
   */
  unrefChannel?: boolean;
}

const SIGNAL_OPTION_KEYS: KnownKeys<ShutdownOnSignalsOptions> = {
  signals: true,
  timeout: true,
  closeDelay: true,
  exit: true,
  logger: true,
  progressInterval: true,
  readyMessage: true,
  shutdownMessage: true,
  unrefChannel: true,
};

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

/** The longest `exit: true` waits for the logger's `flush(cb)` before `process.exit`, in ms. */
const FLUSH_TIMEOUT = 1000;

/**
 * Installs signal listeners that shut `srv` down gracefully.
 *
 * - First signal: `srv.setReady(false)`; after `closeDelay` ms (the server keeps serving meanwhile)
 *   `srv.close({ timeout })`. Progress (open connections, time left) is logged every
 *   `progressInterval` ms, with a hint that a second signal forces.
 * - Second signal (any of `signals`): `srv.close({ timeout: 0 })`, which destroys what is left now.
 * - Once the server has stopped: the final report is logged, the listeners are removed, and with
 *   `exit: true` the process exits (0 clean, 1 forced).
 * - Under pm2 (or when asked, see {@link ShutdownOnSignalsOptions}): `'ready'` to the parent once
 *   the server serves, its `'shutdown'` message as a signal, and the IPC channel unref'd once a
 *   shutdown it started is over, so that the process exits by itself.
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
  checkKeys(options, SIGNAL_OPTION_KEYS, '', 'shutdownOnSignals: ');
  if (!Array.isArray(signals) || signals.length === 0) {
    throw new InvalidOptionError('signals must be a non-empty array of signal names');
  }
  if (timeout !== undefined) duration('timeout', timeout, true);
  duration('closeDelay', closeDelay, false);
  duration('progressInterval', progressInterval, false);
  const ipc = typeof process.send === 'function';
  // pm2 puts its own fields, pm_id among them, in every app's environment.
  const pm2 = ipc && process.env.pm_id !== undefined;
  const readyMessage = ipcOption('readyMessage', options.readyMessage, ipc, pm2);
  const shutdownMessage = ipcOption('shutdownMessage', options.shutdownMessage, ipc, pm2);
  const unrefChannel = ipcOption('unrefChannel', options.unrefChannel, ipc, pm2);

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

  const first = (cause: Trigger): void => {
    signalled = true;
    srv.setReady(false);
    const open = srv.stats().open;
    logger?.info(
      { ...cause.fields, open, closeDelay, timeout },
      `received ${cause.name}, shutting down gracefully (${open} connection(s) open)`,
    );
    logger?.info(cause.fields, cause.hint);
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

  const force = (cause: Trigger): void => {
    phase = 'forced';
    if (drainTimer) clearTimeout(drainTimer);
    drainTimer = undefined;
    logger?.warn(
      { ...cause.fields, open: srv.stats().open },
      `received ${cause.name} again, forcing the remaining connections closed`,
    );
    startClose(0);
  };

  const trigger = (cause: Trigger): void => {
    if (phase === 'waiting') first(cause);
    else if (phase !== 'forced') force(cause);
  };
  const onSignal = (signal: NodeJS.Signals): void => trigger(signalTrigger(signal));
  const onMessage = (message: unknown): void => {
    if (message === 'shutdown') trigger(SHUTDOWN_MESSAGE);
  };

  for (const signal of signals) process.on(signal, onSignal);
  if (readyMessage || shutdownMessage) {
    // Not before the target serves: a 'message' listener keeps the IPC channel, and so the process,
    // alive, and a 'ready' before every listener is bound would let pm2 stop the old process early.
    (srv.serving ?? Promise.resolve()).then(
      () => {
        if (disposed) return;
        if (shutdownMessage) process.on('message', onMessage);
        if (readyMessage && phase === 'waiting') sendReady(logger);
      },
      () => {}, // it closed before serving: nothing to announce, nothing left to stop
    );
  }

  const dispose = (): void => {
    if (disposed) return;
    disposed = true;
    for (const signal of signals) process.removeListener(signal, onSignal);
    process.removeListener('message', onMessage);
    if (progressTimer) clearInterval(progressTimer);
    progressTimer = undefined;
  };
  // pm2's own 'message' listener (and node:cluster's, in a cluster worker) would hold the process
  // until pm2's SIGKILL: let it exit once its own work is done, with its own exit code.
  const releaseChannel = (): void => {
    if (unrefChannel) process.channel?.unref();
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
        else releaseChannel();
      }
      return report;
    },
    (err: unknown) => {
      dispose();
      if (signalled) {
        logger?.error({ err }, 'shutdown failed');
        if (exit) exitProcess(FORCED_EXIT_CODE, logger);
        else releaseChannel();
      }
      throw err;
    },
  );
  // `done` is informational; a caller that ignores it must not get an unhandled rejection.
  done.catch(() => {});

  return { done, dispose };
}

/** What started (or forces) a shutdown: its name in log lines, its log fields, and how to force. */
interface Trigger {
  name: string;
  fields: object;
  hint: string;
}

function signalTrigger(signal: NodeJS.Signals): Trigger {
  const hint = signal === 'SIGINT' ? 'Press Ctrl-C again to force' : `Send ${signal} again to force`;
  return { name: signal, fields: { signal }, hint };
}

// `ipcMessage`, not `message`: some loggers take a `message` field as the log line's text.
const SHUTDOWN_MESSAGE: Trigger = {
  name: "the 'shutdown' message",
  fields: { ipcMessage: 'shutdown' },
  hint: "Send 'shutdown' again to force",
};

/** An IPC option: its default under pm2 (`auto`); `true` needs the channel it works over. */
function ipcOption(name: string, value: boolean | undefined, ipc: boolean, auto: boolean): boolean {
  if (value === undefined) return auto;
  if (flag(name, value, auto) && !ipc) {
    throw new InvalidOptionError(
      `${name}: true needs an IPC channel to the parent process (process.send), and this process has none`,
    );
  }
  return value;
}

function sendReady(logger: SignalLogger | undefined): void {
  // A parent already gone: without a callback, process.send would emit 'error' on process, which
  // nobody handles. (pm2 wraps process.send to drop messages once disconnected.)
  if (!process.connected) return;
  process.send?.('ready', undefined, {}, (err) => {
    if (err) logger?.warn({ err }, "could not send 'ready' to the parent process");
  });
  logger?.info({}, "serving: sent 'ready' to the parent process");
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

function exitProcess(code: number, logger: SignalLogger | undefined): void {
  process.exitCode = code;
  let exited = false;
  const exit = (): void => {
    if (exited) return;
    exited = true;
    process.exit(code);
  };
  const flush = logger?.flush;
  if (!flush) {
    exit();
    return;
  }
  // A logger that cannot flush, or never calls back, must not turn a clean exit into a crash or a hang.
  setTimeout(exit, FLUSH_TIMEOUT);
  try {
    if (flush.length === 0) {
      flush.call(logger);
      exit();
    } else {
      flush.call(logger, exit);
    }
  } catch {
    exit();
  }
}
