/**
 * The pull-style floor: raw `node:net` with one `async` function per connection that awaits one
 * promise per read, and nothing else (no states, no deadlines, no shutdown bookkeeping). It is the
 * least any server can spend with the API tcpserver offers (`await conn.read()` in a handler
 * coroutine), so it tells the cost of the programming model apart from the framework's own: the
 * bench prints it beside the `'data'`-event baseline, and the framework / floor ratio.
 *
 * @module
 */

import type net from 'node:net';
import { runBaseline } from './baseline.js';
import type { BenchServer } from './server-child.js';

/** The socket doubles as the connection's state: no object or closure per connection but the read's. */
interface FloorSocket extends net.Socket {
  pendingRead: ((chunk: Buffer | null) => void) | undefined;
  unread: Buffer[] | undefined;
}

function onData(this: FloorSocket, chunk: Buffer): void {
  const resolve = this.pendingRead;
  if (resolve === undefined) (this.unread ??= []).push(chunk);
  else {
    this.pendingRead = undefined;
    resolve(chunk);
  }
}

function onEnd(this: FloorSocket): void {
  const resolve = this.pendingRead;
  this.pendingRead = undefined;
  resolve?.(null);
}

/** As in the framework: `new Promise(capture)` allocates no executor closure per read. */
let captured: (chunk: Buffer | null) => void = () => {};
function capture(resolve: (chunk: Buffer | null) => void): void {
  captured = resolve;
}

/** The next chunk, or null at end of stream (one read at a time). */
export function read(socket: net.Socket): Promise<Buffer | null> {
  const s = socket as FloorSocket;
  const queued = s.unread?.shift();
  if (queued !== undefined) return Promise.resolve(queued);
  if (s.readableEnded) return Promise.resolve(null);
  const promise = new Promise<Buffer | null>(capture);
  s.pendingRead = captured;
  return promise;
}

/** Resolves once the socket drained (after a `write()` that returned false), or closed. */
export function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

function endSocket(this: net.Socket): void {
  this.end();
}
function destroySocket(this: net.Socket): void {
  this.destroy();
}

/**
 * Runs a floor server child: `handler` runs once per connection; the socket ends when it returns
 * and is destroyed when it throws. `beforeClose` runs first on a graceful close; `commands` as
 * `runBaseline`'s.
 */
export async function runPullFloor(
  handler: (socket: net.Socket) => Promise<void>,
  beforeClose?: () => void,
  commands?: BenchServer['commands'],
): Promise<void> {
  await runBaseline(
    (socket) => {
      socket.on('data', onData);
      socket.on('end', onEnd);
      handler(socket).then(endSocket.bind(socket), destroySocket.bind(socket));
    },
    beforeClose,
    commands,
  );
}
