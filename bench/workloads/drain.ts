/**
 * Drain-latency workload (framework only): 100 connections each busy for a random 0 to 200 ms when
 * `close()` is called; the figure is the time from the last handler returning to `close()`
 * resolving. The client checks that every request was answered.
 *
 * @module
 */

import { serverSpec, type WorkloadContext } from '../lib/config.js';
import { LOAD_CPU, lastJson, nodeArgv, runToEnd, ServerChild } from '../lib/proc.js';

/** Runs the drain figures. */
export async function runDrain({ cfg, results, log }: WorkloadContext): Promise<void> {
  const { conns, maxMs } = cfg.drain;
  const W = `drain ${conns} busy 0-${maxMs} ms`;
  results.define(W, 'last handler -> close() resolved', 'ms', { kind: 'absBelow', below: 5 });
  results.define(W, 'last reply written -> close() resolved', 'ms');
  results.define(W, 'close() duration', 'ms');

  for (let run = 0; run < cfg.runs; run++) {
    let sc: ServerChild | undefined;
    try {
      sc = await ServerChild.start(
        serverSpec(cfg, 'bench/servers/drain.ts', `drain-${run}`, {
          env: {
            BENCH_DRAIN_CONNS: String(conns),
            BENCH_DRAIN_MAX_MS: String(maxMs),
            BENCH_DRAIN_SEED: String(run + 1),
          },
        }),
      );
      const client = runToEnd(
        {
          argv: [...nodeArgv('bench/load/drain.ts'), '--port', String(sc.port), '--conns', String(conns)],
          cpu: LOAD_CPU,
        },
        30_000,
      );
      const r = await sc.call('result', 30_000);
      const c = lastJson<{ replies: number; ended: number; errors: number }>(await client);
      const report = r.report as { graceful: number; forced: number };
      if (c.replies !== conns || c.ended !== conns || report.forced !== 0) {
        throw new Error(`drain lost work: client ${JSON.stringify(c)}, report ${JSON.stringify(report)}`);
      }
      results.add(W, 'last handler -> close() resolved', 'framework', Number(r.drainMs));
      results.add(W, 'last reply written -> close() resolved', 'framework', Number(r.fromLastWorkMs));
      results.add(W, 'close() duration', 'framework', Number(r.closeMs));
      log(
        `  ${W} run ${run + 1}: ${Number(r.drainMs).toFixed(3)} ms after last handler, close() took ${Number(r.closeMs).toFixed(1)} ms`,
      );
    } finally {
      await sc?.stop();
    }
  }
}
