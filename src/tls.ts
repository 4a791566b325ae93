/**
 * The TLS stage of the accept pipeline, on node:tls's own machinery: a `tls.Server` that is never
 * bound is handed each accepted socket through its `'connection'` event, and does the handshake,
 * `handshakeTimeout`, the client-certificate check (`authorized`, `authorizationError`, and the
 * refusal of an unverified peer under `rejectUnauthorized`), session ids and resumption itself.
 * Nothing here reads a private field or repeats what node:tls does.
 *
 * node:tls hands back only the finished `TLSSocket` (`'secureConnection'`) or its failure
 * (`'tlsClientError'`), not the accepted socket it came from. For TCP the kernel's 4-tuple
 * (remote address and port, local address and port) names a live connection uniquely, and a
 * `TLSSocket` reports its socket's: that tuple finds the waiting connection. A unix socket has no
 * such address, so each unix handshake runs on a `tls.Server` of its own, taken from a pool that
 * holds one per concurrent unix handshake; its next outcome can only be that socket's. The pool's
 * servers share their session ticket keys, so resumption works across them (see
 * docs/architecture.md, "Accept pipeline").
 *
 * @module
 */
import type { Socket } from 'node:net';
import type { TLSSocket, TlsOptions, Server as TlsServer } from 'node:tls';
import { cryptoModule, tlsModule } from './builtins.js';

/** Why a handshake failed: Node's handshake timeout, or anything else (bad hello, peer gone, unverified). */
export type TlsFailure = 'tls-timeout' | 'tls-handshake';

/** One connection waiting for its handshake. */
interface Handshake {
  readonly socket: Socket;
  /** The 4-tuple a TCP handshake is found by (unused for unix sockets). */
  readonly tuple: string;
  readonly done: (tlsSocket: TLSSocket) => void;
  readonly fail: (reason: TlsFailure, error: Error | undefined) => void;
  /** The failure node:tls reported, if it did, before the socket closed. */
  error: Error | undefined;
  settled: boolean;
  readonly onClose: () => void;
  /** The pool server a unix handshake runs on. */
  slot: TlsServer | undefined;
}

/** The TLS stage: `start(socket, done, fail)` per accepted socket; exactly one of the two is called. */
export class TlsStage {
  readonly #options: TlsOptions;
  /** TCP handshakes in progress, by 4-tuple, on the one shared server. */
  readonly #byTuple = new Map<string, Handshake>();
  readonly #shared: TlsServer;
  /** Idle pool servers for unix handshakes, and which handshake each busy one serves. */
  readonly #free: TlsServer[] = [];
  readonly #busy = new Map<TlsServer, Handshake>();

  /**
   * @param tls the server's `tls` option, as `tls.createServer` takes it.
   * @param handshakeTimeout ms a peer gets to finish its handshake (`Infinity`: no limit).
   */
  constructor(tls: TlsOptions, handshakeTimeout: number) {
    // Pool servers must accept each other's session tickets: one set of keys for all of them.
    this.#options = {
      ticketKeys: cryptoModule().randomBytes(48),
      ...tls,
      handshakeTimeout: handshakeTimeout === Infinity ? 0 : handshakeTimeout,
    };
    this.#shared = this.#makeServer((tlsSocket) => this.#byTuple.get(tupleOf(tlsSocket)));
  }

  /** Hands `socket` to node:tls; `done` gets the `TLSSocket` once the peer is verified, `fail` why not. */
  start(socket: Socket, done: Handshake['done'], fail: Handshake['fail']): void {
    const handshake: Handshake = {
      socket,
      tuple: tupleOf(socket),
      done,
      fail,
      error: undefined,
      settled: false,
      onClose: () => this.#settle(handshake, undefined),
      slot: undefined,
    };
    socket.once('close', handshake.onClose);
    // A peer that sends FIN before its handshake ends is done: the TLSSocket (which copies this
    // flag when node:tls makes it) then ends too, instead of waiting for handshakeTimeout. The
    // finished TLSSocket serves half-open peers again (see `#settle`).
    socket.allowHalfOpen = false;
    if (socket.localPort === undefined) {
      // A unix socket (or one already gone): a pool server of its own.
      const slot = this.#free.pop() ?? this.#makeSlot();
      handshake.slot = slot;
      this.#busy.set(slot, handshake);
      slot.emit('connection', socket);
      return;
    }
    const tuple = handshake.tuple;
    if (socket.remoteAddress === undefined || this.#byTuple.has(tuple)) {
      // Reset before we looked (no peer address), or a tuple we cannot tell apart: never guess.
      socket.destroy();
      return;
    }
    this.#byTuple.set(tuple, handshake);
    this.#shared.emit('connection', socket);
  }

  #makeSlot(): TlsServer {
    const slot: TlsServer = this.#makeServer(() => this.#busy.get(slot));
    return slot;
  }

  #makeServer(find: (tlsSocket: TLSSocket) => Handshake | undefined): TlsServer {
    const server = tlsModule().createServer(this.#options);
    server.on('secureConnection', (tlsSocket: TLSSocket) => {
      const handshake = find(tlsSocket);
      if (handshake === undefined || handshake.settled) tlsSocket.destroy();
      else this.#settle(handshake, tlsSocket);
    });
    server.on('tlsClientError', (error: Error, tlsSocket: TLSSocket) => {
      // node:tls reports a handshake timeout without closing the socket (the listener decides):
      // any failure before the handshake ends closes it. The accepted socket's 'close' settles it.
      const handshake = find(tlsSocket);
      if (handshake !== undefined) handshake.error = error;
      tlsSocket.destroy();
    });
    return server;
  }

  /** Ends one handshake: `tlsSocket` on success, undefined when the accepted socket closed first. */
  #settle(handshake: Handshake, tlsSocket: TLSSocket | undefined): void {
    if (handshake.settled) return;
    handshake.settled = true;
    const slot = handshake.slot;
    if (slot !== undefined) {
      this.#busy.delete(slot);
      this.#free.push(slot);
    } else {
      if (this.#byTuple.get(handshake.tuple) === handshake) this.#byTuple.delete(handshake.tuple);
    }
    if (tlsSocket !== undefined) {
      handshake.socket.off('close', handshake.onClose);
      tlsSocket.allowHalfOpen = true; // as every listener's connections are
      handshake.done(tlsSocket);
      return;
    }
    const error = handshake.error;
    const timedOut = (error as NodeJS.ErrnoException | undefined)?.code === 'ERR_TLS_HANDSHAKE_TIMEOUT';
    handshake.fail(timedOut ? 'tls-timeout' : 'tls-handshake', error);
  }
}

/** The kernel's name of a TCP connection (a `TLSSocket` reports its accepted socket's). */
function tupleOf(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`;
}
