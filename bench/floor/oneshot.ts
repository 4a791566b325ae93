/**
 * Pull-floor one-shot server for the churn workload (see `bench/lib/pull-floor.ts`): read one
 * chunk, answer it, end.
 *
 * @module
 */

import { read, runPullFloor } from '../lib/pull-floor.js';

await runPullFloor(async (socket) => {
  const chunk = await read(socket);
  if (chunk !== null) socket.end(chunk);
});
