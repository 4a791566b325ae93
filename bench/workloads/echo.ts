/**
 * Echo workloads against the framework echo server, the raw `node:net` baseline and the pull floor:
 * streaming throughput and 1-byte ping-pong latency. The servers stay up for the whole section (an
 * idle one costs nothing) so runs alternate A B C A B C on warmed-up processes.
 *
 * @module
 */

import { serverScript, serverSpec, sides, type WorkloadContext } from '../lib/config.js';
import { lastJson, loadSpec, metered, runToEnd, ServerChild } from '../lib/proc.js';
import type { Side } from '../lib/results.js';

const MIB = 1024 * 1024;

interface StreamResult {
  bytes: number;
  seconds: number;
  mibps: number;
  complete: boolean;
  errors: number;
}
interface PingResult {
  count: number;
  p50: number;
  p99: number;
}

/** Runs the echo throughput and ping-pong figures. */
export async function runEcho({ cfg, results, log }: WorkloadContext): Promise<void> {
  const E = `echo ${cfg.echo.conns}x${cfg.echo.size / 1024}KiB`;
  const P = 'ping-pong 1 B';
  results.define(E, 'CPU per MiB', 'µs', { kind: 'ratioMax', max: 1.05 });
  results.define(E, 'throughput', 'MiB/s', { kind: 'ratioMin', min: 0.95 });
  results.define(P, 'p50 latency', 'µs');
  results.define(P, 'p99 latency', 'µs', { kind: 'ratioMax', max: 1.1 });

  const servers: { side: Side; sc: ServerChild }[] = [];
  try {
    for (const side of sides(cfg)) {
      const spec = serverSpec(cfg, serverScript(cfg, side, 'echo'), `echo-${side}`);
      servers.push({ side, sc: await ServerChild.start(spec) });
    }

    const stream = (port: number, seconds: number) =>
      runToEnd(
        loadSpec('bench/load/echo-stream.ts', { port, conns: cfg.echo.conns, size: cfg.echo.size, seconds }),
        seconds * 1000 + 30_000,
      ).then((o) => lastJson<StreamResult>(o));
    const ping = (port: number, count: number, warmup: number) =>
      runToEnd(loadSpec('bench/load/pingpong.ts', { port, count, warmup }), 60_000).then((o) =>
        lastJson<PingResult>(o),
      );
    if (!cfg.quick) {
      for (const { side, sc } of servers) {
        log(`  warmup ${side}`);
        await stream(sc.port, cfg.echo.warmupSeconds);
        await ping(sc.port, cfg.pingpong.warmup, 0);
      }
    }

    for (let run = 0; run < cfg.runs; run++) {
      for (const { side, sc } of servers) {
        const { value: r, m } = await metered(sc.pid, () => stream(sc.port, cfg.echo.seconds));
        const cpu = m.cpu;
        results.noteInterference(E, side, run, m.foreign);
        if (!r.complete || r.errors) throw new Error(`${side} echo lost data: ${JSON.stringify(r)}`);
        results.add(E, 'CPU per MiB', side, cpu / (r.bytes / MIB));
        results.add(E, 'throughput', side, r.mibps);
        log(
          `  ${E} run ${run + 1} ${side}: ${(cpu / (r.bytes / MIB)).toFixed(1)} µs/MiB, ${r.mibps.toFixed(0)} MiB/s`,
        );
      }
    }
    for (let run = 0; run < cfg.runs; run++) {
      for (const { side, sc } of servers) {
        const r = await ping(sc.port, cfg.pingpong.count, cfg.pingpong.warmup);
        results.add(P, 'p50 latency', side, r.p50);
        results.add(P, 'p99 latency', side, r.p99);
        log(`  ${P} run ${run + 1} ${side}: p50 ${r.p50.toFixed(1)} µs, p99 ${r.p99.toFixed(1)} µs`);
      }
    }
  } finally {
    for (const { sc } of servers) await sc.stop();
  }
}
