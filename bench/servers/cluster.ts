/**
 * The cluster workload's server: a `tcpserver/cluster` supervisor whose workers serve the bench's
 * one-shot handler (`BENCH_CLUSTER_KIND=oneshot`, from `./oneshot.ts`) or `examples/resp.ts`
 * (`resp`), all on one port of 127.0.0.1.
 *
 * - `BENCH_CLUSTER_WORKERS` (default 2): how many workers.
 * - `BENCH_CLUSTER_REUSE_PORT=1`: every worker binds the port with `SO_REUSEPORT` and the kernel
 *   spreads connections; otherwise node:cluster's round-robin, where the primary accepts every
 *   connection and sends its handle to a worker over IPC.
 *
 * The primary speaks the bench's control protocol (`bench/lib/server-child.ts`) once every worker
 * is ready, and answers `pids` with its own pid and the workers'. SIGTERM to the primary drains
 * everything (`shutdownOnSignals`, `exit: true`): the workers close, then the primary exits. If the
 * harness goes away (its pipe closes, or it kills the primary), the workers see the IPC channel
 * close and drain and exit by themselves.
 *
 * @module
 */

import net from 'node:net';
import { createRespServer } from '../../examples/resp.js';
import { isSupervisedWorker, serveWorker, supervise } from '../../src/cluster/index.js';
import { shutdownOnSignals } from '../../src/index.js';
import { type BenchServer, HOST, runServerChild } from '../lib/server-child.js';
import { createOneshotServer } from './oneshot.js';

const kind = process.env.BENCH_CLUSTER_KIND;
if (kind !== 'oneshot' && kind !== 'resp')
  throw new Error(`BENCH_CLUSTER_KIND=${kind}: expected oneshot or resp`);

/** A port of 127.0.0.1 nobody listens on right now (every worker must bind the same one). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

if (isSupervisedWorker()) {
  const address = `${HOST}:${process.env.BENCH_CLUSTER_PORT}`;
  await serveWorker(
    kind === 'resp' ? createRespServer({ network: 'tcp4', address }) : createOneshotServer(address),
  );
} else {
  const port = await freePort();
  const sup = supervise({
    workers: Number(process.env.BENCH_CLUSTER_WORKERS ?? 2),
    reusePort: process.env.BENCH_CLUSTER_REUSE_PORT === '1',
    restartSignal: null,
    env: { BENCH_CLUSTER_PORT: String(port) },
  });
  shutdownOnSignals(sup, { exit: true, timeout: 10_000 });
  await runServerChild(async (): Promise<BenchServer> => {
    await sup.serving;
    return {
      port,
      open: () => sup.stats().open,
      close: async () => ({ report: await sup.close({ timeout: 10_000 }) }),
      commands: {
        pids: async () => ({ primary: process.pid, workers: sup.workers().map((w) => w.pid) }),
      },
    };
  });
}
