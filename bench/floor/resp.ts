/**
 * Pull-floor RESP server (see `bench/lib/pull-floor.ts`): the loop of `examples/resp.ts` (read,
 * run every command received, one write for their replies) with the same parser, commands,
 * reply writer and store, on raw `node:net`.
 *
 * @module
 */

import { execute } from '../../examples/resp/commands.js';
import { type RespCommand, RespDecoder } from '../../examples/resp/decoder.js';
import { ReplyWriter } from '../../examples/resp/reply.js';
import { Store } from '../../examples/resp/store.js';
import { drained, read, runPullFloor } from '../lib/pull-floor.js';
import { RESP_COMMANDS } from '../lib/resp-count.js';

const store = new Store();
const stopSweeper = store.startSweeper(100);

await runPullFloor(
  async (socket) => {
    const decoder = new RespDecoder();
    const out = new ReplyWriter();
    for (;;) {
      let cmd: RespCommand | undefined = decoder.next();
      while (cmd === undefined) {
        const chunk = await read(socket);
        if (chunk === null) return;
        decoder.push(chunk);
        cmd = decoder.next();
      }
      let close = false;
      do {
        if (execute(cmd, out, store)) {
          close = true; // QUIT
          break;
        }
      } while ((cmd = decoder.next()) !== undefined);
      let ok = true;
      for (const piece of out.takePieces()) ok = socket.write(piece);
      if (close) return;
      if (!ok) await drained(socket);
    }
  },
  stopSweeper,
  RESP_COMMANDS,
);
