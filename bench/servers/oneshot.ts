/**
 * Framework one-shot server for the churn workload: read one chunk, answer it, end the connection
 * (a connection-per-request protocol; the server closes first, so TIME_WAIT stays on the server
 * side and one client can churn without exhausting its ephemeral ports).
 *
 * Run as a script it is a bench server child; the cluster workload's workers
 * (`bench/servers/cluster.ts`) import {@link createOneshotServer} to serve the same handler.
 *
 * @module
 */

import { pathToFileURL } from 'node:url';
import * as tcpserver from '../../src/index.js';
import { type BenchServer, benchFrameworkServer, HOST, runServerChild } from '../lib/server-child.js';

/** The one-shot server on `address` (default: 127.0.0.1, a port the kernel picks). */
export function createOneshotServer(address = `${HOST}:0`): tcpserver.Server {
  return tcpserver.createServer({
    network: 'tcp4',
    address,
    handler: async (_ctx, conn) => {
      const chunk = await conn.read();
      if (chunk) await conn.end(chunk);
    },
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runServerChild(async (): Promise<BenchServer> => benchFrameworkServer(createOneshotServer()));
}
