/**
 * The graceful shutdown of one server: `close()`, as docs/architecture.md ("Shutdown") states
 * it. One `Shutdown` is made by the first `close()`; every later call shares it.
 *
 * The algorithm, and the order of the code below:
 *
 * 1. **Stop accepting** at once: every listener closes (a unix socket file is removed); late
 *    arrivals are rejected, never served.
 * 2. **Cancel**: every handler's `ctx.signal` aborts.
 * 3. **End idle connections** now, or with `spread` at a random moment of the window each, so
 *    thousands of clients do not reconnect elsewhere in the same millisecond. A connection still
 *    in the accept pipeline has no request yet: it is closed at once, and not counted as forced.
 *    One accepted less than `firstRequestGrace` ago and silent so far keeps the rest of that grace
 *    for its first request, which may have raced the listener's close: answered, then ended like
 *    the others. One silent for longer raced nothing: it is idle (Go's net/http does the same).
 * 4. **Active connections** finish their work; the moment one would go idle (after its moment,
 *    with `spread`) it ends the same way: its pending read returns `null`, the handler returns,
 *    FIN after the writes flush. `Conn` does this step (see `kEndWhenIdle`).
 * 5. **Finish** the instant the last connection is gone (event-driven: each connection's `closed`
 *    transition reaches `connClosed`), with the report `{ graceful, forced, durationMs }`.
 * 6. **Deadline**: at `timeout`, or when a `signal` aborts, what is left is destroyed and
 *    counted as forced; the report still comes.
 * 7. **Idempotent**: later `close()` calls share this one; an earlier deadline tightens it
 *    (`close({ timeout: 0 })` forces now). A deadline never moves later.
 *
 * @module
 */
import { performance } from 'node:perf_hooks';
import { type Conn, spreadSlot } from './conn.js';
import type { ConnList } from './conn-list.js';
import { ServerClosedError } from './errors.js';
import type { Logger } from './options.js';
import { kEndAfterFirstRequest, kEndNowIfIdle, kEndWhenIdle, kForce, kForced, kFresh } from './symbols.js';
import { DeadlineQueue, MAX_DELAY_MS, type Random } from './timers.js';

/** What `close()` and `serve()` resolve with. */
export interface ShutdownReport {
  /** Connections that ended on their own during the shutdown. */
  graceful: number;
  /** Connections destroyed at the deadline. */
  forced: number;
  /** From the first `close()` to the last connection gone, in ms. */
  durationMs: number;
}

/** What the shutdown needs from its server. */
export interface ShutdownHost {
  readonly name: string;
  readonly logger: Logger | undefined;
  /** The open connections (every state but `closed`). */
  readonly conns: ConnList;
  /** True while listeners are being bound: the shutdown cannot finish before they exist. */
  readonly binding: boolean;
  /**
   * The latest moment `conn` can have been accepted (its age is at least the time since): see
   * `AcceptClock`. Asked only for connections that have sent nothing yet.
   */
  acceptedBy(conn: Conn): number;
  /** Step 1: closes every listener; connections arriving later are rejected. */
  closeListeners(): void;
  /** Tells the world the shutdown began (events, channel, logger, readiness). */
  announce(timeout: number): void;
  /** A connection was forced: counted in the server's totals too. */
  countForced(): void;
  /** Step 5: the server has stopped, with this report. */
  stop(report: ShutdownReport): void;
}

/** The share of the deadline a spread window may use: the last connections need time to finish. */
const SPREAD_SHARE = 0.9;

export class Shutdown {
  /** Resolves with the report once the server has stopped. */
  readonly promise: Promise<ShutdownReport>;
  /** `ctx.signal`'s reason for every connection. */
  readonly reason = new ServerClosedError('server is shutting down');
  readonly #host: ShutdownHost;
  readonly #random: Random;
  readonly #startedAt = performance.now();
  #resolve!: (report: ShutdownReport) => void;
  #graceful = 0;
  #forced = 0;
  #done = false;
  #deadlineAt = Infinity;
  #deadline: NodeJS.Timeout | undefined;
  /** Spread closing: each idle connection's moment to end. */
  #moments: DeadlineQueue<Conn> | undefined;
  /** Undo `signal` listeners once the shutdown is over. */
  readonly #cleanups: Array<() => void> = [];

