/**
 * Connection churn against the one-shot servers: one client process opens connections as fast as
 * it can, one 1-byte round trip each, and the server closes. The framework's server is the
 * service mode (`bench/servers/oneshot.ts`), judged against raw `node:net`; the same protocol as
 * a stream-mode handler (`bench/servers/oneshot-stream.ts`) is a figure of its own beside the
 * pull floor, which runs it in the same programming model on raw `node:net`.
 *
 * @module
 */

import { type BenchConfig, serverScript, serverSpec, sides, type WorkloadContext } from '../lib/config.js';
import { lastJson, loadSpec, metered, runToEnd, ServerChild } from '../lib/proc.js';
import type { Side } from '../lib/results.js';

/** What `bench/load/churn.ts` reports. */
export interface ChurnResult {
  conns: number;
  errors: number;
  unanswered: number;
  connsPerSec: number;
}

/** Runs the churn client (`bench/load/churn.ts`, pinned to the load core) for `count` connections. */
export function churnLoad(cfg: BenchConfig, port: number, count: number): Promise<ChurnResult> {
  return runToEnd(
    loadSpec('bench/load/churn.ts', {
      port,
      count,
      concurrency: cfg.churn.concurrency,
      seconds: cfg.churn.seconds,
    }),
    cfg.churn.seconds * 1000 + 30_000,
  ).then((o) => lastJson<ChurnResult>(o));
}

/** `churnLoad` for a measured run: fails unless `name`'s server answered every connection. */
export async function churnServed(
  cfg: BenchConfig,
  port: number,
  count: number,
  name: string,
): Promise<ChurnResult> {
  const r = await churnLoad(cfg, port, count);
  if (r.conns === 0 || r.unanswered) throw new Error(`${name} churn failed: ${JSON.stringify(r)}`);
  return r;
}

/** Runs the churn figures. */
export async function runChurn({ cfg, results, log }: WorkloadContext): Promise<void> {
  const C = 'churn';
  // Churn's CPU target is judged by the paired workload (rounds in alternating order, an A/A
  // pair beside): medians of a few runs here do not resolve 5% on a noisy host.
  results.define(C, 'CPU per connection', 'µs');
  results.define(C, 'connections/s', 'conn/s', { kind: 'ratioMin', min: 0.95 });
  // The stream mode's figure: its own samples as the framework's, raw's and the floor's beside.
  const STREAM = 'CPU per connection, stream mode';
  results.define(C, STREAM, 'µs');

  const servers: { side: Side | 'stream'; sc: ServerChild }[] = [];
  try {
    for (const side of sides(cfg)) {
      const spec = serverSpec(cfg, serverScript(cfg, side, 'oneshot'), `churn-${side}`);
      servers.push({ side, sc: await ServerChild.start(spec) });
    }
    // Under --aa the framework's place runs the baseline: there is no stream mode to measure.
    if (!cfg.aa) {
      const spec = serverSpec(cfg, 'bench/servers/oneshot-stream.ts', 'churn-stream');
      servers.push({ side: 'stream', sc: await ServerChild.start(spec) });
    }
    if (!cfg.quick) {
      for (const { side, sc } of servers) {
        log(`  warmup ${side}`);
        await churnLoad(cfg, sc.port, cfg.churn.warmupCount);
      }
    }
    for (let run = 0; run < cfg.runs; run++) {
      for (const { side, sc } of servers) {
        const { value: r, m } = await metered(sc.pid, () => churnServed(cfg, sc.port, cfg.churn.count, side));
        const cpu = m.cpu;
        if (side === 'stream') results.add(C, STREAM, 'framework', cpu / r.conns);
        else {
          results.noteInterference(C, side, run, m.foreign);
          results.add(C, 'CPU per connection', side, cpu / r.conns);
          results.add(C, 'connections/s', side, r.connsPerSec);
          if (side === 'baseline' || side === 'floor') results.add(C, STREAM, side, cpu / r.conns);
        }
        log(
          `  ${C} run ${run + 1} ${side}: ${(cpu / r.conns).toFixed(1)} µs/conn, ${r.connsPerSec.toFixed(0)} conn/s (${r.errors} errors)`,
        );
      }
    }
  } finally {
    for (const { sc } of servers) await sc.stop();
  }
}
