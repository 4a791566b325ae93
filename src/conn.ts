/**
 * Conn: one accepted connection, its state machine, and pull-style I/O with real backpressure.
 *
 * Invariants (checked by the tests):
 * - At most one `read()` is pending, and while one is, nothing is queued (`#queue` is empty).
 * - The state is `idle` exactly when a read is pending and nothing else holds the connection
 *   busy: no received bytes queued or held in a decoder, no write waiting for `drain`, no
 *   `hold()`. Every event that can change one of those re-evaluates the state.
 * - `closed` is entered once, from the socket's `'close'` event, and is final.
 *
 * @module
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Decoder } from './codec/decoder.js';
import { Context } from './context.js';
import {
  AbortedError,
  ConcurrentReadError,
  ConnClosedError,
  FrameTimeoutError,
  IdleTimeoutError,
  InvalidOptionError,
  MinDataRateError,
  ReadTimeoutError,
  WriteTimeoutError,
} from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import type { Handler } from './options.js';
import type { ProxyHeader } from './proxy-protocol.js';
import type { Server } from './server.js';
import type { Reply, ResolvedService, ServiceOutput } from './service.js';
import {
  kCancel,
  kCtx,
  kEndAfterFirstRequest,
  kEndNowIfIdle,
  kEndWhenIdle,
  kForce,
  kForced,
  kFresh,
  kLingerQueue,
  kNext,
  kOnHandlerError,
  kOnLingerTimeout,
  kOnState,
  kOnTimeout,
  kPrev,
  kReadLimits,
  kRun,
  kServe,
  kService,
  kWatching,
} from './symbols.js';
import { DeadlineQueue, type DeadlineSlot, describeValue, FixedDelayQueue, isTimeout } from './timers.js';

/**
 * A connection's place in its life (docs/architecture.md, "Connection states"):
 * `new` → `active` ⇄ `idle` → `closing` → `closed`.
 */
export type ConnState = 'new' | 'active' | 'idle' | 'closing' | 'closed';

/** Per-call deadline and cancellation for `read`, `readFrame` and `write`. */
export interface IoOptions {
  /** Reject with `ERR_READ_TIMEOUT` / `ERR_WRITE_TIMEOUT` after this many ms of waiting. */
  timeout?: number;
  /** Reject with `ERR_ABORTED` when this signal aborts. */
  signal?: AbortSignal;
}

/** The read limits a connection enforces (docs/architecture.md, "Slow and silent peers"); 0 is off. */
export interface ReadLimits {
  /** ms without a byte either way. */
  readonly idleTimeout: number;
  /** ms from a frame's first byte to its last. */
  readonly frameTimeout: number;
  /** Bytes per second a frame must average once it has taken `grace` ms. */
  readonly bytesPerSecond: number;
  readonly grace: number;
}

/** Why a read limit ended a connection. */
export type LimitError = IdleTimeoutError | FrameTimeoutError | MinDataRateError;

/** What a connection reports to the server that owns it (module-private symbols, not public API). */
export interface ConnOwner {
  /** Whether transitions other than `closed` need reporting (someone listens). */
  readonly [kWatching]: boolean;
  /** Where connections wait for the peer to answer our FIN (`lingerQueue(lingerTimeout)`). */
  readonly [kLingerQueue]: FixedDelayQueue<Conn> | undefined;
  readonly [kReadLimits]: ReadLimits;
  /** The `service` option, when connections are served in service mode. */
  readonly [kService]: ResolvedService | undefined;
  [kOnState](conn: Conn, state: ConnState, prev: ConnState): void;
  /** A read limit is ending the connection (reported once per connection). */
  [kOnTimeout](conn: Conn, error: LimitError): void;
  /** The peer did not close its side within `lingerTimeout` after our FIN; it is being dropped. */
  [kOnLingerTimeout](conn: Conn): void;
  /** The handler threw or rejected (the connection is already being destroyed). */
  [kOnHandlerError](conn: Conn, error: unknown): void;
}

/** Received bytes queued beyond this pause the socket until the handler reads (read backpressure). */
const QUEUE_LIMIT = 64 * 1024;
const noop = (): void => {};
const noopValue = (_value: unknown): void => {};
const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });
const RESOLVED: Promise<void> = Promise.resolve();

type ReadResult = Buffer | null | IteratorResult<Buffer, undefined>;

/**
 * `new Promise(capture)` hands over the resolving functions without allocating an executor
 * closure per call; they are picked up from `captured` right after the constructor returns (the
 * fields of a constant, not module `let`s: see `batch` and docs/architecture.md, "Service mode").
 */
const captured = {
  resolve: noopValue as (value: unknown) => void,
  reject: noopValue as (error: Error) => void,
};
function capture(resolve: (value: never) => void, reject: (error: Error) => void): void {
  captured.resolve = resolve as (value: unknown) => void;
  captured.reject = reject;
}

const badTimeout = (timeout: unknown): InvalidOptionError =>
  new InvalidOptionError(
    `timeout must be a number of ms from 0 to 2147483647, or Infinity, got ${describeValue(timeout)}`,
  );

/**
 * A rejected write the handler may never await (see `Conn.needsDrain`): marked handled so the
 * peer going away never becomes an unhandled rejection; an awaited one still rejects, and the
 * next read or write reports the closed connection.
 */
function handledRejection(error: Error): Promise<never> {
  const rejected = Promise.reject(error);
  rejected.catch(noop);
  return rejected;
}

const IO_OPTION_KEYS: KnownKeys<IoOptions> = { timeout: true, signal: true };

/** Why `opts` is malformed: an unknown key, or a bad timeout. */
function badOptions(opts: IoOptions): Error | undefined {
  try {
    checkKeys(opts, IO_OPTION_KEYS, '', 'conn: ');
  } catch (error) {
    return error as Error;
  }
  if (opts.timeout !== undefined && !isTimeout(opts.timeout)) return badTimeout(opts.timeout);
  return undefined;
}

/** Why a read must fail before it starts: malformed options, or a signal already aborted. */
function refuseOptions(opts: IoOptions): Error | undefined {
  const bad = badOptions(opts);
  if (bad !== undefined) return bad;
  if (opts.signal?.aborted) return new AbortedError(opts.signal.reason);
  return undefined;
}

/** Clears a settled call's deadline and cancellation. */
function disarm(deadline: Deadline | undefined): void {
  if (deadline === undefined) return;
  clearTimeout(deadline.timer);
  deadline.signal?.removeEventListener('abort', deadline.onAbort!);
}

/**
 * Shared placeholders: most connections never queue input or wait for `drain`, so their
 * arrays are created on first use (the hot path of 10,000 idle connections notices).
 */
const NO_CHUNKS = Object.freeze([]) as unknown as Buffer[];
const NO_WAITERS = Object.freeze([]) as unknown as Waiter[];

let expireLinger: (conn: Conn) => void;
let isLingering: (conn: Conn) => boolean;

/**
 * A server's connections whose FIN is flushed, waiting for the peer's until `lingerTimeout` (as
 * nginx's `lingering_timeout`): one FIFO per server, since every deadline in it is the same
 * delay after its start (a timer per closing connection shows in churn benchmarks, and a heap
 * in a mass close). `undefined` for `Infinity`: the peer gets as long as it takes.
 */
export function lingerQueue(timeout: number): FixedDelayQueue<Conn> | undefined {
  if (timeout === Infinity) return undefined;
  return new FixedDelayQueue<Conn>(
    timeout,
    (conn) => expireLinger(conn),
    (conn) => isLingering(conn),
  );
}

/**
 * Where a connection keeps its place in its server's `maxConnectionAge` queue (accept.ts) and in
 * a shutdown's spread queue (shutdown.ts): cold fields, so a connection without either carries
 * nothing for them (docs/architecture.md, "Timers").
 */
export let ageSlot: DeadlineSlot<Conn>;
export let spreadSlot: DeadlineSlot<Conn>;
/**
 * Connections waiting on half a frame while `frameTimeout` or `minDataRate` applies (the frame's
 * first byte came at the cold field `frameStart`). The deadline is the next moment a limit could
 * be crossed.
 */
let slowFrames: DeadlineQueue<Conn>;

/** Where a socket keeps its Conn, so one set of listener functions serves every connection. */
const kConn = Symbol('tcpserver.conn');
type ConnSocket = Socket & { [kConn]: Conn };

/**
 * Drops a socket's link to its connection once no listener needs it. A closed socket can outlive
 * its close until the next full collection (Node 24 keeps it that long), and the young
 * generation's collector then copies and promotes everything it still points at: without this,
 * each closed connection with its context, decoder and replies (docs/architecture.md,
 * "Connection list").
 */
function unlinkSocket(socket: Socket): void {
  (socket as Partial<ConnSocket>)[kConn] = undefined;
}

