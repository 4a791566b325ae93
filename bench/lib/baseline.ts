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

const sockets = new Set<net.Socket>();

function onClose(this: net.Socket): void {
  sockets.delete(this);
}
function ignore(): void {}

/**
 * Runs a baseline server child: `attach` adds the workload's listeners to each accepted socket;
 * `beforeClose` runs first when the harness asks for a graceful close; `commands` are the
 * harness commands this server answers beside the common ones.
 */
export async function runBaseline(
  attach: (socket: net.Socket) => void,
  beforeClose?: () => void,
  commands?: BenchServer['commands'],
): Promise<void> {
  await runServerChild(async (): Promise<BenchServer> => {
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
      ...(commands === undefined ? {} : { commands }),
      close: () =>
        new Promise((resolve) => {
          beforeClose?.();
          server.close(() => resolve({}));
          for (const s of sockets) s.end();
        }),
    };
  });
}
