/**
 * Error classes with stable `code`s, in the style of Node.js and undici: match on `err.code`,
 * never on the message.
 *
 * @module
 */

/** Base class of every error this library raises. */
export class TcpServerError extends Error {
  /** Stable machine-readable code, `ERR_...`. */
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An option passed to `newServer` / `createServer` is missing or malformed. Nothing was bound. */
export class InvalidOptionError extends TcpServerError {
  constructor(message: string) {
    super('ERR_INVALID_OPTION', message);
  }
}

/** A network name or an address could not be parsed. Nothing was bound. */
export class InvalidAddressError extends TcpServerError {
  constructor(message: string) {
    super('ERR_INVALID_ADDRESS', message);
  }
}

/**
 * Binding a listener failed. `code` keeps the OS code (`EADDRINUSE`, `EACCES`, ...) so callers
 * match on it exactly as they would on Node's own error; `cause` is that error.
 */
export class ListenError extends TcpServerError {
  /** What could not be bound, as written: `127.0.0.1:8080`, a unix path, `fd 3`. */
  readonly address: string;
  readonly errno: number | undefined;
  readonly syscall: string | undefined;

  constructor(address: string, cause: NodeJS.ErrnoException) {
    super(cause.code ?? 'ERR_LISTEN', `cannot listen on ${address}: ${cause.message}`, { cause });
    this.address = address;
    this.errno = cause.errno;
    this.syscall = cause.syscall;
  }
}

/** The server was closed, or is closing, and cannot do what was asked. */
export class ServerClosedError extends TcpServerError {
  constructor(message = 'server is closed') {
    super('ERR_SERVER_CLOSED', message);
  }
}

/** An I/O call on a connection that is closed, or was closed by the peer, while it waited. */
export class ConnClosedError extends TcpServerError {
  constructor(message = 'connection is closed', options?: ErrorOptions) {
    super('ERR_CONN_CLOSED', message, options);
  }
}

/** `conn.read({ timeout })` elapsed before data arrived. The connection stays usable. */
export class ReadTimeoutError extends TcpServerError {
  constructor(timeout: number) {
    super('ERR_READ_TIMEOUT', `read timed out after ${timeout} ms`);
  }
}

/** `conn.write(data, { timeout })` elapsed before the data was accepted by the socket. */
export class WriteTimeoutError extends TcpServerError {
  constructor(timeout: number) {
    super('ERR_WRITE_TIMEOUT', `write timed out after ${timeout} ms`);
  }
}

/**
 * A connection was ended for `idleTimeout`: `ctx.signal`'s reason, and what its pending read (and
 * any later I/O) rejects with when it was ended holding half a frame or unread input.
 */
export class IdleTimeoutError extends TcpServerError {
  constructor(timeout: number) {
    super('ERR_IDLE_TIMEOUT', `no bytes either way for ${timeout} ms`);
  }
}

/**
 * A frame took longer than `frameTimeout` to arrive once its first byte had: the connection is
 * ended, and its pending `readFrame` (and any later I/O) rejects with this.
 */
export class FrameTimeoutError extends TcpServerError {
  constructor(timeout: number, buffered: number) {
    super(
      'ERR_FRAME_TIMEOUT',
      `frame not complete ${timeout} ms after its first byte (${buffered} bytes received)`,
    );
  }
}

/**
 * A long frame arrived slower than `minDataRate.bytesPerSecond` once past its grace period: the
 * connection is ended, and its pending `readFrame` (and any later I/O) rejects with this.
 */
export class MinDataRateError extends TcpServerError {
  constructor(bytesPerSecond: number, received: number, elapsed: number) {
    super(
      'ERR_MIN_DATA_RATE',
      `frame arriving at ${Math.round((received * 1000) / elapsed)} bytes/s (${received} bytes in ${Math.round(elapsed)} ms), under the minimum of ${bytesPerSecond} bytes/s`,
    );
  }
}

/** `ctx.signal`'s reason when a connection is ended for `maxConnectionAge`. */
export class ConnectionAgeError extends TcpServerError {
  constructor(age: number) {
    super('ERR_CONNECTION_AGE', `connection reached its maximum age of ${age} ms`);
  }
}

/** A per-call `{ signal }` aborted a read or a write. `cause` holds the signal's reason. */
export class AbortedError extends TcpServerError {
  constructor(reason: unknown) {
    super('ERR_ABORTED', 'operation was aborted', { cause: reason });
  }
}

/** Only one `read()` may be pending on a connection at a time, as with Go's `net.Conn`. */
export class ConcurrentReadError extends TcpServerError {
  constructor(message = 'another read is already pending on this connection') {
    super('ERR_CONCURRENT_READ', message);
  }
}

/** A frame's length exceeds the decoder's `maxLength`. The connection cannot be resynchronized. */
export class FrameTooLargeError extends TcpServerError {
  /** The limit that was exceeded, in bytes. */
  readonly maxLength: number;

  constructor(maxLength: number, length?: number) {
    super(
      'ERR_FRAME_TOO_LARGE',
      length === undefined
        ? `frame exceeds the maximum length of ${maxLength} bytes`
        : `frame of ${length} bytes exceeds the maximum length of ${maxLength} bytes`,
    );
    this.maxLength = maxLength;
  }
}

/** Bytes that do not form a valid frame for the codec: received from the peer, or about to be sent. */
export class InvalidFrameError extends TcpServerError {
  constructor(message: string) {
    super('ERR_INVALID_FRAME', message);
  }
}

/** The stream ended in the middle of a frame. */
export class IncompleteFrameError extends TcpServerError {
  /** Bytes of the unfinished frame that were received. */
  readonly buffered: number;

  constructor(buffered: number) {
    super('ERR_INCOMPLETE_FRAME', `stream ended inside a frame (${buffered} bytes buffered)`);
    this.buffered = buffered;
  }
}

/**
 * A PROXY protocol header (HAProxy's `proxy-protocol.txt`, v1 or v2) that is malformed, of a
 * version not accepted, or missing. The message names what is wrong; the connection is closed.
 */
export class ProxyProtocolError extends TcpServerError {
  constructor(message: string) {
    super('ERR_PROXY_PROTOCOL', message);
  }
}

/**
 * `reusePort` was asked for where the kernel or Node.js does not provide it: Node.js before 22.12
 * ignores the option silently, and only some systems (Linux, FreeBSD) share a port between
 * sockets. Found by a trial bind of two sockets on one port; the message says what failed.
 */
export class ReusePortUnsupportedError extends TcpServerError {
  constructor(message: string) {
    super('ERR_REUSEPORT_UNSUPPORTED', message);
  }
}

/** A rolling restart or an upgrade was asked for while one is already running. */
export class RestartInProgressError extends TcpServerError {
  constructor(what: string) {
    super('ERR_RESTART_IN_PROGRESS', `${what} is already in progress: wait for it to finish`);
  }
}

/**
 * A rolling restart or an upgrade was abandoned: a new process crashed, or was not ready in time.
 * The processes that served before keep serving; the message says which one failed and why.
 */
export class RestartFailedError extends TcpServerError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_RESTART_FAILED', message, options);
  }
}

/**
 * Workers crashed too often in too short a window: the supervisor stops rather than restart them
 * forever. The message gives the count, the window and how the last one ended.
 */
export class CrashLoopError extends TcpServerError {
  constructor(message: string) {
    super('ERR_CRASH_LOOP', message);
  }
}

/** A worker-side call of `tcpserver/cluster` ran in a process that no supervisor started. */
export class NotSupervisedError extends TcpServerError {
  constructor(message: string) {
    super('ERR_NOT_SUPERVISED', message);
  }
}
