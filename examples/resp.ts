/**
 * A key-value server speaking Redis's RESP2, enough for the real `redis-cli` and
 * `redis-benchmark`: PING, ECHO, SET (EX/PX/NX/XX/KEEPTTL/GET), GET, DEL, EXISTS, INCR, MSET, MGET,
 * DBSIZE, FLUSHALL, QUIT, CONFIG GET and COMMAND.
 *
 * ```sh
 * npx tsx examples/resp.ts          # ADDRESS=127.0.0.1:7000 to choose where
 * redis-cli -p 6380 SET greeting hello
 * redis-benchmark -p 6380 -q -t ping,set,get -P 16
 * ```
 *
 * Each connection runs one loop: decode a command with `conn.readFrame(decoder)`, then every
 * command already received (pipelining), then one `conn.write()` for all their replies. Since
 * every decoded command is answered before the next read, a graceful shutdown answers all the
 * pipelined commands a client already sent, then ends the connection.
 *
 * @module
 */

import { pathToFileURL } from 'node:url';
import * as tcpserver from '../src/index.js';
import { consoleLogger } from './console-logger.js';
import { execute } from './resp/commands.js';
import { type RespCommand, RespDecoder, type RespDecoderOptions } from './resp/decoder.js';
import { ReplyWriter } from './resp/reply.js';
import { Store } from './resp/store.js';

/** Options of {@link createRespServer}: the server's, the protocol limits, and the key space. */
export interface RespServerOptions extends Omit<tcpserver.ServerOptions, 'handler'>, RespDecoderOptions {
  /** The key space; pass one to share it between servers or inspect it in tests. Default: a new one. */
  store?: Store;
  /** Ms between two passes of the expired-key sweeper (one unref'd timer); 0 disables it. Default 100. */
  sweepInterval?: number;
}

/** The default address of the example: Redis's port plus one, to not collide with a real Redis. */
export const DEFAULT_ADDRESS = ':6380';

/**
 * Builds (without starting) a tcpserver `Server` that speaks RESP2. Throws `InvalidOptionError`
 * for a bad limit or server option, before anything binds.
 */
export function createRespServer(options: RespServerOptions = {}): tcpserver.Server {
  const {
    maxBulkLength,
    maxInlineLength,
    maxArgs,
    maxRequestLength,
    store = new Store(),
    sweepInterval = 100,
    ...serverOptions
  } = options;
  const limits: RespDecoderOptions = { maxBulkLength, maxInlineLength, maxArgs, maxRequestLength };
  new RespDecoder(limits); // validates the limits now rather than on the first connection
  const srv = tcpserver.createServer({
    name: 'resp',
    address: DEFAULT_ADDRESS,
    ...serverOptions,
    handler: (_ctx, conn) => serveConnection(conn, new RespDecoder(limits), store),
  });
  if (sweepInterval > 0) {
    srv.once('listening', () => {
      const stop = store.startSweeper(sweepInterval);
      srv.once('close', stop);
    });
  }
  return srv;
}

/** The reply line of a decoder error, as Redis words it, or undefined if err is not one. */
function protocolErrorReply(err: unknown): string | undefined {
  if (err instanceof tcpserver.InvalidFrameError) return `ERR ${err.message}`;
  if (err instanceof tcpserver.FrameTooLargeError) return `ERR Protocol error: ${err.message}`;
  return undefined;
}

/** One connection: read, run every command received, answer them in one write, repeat. */
async function serveConnection(conn: tcpserver.Conn, decoder: RespDecoder, store: Store): Promise<void> {
  const out = new ReplyWriter();
  for (;;) {
    let cmd: RespCommand | null | undefined;
    let close = false;
    try {
      // null: the peer closed, or the server is shutting down and we have nothing left to answer.
      cmd = await conn.readFrame(decoder);
      if (cmd === null) return;
      do {
        if (execute(cmd, out, store)) {
          close = true; // QUIT: later pipelined commands are dropped, as Redis does
          break;
        }
      } while ((cmd = decoder.next()) !== undefined);
    } catch (err) {
      // The peer closing in the middle of a command is its business: nobody is left to answer.
      if (err instanceof tcpserver.IncompleteFrameError) return;
      const reply = protocolErrorReply(err);
      if (reply === undefined) throw err;
      // Answer what was decoded before the bad bytes, then the error, then hang up: the stream
      // cannot be resynchronized.
      out.error(reply);
      close = true;
    }
    for (const piece of out.take()) {
      const written = conn.write(piece);
      // Accepted at once is the usual case: skip the await (a microtask per batch); a full socket waits.
      if (conn.needsDrain) await written;
    }
    if (close) {
      await conn.end();
      return;
    }
  }
}

/** Runs the example: listen on `ADDRESS`, drain on the first SIGINT/SIGTERM, force on the second. */
async function main(): Promise<void> {
  const srv = createRespServer({ address: process.env.ADDRESS ?? DEFAULT_ADDRESS });
  const bound = await srv.listen();
  console.log(`resp: listening on ${bound.map(tcpserver.formatAddress).join(', ')}`);
  // First SIGINT/SIGTERM drains (with progress lines), a second one forces; the report ends it.
  const shutdown = tcpserver.shutdownOnSignals(srv, { logger: consoleLogger('resp') });
  const report = await shutdown.done;
  process.exitCode = report.forced === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
