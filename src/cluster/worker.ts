/**
 * The worker side of `tcpserver/cluster`: serve the same servers a single process would, tell the
 * supervisor once every listener is bound, and shut down when, and only when, it says so.
 *
 * @module
 */
import { formatAddress } from '../address.js';
import { NotSupervisedError } from '../errors.js';
import { checkKeys, type KnownKeys } from '../option-keys.js';
import type { Logger } from '../options.js';
import type { Server, ShutdownReport } from '../server.js';
import { kReusePort } from '../symbols.js';
import { duration } from '../timers.js';
import {
  addStats,
  ENV_GENERATION,
  ENV_REUSE_PORT,
  ENV_SLOT,
  isProtocolMessage,
  type PrimaryMessage,
  type WorkerMessage,
  zeroStats,
} from './protocol.js';

/** Options of {@link serveWorker}. */
export interface ServeWorkerOptions {
  /** Ms between two reports of the counters to the supervisor (its `stats()`). Default 1000. */
  statsInterval?: number;
  /**
   * Exit the process once every server has stopped: 0 after a clean drain, 1 after a forced one.
   * Default `true`: a worker exists to serve.
   */
  exit?: boolean;
  /** Where the worker's own lines go (pino-compatible). */
  logger?: Logger;
}

/** Signals a terminal or a service manager sends to the whole process group; the primary answers them. */
const GROUP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** True in a worker process that `supervise()` started. */
export function isSupervisedWorker(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[ENV_SLOT] !== undefined && typeof process.send === 'function';
}

/** Which worker this is: its slot (1 to `workers`) and generation; undefined outside a supervised worker. */
export function workerInfo(): { slot: number; generation: number } | undefined {
  if (!isSupervisedWorker()) return undefined;
  return { slot: Number(process.env[ENV_SLOT]), generation: Number(process.env[ENV_GENERATION] ?? 0) };
}

const WORKER_OPTION_KEYS: KnownKeys<ServeWorkerOptions> = {
  statsInterval: true,
  exit: true,
  logger: true,
};

/**
 * Serves `servers` in a worker of `supervise()`, and resolves with their summed shutdown report
 * once they have stopped (after which, by default, the process exits).
 *
 * 1. In reusePort mode every server binds the port itself (`reusePort`); otherwise node:cluster
 *    shares the primary's listening socket.
 * 2. Once **every** server listens, the worker tells the supervisor it is ready.
 * 3. SIGINT, SIGTERM and SIGHUP are the primary's to answer: the worker ignores them (a Ctrl-C
 *    reaches the whole process group).
 * 4. The supervisor's close message runs each server's own `close({ timeout })`; the worker reports
 *    when its listeners are closed and when its last connection is gone. If the primary dies, the
 *    worker shuts down with the servers' own `shutdownTimeout`.
 *
 * Throws {@link NotSupervisedError} in a process that no supervisor started.
 */
export async function serveWorker(
  servers: Server | readonly Server[],
  options: ServeWorkerOptions = {},
): Promise<ShutdownReport> {
  checkKeys(options, WORKER_OPTION_KEYS, '', 'serveWorker: ');
  if (!isSupervisedWorker()) {
    throw new NotSupervisedError(
      `serveWorker() runs in a worker started by supervise() (${ENV_SLOT} is not set, or there is no IPC channel)`,
    );
  }
  const list: readonly Server[] = Array.isArray(servers) ? servers : [servers as Server];
  if (list.length === 0) throw new NotSupervisedError('serveWorker() needs at least one server');
  const { exit = true, logger } = options;
  const statsInterval = duration('statsInterval', options.statsInterval ?? 1000, false);
  const send = (message: WorkerMessage): Promise<void> =>
    new Promise((resolve) => {
      if (!process.connected) return resolve();
      // An error here means the primary is gone: the 'disconnect' handler deals with that.
      process.send!(message, undefined, {}, () => resolve());
    });
  const stats = () => list.reduce((sum, srv) => addStats(sum, srv.stats()), zeroStats());

  if (process.env[ENV_REUSE_PORT] === '1') for (const srv of list) srv[kReusePort]();

  const ignore = (signal: NodeJS.Signals): void =>
    logger?.debug({ signal }, `${signal} ignored in a worker: the supervisor shuts workers down`);
  for (const signal of GROUP_SIGNALS) process.on(signal, ignore);

  let closingSent = false;
  const close = (timeout: number | undefined): void => {
    for (const srv of list) srv.close(timeout === undefined ? {} : { timeout }).catch(() => {});
    if (!closingSent && list.every((srv) => !srv.isServing)) {
      closingSent = true;
      void send({ type: 'tcpserver:closing', stats: stats() });
    }
  };
  const onMessage = (message: unknown): void => {
    if (!isProtocolMessage<PrimaryMessage>(message)) return;
    if (message.type === 'tcpserver:close') close(message.timeout);
    else if (message.type === 'tcpserver:set-ready') for (const srv of list) srv.setReady(message.ready);
  };
  const onDisconnect = (): void => {
    logger?.warn({}, 'the supervisor is gone: shutting down');
    close(undefined);
  };
  process.on('message', onMessage);
  process.once('disconnect', onDisconnect);
  const timer = setInterval(
    () => void send({ type: 'tcpserver:stats', stats: stats() }),
    statsInterval || 1000,
  );
  timer.unref();

  let failed = false;
  try {
    const bound = await Promise.all(list.map((srv) => srv.listen()));
    if (list.some((srv) => !srv.isServing)) {
      // Closed while binding (the supervisor gave up on this worker): nothing to announce.
    } else {
      await send({ type: 'tcpserver:ready', addresses: bound.flat().map(formatAddress) });
      void send({ type: 'tcpserver:stats', stats: stats() });
    }
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    failed = true;
    logger?.error({ err }, 'worker cannot serve');
    await send({ type: 'tcpserver:failed', code: err.code, message: err.message });
    for (const srv of list) srv.close({ timeout: 0 }).catch(() => {});
  }

  const reports = await Promise.all(list.map((srv) => srv.stopped));
  const report: ShutdownReport = {
    graceful: reports.reduce((n, r) => n + r.graceful, 0),
    forced: reports.reduce((n, r) => n + r.forced, 0),
    durationMs: Math.max(0, ...reports.map((r) => r.durationMs)),
  };
  clearInterval(timer);
  await send({ type: 'tcpserver:stopped', report, stats: stats() });
  process.off('message', onMessage);
  process.off('disconnect', onDisconnect);
  for (const signal of GROUP_SIGNALS) process.off(signal, ignore);
  if (exit) process.exit(report.forced === 0 && !failed ? 0 : 1);
  return report;
}
