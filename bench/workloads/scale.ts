/**
 * Scale workload: 10,000 concurrent idle connections per server (a fresh server process per run,
 * so memory starts from the same point): resident memory per connection over the empty server,
 * and the time a graceful close takes to end them all.
 *
 * @module
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { serverScript, serverSpec, sides, type WorkloadContext } from '../lib/config.js';
import { LineChild, LOAD_CPU, nodeArgv, ServerChild } from '../lib/proc.js';

/** Runs the scale figures. */
export async function runScale({ cfg, results, log }: WorkloadContext): Promise<void> {
  const n = cfg.scale.conns;
  const W = `scale ${n} idle`;
  results.define(W, 'RSS per connection', 'bytes', { kind: 'ratioMax', max: 1.25 });
  results.define(W, 'heap per connection', 'bytes');
  results.define(W, 'close() all', 'ms', { kind: 'absBelow', below: 1000 });

  for (let run = 0; run < cfg.runs; run++) {
    for (const side of sides(cfg)) {
      const script = serverScript(cfg, side, 'echo');
      let sc: ServerChild | undefined;
      let client: LineChild | undefined;
      try {
        sc = await ServerChild.start(serverSpec(cfg, script, `scale-${side}-${run}`, { raiseNofile: true }));
        const before = await sc.call('mem');
        client = new LineChild({
          argv: [...nodeArgv('bench/load/idle.ts'), '--port', String(sc.port), '--conns', String(n)].concat(
            '--parallel',
            String(cfg.scale.parallel),
          ),
          cpu: LOAD_CPU,
          raiseNofile: true,
        });
        const connected = await client.waitFor('connected', 60_000);
        if (connected.connected !== n)
          throw new Error(`${side}: only ${String(connected.connected)} of ${n} connected`);
        // The client sees the handshake before the server accepts: wait until all are accepted.
        const deadline = Date.now() + 30_000;
        let open = 0;
        while ((open = Number((await sc.call('open')).open)) < n && Date.now() < deadline) await sleep(20);
        if (open < n) throw new Error(`${side}: server has ${open} of ${n} connections open`);
        const after = await sc.call('mem');
        const closed = await sc.call('close', 30_000);
        const done = await client.waitFor('done', 30_000);
        if (done.ended !== n) throw new Error(`${side}: ${String(done.ended)} of ${n} got a FIN`);
        const rss = (Number(after.rss) - Number(before.rss)) / n;
        const heap = (Number(after.heapUsed) - Number(before.heapUsed)) / n;
        const closeMs = Number(closed.closeMs);
        results.add(W, 'RSS per connection', side, rss);
        results.add(W, 'heap per connection', side, heap);
        results.add(W, 'close() all', side, closeMs);
        log(
          `  ${W} run ${run + 1} ${side}: ${rss.toFixed(0)} B RSS/conn, ${heap.toFixed(0)} B heap/conn, close ${closeMs.toFixed(1)} ms`,
        );
      } finally {
        client?.kill();
        await sc?.stop();
      }
    }
  }
}
