/**
 * Baseline one-shot server for the churn workload, raw `node:net`: answer the first chunk and end
 * the connection (the server closes first, as in the framework's version).
 *
 * @module
 */

import net from 'node:net';
import { type BenchServer, HOST, runServerChild } from '../lib/server-child.js';

const sockets = new Set<net.Socket>();

function onData(this: net.Socket, chunk: Buffer): void {
  this.end(chunk);
}
function onClose(this: net.Socket): void {
  sockets.delete(this);
}
function ignore(): void {}

function onConnection(socket: net.Socket): void {
  sockets.add(socket);
  socket.once('data', onData);
  socket.on('error', ignore);
  socket.on('close', onClose);
}

await runServerChild(async (): Promise<BenchServer> => {
  // noDelay as the framework's default does.
  const server = net.createServer({ noDelay: true }, onConnection);
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    open: () => sockets.size,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve({}));
        for (const s of sockets) s.end();
      }),
  };
});
