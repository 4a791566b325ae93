/**
 * Framework drain-latency server: each request keeps its handler busy for a random 0 to
 * `BENCH_DRAIN_MAX_MS` ms (a seeded PRNG), then echoes. The moment the `BENCH_DRAIN_CONNS`-th
 * request starts, the server calls `close()` itself; the `result` command reports the time from the
 * last handler returning to `close()` resolving.
 *
 * @module
 */

import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import * as tcpserver from '../../src/index.js';
import { type BenchServer, benchFrameworkServer, HOST, runServerChild } from '../lib/server-child.js';

const conns = Number(process.env.BENCH_DRAIN_CONNS ?? 100);
const maxMs = Number(process.env.BENCH_DRAIN_MAX_MS ?? 200);
let seed = Number(process.env.BENCH_DRAIN_SEED ?? 1) >>> 0;

/** mulberry32: small, fast, seeded, good enough for spreading work times. */
function random(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

let busy = 0;
let lastWorkDone = 0;
let lastReturn = 0;
let closeCalledAt = 0;
let closing: Promise<Record<string, unknown>> | undefined;

await runServerChild(async (): Promise<BenchServer> => {
  const srv = tcpserver.createServer({
    network: 'tcp4',
    address: `${HOST}:0`,
    handler: async (_ctx, conn) => {
      try {
        for await (const chunk of conn) {
          const work = random() * maxMs;
          if (++busy === conns) {
            closeCalledAt = performance.now();
            closing = srv.close({ timeout: 10_000 }).then((report) => {
              const resolvedAt = performance.now();
              return {
                drainMs: resolvedAt - lastReturn,
                fromLastWorkMs: resolvedAt - lastWorkDone,
                closeMs: resolvedAt - closeCalledAt,
                report,
              };
            });
          }
          await sleep(work);
          await conn.write(chunk);
          lastWorkDone = performance.now();
        }
      } finally {
        lastReturn = performance.now();
      }
    },
  });
  return benchFrameworkServer(srv, {
    // Waits (the harness bounds it) for the self-triggered close and reports its timings.
    result: async () => {
      const deadline = Date.now() + 20_000;
      while (!closing && Date.now() < deadline) await sleep(5);
      if (!closing) throw new Error(`only ${busy} of ${conns} requests arrived`);
      return await closing;
    },
  });
});
