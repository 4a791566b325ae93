/**
 * Baseline RESP server: raw `node:net` with `'data'` events, running the very same parser, command
 * table, reply writer and store as `examples/resp.ts` (from `examples/resp/`), so the two servers do
 * the same work and differ only in the plumbing. Per chunk: push it into the decoder, run every
 * complete command, write the batch of replies; pause on a full socket buffer.
 *
 * @module
 */

import type net from 'node:net';
import { execute } from '../../examples/resp/commands.js';
import { type RespCommand, RespDecoder } from '../../examples/resp/decoder.js';
import { ReplyWriter } from '../../examples/resp/reply.js';
import { Store } from '../../examples/resp/store.js';
import { FrameTooLargeError, InvalidFrameError } from '../../src/errors.js';
import { runBaseline } from '../lib/baseline.js';
import { RESP_COMMANDS } from '../lib/resp-count.js';

const store = new Store();
// One writer for every socket, as the service mode's example has: each chunk's replies are taken
// before the listener returns, so an idle socket holds no reply buffer.
const out = new ReplyWriter(64 * 1024);

/** Per-connection state, kept on the socket instead of a closure. */
interface RespSocket extends net.Socket {
  decoder: RespDecoder;
}

function onData(this: RespSocket, chunk: Buffer): void {
  const decoder = this.decoder;
  let close = false;
  try {
    decoder.push(chunk);
    let cmd: RespCommand | undefined;
    while ((cmd = decoder.next()) !== undefined) {
      if (execute(cmd, out, store)) {
        close = true; // QUIT
        break;
      }
    }
  } catch (err) {
    if (err instanceof InvalidFrameError) out.error(`ERR ${err.message}`);
    else if (err instanceof FrameTooLargeError) out.error(`ERR Protocol error: ${err.message}`);
    else throw err;
    close = true;
  }
  let ok = true;
  for (const piece of out.takePieces()) ok = this.write(piece);
  if (close) this.end();
  else if (!ok) this.pause();
}
function onDrain(this: net.Socket): void {
  this.resume();
}
// The same expired-key sweeper as the example.
const stopSweeper = store.startSweeper(100);

await runBaseline(
  (socket) => {
    const s = socket as RespSocket;
    s.decoder = new RespDecoder();
    s.on('data', onData);
    s.on('drain', onDrain);
  },
  stopSweeper,
  RESP_COMMANDS,
);
