/**
 * How the examples run: as one process, on every core (`WORKERS=<n>`: a `tcpserver/cluster`
 * supervisor, SIGHUP rolls the workers), or as one process that replaces itself on SIGHUP
 * (`UPGRADE=1`: `tcpserver/upgrade`). In each way the first SIGTERM/SIGINT reports not-ready for
 * `closeDelay` ms, then drains; a second one forces. `PID_FILE=<path>` keeps the serving process's
 * pid there.
 *
 * @module
 */
import cluster from 'node:cluster';
import { isSupervisedWorker, serveWorker, supervise } from '../src/cluster/index.js';
import * as tcpserver from '../src/index.js';
import { upgrader } from '../src/upgrade.js';
import { consoleLogger } from './console-logger.js';

/** What an example runs, and how. */
export interface ServiceSpec {
  /** The example's name: every line it prints starts with it. */
  name: string;
  /** Builds the servers (once per process: the single one, each worker, each upgraded copy). */
  servers: () => tcpserver.Server[];
  /** Where the health endpoint answers (in the primary with `WORKERS`), if anywhere. */
  healthAddress?: string | undefined;
  /** Ms not ready but still serving after the first signal. */
  closeDelay: number;
  /** The drain's deadline; default: the servers' own `shutdownTimeout`. */
  shutdownTimeout?: number | undefined;
  /** Printed once the servers of this process have stopped. */
  summary?: (servers: tcpserver.Server[]) => string;
}

/** The service settings read from the environment: `WORKERS`, `UPGRADE`, `PID_FILE`. */
export interface ServiceMode {
  workers: number | undefined;
  upgrade: boolean;
  pidFile: string | undefined;
}

/** A bad `WORKERS`, `UPGRADE` or `PID_FILE`: the example prints the message and exits 2. */
export class ModeError extends Error {}

/** Reads `WORKERS`, `UPGRADE` and `PID_FILE`; throws a {@link ModeError} naming the first bad one. */
export function readMode(env: NodeJS.ProcessEnv): ServiceMode {
  const text = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  };
  const workersText = text('WORKERS');
  let workers: number | undefined;
  if (workersText !== undefined) {
    workers = /^\d{1,4}$/.test(workersText) ? Number(workersText) : 0;
    if (workers < 1)
      throw new ModeError(`WORKERS=${JSON.stringify(env.WORKERS)}: expected a number of workers (1 to 9999)`);
  }
  const upgradeText = text('UPGRADE');
  if (upgradeText !== undefined && upgradeText !== '0' && upgradeText !== '1') {
    throw new ModeError(`UPGRADE=${JSON.stringify(env.UPGRADE)}: expected 0 or 1`);
  }
  const upgrade = upgradeText === '1';
  if (upgrade && workers !== undefined)
    throw new ModeError('WORKERS and UPGRADE=1 are two ways to restart: pick one');
  return { workers, upgrade, pidFile: text('PID_FILE') };
}

/**
 * Runs `spec` the way `mode` says, and resolves the exit code once it has stopped: 0 after a clean
 * drain, 1 after a forced one or when it cannot listen. (A supervised worker exits by itself.)
 */
export async function runService(spec: ServiceSpec, mode: ServiceMode): Promise<number> {
  const log = consoleLogger(spec.name);
  if (isSupervisedWorker()) {
    await serveWorker(spec.servers());
    return 0; // not reached: the worker exits once its servers have stopped
  }
  if (mode.workers !== undefined && cluster.isPrimary) return runSupervisor(spec, mode, mode.workers, log);
  if (mode.upgrade) return runUpgradable(spec, mode, log);
  return runSingle(spec, mode, log);
}

