/**
 * Framework echo server for the bench: the handler is the one-liner users write.
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
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  return benchFrameworkServer(srv);
});
