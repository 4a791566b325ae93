/**
 * Framework one-shot server for the churn workload as a stream-mode handler: read one chunk,
 * answer it, end the connection. The churn workload measures it beside the pull floor
 * (`bench/floor/oneshot.ts`), the same work in the same programming model on raw `node:net`.
 *
 * @module
 */

import * as tcpserver from '../../src/index.js';
import { type BenchServer, benchFrameworkServer, HOST, runServerChild } from '../lib/server-child.js';

await runServerChild(
  async (): Promise<BenchServer> =>
    benchFrameworkServer(
      tcpserver.createServer({
        network: 'tcp4',
        address: `${HOST}:0`,
        handler: async (_ctx, conn) => {
          const chunk = await conn.read();
          if (chunk) await conn.end(chunk);
        },
      }),
    ),
);
