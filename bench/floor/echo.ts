/**
 * Pull-floor echo server (see `bench/lib/pull-floor.ts`): the framework's one-line echo handler,
 * written on raw `node:net` with the least a pull-style read can cost.
 *
 * @module
 */

import { drained, read, runPullFloor } from '../lib/pull-floor.js';

await runPullFloor(async (socket) => {
  for (let chunk = await read(socket); chunk !== null; chunk = await read(socket)) {
    if (!socket.write(chunk)) await drained(socket);
  }
});
