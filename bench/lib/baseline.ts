/**
 * The plumbing every raw `node:net` baseline shares, written as by hand: a server with `noDelay`
 * (as the framework's default), a set of open sockets, errors ignored per socket, and a graceful
 * close (stop accepting, FIN every socket, resolve once all are gone). Each baseline only attaches
 * its own listeners.
 *
 * @module
 */

import net from 'node:net';
import { type BenchServer, HOST, runServerChild } from './server-child.js';

function ignore(): void {}

/**
 * A baseline server on `HOST`, port 0: `attach` adds the workload's listeners to each accepted
 * socket; `close` stops accepting, FINs every socket and resolves once all are gone. Each server
 * keeps its own set of sockets, so one process can run several in turn (bench/close-warm.ts).
 */
export async function startBaseline(
  attach: (socket: net.Socket) => void,
  beforeClose?: () => void,
): Promise<Omit<BenchServer, 'commands'>> {
  const sockets = new Set<net.Socket>();
  function onClose(this: net.Socket): void {
    sockets.delete(this);
  }
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    attach(socket);
    socket.on('error', ignore);
    socket.on('close', onClose);
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    open: () => sockets.size,
    close: () =>
      new Promise((resolve) => {
        beforeClose?.();
        server.close(() => resolve({}));
        for (const s of sockets) s.end();
      }),
  };
}

/**
 * Runs a baseline server child (`startBaseline`): `beforeClose` runs first when the harness asks
 * for a graceful close; `commands` are the harness commands this server answers beside the
 * common ones.
 */
export async function runBaseline(
  attach: (socket: net.Socket) => void,
  beforeClose?: () => void,
  commands?: BenchServer['commands'],
): Promise<void> {
  await runServerChild(async (): Promise<BenchServer> => {
    const server = await startBaseline(attach, beforeClose);
    return commands === undefined ? server : { ...server, commands };
  });
}
