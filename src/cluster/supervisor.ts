/**
 * The primary side of `tcpserver/cluster`: keep `workers` workers serving, replace crashed ones
 * with backoff (and give up, loudly, on a crash loop), replace all of them one batch at a time on
 * a rolling restart, and drain them all on `close()`. docs/architecture.md ("All cores, and upgrades") and
 * docs/scaling.md say when to use it and what it costs.
 *
 * A worker goes `starting` (forked) -> `ready` (every listener bound) -> `closing` (asked to
 * close; its listeners are closed once it says so) -> gone. A worker is the holder of a slot
 * (1 to `workers`) once it is ready; a rolling restart starts the slot's new worker while the old
 * one serves, and asks the old one to close only once the new one is ready.
 *
 * @module
 */
import cluster, { type Worker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import {
  CrashLoopError,
  InvalidOptionError,
  RestartFailedError,
  RestartInProgressError,
  ServerClosedError,
} from '../errors.js';
import { checkReusePort } from '../listen.js';
import { checkKeys, type KnownKeys } from '../option-keys.js';
import type { Logger } from '../options.js';
import type { ServerStats, ShutdownReport } from '../server.js';
import { describeValue, duration, flag } from '../timers.js';
import {
  addStats,
  countersOnly,
  ENV_GENERATION,
  ENV_REUSE_PORT,
  ENV_SLOT,
  isProtocolMessage,
  type PrimaryMessage,
  type WorkerMessage,
  zeroStats,
} from './protocol.js';

/** Options of {@link supervise}. */
export interface SuperviseOptions {
  /** How many workers serve. Default `os.availableParallelism()`. */
  workers?: number;
  /** Ms a new worker gets, from fork to "every listener bound", before it is killed. Default 30 000. */
  readyTimeout?: number;
  /**
   * Grace period in ms of a worker replaced by a rolling restart: its connections get this long
   * to finish before they are forced (`close({ timeout })` in the worker). Default 10 000.
   */
  drainTimeout?: number;
  /** Workers started at once, above `workers`, during a rolling restart. Default 1. */
  surge?: number;
  /**
   * Every worker binds the port itself with `SO_REUSEPORT` (Linux, Node >= 22.12) and the kernel
   * spreads connections; none passes through the primary. Default `false`: node:cluster's
   * round-robin, where the primary accepts and hands each connection to a worker.
   */
  reusePort?: boolean;
  /** First delay before a crashed worker is replaced, in ms; doubles per recent crash. Default 100. */
  restartDelay?: number;
  /** Longest delay before a crashed worker is replaced, in ms. Default 10 000. */
  maxRestartDelay?: number;
  /** This many crashes within `crashWindow` is a crash loop: the supervisor stops. Default 5. */
  maxCrashes?: number;
  /** Window of `maxCrashes`, in ms. Default 60 000. */
  crashWindow?: number;
  /**
   * After a crash loop, exit the process with code 1 once the remaining workers have drained.
   * Default `true`: a supervisor must not sit there with no workers.
   */
  exitOnCrashLoop?: boolean;
  /** The signal that starts a rolling restart, or `null` for none. Default `'SIGHUP'`. */
  restartSignal?: NodeJS.Signals | null;
  /** The workers' script, arguments and Node.js flags (`cluster.setupPrimary`). Default: this process's. */
  exec?: string;
  args?: string[];
  execArgv?: string[];
  /** Extra environment of every worker. */
  env?: NodeJS.ProcessEnv;
  /** Structured logging, pino-compatible. Nothing is printed without it. */
  logger?: Logger;
}

/** What a worker is doing, as {@link Supervisor.workers} reports it. */
export type WorkerState = 'starting' | 'ready' | 'closing';

/** One live worker. */
export interface WorkerInfo {
  /** node:cluster's worker id. */
  id: number;
  pid: number | undefined;
  /** The slot it serves, 1 to `workers`. */
  slot: number;
  /** 0 for the first workers, +1 per rolling restart. */
  generation: number;
  state: WorkerState;
  /** Its open connections, as it last reported them. */
  open: number;
}

/** What a rolling restart did. */
export interface RestartReport {
  /** The generation the workers now belong to. */
  generation: number;
  /** Workers replaced. */
  replaced: number;
  /** The old workers' connections: closed on their own, forced at `drainTimeout`. */
  graceful: number;
  forced: number;
  durationMs: number;
}

/** The final report: the workers' shutdowns summed, and the crash loop that stopped it, if one did. */
export interface SupervisorReport extends ShutdownReport {
  crashLoop?: CrashLoopError;
}

interface Tracked {
  readonly worker: Worker;
  readonly slot: number;
  readonly generation: number;
  state: WorkerState;
  stats: ServerStats | undefined;
  report: ShutdownReport | undefined;
  /** Settles on 'ready' (resolve), or on exit / failure / readyTimeout before it (reject). */
  readonly ready: Promise<void>;
  markReady: () => void;
  failReady: (error: Error) => void;
  readyTimer: NodeJS.Timeout | undefined;
  /** Resolves once its listeners are closed (or it is gone). */
  readonly closing: Promise<void>;
  markClosing: () => void;
  /** Resolves with its shutdown report once it has exited. */
  readonly exited: Promise<ShutdownReport>;
  markExited: (report: ShutdownReport) => void;
  /** Why it was killed by the supervisor, if it was. */
  killedFor: string | undefined;
  failure: string | undefined;
}

type Phase = 'starting' | 'serving' | 'closing' | 'stopped';

const noop = (): void => {};

/**
 * A supervisor of cluster workers. It has the shape `shutdownOnSignals`, `healthServer` and
 * `instrument` take (`ready`, `isStopped`, `stopped`, `stats()`, `setReady()`, `close()`), so the
 * primary uses them unchanged.
 *
 * Events: `'ready'` (boolean), `'worker'` (WorkerInfo, when a worker is ready), `'exit'` (info,
 * code, signal), `'crash'` ({ slot, code, signal, restartInMs }), `'restart'` (RestartReport),
 * `'restartFailed'` (error), `'crashLoop'` (error), `'shutdown'` ({ timeout }), `'close'` (report).
 */
export class Supervisor extends EventEmitter {
  /** Resolves once every first worker is ready; rejects if the supervisor stops before. */
  readonly serving: Promise<void>;
  /** Resolves with the summed report once every worker is gone. */
  readonly stopped: Promise<SupervisorReport>;
  readonly #o: Required<Omit<SuperviseOptions, 'exec' | 'args' | 'execArgv' | 'env' | 'logger'>> & {
    env: NodeJS.ProcessEnv;
    logger: Logger | undefined;
  };
  #phase: Phase = 'starting';
  #readyFlag = true;
  #generation = 0;
  /** The ready worker of each slot (index slot - 1). */
  readonly #holders: Array<Tracked | undefined>;
  readonly #all = new Map<number, Tracked>();
  /** Counters of workers that are gone. */
  readonly #gone = zeroStats();
  readonly #crashes: number[] = [];
  readonly #backoff = new Set<NodeJS.Timeout>();
  #restart: Promise<RestartReport> | undefined;
  #closeStarted = 0;
  #closeTimeout = 0;
  #killTimer: NodeJS.Timeout | undefined;
  #crashLoop: CrashLoopError | undefined;
  #graceful = 0;
  #forced = 0;
  #markServing!: () => void;
  #failServing!: (error: Error) => void;
  #markStopped!: (report: SupervisorReport) => void;
  readonly #onSignal = (): void => {
    this.restart().catch(noop); // restart() reports its own failures
  };

  /** @internal Use {@link supervise}. */
  constructor(options: SuperviseOptions = {}) {
    super();
    if (!cluster.isPrimary) {
      throw new InvalidOptionError('supervise() runs in the primary process (cluster.isPrimary is false)');
    }
    checkKeys(options, SUPERVISE_OPTION_KEYS, '', 'supervise: ');
    const workers = options.workers ?? availableParallelism();
    if (!Number.isSafeInteger(workers) || workers < 1) {
      throw new InvalidOptionError(
        `workers must be a positive integer, got ${describeValue(options.workers)}`,
      );
    }
    const surge = options.surge ?? 1;
    if (!Number.isSafeInteger(surge) || surge < 1) {
      throw new InvalidOptionError(
        `surge must be a positive integer (a new worker is ready before an old one stops), got ${describeValue(options.surge)}`,
      );
    }
    const maxCrashes = options.maxCrashes ?? 5;
    if (!Number.isSafeInteger(maxCrashes) || maxCrashes < 1) {
      throw new InvalidOptionError(
        `maxCrashes must be a positive integer, got ${describeValue(options.maxCrashes)}`,
      );
    }
    for (const key of ['reusePort', 'exitOnCrashLoop'] as const) flag(key, options[key], false);
    const restartSignal = options.restartSignal === undefined ? 'SIGHUP' : options.restartSignal;
    if (restartSignal !== null && (typeof restartSignal !== 'string' || !restartSignal.startsWith('SIG'))) {
      throw new InvalidOptionError(
        `restartSignal must be a signal name or null, got ${describeValue(restartSignal)}`,
      );
    }
    this.#o = {
      workers,
      surge,
      maxCrashes,
      readyTimeout: duration('readyTimeout', options.readyTimeout ?? 30_000, false),
      drainTimeout: duration('drainTimeout', options.drainTimeout ?? 10_000, true),
      restartDelay: duration('restartDelay', options.restartDelay ?? 100, false),
      maxRestartDelay: duration('maxRestartDelay', options.maxRestartDelay ?? 10_000, false),
      crashWindow: duration('crashWindow', options.crashWindow ?? 60_000, false),
      reusePort: options.reusePort ?? false,
      exitOnCrashLoop: options.exitOnCrashLoop ?? true,
      restartSignal,
      env: options.env ?? {},
      logger: options.logger,
    };
    if (this.#o.readyTimeout === 0) throw new InvalidOptionError('readyTimeout must be above 0 ms');
    const setup: Parameters<typeof cluster.setupPrimary>[0] = {};
    if (options.exec !== undefined) setup.exec = options.exec;
    if (options.args !== undefined) setup.args = options.args;
    if (options.execArgv !== undefined) setup.execArgv = options.execArgv;
    if (Object.keys(setup).length > 0) cluster.setupPrimary(setup);
    this.#holders = new Array(workers).fill(undefined);
    this.serving = new Promise<void>((resolve, reject) => {
      this.#markServing = resolve;
      this.#failServing = reject;
    });
    this.serving.catch(noop);
    this.stopped = new Promise((resolve) => {
      this.#markStopped = resolve;
    });
    if (restartSignal !== null) process.on(restartSignal, this.#onSignal);
    void this.#start();
  }

  /** True while serving (every first worker was ready), not closing, not marked unready, with a ready worker. */
  get ready(): boolean {
    return this.#phase === 'serving' && this.#readyFlag && this.#holders.some((h) => h !== undefined);
  }

  /** True from the first `close()` (or a crash loop) until every worker is gone. */
  get isClosing(): boolean {
    return this.#phase === 'closing';
  }

  /** True once every worker is gone. */
  get isStopped(): boolean {
    return this.#phase === 'stopped';
  }

  /** The generation new workers belong to: 0 at start, +1 per rolling restart. */
  get generation(): number {
    return this.#generation;
  }

  /** Marks the service (not) ready, here and in every worker's servers; what they do is unchanged. */
  setReady(ready: boolean): void {
    const before = this.ready;
    this.#readyFlag = ready;
    for (const t of this.#all.values()) this.#send(t, { type: 'tcpserver:set-ready', ready });
    if (this.ready !== before) this.emit('ready', this.ready);
  }

  /** Counters and gauges summed over the workers (as each last reported them) and the ones gone. */
  stats(): ServerStats {
    const sum = addStats(zeroStats(), this.#gone);
    for (const t of this.#all.values()) if (t.stats !== undefined) addStats(sum, t.stats);
    return sum;
  }

  /** The live workers. */
  workers(): WorkerInfo[] {
    return [...this.#all.values()].map(info);
  }

  /**
   * Rolling restart: for each batch of `surge` slots, start their new workers, wait until each is
   * ready (`readyTimeout`), then ask each old one to stop accepting and drain (`drainTimeout`).
   * The next batch starts once the old workers have closed their listeners, so the service always
   * has ready workers. A new worker that crashes or is not ready in time is killed, its old one
   * keeps serving, the restart stops there and rejects with a {@link RestartFailedError}.
   * Resolves once every replaced worker is gone. One at a time: {@link RestartInProgressError}.
   */
  restart(): Promise<RestartReport> {
    if (this.#phase !== 'serving') {
      const error = new ServerClosedError(`cannot restart: the supervisor is ${this.#phase}`);
      this.#o.logger?.warn({ err: error }, 'rolling restart refused');
      return Promise.reject(error);
    }
    if (this.#restart !== undefined) {
      const error = new RestartInProgressError('a rolling restart');
      this.#o.logger?.warn({ err: error }, 'rolling restart refused');
      return Promise.reject(error);
    }
    const run = this.#rollingRestart();
    this.#restart = run;
    const clear = (): void => {
      this.#restart = undefined;
    };
    run.then(clear, clear);
    return run;
  }

  /**
   * Drains every worker: each runs its servers' `close({ timeout })` (default `drainTimeout`) and
   * exits once its connections are gone. Resolves with the summed report once every worker has
   * exited; one that is still there a few seconds after the deadline is killed and its open
   * connections counted as forced. A later call with a shorter timeout tightens the first one.
   */
  close(options: { timeout?: number } = {}): Promise<SupervisorReport> {
    let timeout: number;
    try {
      timeout =
        options.timeout === undefined ? this.#o.drainTimeout : duration('timeout', options.timeout, true);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#phase === 'stopped') return this.stopped;
    const now = performance.now();
    if (this.#phase !== 'closing') {
      this.#beginClose(timeout);
    } else if (now + timeout < this.#closeStarted + this.#closeTimeout) {
      this.#closeTimeout = now + timeout - this.#closeStarted;
      for (const t of this.#all.values()) this.#send(t, { type: 'tcpserver:close', timeout });
      this.#armKill();
    }
    return this.stopped;
  }

  // -- Internals --------------------------------------------------------------------------------

  async #start(): Promise<void> {
    if (this.#o.reusePort) {
      try {
        await checkReusePort();
      } catch (error) {
        this.#o.logger?.error({ err: error }, 'cannot supervise in reusePort mode');
        this.#failServing(error as Error);
        this.#phase = 'closing';
        this.#finishIfDone();
        return;
      }
      const migrate = await readFile('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').catch(() => undefined);
      if (migrate?.trim() !== '1') {
        this.#o.logger?.warn(
          { tcp_migrate_req: migrate?.trim() },
          'reusePort: net.ipv4.tcp_migrate_req is not 1 (closing a listener resets the connections in its queue)',
        );
      }
    }
    if (this.#phase !== 'starting') return; // closed while checking
    // Each first worker takes its slot once ready; one that fails is replaced like any crash.
    // The supervisor serves once every slot holds a ready worker (#hold).
    for (const [i] of this.#holders.entries()) {
      const t = this.#fork(i + 1);
      t.ready.then(() => {
        if (this.#phase === 'starting') this.#hold(t);
      }, noop);
    }
  }

  #fork(slot: number): Tracked {
    const env = {
      ...this.#o.env,
      [ENV_SLOT]: String(slot),
      [ENV_GENERATION]: String(this.#generation),
      ...(this.#o.reusePort ? { [ENV_REUSE_PORT]: '1' } : {}),
    };
    const worker = cluster.fork(env);
    let markReady!: () => void;
    let failReady!: (error: Error) => void;
    let markClosing!: () => void;
    let markExited!: (report: ShutdownReport) => void;
    const t: Tracked = {
      worker,
      slot,
      generation: this.#generation,
      state: 'starting',
      stats: undefined,
      report: undefined,
      ready: new Promise((resolve, reject) => {
        markReady = resolve;
        failReady = reject;
      }),
      markReady: () => markReady(),
      failReady: (error) => failReady(error),
      readyTimer: undefined,
      closing: new Promise((resolve) => {
        markClosing = resolve;
      }),
      markClosing: () => markClosing(),
      exited: new Promise((resolve) => {
        markExited = resolve;
      }),
      markExited: (report) => markExited(report),
      killedFor: undefined,
      failure: undefined,
    };
    t.ready.catch(noop);
    this.#all.set(worker.id, t);
    t.readyTimer = setTimeout(() => {
      t.readyTimer = undefined;
      if (t.state !== 'starting') return;
      t.killedFor = `not ready within readyTimeout (${this.#o.readyTimeout} ms)`;
      t.failReady(new RestartFailedError(`worker ${describe(t)} was ${t.killedFor}: killed`));
      worker.process.kill('SIGKILL');
    }, this.#o.readyTimeout);
    worker.on('message', (message: unknown) => this.#onMessage(t, message));
    worker.on('error', (error) =>
      this.#o.logger?.warn({ err: error, worker: worker.id }, 'worker channel error'),
    );
    worker.once('exit', (code: number | null, signal: string | null) =>
      this.#onExit(t, code, signal as NodeJS.Signals | null),
    );
    return t;
  }

  #onMessage(t: Tracked, message: unknown): void {
    if (!isProtocolMessage<WorkerMessage>(message)) return;
    switch (message.type) {
      case 'tcpserver:ready':
        if (t.state !== 'starting') return;
        t.state = 'ready';
        if (t.readyTimer) clearTimeout(t.readyTimer);
        t.readyTimer = undefined;
        this.#o.logger?.info(
          { worker: t.worker.id, pid: t.worker.process.pid, slot: t.slot, addresses: message.addresses },
          `worker ${describe(t)} ready on ${message.addresses.join(', ')}`,
        );
        if (!this.#readyFlag) this.#send(t, { type: 'tcpserver:set-ready', ready: false });
        t.markReady();
        return;
      case 'tcpserver:failed':
        t.failure = `${message.code ?? 'error'}: ${message.message}`;
        return;
      case 'tcpserver:stats':
        t.stats = message.stats;
        return;
      case 'tcpserver:closing':
        t.stats = message.stats;
        t.markClosing();
        return;
      case 'tcpserver:stopped':
        t.stats = message.stats;
        t.report = message.report;
        return;
    }
  }

  /**
   * A ready worker takes its slot; the one it replaces (a rolling restart's old worker, or a
   * worker that took the slot while this one started) is asked to drain, and returned.
   */
  #hold(t: Tracked): Tracked | undefined {
    const wasReady = this.ready;
    const previous = this.#holders[t.slot - 1];
    this.#holders[t.slot - 1] = t;
    if (previous !== undefined && previous !== t) this.#retire(previous, this.#o.drainTimeout);
    this.emit('worker', info(t));
    if (this.#phase === 'starting' && this.#holders.every((h) => h !== undefined)) {
      this.#phase = 'serving';
      this.#o.logger?.info(
        { workers: this.#o.workers, reusePort: this.#o.reusePort },
        `supervising ${this.#o.workers} worker(s)`,
      );
      this.#markServing();
    }
    if (!wasReady && this.ready) this.emit('ready', true);
    return previous;
  }

  #onExit(t: Tracked, code: number | null, signal: NodeJS.Signals | null): void {
    if (t.readyTimer) clearTimeout(t.readyTimer);
    this.#all.delete(t.worker.id);
    const how = signal ? `signal ${signal}` : `code ${code}`;
    const why = t.killedFor ?? t.failure ?? how;
    const stats = t.stats ?? zeroStats();
    // What it reported last but never closed was lost with it: count it as forced.
    const report = t.report ?? { graceful: 0, forced: stats.open, durationMs: 0 };
    addStats(this.#gone, countersOnly({ ...stats, forced: stats.forced + (t.report ? 0 : stats.open) }));
    t.failReady(new RestartFailedError(`worker ${describe(t)} exited before it was ready (${why})`));
    t.markClosing();
    t.markExited(report);
    this.emit('exit', info(t), code, signal);
    const held = this.#holders[t.slot - 1] === t;
    if (held) this.#holders[t.slot - 1] = undefined;
    const expected = t.state === 'closing' || this.#phase === 'closing' || this.#phase === 'stopped';
    if (expected) {
      this.#graceful += report.graceful;
      this.#forced += report.forced;
      this.#o.logger?.info(
        { worker: t.worker.id, slot: t.slot, ...report },
        `worker ${describe(t)} stopped: ${report.graceful} graceful, ${report.forced} forced`,
      );
      if (held && this.ready === false && this.#phase === 'serving') this.emit('ready', false);
      this.#finishIfDone();
      return;
    }
    if (!held && this.#phase === 'serving' && t.state === 'starting' && this.#restart !== undefined) {
      return; // a new worker of a rolling restart: the restart reports it and rolls back
    }
    if (this.#phase === 'serving' && !this.ready) this.emit('ready', false);
    this.#crashed(t, why, code, signal);
  }

  /** An unexpected exit: replace the worker after a backoff, or stop on a crash loop. */
  #crashed(t: Tracked, why: string, code: number | null, signal: NodeJS.Signals | null): void {
    const now = performance.now();
    this.#crashes.push(now);
    while (this.#crashes.length > 0 && this.#crashes[0]! < now - this.#o.crashWindow) this.#crashes.shift();
    const recent = this.#crashes.length;
    if (recent >= this.#o.maxCrashes) {
      const error = new CrashLoopError(
        `${recent} worker crashes within ${this.#o.crashWindow} ms (maxCrashes ${this.#o.maxCrashes}); ` +
          `the last: worker ${describe(t)} ${t.state === 'starting' ? 'before it was ready' : 'while serving'} (${why})`,
      );
      this.#crashLoop = error;
      this.#o.logger?.error({ err: error }, `crash loop, stopping: ${error.message}`);
      this.#failServing(error);
      this.emit('crashLoop', error);
      this.#beginClose(this.#o.drainTimeout);
      return;
    }
    const restartInMs = Math.min(this.#o.maxRestartDelay, this.#o.restartDelay * 2 ** (recent - 1));
    this.#o.logger?.error(
      { worker: t.worker.id, slot: t.slot, code, signal, restartInMs },
      `worker ${describe(t)} crashed (${why}); replacing it in ${restartInMs} ms`,
    );
    this.emit('crash', { slot: t.slot, code, signal, reason: why, restartInMs });
    const timer = setTimeout(() => {
      this.#backoff.delete(timer);
      if (this.#phase !== 'serving' && this.#phase !== 'starting') return;
      if (this.#holders[t.slot - 1] !== undefined) return; // a rolling restart filled it meanwhile
      const next = this.#fork(t.slot);
      // Its failure is a crash of its own, handled on its exit.
      next.ready.then(() => {
        if (this.#phase === 'serving' || this.#phase === 'starting') this.#hold(next);
      }, noop);
    }, restartInMs);
    this.#backoff.add(timer);
  }

  async #rollingRestart(): Promise<RestartReport> {
    const began = performance.now();
    this.#generation++;
    const generation = this.#generation;
    const { surge } = this.#o;
    this.#o.logger?.info({ generation, surge }, `rolling restart to generation ${generation}`);
    const retired: Tracked[] = [];
    const slots = this.#holders.map((_, i) => i + 1);
    for (let i = 0; i < slots.length; i += surge) {
      const batch = slots
        .slice(i, i + surge)
        .filter((slot) => (this.#holders[slot - 1]?.generation ?? -1) < generation);
      const started = batch.map((slot) => this.#fork(slot));
      const results = await Promise.allSettled(started.map((t) => t.ready));
      if (this.#phase !== 'serving') {
        for (const t of started) this.#send(t, { type: 'tcpserver:close', timeout: this.#remaining() });
        throw new ServerClosedError('the supervisor began shutting down during the rolling restart');
      }
      const closings: Promise<void>[] = [];
      let failure: Error | undefined;
      for (const [j, t] of started.entries()) {
        const result = results[j]!;
        if (result.status === 'rejected') {
          failure ??= result.reason as Error;
          continue;
        }
        const old = this.#hold(t);
        if (old !== undefined) {
          retired.push(old);
          closings.push(old.closing);
        }
      }
      await Promise.all(closings);
      if (failure !== undefined) {
        const replaced = retired.length;
        const error = new RestartFailedError(
          `rolling restart to generation ${generation} rolled back after ${replaced} of ${slots.length} ` +
            `worker(s): ${failure.message}; the other workers keep serving`,
          { cause: failure },
        );
        this.#o.logger?.error({ err: error, replaced }, 'rolling restart failed');
        this.emit('restartFailed', error);
        throw error;
      }
    }
    const reports = await Promise.all(retired.map((t) => t.exited));
    const report: RestartReport = {
      generation,
      replaced: retired.length,
      graceful: reports.reduce((n, r) => n + r.graceful, 0),
      forced: reports.reduce((n, r) => n + r.forced, 0),
      durationMs: performance.now() - began,
    };
    this.#o.logger?.info(
      { ...report },
      `rolling restart done: ${report.replaced} worker(s) replaced, ${report.graceful} graceful, ${report.forced} forced`,
    );
    this.emit('restart', report);
    return report;
  }

  /** Asks a worker to stop accepting and drain within `timeout`. */
  #retire(t: Tracked, timeout: number): void {
    if (t.state === 'closing') return;
    t.state = 'closing';
    this.#send(t, { type: 'tcpserver:close', timeout });
    // A worker that never answers (stuck) is killed a while after its deadline.
    const kill = setTimeout(() => {
      if (!t.worker.isDead()) t.worker.process.kill('SIGKILL');
    }, killAfter(timeout));
    kill.unref();
    void t.exited.then(() => clearTimeout(kill));
  }

  #beginClose(timeout: number): void {
    const wasReady = this.ready;
    this.#phase = 'closing';
    this.#closeStarted = performance.now();
    this.#closeTimeout = timeout;
    this.#failServing(new ServerClosedError('supervisor closed before every worker was ready'));
    for (const timer of this.#backoff) clearTimeout(timer);
    this.#backoff.clear();
    if (this.#o.restartSignal !== null) process.off(this.#o.restartSignal, this.#onSignal);
    this.#o.logger?.info(
      { workers: this.#all.size, open: this.stats().open, timeout },
      `shutting down ${this.#all.size} worker(s)`,
    );
    this.emit('shutdown', { timeout });
    if (wasReady) this.emit('ready', false);
    for (const t of this.#all.values()) {
      t.state = 'closing';
      this.#send(t, { type: 'tcpserver:close', timeout });
    }
    this.#armKill();
    this.#finishIfDone();
  }

  /** Ms left before the shutdown deadline. */
  #remaining(): number {
    if (this.#phase !== 'closing') return this.#o.drainTimeout;
    const left = this.#closeStarted + this.#closeTimeout - performance.now();
    return Number.isFinite(left) ? Math.max(0, Math.round(left)) : Number.POSITIVE_INFINITY;
  }

  /** Workers still there well after the deadline are killed (their open connections count as forced). */
  #armKill(): void {
    if (this.#killTimer) clearTimeout(this.#killTimer);
    this.#killTimer = undefined;
    const left = this.#remaining();
    if (!Number.isFinite(left)) return;
    this.#killTimer = setTimeout(() => {
      for (const t of this.#all.values()) {
        t.killedFor = 'still running after the shutdown deadline';
        t.worker.process.kill('SIGKILL');
      }
    }, killAfter(left));
  }

  #finishIfDone(): void {
    if (this.#phase !== 'closing' || this.#all.size > 0) return;
    if (this.#killTimer) clearTimeout(this.#killTimer);
    this.#phase = 'stopped';
    const report: SupervisorReport = {
      graceful: this.#graceful,
      forced: this.#forced,
      durationMs: performance.now() - this.#closeStarted,
    };
    if (this.#crashLoop) report.crashLoop = this.#crashLoop;
    this.#o.logger?.info({ ...report, crashLoop: undefined }, 'supervisor stopped');
    this.emit('close', report);
    this.#markStopped(report);
    if (this.#crashLoop && this.#o.exitOnCrashLoop) {
      process.exitCode = 1;
      // After the handlers of `stopped` and `serving` have run (and logged), not before.
      setImmediate(() => process.exit(1));
    }
  }

  #send(t: Tracked, message: PrimaryMessage): void {
    if (!t.worker.isConnected()) return;
    try {
      t.worker.send(message, undefined, noop);
    } catch {
      // The channel closed between the check and the send: its exit is handled on 'exit'.
    }
  }
}

const SUPERVISE_OPTION_KEYS: KnownKeys<SuperviseOptions> = {
  workers: true,
  readyTimeout: true,
  drainTimeout: true,
  surge: true,
  reusePort: true,
  restartDelay: true,
  maxRestartDelay: true,
  maxCrashes: true,
  crashWindow: true,
  exitOnCrashLoop: true,
  restartSignal: true,
  exec: true,
  args: true,
  execArgv: true,
  env: true,
  logger: true,
};

/**
 * Starts `workers` cluster workers of this script (or `exec`) and supervises them. Call it in the
 * primary; in the workers, the same program calls {@link serveWorker} with its servers.
 *
 * @example
 * ```ts
 * import cluster from 'node:cluster';
 * import { supervise, serveWorker } from 'tcpserver/cluster';
 * if (cluster.isPrimary) {
 *   const sup = supervise({ workers: 4, drainTimeout: 10_000, logger });
 *   shutdownOnSignals(sup, { exit: true, logger }); // SIGHUP rolls the workers
 * } else {
 *   await serveWorker(createServer({ address: ':7000', handler }));
 * }
 * ```
 */
export function supervise(options: SuperviseOptions = {}): Supervisor {
  return new Supervisor(options);
}

function info(t: Tracked): WorkerInfo {
  return {
    id: t.worker.id,
    pid: t.worker.process.pid,
    slot: t.slot,
    generation: t.generation,
    state: t.state,
    open: t.stats?.open ?? 0,
  };
}

function describe(t: Tracked): string {
  return `${t.slot} (pid ${t.worker.process.pid}, generation ${t.generation})`;
}

/** A worker gets its deadline, then 5 s to report and exit, before SIGKILL. */
function killAfter(timeout: number): number {
  return Math.min(timeout + 5_000, 2 ** 31 - 1);
}
