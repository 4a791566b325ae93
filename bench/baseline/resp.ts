/**
 * Baseline RESP server: raw `node:net` with `'data'` events, running the very same parser, command
 * table, reply writer and store as `examples/resp.ts` (from `examples/resp/`), so the two servers do
 * the same work and differ only in the plumbing. Per chunk: push it into the decoder, run every
 * complete command, write the batch of replies; pause on a full socket buffer.
 *
 * @module
 */

import net from 'node:net';
import { execute } from '../../examples/resp/commands.js';
import { type RespCommand, RespDecoder } from '../../examples/resp/decoder.js';
import { ReplyWriter } from '../../examples/resp/reply.js';
import { Store } from '../../examples/resp/store.js';
import { FrameTooLargeError, InvalidFrameError } from '../../src/errors.js';
import { type BenchServer, HOST, runServerChild } from '../lib/server-child.js';

const store = new Store();
const sockets = new Set<net.Socket>();

/** Per-connection state, kept on one object instead of closures. */
interface RespSocket extends net.Socket {
  decoder: RespDecoder;
  out: ReplyWriter;
}

function onData(this: RespSocket, chunk: Buffer): void {
  const { decoder, out } = this;
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
  for (const piece of out.take()) ok = this.write(piece);
  if (close) this.end();
  else if (!ok) this.pause();
}
function onDrain(this: net.Socket): void {
  this.resume();
}
function onClose(this: net.Socket): void {
  sockets.delete(this);
}
function ignore(): void {}

function onConnection(socket: net.Socket): void {
  const s = socket as RespSocket;
  s.decoder = new RespDecoder();
  s.out = new ReplyWriter();
  sockets.add(s);
  s.on('data', onData);
  s.on('drain', onDrain);
  s.on('error', ignore);
  s.on('close', onClose);
}

await runServerChild(async (): Promise<BenchServer> => {
  // noDelay as the framework's default does; the same expired-key sweeper as the example.
  const server = net.createServer({ noDelay: true }, onConnection);
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const stopSweeper = store.startSweeper(100);
  return {
    port: (server.address() as net.AddressInfo).port,
    open: () => sockets.size,
    close: () =>
      new Promise((resolve) => {
        stopSweeper();
        server.close(() => resolve({}));
        for (const s of sockets) s.end();
      }),
  };
});
