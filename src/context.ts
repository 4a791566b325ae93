/**
 * The per-connection context handed to a handler: a cancellation signal and who it belongs to.
 *
 * @module
 */
import type { Server } from './server.js';
import { kCancel, kCancelReason } from './symbols.js';

/**
 * What a handler gets besides its connection. `signal` aborts when the server starts shutting
 * down, when the connection reaches `maxConnectionAge`, when a read limit ends it (`idleTimeout`,
 * `frameTimeout`, `minDataRate`), or when it is forced closed: long handlers watch it to stop
 * cooperatively.
 */
export class Context {
  /** The server that accepted the connection. */
  readonly server: Server;
  /** The connection's id, unique within the server. */
  readonly connId: number;
  // Created on first use: most handlers never look at the signal, and churn benchmarks notice.
  #controller: AbortController | undefined;
  #reason: unknown;

  constructor(server: Server, connId: number) {
    this.server = server;
    this.connId = connId;
  }

  /** Aborts when the handler should stop (see the class); its `reason` is the error that says why. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#reason !== undefined) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Why `signal` aborted, or undefined while it has not. */
  get [kCancelReason](): unknown {
    return this.#reason;
  }

  /** Aborts `signal` once; later calls keep the first reason. */
  [kCancel](reason: unknown): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    this.#controller?.abort(reason);
  }
}
