/**
 * Scale workload: 10,000 concurrent idle connections per server (a fresh server process per run,
 * so memory starts from the same point): resident memory per connection over the empty server,
 * and the time a graceful close takes to end them all.
 *
 * @module
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { type BenchConfig, serverScript, serverSpec, sides, type WorkloadContext } from '../lib/config.js';
import { schedCpuNs } from '../lib/paired.js';
import { LineChild, LOAD_CPU, nodeArgv, ServerChild } from '../lib/proc.js';

/** What one server cost per idle connection, and what closing them all took. */
export interface IdleRun {
  /** Resident memory per connection over the empty server (after two full GCs), bytes. */
  rss: number;
  /** Heap per connection, bytes. */
  heap: number;
  /** Graceful close of every connection, ms. */
  closeMs: number;
  /** Server CPU (schedstat) spent by that close, per connection, µs. */
  closeCpu: number;
}

/** How long an idle run may wait: natively, or stretched for a server under valgrind. */
export interface IdleTimeouts {
  /** For all connections to connect and to be accepted, ms. */
  open: number;
  /** For the server's close and for every FIN, ms. */
  close: number;
}

const NATIVE: IdleTimeouts = { open: 60_000, close: 30_000 };

/**
 * A connection that has sent nothing is idle, to a graceful close, only once it is older than
 * `firstRequestGrace` (1 s by default, measured to within an eighth of it): a younger one keeps
 * the rest of it for a first request that may have raced the close (README, "Graceful shutdown in
 * one table"). The idle measures close idle connections, so they wait this long after the last
 * accept; otherwise a close would time the grace, not the closing.
 */
export const PAST_FIRST_REQUEST_GRACE_MS = 1_250;

/**
 * Opens `n` idle connections to the server `sc` from a load process on the load core, the way
 * every idle measure does: at most `parallel` handshakes in flight, then waits until the server
 * has accepted all of them (the client sees the handshake before the server accepts), and until
 * all of them are past their first-request grace. The client waits for its FINs at most
 * `seconds`. On failure the client is killed before the throw.
 */
export async function openIdle(
  sc: ServerChild,
  n: number,
  tag: string,
  opts: { parallel?: number; seconds?: number; timeouts?: IdleTimeouts } = {},
): Promise<LineChild> {
  const timeouts = opts.timeouts ?? NATIVE;
  const argv = [...nodeArgv('bench/load/idle.ts'), '--port', String(sc.port), '--conns', String(n)];
  if (opts.parallel !== undefined) argv.push('--parallel', String(opts.parallel));
  argv.push('--seconds', String(opts.seconds ?? Math.ceil((timeouts.open + timeouts.close) / 1000)));
  const client = new LineChild({ argv, cpu: LOAD_CPU, raiseNofile: true });
  try {
    const connected = await client.waitFor('connected', timeouts.open);
    if (connected.connected !== n)
      throw new Error(`${tag}: only ${String(connected.connected)} of ${n} connected`);
    const deadline = Date.now() + timeouts.open;
    let open = 0;
    while ((open = Number((await sc.call('open', timeouts.open)).open)) < n && Date.now() < deadline)
      await sleep(20);
    if (open < n) throw new Error(`${tag}: server has ${open} of ${n} connections open`);
    await sleep(PAST_FIRST_REQUEST_GRACE_MS);
    return client;
  } catch (err) {
    client.kill();
    throw err;
  }
}

/** Waits until the client of `openIdle` has seen every one of its `n` connections end with a FIN. */
export async function expectFins(
  client: LineChild,
  n: number,
  tag: string,
  timeouts = NATIVE,
): Promise<void> {
  const done = await client.waitFor('done', timeouts.close);
  if (done.ended !== n) throw new Error(`${tag}: ${String(done.ended)} of ${n} got a FIN`);
}

/**
 * One run of `n` idle connections against a fresh server running `script`: memory before and
 * after, then a graceful close, metered; checks that every connection connected, was accepted,
 * and got a FIN.
 */
export async function idleRun(cfg: BenchConfig, script: string, tag: string, n: number): Promise<IdleRun> {
  let sc: ServerChild | undefined;
  let client: LineChild | undefined;
  try {
    sc = await ServerChild.start(serverSpec(cfg, script, tag, { raiseNofile: true }));
    const before = await sc.call('mem');
    client = await openIdle(sc, n, tag, { parallel: cfg.scale.parallel });
    const after = await sc.call('mem');
    const cpu0 = schedCpuNs(sc.pid);
    const closed = await sc.call('close', NATIVE.close);
    const cpu1 = schedCpuNs(sc.pid);
    await expectFins(client, n, tag);
    return {
      rss: (Number(after.rss) - Number(before.rss)) / n,
      heap: (Number(after.heapUsed) - Number(before.heapUsed)) / n,
      closeMs: Number(closed.closeMs),
      closeCpu: (cpu1 - cpu0) / 1000 / n,
    };
  } finally {
    client?.kill();
    await sc?.stop();
  }
}

/** Runs the scale figures. */
export async function runScale({ cfg, results, log }: WorkloadContext): Promise<void> {
  const n = cfg.scale.conns;
  const W = `scale ${n} idle`;
  results.define(W, 'RSS per connection', 'bytes', { kind: 'ratioMax', max: 1.25 });
  results.define(W, 'heap per connection', 'bytes');
  results.define(W, 'close() all', 'ms', { kind: 'absBelow', below: 1000 });
  results.define(W, 'CPU per closed connection', 'µs');

  for (let run = 0; run < cfg.runs; run++) {
    for (const side of sides(cfg)) {
      const r = await idleRun(cfg, serverScript(cfg, side, 'echo'), `scale-${side}-${run}`, n);
      results.add(W, 'RSS per connection', side, r.rss);
      results.add(W, 'heap per connection', side, r.heap);
      results.add(W, 'close() all', side, r.closeMs);
      results.add(W, 'CPU per closed connection', side, r.closeCpu);
      log(
        `  ${W} run ${run + 1} ${side}: ${r.rss.toFixed(0)} B RSS/conn, ${r.heap.toFixed(0)} B heap/conn, close ${r.closeMs.toFixed(1)} ms, ${r.closeCpu.toFixed(1)} µs CPU/conn`,
      );
    }
  }
}