async function runSingle(spec: ServiceSpec, mode: ServiceMode, log: tcpserver.Logger): Promise<number> {
  const servers = spec.servers();
  const health =
    spec.healthAddress === undefined
      ? undefined
      : tcpserver.healthServer(servers, { address: spec.healthAddress });
  // Signal handlers before anything is announced: a signal right after the first line drains.
  const stopped = Promise.all(servers.map((srv) => drainOnSignals(spec, srv, log)));
  try {
    await listenAll(spec, servers, log);
    if (health !== undefined) await listenHealth(spec, health);
    if (mode.pidFile !== undefined) await tcpserver.writePidFile(mode.pidFile);
  } catch (err) {
    return failed(spec, err, servers, health);
  }
  const reports = await stopped;
  await health?.close();
  if (spec.summary) console.log(`${spec.name}: ${spec.summary(servers)}`);
  return reports.every((r) => r.forced === 0) ? 0 : 1;
}

async function runSupervisor(
  spec: ServiceSpec,
  mode: ServiceMode,
  workers: number,
  log: tcpserver.Logger,
): Promise<number> {
  const sup = supervise({
    workers,
    ...(spec.shutdownTimeout === undefined ? {} : { drainTimeout: spec.shutdownTimeout }),
    logger: log,
  });
  const health =
    spec.healthAddress === undefined
      ? undefined
      : tcpserver.healthServer(sup, { address: spec.healthAddress });
  const shutdown = tcpserver.shutdownOnSignals(sup, { closeDelay: spec.closeDelay, logger: log });
  try {
    await sup.serving;
    console.log(`${spec.name}: serving with ${workers} worker(s) (SIGHUP rolls them)`);
    if (health !== undefined) await listenHealth(spec, health);
    if (mode.pidFile !== undefined) await tcpserver.writePidFile(mode.pidFile);
  } catch (err) {
    console.error(`${spec.name}: ${(err as Error).message}`);
    await sup.close({ timeout: 0 });
    await health?.close();
    return 1;
  }
  const report = await shutdown.done;
  await health?.close();
  return report.forced === 0 ? 0 : 1;
}

async function runUpgradable(spec: ServiceSpec, mode: ServiceMode, log: tcpserver.Logger): Promise<number> {
  const upg = upgrader({ ...(mode.pidFile === undefined ? {} : { pidFile: mode.pidFile }), logger: log });
  const servers = spec.servers();
  const stopped = Promise.all(servers.map((srv) => drainOnSignals(spec, srv, log)));
  try {
    await upg.listen(servers);
    for (const srv of servers) {
      console.log(`${spec.name}: listening on ${srv.addresses().map(tcpserver.formatAddress).join(', ')}`);
    }
    await upg.ready();
  } catch (err) {
    return failed(spec, err, servers, undefined);
  }
  const reports = await stopped;
  if (spec.summary) console.log(`${spec.name}: ${spec.summary(servers)}`);
  return reports.every((r) => r.forced === 0) ? 0 : 1;
}

async function listenAll(
  spec: ServiceSpec,
  servers: tcpserver.Server[],
  _log: tcpserver.Logger,
): Promise<void> {
  for (const srv of servers) {
    const bound = await srv.listen();
    console.log(`${spec.name}: listening on ${bound.map(tcpserver.formatAddress).join(', ')}`);
  }
}

async function listenHealth(spec: ServiceSpec, health: tcpserver.HealthServer): Promise<void> {
  const at = await health.listen();
  console.log(`${spec.name}: health on ${tcpserver.formatAddress({ network: 'tcp', ...at })}`);
}

/** First SIGINT/SIGTERM: not ready for closeDelay ms, then drain (with progress lines); a second forces. */
function drainOnSignals(
  spec: ServiceSpec,
  srv: tcpserver.Server,
  log: tcpserver.Logger,
): Promise<tcpserver.ShutdownReport> {
  return tcpserver.shutdownOnSignals(srv, {
    closeDelay: spec.closeDelay,
    ...(spec.shutdownTimeout === undefined ? {} : { timeout: spec.shutdownTimeout }),
    logger: log,
  }).done;
}

async function failed(
  spec: ServiceSpec,
  err: unknown,
  servers: tcpserver.Server[],
  health: tcpserver.HealthServer | undefined,
): Promise<number> {
  if (!(err instanceof tcpserver.TcpServerError)) throw err;
  console.error(`${spec.name}: ${err.message}`);
  await Promise.all(servers.map((srv) => srv.close({ timeout: 0 })));
  await health?.close();
  return 1;
}
