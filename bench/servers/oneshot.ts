/**
 * Framework one-shot server for the churn workload, on the service mode: the first chunk is the
 * request, its reply is the same bytes, then the connection ends (a connection-per-request
 * protocol; the server closes first, so TIME_WAIT stays on the server side and one client can
 * churn without exhausting its ephemeral ports). The same protocol as a stream-mode handler is
 * `oneshot-stream.ts`, measured beside it against the pull floor.
 *
 * Run as a script it is a bench server child; the cluster workload's workers
 * (`bench/servers/cluster.ts`) import {@link createOneshotServer} to serve the same service.
 *
 * @module
 */

import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import * as tcpserver from '../../src/index.js';
import { type BenchServer, benchFrameworkServer, HOST, runServerChild } from '../lib/server-child.js';

/** A chunk as it arrived is the frame: the one-shot protocol has no framing of its own. */
class ChunkDecoder implements tcpserver.Decoder<Buffer> {
  #chunk: Buffer | undefined = undefined;

  get buffered(): number {
    return this.#chunk?.length ?? 0;
  }

  push(chunk: Buffer): void {
    // The pass calls next() after every push, so one is held only after end(), when no frame
    // is read any more: later bytes are dropped rather than kept.
    this.#chunk ??= chunk;
  }

  next(): Buffer | undefined {
    const chunk = this.#chunk;
    this.#chunk = undefined;
    return chunk;
  }

  end(): undefined {
    return undefined;
  }
}

/**
 * The one-shot server on `address` (default: 127.0.0.1, a port the kernel picks), with `options`
 * beside its own (a test's `maxConnectionAge`).
 */
export function createOneshotServer(
  address = `${HOST}:0`,
  options: Omit<tcpserver.ServerOptions, 'handler' | 'service'> = {},
): tcpserver.Server {
  return tcpserver.createServer({
    ...options,
    network: 'tcp4',
    address,
    service: {
      decoder: () => new ChunkDecoder(),
      call: (chunk: Buffer, _ctx, conn) => {
        // The reply, then FIN once it is flushed; no later chunk is read.
        void conn.end(chunk);
        return undefined;
      },
    },
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  await runServerChild(async (): Promise<BenchServer> => benchFrameworkServer(createOneshotServer()));
}
