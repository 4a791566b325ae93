/**
 * Echo server: `npm start`. Listens on `ADDRESS` (default `:8080`), logs one line per
 * connection, ends connections silent for `IDLE_TIMEOUT` ms (default 60 000), and on Ctrl-C
 * drains gracefully and prints the shutdown report (a second Ctrl-C forces).
 *
 *   npm start
 *   nc localhost 8080
 */
import { pathToFileURL } from 'node:url';
import * as tcpserver from '../src/index.js';
import { consoleLogger } from './console-logger.js';

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

async function main(): Promise<void> {
  const srv = createEchoServer(process.env.ADDRESS ?? ':8080', Number(process.env.IDLE_TIMEOUT ?? 60_000));
  srv.on('connState', (conn: tcpserver.Conn, state: tcpserver.ConnState) => {
    if (state === 'new') console.log(`conn ${conn.id} from ${conn.remoteAddress}:${conn.remotePort}`);
    if (state === 'closed') console.log(`conn ${conn.id} closed`);
  });
  srv.on('handlerError', (error: Error, conn: tcpserver.Conn) =>
    console.error(`conn ${conn.id}: ${error.message}`),
  );
  const shutdown = tcpserver.shutdownOnSignals(srv, {
    timeout: 10_000,
    logger: consoleLogger('echo'),
  });
  const addresses = await srv.listen();
  console.log(
    `echo server listening on ${addresses.map(tcpserver.formatAddress).join(', ')} (Ctrl-C to stop)`,
  );
  const report = await shutdown.done; // progress and the final report are printed by the helper
  process.exitCode = report.forced === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: Error & { code?: string }) => {
    console.error(`echo: ${error.code ?? ''} ${error.message}`);
    process.exitCode = 1;
  });
}