/** The deadline and cancellation of one waiting call, made only for calls given `IoOptions`. */
interface Deadline {
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** A write waiting for `drain`. (The one pending read lives in the Conn's own fields.) */
interface Waiter {
  resolve(value: unknown): void;
  reject(error: Error): void;
  deadline: Deadline | undefined;
}

/**
 * A connection's fields that most connections never set, in one object made on first use: an
 * idle connection that closes cleanly carries one unset field instead of five (32 bytes less).
 */
interface ColdFields {
  /** Why I/O can no longer succeed, once known; built lazily for a clean close (see `#failure`). */
  closeError: Error | undefined;
  /** `end()`'s promise and its resolve: only for a caller of `end()`. */
  finished: Promise<void> | undefined;
  resolveFinished: ((value: unknown) => void) | undefined;
  /** The peer's address, kept once asked for. */
  remote: { address: string | undefined; port: number | undefined } | undefined;
  /** The PROXY protocol header the connection arrived with. */
  proxy: ProxyHeader | undefined;
  /** Places in deadline queues (see `DeadlineSlot`): `maxConnectionAge`, spread closing, a slow frame. */
  ageSlot: number;
  spreadSlot: number;
  frameSlot: number;
  /** When the frame that `frameTimeout` / `minDataRate` time began (while `FRAME_TIMED`). */
  frameStart: number;
}

/*
 * A connection's booleans, as bits of one number: ten fields would add 72 bytes to every idle
 * connection (a V8 field is 8 bytes).
 */
/** Reading is paused (read backpressure). */
const PAUSED = 1 << 0;
/** The peer sent FIN. */
const EOF = 1 << 1;
/** Shutdown or idle timeout asked this connection to end: a read that would go idle returns null. */
const ENDING = 1 << 2;
/** An end-of-input check is scheduled (see `#endWhenQuiet`). */
const END_CHECK = 1 << 3;
/**
 * Input may be on its way up from the kernel: the connection was just asked to end, or its
 * socket was resumed after read backpressure. An idle end then waits for one poll phase.
 */
const IN_FLIGHT = 1 << 4;
/** The socket emitted `'close'`. */
const CLOSED = 1 << 5;
/** The `'drain'` listener is on the socket. */
const DRAIN_HOOKED = 1 << 6;
/** The handler returned or threw. */
const HANDLER_DONE = 1 << 7;
/** A shutdown deadline destroyed the connection. */
const FORCED = 1 << 8;
/** Our FIN is out, or leaving with nothing queued ahead of it, and we wait for the peer's (see `startLinger`). */
const LINGERING = 1 << 9;
/** The pending read resolves `{ value, done }` (async iterator) instead of a chunk. */
const READ_ITER = 1 << 10;
/** The pending read is a `readFrame`: chunks go through `#decoder`, it resolves whole frames. */
const READ_FRAME = 1 << 11;
/** Spread closing: this idle connection's moment to end has come (see `kEndNowIfIdle`). */
const END_NOW = 1 << 12;
/** The peer has sent at least one byte (after any PROXY header and TLS handshake). */
const RECEIVED = 1 << 13;
/** Shutdown: no byte came yet; the first one makes this connection end at its next idle moment. */
const AWAIT_FIRST = 1 << 14;
/** A read limit ended it whatever it held: input is discarded, the linger starts once our FIN is out. */
const CUT_OFF = 1 << 15;
/** A read limit has been reported for this connection (each connection is counted once). */
const TIMED_OUT = 1 << 16;
/** A frame in progress is timed (`slowFrames` holds this connection; `frameStart` says since when). */
const FRAME_TIMED = 1 << 17;
/** Service mode: `end()` was called; later frames are not read, the connection ends after the last reply. */
const SVC_END = 1 << 18;
/** Service mode: the decoder's `end()` was called at end of stream. */
const DECODER_ENDED = 1 << 19;
/** Service mode: a decode pass is running (idleness is judged when it is over). */
const SVC_PASS = 1 << 20;
/**
 * Served in service mode (the `service` option). Its decoder is made on its first byte, and `#svc`
 * then or at `end()`: an idle connection that never spoke holds neither.
 */
const SERVICE = 1 << 21;
/** The `'finish'` listener is on the socket (see `#hookFinish`). */
const FINISH_HOOKED = 1 << 22;

/** What `#serviceFrames` stopped at: the batch reached the socket's high-water mark. */
const PASS_FULL = 1;
/** ... the decoder needs more bytes, */
const PASS_WAITS = 2;
/** ... and holds part of a frame (its clock runs). */
const PASS_PARTIAL = 4;

/** A connection's service-mode state (see `#serviceDecode`), made for service-mode connections only. */
interface ServiceRun {
  readonly spec: ResolvedService;
  /** Replies not yet written, in request order, from the first still pending (`NO_SLOTS`: none). */
  order: Slot[];
  /** Async replies pending. */
  inFlight: number;
  /** `conn.end(data)`'s data, written after the last reply. */
  endData: string | Uint8Array | undefined;
}

/** One reply in `order`: settled ones wait behind the first pending one. */
interface Slot {
  reply: Reply;
  done: boolean;
}

const NO_SLOTS = Object.freeze([]) as unknown as Slot[];

/** `call` failed and the connection with it (see `#serviceError`). */
const FAILED = Symbol('failed');

/**
 * The replies of the decode pass running now, written together at its end. Passes never nest
 * (one runs inside a socket event or a reply's settlement), so one batch serves every connection.
 * Its state is the fields of one constant object, not module `let`s: V8 reads a module `let`
 * through a hole check (its temporal dead zone) and with no known type at every use, and a
 * constant's fields as plain typed loads (see docs/architecture.md, "Service mode").
 */
const batch = {
  /** The replies; never shrunk (setting an array's length is a runtime call), only cleared. */
  entries: [] as Array<string | Uint8Array | undefined>,
  /** Entries in use. */
  count: 0,
  /** Bytes of the replies, entries and run together. */
  bytes: 0,
  /**
   * The batch's last entry while it is a run of adjacent views of one buffer (replies a shared
   * writer bump-allocated one after the other): kept as its first view and its length, made into
   * one view when the run ends, so a pipelined batch goes out as one buffer without a view per
   * merge. A run of one view (a pass that took the output once) goes out as that view: no
   * offset or length of it is read, since a typed array's accessors are not free on the hot path.
   */
  runFirst: undefined as Uint8Array | undefined,
  /** Bytes in the run, once it holds more than its first view (`runMerged`). */
  runBytes: 0,
  runMerged: false,
};

/**
 * Adds one reply to the batch; `bytes` is its length when the caller knows it (the output's,
 * which counts toward the batch's size only: a merge reads the views' own lengths).
 */
function batchAdd(reply: string | Uint8Array, bytes?: number): void {
  if (typeof reply === 'string') {
    batch.bytes += reply.length;
    endRun();
    batch.entries[batch.count++] = reply;
    return;
  }
  const first = batch.runFirst;
  if (first !== undefined) {
    const length = reply.byteLength;
    batch.bytes += length;
    const run = batch.runMerged ? batch.runBytes : first.byteLength;
    // The offset first: it rules out most non-adjacent views without reading the buffers.
    if (reply.byteOffset === first.byteOffset + run && reply.buffer === first.buffer) {
      batch.runBytes = run + length;
      batch.runMerged = true;
      return;
    }
    endRun();
  } else batch.bytes += bytes ?? reply.byteLength;
  batch.runFirst = reply;
}

/** Ends the run of adjacent views: its one view (`undefined` if there is no run). */
function takeRun(): Uint8Array | undefined {
  const first = batch.runFirst;
  if (first === undefined) return undefined;
  batch.runFirst = undefined;
  if (!batch.runMerged) return first;
  batch.runMerged = false;
  return new Uint8Array(first.buffer, first.byteOffset, batch.runBytes);
}

/** Puts the run of adjacent views into the batch as one entry. */
function endRun(): void {
  const view = takeRun();
  if (view !== undefined) batch.entries[batch.count++] = view;
}

type Listener = (this: ConnSocket) => void;
let onData: (this: ConnSocket, chunk: Buffer) => void;
let onEnd: Listener;
let onError: (this: ConnSocket, error: Error) => void;
let onClose: Listener;
let onDrain: Listener;
let onFinish: Listener;
let onTimeout: Listener;
let readNext: (conn: Conn) => Promise<IteratorResult<Buffer>>;
let endIfQuiet: (conns: Conn[]) => void;

/**
 * Connections waiting for the first of `#endWhenQuiet`'s two hops. The first hop hands the whole
 * list to the second, and later arrivals start a list (and a first hop) of their own, so every
 * connection gets two full hops from the moment it was added, for one pair of immediates per turn.
 */
let quietWaiting: Conn[] = [];
function quietFirstHop(): void {
  const conns = quietWaiting;
  quietWaiting = [];
  setImmediate(endIfQuiet, conns);
}

/** `for await (const chunk of conn)`: prototype methods only, one small object per loop. */
class ConnIterator implements AsyncIterableIterator<Buffer> {
  readonly #conn: Conn;

  constructor(conn: Conn) {
    this.#conn = conn;
  }

  next(): Promise<IteratorResult<Buffer>> {
    return readNext(this.#conn);
  }

  /** Breaking out of the loop leaves the connection open (unlike a socket's own iterator). */
  return(): Promise<IteratorResult<Buffer>> {
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this;
  }
}

/**
 * One connection, handed to the handler with its {@link Context}. Reads are pull-style
 * (`read()`, `readFrame()`, `for await`), writes wait for `drain` when the socket is full.
 */
export class Conn implements AsyncIterable<Buffer> {
  /** Unique within the server, increasing from 1. */
  readonly id: number;
  readonly #owner: Server;
  /** Made on first use (see `kCtx`). */
  #ctx: Context | undefined;
  #socket: Socket;
  #state: ConnState = 'new';
  #queue: Buffer[] = NO_CHUNKS;
  #queued = 0;
  /** PAUSED, EOF, ENDING, ... (see the bit constants above). */
  #flags = 0;
  /** The pending read's resolving functions: set exactly while a read waits. */
  #readResolve: ((value: unknown) => void) | undefined;
  #readReject: ((error: Error) => void) | undefined;
  #readDeadline: Deadline | undefined;
  #writers: Waiter[] = NO_WAITERS;
  #decoder: Decoder<unknown> | undefined;
  #holds = 0;
  /** What most connections never need, made on first use (see `#coldFields`). */
  #cold: ColdFields | undefined;
  /** Service mode only, made when first needed (see `SERVICE`). */
  #svc: ServiceRun | undefined;
  /** @internal Its neighbours in its server's list of open connections (see `ConnList`). */
  [kPrev]: Conn | undefined = undefined;
  /** @internal */
  [kNext]: Conn | undefined = undefined;

  /**
   * @internal Created by the accept pipeline for each accepted socket. Accept stages (PROXY
   * header, TLS handshake) own the socket's input until `kServe`; until then the connection only
   * watches for the socket failing or closing.
   */
  constructor(owner: Server, id: number, socket: Socket) {
    this.#owner = owner;
    this.id = id;
    this.#socket = socket;
    (socket as ConnSocket)[kConn] = this;
    socket.on('error', onError);
    socket.on('close', onClose);
  }

  /**
   * @internal Every accept stage is done: the connection reads from `stream` from now on (the
   * `TLSSocket` after a handshake, else the accepted socket), with the PROXY header's addresses.
   * Input a stage read past its end was put back into the stream, so nothing is lost.
   */
  [kServe](stream: Socket, proxy: ProxyHeader | undefined, idleTimeout: number): void {
    if (proxy !== undefined) this.#coldFields().proxy = proxy;
    const accepted = this.#socket;
    if (stream !== accepted) {
      accepted.off('error', onError);
      accepted.off('close', onClose);
      accepted.on('error', noop); // node:tls forwards the accepted socket's errors to `stream`
      unlinkSocket(accepted);
      this.#socket = stream;
      (stream as ConnSocket)[kConn] = this;
      stream.on('error', onError);
      stream.on('close', onClose);
    }
    stream.on('data', onData);
    stream.on('end', onEnd);
    // 'drain' and 'finish' listeners are added when first needed (a write waits; end()).
    if (idleTimeout > 0) {
      stream.setTimeout(idleTimeout);
      stream.on('timeout', onTimeout);
    }
    if (stream.isPaused()) stream.resume(); // a stage paused it to stop at its header's end
  }

  /** The underlying socket (a `tls.TLSSocket` under TLS, once its handshake is done): the escape hatch. */
  get socket(): Socket {
    return this.#socket;
  }

  /**
   * The PROXY protocol header this connection arrived with (`proxyProtocol` option), or
   * `undefined`. When it names addresses (command `PROXY`), `remoteAddress`, `remotePort`,
   * `localAddress` and `localPort` report them; the socket's own stay on `conn.socket`.
   */
  get proxy(): ProxyHeader | undefined {
    return this.#cold?.proxy;
  }

  static {
    // One set of socket listeners for every connection: no closures per connection.
    onData = function (this: ConnSocket, chunk: Buffer) {
      this[kConn].#onData(chunk);
    };
    onEnd = function (this: ConnSocket) {
      this[kConn].#onEnd();
    };
    onError = function (this: ConnSocket, error: Error) {
      // Only an error can come after 'close' (from user code emitting it): nothing to record then.
      const conn = (this as Partial<ConnSocket>)[kConn];
      if (conn !== undefined) conn.#onError(error);
    };
    onClose = function (this: ConnSocket) {
      this[kConn].#onClose();
      unlinkSocket(this);
    };
    onDrain = function (this: ConnSocket) {
      this[kConn].#onDrain();
    };
    onFinish = function (this: ConnSocket) {
      this[kConn].#onFinish();
    };
    onTimeout = function (this: ConnSocket) {
      this[kConn].#onIdleTimeout();
    };
    ageSlot = {
      get: (conn) => conn.#cold?.ageSlot ?? -1,
      set: (conn, index) => {
        conn.#coldFields().ageSlot = index;
      },
    };
    spreadSlot = {
      get: (conn) => conn.#cold?.spreadSlot ?? -1,
      set: (conn, index) => {
        conn.#coldFields().spreadSlot = index;
      },
    };
    slowFrames = new DeadlineQueue<Conn>((conn) => conn.#checkFrame(), {
      get: (conn) => conn.#cold?.frameSlot ?? -1,
      set: (conn, index) => {
        conn.#coldFields().frameSlot = index;
      },
    });
    endIfQuiet = (conns) => {
      for (const conn of conns) conn.#endIfQuiet();
    };
    isLingering = (conn) => (conn.#flags & LINGERING) !== 0;
    expireLinger = (conn) => {
      conn.#flags &= ~LINGERING; // out of the queue: its 'close' has nothing to release
      // Destroyed before it is reported, so a logger that throws cannot leave it open; its
      // 'close' (a later tick) finishes the bookkeeping.
      conn.#socket.destroy();
      conn.#owner[kOnLingerTimeout](conn);
    };
    readNext = (conn) => conn.#read(undefined, true) as Promise<IteratorResult<Buffer>>;
  }

  /**
   * @internal The handler's `Context`, made on first use: a service-mode connection that never
   * spoke needs none, and cancelling makes it to keep the reason.
   */
  get [kCtx](): Context {
    return (this.#ctx ??= new Context(this.#owner, this.id));
  }

  /** The connection's current state. */
  get state(): ConnState {
    return this.#state;
  }

  /**
   * The peer's address (kept after the socket closes): the PROXY header's source when there is
   * one (a path for a UNIX family), else the socket's.
   */
  get remoteAddress(): string | undefined {
    const source = this.#cold?.proxy?.source;
    if (source !== undefined) return 'path' in source ? source.path : source.address;
    return this.#peer().address;
  }

  /** The peer's port (kept after the socket closes): the PROXY header's when there is one. */
  get remotePort(): number | undefined {
    const source = this.#cold?.proxy?.source;
    if (source !== undefined) return 'port' in source ? source.port : undefined;
    return this.#peer().port;
  }

  /** The local address the connection arrived on: the PROXY header's destination when there is one. */
  get localAddress(): string | undefined {
    const destination = this.#cold?.proxy?.destination;
    if (destination !== undefined) return 'path' in destination ? destination.path : destination.address;
    return this.#socket.localAddress;
  }

  /** The local port the connection arrived on: the PROXY header's when there is one. */
  get localPort(): number | undefined {
    const destination = this.#cold?.proxy?.destination;
    if (destination !== undefined) return 'port' in destination ? destination.port : undefined;
    return this.#socket.localPort;
  }

  /** True when the connection was destroyed by a shutdown deadline. */
  get [kForced](): boolean {
    return (this.#flags & FORCED) !== 0;
  }

  /**
   * Resolves the next chunk of received bytes, or `null` at end of stream (the peer sent FIN,
   * or the server is draining and this connection is idle). Rejects with `ERR_CONN_CLOSED` when
   * the connection failed or was closed, `ERR_READ_TIMEOUT` / `ERR_ABORTED` per `opts`; a timed
   * out or aborted read loses no data and the connection stays usable.
   */
  read(opts?: IoOptions): Promise<Buffer | null> {
    return this.#read(opts, false) as Promise<Buffer | null>;
  }

  /**
   * Resolves the next frame decoded by `decoder`, or `null` at a clean end of stream. Bytes
   * held in the decoder count as buffered input: a half-received frame keeps the connection
   * active, so a graceful shutdown waits for the rest of it. Throws the decoder's typed errors
   * (`ERR_FRAME_TOO_LARGE`, `ERR_INVALID_FRAME`, `ERR_INCOMPLETE_FRAME`). `opts` applies to each
   * wait for more bytes.
   */
  readFrame<T>(decoder: Decoder<T>, opts?: IoOptions): Promise<T | null> {
    // Small on purpose, as `write()` is: TurboFan inlines it into the caller's read loop within a
    // budget that the caller's own calls need too (docs/architecture.md, "Stream mode").
    const refused = this.#readRefusal(opts);
    if (refused !== undefined) return Promise.reject(refused);
    this.#decoder = decoder;
    let frame: T | null | undefined;
    try {
      frame = this.#frameNow(decoder);
    } catch (error) {
      return Promise.reject(error);
    }
    if (frame !== undefined) return Promise.resolve(frame);
    return this.#wait(opts, READ_FRAME) as Promise<T | null>;
  }

  /**
   * A frame that needs no waiting: complete in the decoder or in queued input, or `null` at end
   * of stream; throws the decoder's error, or the close error of a closed connection; undefined
   * if the read must wait.
   */
  #frameNow<T>(decoder: Decoder<T>): T | null | undefined {
    for (;;) {
      const frame = decoder.next();
      if (frame !== undefined) {
        if ((this.#flags & FRAME_TIMED) !== 0) this.#stopFrameClock();
        return frame;
      }
      if (this.#queue.length === 0) break;
      decoder.push(this.#take());
    }
    if ((this.#flags & (EOF | HANDLER_DONE | CLOSED)) === 0 && this.#cold === undefined) return undefined;
    return this.#frameAtEnd(decoder);
  }

  /** `#frameNow` with no frame and no input: the last frame or `null` at end of stream, the close error, or `undefined` (wait). */
  #frameAtEnd<T>(decoder: Decoder<T>): T | null | undefined {
    // End of stream first: a clean close after the peer's FIN is not an error.
    if ((this.#flags & (EOF | HANDLER_DONE)) !== 0) return decoder.end() ?? null;
    if ((this.#flags & CLOSED) !== 0 || this.#cold?.closeError !== undefined) throw this.#failure();
    return undefined;
  }

  /** Iterates received chunks until end of stream. Breaking out does not close the connection. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return new ConnIterator(this);
  }

  /**
   * Writes `data`. Resolves at once while the socket's buffer is under its high-water mark, and
   * otherwise when it drains, so a peer that stops reading stops the handler instead of growing
   * memory. Rejects with `ERR_CONN_CLOSED` if the connection is gone, and `ERR_WRITE_TIMEOUT` /
   * `ERR_ABORTED` per `opts` (the data stays queued: destroy the connection after a write timeout).
   * A write that is never awaited does not become an unhandled rejection (see {@link needsDrain}).
   */
  write(data: string | Uint8Array, opts?: IoOptions): Promise<void> {
    const socket = this.#socket;
    if (opts !== undefined) {
      const bad = badOptions(opts);
      if (bad !== undefined) return Promise.reject(bad);
    }
    const closeError = this.#cold?.closeError;
    if (closeError !== undefined) return handledRejection(closeError);
    if ((this.#flags & CLOSED) !== 0 || socket.destroyed || socket.writableEnded) {
      return handledRejection(new ConnClosedError('connection is closed for writing'));
    }
    if (socket.write(data)) return RESOLVED;
    return this.#waitDrain(opts);
  }

  /** A write the socket buffered past its high-water mark: resolves on `'drain'` (see `write()`). */
  #waitDrain(opts: IoOptions | undefined): Promise<void> {
    // Waiting for drain is work in progress: a pending read alongside is no longer idle.
    if (this.#state === 'idle') this.#setState('active');
    const waiting = new Promise<void>(capture);
    const waiter: Waiter = { resolve: captured.resolve, reject: captured.reject, deadline: undefined };
    if (this.#writers === NO_WAITERS) {
      this.#hookDrain();
      this.#writers = [];
    }
    this.#writers.push(waiter);
    if (opts !== undefined)
      waiter.deadline = this.#arm(opts, 'write', (error) => this.#failWrite(waiter, error));
    waiting.catch(noop); // see handledRejection
    return waiting;
  }

  /** Listens for `'drain'` (once per connection: the listener stays). */
  #hookDrain(): void {
    if ((this.#flags & DRAIN_HOOKED) !== 0) return;
    this.#flags |= DRAIN_HOOKED;
    this.#socket.on('drain', onDrain);
  }

  /**
   * Ends the connection gracefully: optional last `data`, then FIN once every write is flushed.
   * Resolves when the FIN is sent (or the connection closed). Reading may continue until the
   * peer's FIN.
   */
  end(data?: string | Uint8Array): Promise<void> {
    if ((this.#flags & (SERVICE | HANDLER_DONE)) === SERVICE) this.#serviceEnd(data);
    else this.#end(data);
    const cold = this.#cold;
    if (cold?.finished !== undefined) return cold.finished;
    const socket = this.#socket;
    if (socket.writableFinished || socket.destroyed) return RESOLVED;
    // Settled by #onFinish or #onClose, whichever comes first. Made only for a caller of
    // end(): the framework's own ends (a handler returned, a read limit) wait for no promise.
    const fields = this.#coldFields();
    fields.finished = new Promise<void>(capture);
    fields.resolveFinished = captured.resolve;
    this.#hookFinish();
    return fields.finished;
  }

  /** Sends `data`, then FIN once every write is flushed. */
  #end(data?: string | Uint8Array): void {
    const socket = this.#socket;
    if (this.#state !== 'closed') this.#setState('closing');
    if (!socket.writableEnded && !socket.destroyed) {
      if (data === undefined) socket.end();
      else socket.end(data);
    }
    // Writes waiting for 'drain' are done at 'finish' instead: an ending Writable emits no 'drain'.
    if (this.#writers.length > 0) this.#hookFinish();
  }

  /**
   * `'finish'` (every byte and the FIN flushed) is listened for only by what waits for it: an
   * `end()` caller's promise, writes waiting for `drain`, a linger behind queued bytes. An idle
   * connection that ends, thousands at once in a shutdown, adds no listener.
   */
  #hookFinish(): void {
    if ((this.#flags & FINISH_HOOKED) !== 0) return;
    this.#flags |= FINISH_HOOKED;
    this.#socket.on('finish', onFinish);
  }

  /**
   * After our `end()`: the linger starts once the FIN has nothing ahead of it: now if no byte is
   * queued in Node (libuv sends the FIN on its next iteration; the kernel's send buffer may still
   * hold bytes ahead of it), else at `'finish'`.
   */
  #lingerAfterEnd(): void {
    const socket = this.#socket;
    if (socket.destroyed) return;
    if (socket.writableLength === 0) this.#startLinger();
    else this.#hookFinish();
  }

  /** Closes the connection at once, discarding unsent data. */
  destroy(error?: Error): void {
    this.#socket.destroy(error);
  }

  /**
   * Marks work in progress for protocols where waiting for input is not idle (a full-duplex
   * stream, a server push): while held, a shutdown does not end the connection. Returns the
   * release function (calling it twice is harmless).
   */
  hold(): () => void {
    this.#holds++;
    if (this.#state === 'idle') this.#setState('active');
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds--;
      this.#maybeIdle();
    };
  }

  /**
   * Runs the handler and turns its outcome into a graceful end or a destroy. Its promise settles
   * into two functions bound to this connection: smaller per connection than two arrows and their
   * shared context, or an `async` wrapper (a generator and await closures).
   */
  [kRun](handler: Handler | undefined): void {
    this.#setState('active');
    if (this.#owner[kService] !== undefined) {
      // Service mode: frames are read in the data path; nothing is made until the first byte.
      this.#flags |= SERVICE;
      this.#serviceCheck();
      return;
    }
    let result: void | Promise<void>;
    try {
      result = handler!(this[kCtx], this);
    } catch (error) {
      this.#handlerFailed(error);
      return;
    }
    if (result != null && typeof (result as Promise<void>).then === 'function') {
      (result as Promise<void>).then(this.#handlerReturned.bind(this), this.#handlerFailed.bind(this));
    } else this.#handlerReturned();
  }

  #handlerReturned(): void {
    this.#afterHandler(false);
  }

  #handlerFailed(error: unknown): void {
    // A handler that lets a read limit's error escape has not failed: the FIN is on its way.
    this.#afterHandler((this.#flags & CUT_OFF) === 0 || error !== this.#cold?.closeError);
    this.#owner[kOnHandlerError](this, error);
  }

  /**
   * Asks the connection to end as soon as it is idle (shutdown, idle timeout, connection age):
   * `ctx.signal` aborts, and a pending idle read returns null so the handler can return. A
   * connection still in the accept pipeline (`new`) has no request yet: it is closed at once.
   * With `spread`, an idle connection waits for `kEndNowIfIdle` (its moment in the window)
   * before it ends; one that goes idle after its moment ends at once.
   */
  [kEndWhenIdle](reason: Error, spread = false): void {
    this[kCtx][kCancel](reason);
    const first = (this.#flags & ENDING) === 0;
    if (first) {
      this.#flags |= ENDING | IN_FLIGHT;
      if (this.#state === 'new') {
        this.#socket.destroy();
        return;
      }
    }
    // A later reason without a spread (an idle timeout during a spread shutdown) ends it now.
    if (!spread) this.#flags |= END_NOW;
    if (first || !spread) this.#maybeIdle();
  }

  /** True while the peer has sent nothing yet (the connection is past the accept pipeline). */
  get [kFresh](): boolean {
    return this.#state !== 'new' && (this.#flags & RECEIVED) === 0;
  }

  /**
   * Shutdown of a connection that has sent nothing yet: like `kEndWhenIdle` with a moment still
   * to come, except that its first bytes make it end as soon as they are answered. A request that
   * raced the listener's close is served, not dropped (Go's net/http does the same for new
   * connections). Its moment (`kEndNowIfIdle`) is the end of the grace.
   */
  [kEndAfterFirstRequest](reason: Error): void {
    this[kCtx][kCancel](reason);
    if ((this.#flags & ENDING) !== 0) return;
    this.#flags |= ENDING | IN_FLIGHT | AWAIT_FIRST;
    this.#maybeIdle();
  }

  /** Spread closing: this connection's moment has come; it ends now if idle, else when it goes idle. */
  [kEndNowIfIdle](): void {
    if ((this.#flags & END_NOW) !== 0) return;
    this.#flags |= END_NOW;
    this.#maybeIdle();
  }

  /** Destroys the connection because a shutdown deadline passed. */
  [kForce](reason: Error): void {
    if (this.#state === 'closed') return;
    this.#flags |= FORCED;
    this[kCtx][kCancel](reason);
    this.#coldFields().closeError ??= new ConnClosedError('connection was closed by a shutdown deadline', {
      cause: reason,
    });
    this.#socket.destroy();
  }

  /**
   * True while a `write()` waits for the socket to drain (its promise is pending). A handler that
   * writes many small batches may skip awaiting a write while this is false, since the write was
   * accepted at once; awaiting it when this is true keeps backpressure.
   *
   * ```ts
   * const written = conn.write(reply);
   * if (conn.needsDrain) await written;
   * ```
   */
  get needsDrain(): boolean {
    return this.#writers.length > 0;
  }

  /**
   * Drops what the connection holds for a handler that is done or cut off (input queued or
   * buffered in the decoder, replies still to come). A field is stored only when it changes: a
   * store of the value a field already holds still makes V8 mark the field mutable and discard
   * the code compiled against it (docs/architecture.md, "Closing cost").
   */
  #dropHeld(): void {
    const svc = this.#svc;
    if (svc !== undefined && svc.order !== NO_SLOTS) svc.order = NO_SLOTS; // replies still to come are dropped
    if (this.#queue !== NO_CHUNKS) {
      this.#queue = NO_CHUNKS;
      this.#queued = 0;
    }
    if (this.#decoder !== undefined) this.#decoder = undefined;
  }

  /**
   * The handler finished: end gracefully (FIN after flushing) or, if it failed, destroy. Input
   * that arrives from now on is discarded.
   */
  #afterHandler(failed: boolean): void {
    this.#flags |= HANDLER_DONE;
    this.#dropHeld();
    if ((this.#flags & FRAME_TIMED) !== 0) this.#stopFrameClock();
    const resolve = this.#readResolve;
    if (resolve !== undefined) {
      // A read the handler left behind: end it quietly (no decoder error nobody would catch).
      const iter = (this.#flags & READ_ITER) !== 0;
      this.#readDone();
      resolve(iter ? DONE : null);
    }
    if ((this.#flags & PAUSED) !== 0) {
      this.#flags &= ~PAUSED;
      this.#socket.resume();
    }
    if (failed) {
      this.#socket.destroy();
      return;
    }
    this.#end();
    this.#lingerAfterEnd();
  }

  #read(opts: IoOptions | undefined, iter: boolean): Promise<ReadResult> {
    const refused = this.#readRefusal(opts);
    if (refused !== undefined) return Promise.reject(refused);
    if (this.#queue.length > 0) {
      const chunk = this.#take();
      return Promise.resolve(iter ? { value: chunk, done: false } : chunk);
    }
    // End of stream first: a clean close after the peer's FIN is not an error.
    if ((this.#flags & (EOF | HANDLER_DONE)) !== 0) return Promise.resolve(iter ? DONE : null);
    if ((this.#flags & CLOSED) !== 0 || this.#cold?.closeError !== undefined)
      return Promise.reject(this.#failure());
    return this.#wait(opts, iter ? READ_ITER : 0);
  }

  /**
   * Parks the one pending read until input, end of stream, a drain, or its deadline. `kind` is
   * READ_ITER, READ_FRAME or 0 (a plain `read()`). One read is pending at a time, so its state
   * lives in the Conn's own fields (no object per read).
   */
  #wait(opts: IoOptions | undefined, kind: number): Promise<ReadResult> {
    const promise = new Promise<ReadResult>(capture);
    const resolve = captured.resolve;
    this.#readResolve = resolve;
    this.#readReject = captured.reject;
    this.#flags = (this.#flags & ~(READ_ITER | READ_FRAME)) | kind;
    // Half a frame is already here: it is timed from now (a whole one never reaches this point).
    if (kind === READ_FRAME && (this.#flags & FRAME_TIMED) === 0 && this.#decoder!.buffered > 0)
      this.#startFrameClock();
    if (opts !== undefined) this.#armRead(opts, resolve);
    this.#readIdle(); // reads are refused in service mode
    return promise;
  }

  /** The pending read's deadline and cancellation: it rejects, the handler works on. */
  #armRead(opts: IoOptions, resolve: (value: ReadResult) => void): void {
    this.#readDeadline = this.#arm(opts, 'read', (error) => {
      if (this.#readResolve !== resolve) return; // that read is settled already
      const reject = this.#readReject!;
      this.#readDone();
      // A cancelled read leaves the handler working, no longer waiting.
      if (this.#state === 'idle') this.#setState('active');
      reject(error);
    });
  }

  /**
   * Why a read cannot start (`undefined`: it can). The common case, no `opts` and nothing in the
   * way, is answered here, so that a read loop inlines only this and not `#refuseRead`
   * (docs/architecture.md, "Stream mode").
   */
  #readRefusal(opts: IoOptions | undefined): Error | undefined {
    if (opts === undefined && this.#readResolve === undefined && (this.#flags & SERVICE) === 0)
      return undefined;
    return this.#refuseRead(opts);
  }

  /** Why a read cannot start: one is pending, the server reads this connection, or bad `opts`. */
  #refuseRead(opts: IoOptions | undefined): Error | undefined {
    if ((this.#flags & SERVICE) !== 0)
      return new ConcurrentReadError(
        'a service-mode connection is read by the server: it cannot be read too',
      );
    if (this.#readResolve !== undefined) return new ConcurrentReadError();
    return opts === undefined ? undefined : refuseOptions(opts);
  }

  /** Forgets the pending read (its caller settles it) and clears its deadline. */
  #readDone(): void {
    this.#readResolve = undefined;
    this.#readReject = undefined;
    disarm(this.#readDeadline);
    this.#readDeadline = undefined;
  }

  /**
   * The error for I/O on a closed connection. A clean close builds it only when some call needs
   * it: capturing a stack trace on every close costs churn benchmarks ~10%.
   */
  #failure(): Error {
    const cold = this.#coldFields();
    cold.closeError ??= new ConnClosedError();
    return cold.closeError;
  }

  #coldFields(): ColdFields {
    this.#cold ??= {
      closeError: undefined,
      finished: undefined,
      resolveFinished: undefined,
      remote: undefined,
      proxy: undefined,
      ageSlot: -1,
      spreadSlot: -1,
      frameSlot: -1,
      frameStart: 0,
    };
    return this.#cold;
  }

  #take(): Buffer {
    const chunk = this.#queue.shift() as Buffer;
    this.#queued -= chunk.length;
    if ((this.#flags & PAUSED) !== 0 && this.#queued < QUEUE_LIMIT) {
      this.#flags &= ~PAUSED;
      this.#flags |= IN_FLIGHT;
      this.#socket.resume();
    }
    return chunk;
  }

  #canIdle(): boolean {
    return (
      this.#queued === 0 &&
      this.#holds === 0 &&
      this.#writers.length === 0 &&
      (this.#decoder === undefined || this.#decoder.buffered === 0)
    );
  }

  /** Re-evaluates idleness after something that kept the connection busy went away. */
  #maybeIdle(): void {
    if ((this.#flags & SERVICE) !== 0) this.#serviceCheck();
    else this.#readIdle();
  }

  /**
   * The stream mode's idleness: a read waits and nothing else is in progress. What a
   * connection asked to end then does is `#endIdle`'s, kept apart so that a read loop, which
   * inlines this through `#wait`, inlines only the common case.
   */
  #readIdle(): void {
    if (this.#readResolve === undefined || !this.#canIdle()) return;
    if (this.#state === 'active') this.#setState('idle');
    if ((this.#flags & (ENDING | END_NOW)) === (ENDING | END_NOW)) this.#endIdle();
  }

  /** An idle connection asked to end (`#readIdle`): its pending read ends, once input in flight is read. */
  #endIdle(): void {
    // Input the peer already sent may still be on its way up to us: wait for it, never drop it.
    // (Input sent after that is the peer racing the shutdown, as with any server.)
    if ((this.#flags & IN_FLIGHT) !== 0 || this.#socket.readableLength > 0) this.#endWhenQuiet();
    else this.#endRead();
  }

  /** Ends the pending read of a connection asked to end: the handler sees end of stream. */
  #endRead(): void {
    this.#settleRead(null);
    if (this.#state === 'idle') this.#setState('active');
  }

  /**
   * Ends an idle connection once input in flight has arrived. Bytes the peer already sent may sit
   * in the kernel (read in the next poll phase) or, after read backpressure paused the socket, in
   * the stream's buffer (flowing again on the next tick): two `setImmediate` hops let a full poll
   * phase run first, so that input is served, never dropped. Every connection asked in the same
   * turn shares the two hops (a shutdown asks thousands at once): see `quietFirstHop`.
   */
  #endWhenQuiet(): void {
    if ((this.#flags & END_CHECK) !== 0) return;
    this.#flags |= END_CHECK;
    if (quietWaiting.push(this) === 1) setImmediate(quietFirstHop);
  }

  /** The second hop of `#endWhenQuiet`: the connection ends now if it is still idle. */
  #endIfQuiet(): void {
    this.#flags &= ~(END_CHECK | IN_FLIGHT);
    if ((this.#flags & (ENDING | END_NOW)) !== (ENDING | END_NOW)) return;
    if ((this.#flags & SERVICE) !== 0) this.#serviceCheck();
    else if (this.#readResolve !== undefined && this.#canIdle()) this.#endRead();
  }

  /**
   * Hands `chunk` to the pending read (null: end of stream). A `readFrame` read keeps waiting
   * until its decoder has a whole frame, and fails with the decoder's error.
   */
  #settleRead(chunk: Buffer | null): void {
    const flags = this.#flags;
    let value: unknown;
    if ((flags & READ_FRAME) === 0) {
      const iter = (flags & READ_ITER) !== 0;
      value = chunk === null ? (iter ? DONE : null) : iter ? { value: chunk, done: false } : chunk;
    } else {
      const decoder = this.#decoder!;
      try {
        if (chunk === null) value = decoder.end() ?? null;
        else {
          decoder.push(chunk);
          value = decoder.next();
          if (value === undefined) {
            // A partial frame: keep waiting (the decoder holds bytes), timed from its first byte.
            if ((flags & FRAME_TIMED) === 0 && decoder.buffered > 0) this.#startFrameClock();
            return;
          }
        }
        if ((flags & FRAME_TIMED) !== 0) this.#stopFrameClock();
      } catch (error) {
        const reject = this.#readReject!;
        this.#readDone();
        reject(error as Error);
        return;
      }
    }
    const resolve = this.#readResolve!;
    this.#readDone();
    resolve(value);
  }

  /** The per-call deadline and cancellation of a waiting read or write: `fail` runs when either fires. */
  #arm(opts: IoOptions, kind: 'read' | 'write', fail: (error: Error) => void): Deadline {
    const deadline: Deadline = { timer: undefined, signal: undefined, onAbort: undefined };
    const signal = opts.signal;
    if (signal !== undefined) {
      if (signal.aborted) {
        // Only a write gets here (reads refuse an aborted signal up front): its data is queued.
        queueMicrotask(() => fail(new AbortedError(signal.reason)));
        return deadline;
      }
      deadline.signal = signal;
      deadline.onAbort = () => fail(new AbortedError(signal.reason));
      signal.addEventListener('abort', deadline.onAbort, { once: true });
    }
    const timeout = opts.timeout;
    if (timeout !== undefined && timeout !== Infinity) {
      deadline.timer = setTimeout(
        () => fail(kind === 'read' ? new ReadTimeoutError(timeout) : new WriteTimeoutError(timeout)),
        timeout,
      );
    }
    return deadline;
  }

  /** A waiting write's deadline or cancellation fired: it rejects, its data stays queued. */
  #failWrite(waiter: Waiter, error: Error): void {
    const index = this.#writers.indexOf(waiter);
    if (index === -1) return; // settled already
    this.#writers.splice(index, 1);
    disarm(waiter.deadline);
    // One reason to be busy is gone: a read pending alongside may now be idle.
    this.#maybeIdle();
    waiter.reject(error);
  }

  #setState(next: ConnState): void {
    const prev = this.#state;
    if (prev === next || prev === 'closed') return;
    this.#state = next;
    if (next === 'closed' || this.#owner[kWatching]) this.#owner[kOnState](this, next, prev);
  }

  #peer(): { address: string | undefined; port: number | undefined } {
    const cold = this.#coldFields();
    cold.remote ??= { address: this.#socket.remoteAddress, port: this.#socket.remotePort };
    return cold.remote;
  }

  #settleFinished(): void {
    const cold = this.#cold;
    const resolve = cold?.resolveFinished;
    if (resolve === undefined) return;
    cold!.resolveFinished = undefined;
    resolve(undefined);
  }

  #startLinger(): void {
    // Once: a connection whose linger expired is destroyed, and that is final too.
    if ((this.#flags & LINGERING) !== 0 || this.#socket.destroyed) return;
    // The peer normally answers our FIN with its own at once; one that does not is dropped.
    const queue = this.#owner[kLingerQueue];
    if (queue === undefined) return;
    this.#flags |= LINGERING;
    queue.add(this);
  }

  /**
   * No byte either way for `idleTimeout` ms. An idle connection ends gracefully, as a shutdown
   * would end it. One that holds anything (half a frame, unread input, a handler at work) is cut
   * off: waiting for its next idle moment could wait forever. One already closing (our FIN is
   * out, or its writes never drain) is dropped. Reported once per connection.
   */
  #onIdleTimeout(): void {
    const flags = this.#flags;
    if ((flags & CLOSED) !== 0) return;
    if ((flags & TIMED_OUT) !== 0 || this.#state === 'closing') {
      if ((flags & TIMED_OUT) === 0) this.#report(this.#idleError());
      this.#socket.destroy();
      return;
    }
    const error = this.#idleError();
    this.#report(error);
    const idle =
      (this.#flags & SERVICE) !== 0
        ? this.#state === 'idle'
        : this.#readResolve !== undefined && this.#canIdle();
    if (idle) this[kEndWhenIdle](error);
    else this.#cutOff(error);
  }

  #idleError(): IdleTimeoutError {
    return new IdleTimeoutError(this.#owner[kReadLimits].idleTimeout);
  }

  /** Tells the owner a read limit ends this connection, once. */
  #report(error: LimitError): void {
    this.#flags |= TIMED_OUT;
    this.#owner[kOnTimeout](this, error);
  }

  /**
   * Ends the connection now, whatever it holds, because a read limit was crossed: input held or
   * queued is dropped, the pending read rejects with `error` (so does any later I/O), `ctx.signal`
   * aborts, and the connection sends its FIN if its writes can flush (the linger then bounds the
   * wait for the peer's), or is destroyed if a write waits for a peer that does not read.
   */
  #cutOff(error: LimitError): void {
    this.#flags |= CUT_OFF | ENDING;
    if ((this.#flags & SERVICE) !== 0) {
      this.#flags |= HANDLER_DONE; // the service stops here: no frame is read or answered any more
    }
    this[kCtx][kCancel](error);
    const cold = this.#coldFields();
    cold.closeError ??= error;
    if ((this.#flags & FRAME_TIMED) !== 0) this.#stopFrameClock();
    this.#dropHeld();
    const reject = this.#readReject;
    if (reject !== undefined) {
      this.#readDone();
      reject(cold.closeError);
    }
    const socket = this.#socket;
    if ((this.#flags & PAUSED) !== 0) {
      this.#flags &= ~PAUSED;
      socket.resume(); // read (and discard) until the peer's FIN
    }
    if (this.#writers.length > 0 || socket.writableNeedDrain) {
      socket.destroy();
      return;
    }
    this.#end();
    this.#lingerAfterEnd();
  }

  /** Half a frame has arrived and a read waits for the rest: time it, if a frame limit applies. */
  #startFrameClock(): void {
    const { frameTimeout, bytesPerSecond, grace } = this.#owner[kReadLimits];
    if (frameTimeout === 0 && bytesPerSecond === 0) return;
    const now = performance.now();
    this.#flags |= FRAME_TIMED;
    this.#coldFields().frameStart = now;
    slowFrames.add(
      this,
      now +
        (frameTimeout === 0 ? grace : bytesPerSecond === 0 ? frameTimeout : Math.min(frameTimeout, grace)),
    );
  }

  #stopFrameClock(): void {
    this.#flags &= ~FRAME_TIMED;
    slowFrames.delete(this);
  }

  /**
   * A frame limit may have been crossed: past `frameTimeout`, or averaging under the minimum
   * rate once past its grace. Otherwise the check moves to the next moment one could be: the
   * deadline, or when the bytes received so far would fall under the rate.
   */
  #checkFrame(): void {
    const start = this.#cold!.frameStart;
    const { frameTimeout, bytesPerSecond, grace } = this.#owner[kReadLimits];
    const now = performance.now();
    const elapsed = now - start;
    const received = (this.#decoder?.buffered ?? 0) + this.#queued;
    let error: LimitError | undefined;
    if (frameTimeout > 0 && elapsed >= frameTimeout) error = new FrameTimeoutError(frameTimeout, received);
    else if (bytesPerSecond > 0 && elapsed >= grace && received < (bytesPerSecond * elapsed) / 1000)
      error = new MinDataRateError(bytesPerSecond, received, elapsed);
    if (error !== undefined) {
      this.#stopFrameClock();
      if ((this.#flags & TIMED_OUT) === 0) this.#report(error);
      this.#cutOff(error);
      return;
    }
    let next = frameTimeout > 0 ? start + frameTimeout : Number.POSITIVE_INFINITY;
    if (bytesPerSecond > 0)
      next = Math.min(next, Math.max(start + grace, start + (received * 1000) / bytesPerSecond, now + 1));
    slowFrames.add(this, next);
  }

  // -- Service mode (docs/architecture.md, "Service mode") ---------------------------------------

  /** The connection's service-mode state, made on first use (see `SERVICE`). */
  #serviceRun(): ServiceRun {
    return (this.#svc ??= {
      spec: this.#owner[kService]!,
      order: NO_SLOTS,
      inFlight: 0,
      endData: undefined,
    });
  }

  /**
   * One decode pass, run on input (`chunk`), at end of stream, on `drain` and when the first
   * pending reply settles: the settled replies at the head of `order` join the batch, frames
   * are decoded and called until the decoder needs more bytes or a bound stops the pass
   * (`maxInFlight` async replies pending, the socket's buffer past its high-water mark, `end()`),
   * the batch goes out in one write, reading is paused or resumed to match, and idleness is
   * judged.
   */
  #serviceDecode(chunk: Buffer | undefined): void {
    let decoder = this.#decoder;
    if (decoder === undefined) {
      // The first pass with input makes the decoder; without input (end of stream, drain of the
      // user's own writes before any byte came) there is nothing to decode.
      if (chunk === undefined) {
        this.#serviceCheck();
        return;
      }
      try {
        decoder = this.#decoder = this.#serviceRun().spec.decoder();
      } catch (error) {
        this.#handlerFailed(error);
        return;
      }
    }
    const svc = this.#svc!;
    const spec = svc.spec;
    const output = spec.output;
    const socket = this.#socket;
    this.#flags |= SVC_PASS;
    let partial = false;
    let full = false;
    do {
      const pass = this.#serviceFrames(svc, decoder, chunk);
      chunk = undefined;
      full = (pass & PASS_FULL) !== 0;
      if ((pass & PASS_WAITS) !== 0) partial = (pass & PASS_PARTIAL) !== 0;
      if (output !== undefined) this.#placeOutput(svc, output);
      this.#flushBatch();
    } while (full && !socket.writableNeedDrain && !socket.destroyed);
    const flags = (this.#flags &= ~SVC_PASS);
    if ((flags & HANDLER_DONE) !== 0) return;
    if (partial) {
      if ((flags & FRAME_TIMED) === 0) this.#startFrameClock();
    } else if ((flags & FRAME_TIMED) !== 0) this.#stopFrameClock();
    const needDrain = socket.writableNeedDrain;
    if (needDrain || svc.inFlight >= spec.maxInFlight) {
      if ((flags & PAUSED) === 0) {
        this.#flags |= PAUSED;
        socket.pause();
      }
    } else if ((flags & PAUSED) !== 0) {
      this.#flags = (flags & ~PAUSED) | IN_FLIGHT;
      socket.resume();
    }
    this.#serviceCheck(needDrain);
  }

  /**
   * The hot part of a decode pass, a function of its own so that V8 optimizes it with its own
   * inlining budget, which then reaches the user's decoder and `call` (see docs/architecture.md,
   * "Service mode"): pushes `chunk`, takes settled replies, then decodes and calls frames until
   * the decoder needs more bytes or a bound stops it. Returns `PASS_*` bits.
   */
  #serviceFrames(svc: ServiceRun, decoder: Decoder<unknown>, chunk: Buffer | undefined): number {
    const spec = svc.spec;
    const output = spec.output;
    const socket = this.#socket;
    const ctx = this.#ctx ?? this[kCtx]; // the getter once per connection, not per pass
    try {
      if (chunk !== undefined) decoder.push(chunk);
      if (svc.order.length > 0) this.#takeSettled(svc);
      // Nothing is written during the loop: the socket's queue is read once. Only an async reply
      // (a slot in `order`) changes `inFlight` and `order` during the loop: both are read again
      // after one, not per frame.
      const room = socket.writableHighWaterMark - socket.writableLength;
      const max = spec.maxInFlight;
      if (svc.inFlight >= max) return 0;
      let queued = svc.order.length > 0;
      while ((this.#flags & (SVC_END | HANDLER_DONE)) === 0) {
        // Write what is batched; go on if the socket takes it.
        if (batch.bytes + (output === undefined ? 0 : output.length) >= room) return PASS_FULL;
        let frame = decoder.next();
        if (frame === undefined) {
          if ((this.#flags & EOF) === 0) return decoder.buffered > 0 ? PASS_WAITS | PASS_PARTIAL : PASS_WAITS;
          frame = this.#lastFrame(decoder);
          if (frame === undefined) break;
        }
        // A socket that can no longer be written (destroyed or ended meanwhile, by `call` through
        // `conn.socket`) gets no more calls: their replies would go nowhere. Checked per frame
        // found, not per turn, so an unpipelined pass reads it once.
        if (!socket.writable) break;
        let result: Reply | PromiseLike<Reply> | typeof FAILED;
        try {
          result = spec.call(frame, ctx, this);
        } catch (error) {
          result = this.#serviceError(svc, error);
          if (result === FAILED) continue; // the connection failed: the loop ends
        }
        // No reply, or one written to `output`: it waits there, unless a pending reply is ahead.
        if (result === undefined) {
          if (queued && output !== undefined) this.#placeOutput(svc, output);
        } else {
          this.#serviceReply(svc, result);
          if (svc.inFlight >= max) break;
          queued = svc.order.length > 0;
        }
      }
    } catch (error) {
      this.#serviceRefused(svc, error); // only the decoder throws here
    }
    return 0;
  }

  /** At end of stream: the decoder's last frame (once), or undefined if there is none or half of one. */
  #lastFrame(decoder: Decoder<unknown>): unknown {
    if ((this.#flags & DECODER_ENDED) !== 0) return undefined;
    this.#flags |= DECODER_ENDED;
    try {
      return decoder.end();
    } catch {
      return undefined; // the peer left in the middle of a frame: nothing to answer
    }
  }

  /**
   * Places the reply `call` returned: a synchronous one joins the batch (or waits behind a pending
   * one), costing no promise and no microtask; a promise gets a slot in `order`. What `call` wrote
   * to the output before goes first.
   */
  #serviceReply(svc: ServiceRun, result: Reply | PromiseLike<Reply>): void {
    const output = svc.spec.output;
    if (output !== undefined) this.#placeOutput(svc, output);
    if (
      typeof result !== 'object' ||
      result === null ||
      ArrayBuffer.isView(result) ||
      typeof (result as PromiseLike<Reply>).then !== 'function'
    ) {
      this.#place(svc, result as Reply);
      return;
    }
    if (svc.order === NO_SLOTS) svc.order = [];
    const order = svc.order;
    const slot: Slot = { reply: undefined, done: false };
    order.push(slot);
    svc.inFlight++;
    (result as PromiseLike<Reply>).then(
      (reply) => this.#serviceSettled(svc, order, slot, reply),
      (error: unknown) => {
        if (svc.order !== order) return;
        const reply = this.#serviceError(svc, error);
        if (reply !== FAILED) this.#serviceSettled(svc, order, slot, reply);
      },
    );
  }

  /** What was written to the service's output takes its place: in the batch, or behind a pending reply. */
  #placeOutput(svc: ServiceRun, output: ServiceOutput): void {
    let reply: Reply;
    let bytes: number;
    try {
      bytes = output.length;
      if (bytes === 0) return;
      reply = output.take();
    } catch (error) {
      if ((this.#flags & HANDLER_DONE) === 0) this.#handlerFailed(error);
      return;
    }
    this.#place(svc, reply, bytes);
  }

  /** A synchronous reply (of `bytes` bytes, if known) joins the batch, or waits in `order` behind a pending one. */
  #place(svc: ServiceRun, reply: Reply, bytes?: number): void {
    if (reply == null) return;
    if (svc.order.length > 0) svc.order.push({ reply, done: true });
    else batchAdd(reply, bytes);
  }

  /** An async reply settled: the pass runs again if it was first in line or frees a slot. */
  #serviceSettled(svc: ServiceRun, order: Slot[], slot: Slot, reply: Reply): void {
    if (svc.order !== order) return; // the connection was cut off, failed or finished meanwhile
    slot.reply = reply;
    slot.done = true;
    const wasFull = svc.inFlight-- >= svc.spec.maxInFlight;
    if (order[0] === slot || wasFull) this.#serviceDecode(undefined);
  }

  /** Settled replies at the head of `order` join the batch. */
  #takeSettled(svc: ServiceRun): void {
    const order = svc.order;
    let taken = 0;
    while (taken < order.length && order[taken]!.done) {
      const reply = order[taken++]!.reply;
      if (reply != null) batchAdd(reply);
    }
    if (taken > 0) order.splice(0, taken);
  }

  /**
   * Writes the pass's replies. Adjacent views of one buffer are one view already (see
   * `batchAdd`): a batch of only those, pipelined or not, is one write of one view and never
   * becomes an entry. `socket.writable` is one check for destroyed, ended and failed.
   */
  #flushBatch(): void {
    if (batch.count !== 0) {
      this.#flushEntries();
      return;
    }
    const view = takeRun();
    if (view === undefined) return;
    batch.bytes = 0;
    const socket = this.#socket;
    if (socket.writable && !socket.write(view)) this.#hookDrain();
  }

  /** A batch with entries (a string, views of different buffers): one write, or one writev corked. */
  #flushEntries(): void {
    endRun();
    const socket = this.#socket;
    const entries = batch.entries;
    const count = batch.count;
    let flushed = true;
    if (socket.writable) {
      if (count === 1) flushed = socket.write(entries[0]!);
      else {
        socket.cork();
        for (let i = 0; i < count; i++) flushed = socket.write(entries[i]!);
        socket.uncork();
      }
    }
    for (let i = 0; i < count; i++) entries[i] = undefined; // the replies are the socket's now
    batch.count = 0;
    batch.bytes = 0;
    if (!flushed) this.#hookDrain();
  }

  /**
   * `call` threw or rejected: `errorReply` turns the error into this frame's reply, or the
   * connection is destroyed and the error reported, as a handler's would be.
   */
  #serviceError(svc: ServiceRun, error: unknown): Reply | typeof FAILED {
    const errorReply = svc.spec.errorReply;
    if (errorReply !== undefined && (this.#flags & HANDLER_DONE) === 0) {
      try {
        const reply = errorReply(error, this);
        // Outside a pass (a promise rejected), what it wrote to the output is this frame's reply:
        // taken now, before another connection's pass would take it.
        const output = svc.spec.output;
        if (reply === undefined && output !== undefined && (this.#flags & SVC_PASS) === 0)
          return output.take();
        return reply;
      } catch (replyError) {
        error = replyError;
      }
    }
    if ((this.#flags & HANDLER_DONE) === 0) this.#handlerFailed(error);
    return FAILED;
  }

  /** The decoder refused the input: the replies before it go out, then `errorReply`'s, then FIN. */
  #serviceRefused(svc: ServiceRun, error: unknown): void {
    let reply: Reply;
    const errorReply = svc.spec.errorReply;
    if (errorReply !== undefined) {
      try {
        reply = errorReply(error, this);
      } catch (replyError) {
        this.#handlerFailed(replyError);
        return;
      }
    }
    this.#serviceEnd(reply ?? undefined);
  }

  /**
   * `end()` in service mode: no later frame is read; the connection ends once every reply so far
   * is written, then `data` (`#serviceFinish`).
   */
  #serviceEnd(data: string | Uint8Array | undefined): void {
    if ((this.#flags & SVC_END) === 0) {
      this.#flags |= SVC_END;
      this.#serviceRun().endData = data;
    }
    this.#serviceCheck();
  }

  /**
   * Service mode's idleness: no frame in progress or waiting to be decoded, no reply pending or
   * waiting for `drain`, no `hold()`, no write of the user's waiting. Once idle, a connection
   * whose peer sent FIN or that called `end()` finishes, and so does one asked to end
   * (shutdown, idle timeout), after any input in flight has been answered.
   */
  #serviceCheck(needDrain?: boolean): void {
    const flags = this.#flags;
    if ((flags & (SVC_PASS | HANDLER_DONE)) !== 0) return;
    const decoder = this.#decoder;
    const busy =
      (needDrain ?? this.#socket.writableNeedDrain) ||
      (this.#svc?.order.length ?? 0) > 0 ||
      this.#holds > 0 ||
      this.#writers.length > 0 ||
      (decoder !== undefined && decoder.buffered > 0 && (flags & (SVC_END | DECODER_ENDED)) === 0);
    if (busy) {
      if (this.#state === 'idle') this.#setState('active');
      return;
    }
    if ((flags & (SVC_END | EOF)) !== 0) {
      this.#serviceFinish();
      return;
    }
    if (this.#state === 'active') this.#setState('idle');
    if ((flags & (ENDING | END_NOW)) !== (ENDING | END_NOW)) return;
    // Input the peer already sent may still be on its way up: answer it, never drop it.
    if ((flags & IN_FLIGHT) !== 0 || this.#socket.readableLength > 0) this.#endWhenQuiet();
    else this.#serviceFinish();
  }

  /** Every reply is written: `end()`'s data, then FIN, as when a handler returns. */
  #serviceFinish(): void {
    const data = this.#svc?.endData;
    const socket = this.#socket;
    if (data !== undefined && !socket.destroyed && !socket.writableEnded) socket.write(data);
    this.#afterHandler(false);
  }

  #onData(chunk: Buffer): void {
    const flags = this.#flags;
    // Nobody will read it: discard while the connection closes.
    if ((flags & (HANDLER_DONE | CUT_OFF)) !== 0) return;
    // The first chunk only: mark the connection as heard from and, if a shutdown is waiting for
    // its first request, let it end once that is answered. Later chunks skip the write.
    if ((flags & (RECEIVED | AWAIT_FIRST)) !== RECEIVED) {
      this.#flags = (flags & ~AWAIT_FIRST) | RECEIVED | ((flags & AWAIT_FIRST) === 0 ? 0 : END_NOW);
    }
    if ((flags & SERVICE) !== 0) {
      // Bytes arrived: active while they are answered (idle again at the end of the pass, if so).
      if (this.#state === 'idle') this.#setState('active');
      this.#serviceDecode(chunk);
      return;
    }
    if (this.#readResolve !== undefined) {
      // Hand the chunk over before announcing the state: a listener may start a shutdown.
      this.#settleRead(chunk);
      if (this.#state === 'idle') this.#setState('active');
      return;
    }
    if (this.#queue === NO_CHUNKS) this.#queue = [];
    this.#queue.push(chunk);
    this.#queued += chunk.length;
    if (this.#state === 'idle') this.#setState('active');
    if (this.#queued >= QUEUE_LIMIT && (this.#flags & PAUSED) === 0) {
      this.#flags |= PAUSED;
      this.#socket.pause();
    }
  }

  #onEnd(): void {
    this.#flags |= EOF;
    if ((this.#flags & SERVICE) !== 0) {
      if ((this.#flags & HANDLER_DONE) === 0) this.#serviceDecode(undefined);
      return;
    }
    if (this.#readResolve !== undefined) {
      this.#settleRead(null);
      if (this.#state === 'idle') this.#setState('active');
    }
  }

  #onError(error: Error): void {
    this.#coldFields().closeError ??= new ConnClosedError(`connection failed: ${error.message}`, {
      cause: error,
    });
  }

  #onDrain(): void {
    const writers = this.#writers;
    if (writers.length > 0) {
      this.#writers = NO_WAITERS;
      for (const writer of writers) {
        disarm(writer.deadline);
        writer.resolve(undefined);
      }
    }
    if ((this.#flags & SERVICE) !== 0) {
      if ((this.#flags & HANDLER_DONE) === 0) this.#serviceDecode(undefined); // replies flushed: read on
    } else if (writers.length > 0) this.#maybeIdle();
  }

  #onFinish(): void {
    this.#settleFinished();
    // Every byte is flushed: writes still waiting (a Writable emits no 'drain' once ending) are done.
    this.#onDrain();
    if ((this.#flags & (HANDLER_DONE | CUT_OFF)) !== 0) this.#startLinger();
  }

  #onClose(): void {
    this.#flags |= CLOSED;
    this.#settleFinished();
    if ((this.#flags & LINGERING) !== 0) {
      this.#flags &= ~LINGERING;
      this.#owner[kLingerQueue]!.release();
    }
    if ((this.#flags & FRAME_TIMED) !== 0) this.#stopFrameClock();
    const reject = this.#readReject;
    if (reject !== undefined) {
      if ((this.#flags & EOF) !== 0) this.#settleRead(null);
      else {
        this.#readDone();
        reject(this.#failure());
      }
    }
    const writers = this.#writers;
    if (writers !== NO_WAITERS) {
      this.#writers = NO_WAITERS; // only when it changes: see #dropHeld
      for (const writer of writers) {
        disarm(writer.deadline);
        writer.reject(this.#failure());
      }
    }
    this.#setState('closed');
  }
}
