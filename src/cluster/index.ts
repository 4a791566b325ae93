/**
 * `tcpserver/cluster`: one server on every core. A supervisor in the primary keeps the workers
 * serving (crashed ones replaced with backoff, a crash loop stopped), replaces them one batch at
 * a time on a rolling restart (SIGHUP, or `restart()`), and drains them all on `close()`; each
 * worker runs the same servers a single process would, through {@link serveWorker}.
 *
 * @module
 */
export {
  CrashLoopError,
  NotSupervisedError,
  RestartFailedError,
  RestartInProgressError,
  ReusePortUnsupportedError,
} from '../errors.js';
export type {
  RestartReport,
  SuperviseOptions,
  SupervisorReport,
  WorkerInfo,
  WorkerState,
} from './supervisor.js';
export { Supervisor, supervise } from './supervisor.js';
export type { ServeWorkerOptions } from './worker.js';
export { isSupervisedWorker, serveWorker, workerInfo } from './worker.js';
