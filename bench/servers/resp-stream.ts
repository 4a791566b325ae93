/**
 * The RESP server of `examples/resp.ts` written as a stream-mode handler instead of a service:
 * one `readFrame` loop per connection, every command already received run before one write of
 * all their replies. The bench's figure for the stream mode on a request/reply protocol, beside
 * the service mode (`bench/servers/resp.ts`) and raw node:net.
 *
 * @module
 */

import { execute } from '../../examples/resp/commands.js';
import { type RespCommand, RespDecoder } from '../../examples/resp/decoder.js';
import { ReplyWriter } from '../../examples/resp/reply.js';
import { Store } from '../../examples/resp/store.js';
import { protocolErrorReply } from '../../examples/resp.js';
import * as tcpserver from '../../src/index.js';
import { RESP_COMMANDS } from '../lib/resp-count.js';
import { type BenchServer, benchFrameworkServer, HOST, runServerChild } from '../lib/server-child.js';

/** One connection: read, run every command received, answer them in one write, repeat. */
async function serveConnection(conn: tcpserver.Conn, decoder: RespDecoder, store: Store): Promise<void> {
  const out = new ReplyWriter();
  for (;;) {
    let cmd: RespCommand | null | undefined;
    let close = false;
    try {
      cmd = await conn.readFrame(decoder);
      if (cmd === null) return;
      do {
        if (execute(cmd, out, store)) {
          close = true; // QUIT: later pipelined commands are dropped, as Redis does
          break;
        }
      } while ((cmd = decoder.next()) !== undefined);
    } catch (err) {
      if (err instanceof tcpserver.IncompleteFrameError) return;
      const reply = protocolErrorReply(err);
      if (reply === undefined) throw err;
      out.error(reply);
      close = true;
    }
    // As the floor does: every piece written, then one wait if the socket is full. (An await
    // inside the loop would make TurboFan keep the array iterator across the suspension and run
    // it through the generic builtin: docs/architecture.md, "Stream mode".)
    let written: Promise<void> | undefined;
    for (const piece of out.takePieces()) written = conn.write(piece);
    if (conn.needsDrain) await written;
    if (close) {
      await conn.end();
      return;
    }
  }
}

await runServerChild(async (): Promise<BenchServer> => {
  const store = new Store();
  const stop = store.startSweeper(100);
  const srv = tcpserver.createServer({
    name: 'resp-stream',
    network: 'tcp4',
    address: `${HOST}:0`,
    handler: (_ctx, conn) => serveConnection(conn, new RespDecoder({}), store),
  });
  srv.once('close', stop);
  return benchFrameworkServer(srv, RESP_COMMANDS);
});
