/**
 * Framework RESP server for the bench: `examples/resp.ts` as users run it, on 127.0.0.1.
 *
 * @module
 */

import { createRespServer } from '../../examples/resp.js';
import { RESP_COMMANDS } from '../lib/resp-count.js';
import { type BenchServer, benchFrameworkServer, HOST, runServerChild } from '../lib/server-child.js';

await runServerChild(async (): Promise<BenchServer> => {
  const srv = createRespServer({ network: 'tcp4', address: `${HOST}:0` });
  return benchFrameworkServer(srv, RESP_COMMANDS);
});
