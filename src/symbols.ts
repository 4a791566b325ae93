/**
 * Module-private symbols: how the server, its shutdown and its accept pipeline reach into a
 * `Conn` or a `Context` without those internals becoming public API (as undici does). None of
 * these is exported from the package; what is public is exactly what is documented.
 *
 * @module
 */

/** `Conn`: runs the handler once every accept stage is done. */
export const kRun = Symbol('tcpserver.run');
/** `Conn`: attaches the connection to its final stream (a `TLSSocket` after the handshake). */
export const kServe = Symbol('tcpserver.serve');
/** `Conn`: asks the connection to end at its next idle moment (shutdown, idle timeout, age). */
export const kEndWhenIdle = Symbol('tcpserver.endWhenIdle');
/** `Conn`: ends an idle connection now, or at its next idle moment (spread closing's moment). */
export const kEndNowIfIdle = Symbol('tcpserver.endNowIfIdle');
/** `Conn`: destroys the connection because a shutdown deadline passed. */
export const kForce = Symbol('tcpserver.force');
/** `Conn`: true once a shutdown deadline destroyed it. */
export const kForced = Symbol('tcpserver.forced');
/** `Conn`: its `Context`. */
export const kCtx = Symbol('tcpserver.ctx');
/** `Context`: aborts `signal` once. */
export const kCancel = Symbol('tcpserver.cancel');
/** `Context`: why `signal` aborted, or undefined. */
export const kCancelReason = Symbol('tcpserver.cancelReason');
/** Owner (server) hooks a `Conn` reports to. */
export const kOnState = Symbol('tcpserver.onState');
export const kWatching = Symbol('tcpserver.watching');
/** Owner: the connection was ended by `idleTimeout`, `frameTimeout` or `minDataRate`. */
export const kOnTimeout = Symbol('tcpserver.onTimeout');
/** Owner: `idleTimeout`, `frameTimeout` and `minDataRate`, as a `Conn` applies them. */
export const kReadLimits = Symbol('tcpserver.readLimits');
export const kOnLingerTimeout = Symbol('tcpserver.onLingerTimeout');
export const kOnHandlerError = Symbol('tcpserver.onHandlerError');
/** Owner: the queue of connections waiting for the peer's FIN (`lingerTimeout`). */
export const kLingerQueue = Symbol('tcpserver.lingerQueue');
/** Owner: the resolved `service` option, when connections are served in service mode. */
export const kService = Symbol('tcpserver.service');
/** `Server`: bind with `reusePort` (a supervisor in reusePort mode asks it of its workers' servers). */
export const kReusePort = Symbol('tcpserver.reusePort');
/** `Server`: serve an inherited descriptor instead of binding (an upgrade's new process). */
export const kAdoptFd = Symbol('tcpserver.adoptFd');
/** `Server`: its bound listeners and their descriptors, for an upgrade to hand over. */
export const kListeners = Symbol('tcpserver.listeners');
/**
 * `Server`: whether closing its listeners removes their unix socket files (true for a file it
 * bound; an upgrade passes it on with the listener, see docs/architecture.md, "Unix socket files").
 */
export const kOwnsSocketFiles = Symbol('tcpserver.ownsSocketFiles');
/** `Conn`: true while the peer has sent nothing yet. */
export const kFresh = Symbol('tcpserver.fresh');
/** `Conn`: shutdown of a connection that has sent nothing yet: serve its first request, then end. */
export const kEndAfterFirstRequest = Symbol('tcpserver.endAfterFirstRequest');
/** `Conn`: its neighbours in its server's `ConnList` (see conn-list.ts). */
export const kPrev = Symbol('tcpserver.prev');
export const kNext = Symbol('tcpserver.next');
