/**
 * Framework RESP server for the bench: `examples/resp.ts` as users run it, on 127.0.0.1.
 *
 * @module
 */

import { createRespServer } from '../../examples/resp.js';
import { type BenchServer, HOST, runServerChild } from '../lib/server-child.js';

await runServerChild(async (): Promise<BenchServer> => {
  const srv = createRespServer({ network: 'tcp4', address: `${HOST}:0` });
  const [addr] = await srv.listen();
  if (!addr || addr.network === 'unix') throw new Error('expected a TCP listener');
  return {
    port: addr.port,
    open: () => srv.stats().open,
    close: async () => ({ report: await srv.close({ timeout: 10_000 }) }),
  };
});
