/**
 * Echo server: `npm start`. Listens on `ADDRESS` (default `:8080`), logs one line per
 * connection, ends connections silent for `IDLE_TIMEOUT` ms (default 60 000), and on Ctrl-C
 * drains gracefully and prints the shutdown report (a second Ctrl-C forces).
 *
 *   npm start
 *   nc localhost 8080
 *   WORKERS=4 npm start     # every core: SIGHUP rolls the workers
 *   UPGRADE=1 npm start     # one process that replaces itself on SIGHUP, PID_FILE=app.pid
 */

import * as tcpserver from '../src/index.js';
import { isMainModule } from './main-module.js';
import { ModeError, readMode, runService, type ServiceMode } from './service.js';

/** Builds the echo server; exported so tests and benchmarks run the very same code. */
export function createEchoServer(address = ':8080', idleTimeout = 60_000): tcpserver.Server {
  return tcpserver.newServer(
    tcpserver.name('echo'),
    tcpserver.network('tcp'),
    tcpserver.address(address),
    tcpserver.idleTimeout(idleTimeout),
    tcpserver.shutdownTimeout(10_000),
    tcpserver.handler(async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    }),
  );
}

/**
 * Runs the example (examples/service.ts): one process, or `WORKERS=<n>` (SIGHUP rolls the
 * workers), or `UPGRADE=1` (SIGHUP replaces the process, listeners handed over); `PID_FILE`.
 */
async function main(): Promise<void> {
  let mode: ServiceMode;
  try {
    mode = readMode(process.env);
  } catch (error) {
    if (!(error instanceof ModeError)) throw error;
    console.error(`echo: ${error.message}`);
    process.exitCode = 2;
    return;
  }
  const build = (): tcpserver.Server => {
    const srv = createEchoServer(process.env.ADDRESS ?? ':8080', Number(process.env.IDLE_TIMEOUT ?? 60_000));
    srv.on('connState', (conn: tcpserver.Conn, state: tcpserver.ConnState) => {
      if (state === 'new') console.log(`conn ${conn.id} from ${conn.remoteAddress}:${conn.remotePort}`);
      if (state === 'closed') console.log(`conn ${conn.id} closed`);
    });
    srv.on('handlerError', (error: Error, conn: tcpserver.Conn) =>
      console.error(`conn ${conn.id}: ${error.message}`),
    );
    return srv;
  };
  // Progress and the final report are printed by shutdownOnSignals' logger.
  process.exitCode = await runService(
    { name: 'echo', servers: () => [build()], closeDelay: 0, shutdownTimeout: 10_000 },
    mode,
  );
}

if (isMainModule(import.meta.url)) {
  main().catch((error: Error & { code?: string }) => {
    console.error(`echo: ${error.code ?? ''} ${error.message}`);
    process.exitCode = 1;
  });
}