  constructor(host: ShutdownHost, random: Random) {
    this.#host = host;
    this.#random = random;
    this.promise = new Promise<ShutdownReport>((resolve) => {
      this.#resolve = resolve;
    });
  }

  /**
   * Steps 1 to 3, then step 5 if nothing was open. `timeout` sets the deadline (step 6); `spread`
   * is the window of step 3; `grace` is how long after its accept a connection that has sent
   * nothing yet may still send its first request (both capped at 90% of the deadline).
   */
  begin(timeout: number, spread: number, grace: number): void {
    const host = this.#host;
    host.announce(timeout);
    host.closeListeners(); // 1
    this.tighten(timeout);
    const cap = Math.min(timeout * SPREAD_SHARE, MAX_DELAY_MS);
    const window = Math.min(spread, cap);
    const start = performance.now();
    const moment = (conn: Conn, after: number): void => {
      this.#moments ??= new DeadlineQueue<Conn>((c) => c[kEndNowIfIdle](), spreadSlot);
      if (conn.state !== 'closed') this.#moments.add(conn, start + after);
    };
    for (const conn of host.conns) {
      const at = window > 0 ? this.#random() * window : 0;
      // For a connection silent so far: its grace less the least age it can have (AcceptClock).
      const left =
        grace > 0 && cap > 0 && conn[kFresh] ? grace - (start - Math.min(host.acceptedBy(conn), start)) : 0;
      if (left > 0) {
        // 3, for a connection whose first request may be on its way: served, then ended.
        conn[kEndAfterFirstRequest](this.reason);
        moment(conn, Math.max(at, Math.min(left, cap)));
      } else if (window > 0) {
        conn[kEndWhenIdle](this.reason, true); // 2, and 4
        moment(conn, at); // 3
      } else conn[kEndWhenIdle](this.reason); // 2, 3 and 4
    }
    queueMicrotask(() => this.finishIfDone()); // 5, when nothing was open
  }

  /**
   * Step 6 and 7: moves the deadline to `timeout` ms from now if that is earlier (never later);
   * `0` destroys what is left now. A tightened deadline also ends the spread window: idle
   * connections still waiting for their moment end now.
   */
  tighten(timeout: number): void {
    if (this.#done) return;
    const at = performance.now() + timeout;
    if (at >= this.#deadlineAt) return;
    this.#deadlineAt = at;
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#deadline = undefined;
    this.#endSpreadNow();
    if (timeout === 0) this.#forceAll();
    else if (timeout !== Infinity) this.#deadline = setTimeout(() => this.#forceAll(), timeout);
  }

  /** Step 6 by signal: the remaining connections are destroyed when `signal` aborts. */
  watch(signal: AbortSignal): void {
    const force = (): void => this.tighten(0);
    if (signal.aborted) {
      force();
      return;
    }
    signal.addEventListener('abort', force, { once: true });
    this.#cleanups.push(() => signal.removeEventListener('abort', force));
  }

  /** A connection closed during the shutdown: counted, and step 5 if it was the last one. */
  connClosed(conn: Conn): void {
    this.#moments?.delete(conn);
    if (conn[kForced]) {
      this.#forced++;
      this.#host.countForced();
    } else this.#graceful++;
  }

  /** Step 5: once no connection is left (and no bind is in progress), stop and report. */
  finishIfDone(): void {
    const host = this.#host;
    if (this.#done || host.conns.size > 0 || host.binding) return;
    this.#done = true;
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#moments?.clear();
    for (const cleanup of this.#cleanups) cleanup();
    const report: ShutdownReport = {
      graceful: this.#graceful,
      forced: this.#forced,
      durationMs: performance.now() - this.#startedAt,
    };
    host.stop(report);
    this.#resolve(report);
  }

  #endSpreadNow(): void {
    const moments = this.#moments;
    if (moments === undefined || moments.size === 0) return;
    moments.clear();
    for (const conn of this.#host.conns) conn[kEndNowIfIdle]();
  }

  #forceAll(): void {
    const host = this.#host;
    if (host.conns.size > 0)
      host.logger?.warn({ name: host.name, open: host.conns.size }, 'shutdown deadline: forcing');
    for (const conn of host.conns) conn[kForce](this.reason);
  }
}
