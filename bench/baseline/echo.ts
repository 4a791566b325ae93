/**
 * Baseline echo server: raw `node:net` with `'data'` events, written the way a performance-minded
 * engineer would by hand (shared listener functions instead of per-socket closures, pause on a
 * full socket buffer, resume on `'drain'`, a socket set for a graceful close).
 *
 * @module
 */

import net from 'node:net';
import { type BenchServer, HOST, runServerChild } from '../lib/server-child.js';

const sockets = new Set<net.Socket>();

function onData(this: net.Socket, chunk: Buffer): void {
  if (!this.write(chunk)) this.pause();
}
function onDrain(this: net.Socket): void {
  this.resume();
}
function onClose(this: net.Socket): void {
  sockets.delete(this);
}
function ignore(): void {}

function onConnection(socket: net.Socket): void {
  sockets.add(socket);
  socket.on('data', onData);
  socket.on('drain', onDrain);
  socket.on('error', ignore);
  socket.on('close', onClose);
}

await runServerChild(async (): Promise<BenchServer> => {
  // noDelay as the framework's default does: one setsockopt per connection, same work on both sides.
  const server = net.createServer({ noDelay: true }, onConnection);
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    open: () => sockets.size,
    close: () =>
      new Promise((resolve) => {
        // Graceful, as by hand: stop accepting, FIN every idle socket, resolve when all are gone.
        server.close(() => resolve({}));
        for (const s of sockets) s.end();
      }),
  };
});
