/**
 * Framework one-shot server for the churn workload: read one chunk, answer it, end the connection
 * (a connection-per-request protocol; the server closes first, so TIME_WAIT stays on the server
 * side and one client can churn without exhausting its ephemeral ports).
 *
 * @module
 */

import * as tcpserver from '../../src/index.js';
import { type BenchServer, benchFrameworkServer, HOST, runServerChild } from '../lib/server-child.js';

await runServerChild(async (): Promise<BenchServer> => {
  const srv = tcpserver.createServer({
    network: 'tcp4',
    address: `${HOST}:0`,
    handler: async (_ctx, conn) => {
      const chunk = await conn.read();
      if (chunk) await conn.end(chunk);
    },
  });
  return benchFrameworkServer(srv);
});
