/**
 * Child-side half of the bench's server protocol: every server under test (framework or baseline)
 * runs through this, so both carry exactly the same control plumbing.
 *
 * stdout: `{"event":"ready","port":N,"pid":P}` once listening, then one reply line per command.
 * stdin: `{"id":n,"cmd":"mem"|"open"|"close"|"heap"}` lines. When stdin closes (the bench ended or died)
 * the process exits, so a server never outlives the harness.
 *
 * @module
 */

import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import type { Server } from '../../src/index.js';

/** What a server under test exposes to the harness. */
export interface BenchServer {
  /** The bound TCP port on 127.0.0.1. */
  port: number;
  /** Connections currently open. */
  open(): number;
  /** Graceful close of the listener and every connection; resolves when all are gone. */
  close(): Promise<Record<string, unknown>>;
  /** Extra commands a particular server answers. */
  commands?: Record<string, () => Promise<Record<string, unknown>>>;
}

/** Listen address every bench server uses; port 0 lets the kernel pick. */
export const HOST = '127.0.0.1';

function reply(msg: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

/** Starts a server and serves the harness's commands until stdin closes. */
export async function runServerChild(start: () => Promise<BenchServer>): Promise<void> {
  const srv = await start();
  const gc = (globalThis as { gc?: () => void }).gc;
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const { id, cmd } = JSON.parse(line) as { id: number; cmd: string };
    void (async () => {
      try {
        if (cmd === 'mem') {
          // Two full collections so garbage does not count as per-connection memory.
          gc?.();
          gc?.();
          const m = process.memoryUsage();
          const spaces = Object.fromEntries(
            getHeapSpaceStatistics().map((s) => [s.space_name, s.physical_space_size]),
          );
          reply({
            id,
            rss: m.rss,
            heapUsed: m.heapUsed,
            heapTotal: m.heapTotal,
            external: m.external,
            spaces,
            gc: Boolean(gc),
          });
        } else if (cmd === 'heap') {
          // A heap snapshot for bench/heap.ts (per-connection memory by constructor).
          gc?.();
          reply({
            id,
            file: writeHeapSnapshot(`${tmpdir()}/tcpserver-bench-${process.pid}-${id}.heapsnapshot`),
          });
        } else if (cmd === 'open') {
          reply({ id, open: srv.open() });
        } else if (cmd === 'close') {
          const t0 = performance.now();
          const extra = await srv.close();
          reply({ id, closeMs: performance.now() - t0, ...extra });
        } else if (srv.commands?.[cmd]) {
          reply({ id, ...(await srv.commands[cmd]()) });
        } else {
          reply({ id, error: `unknown command ${cmd}` });
        }
      } catch (e) {
        reply({ id, error: String((e as Error)?.stack ?? e) });
      }
    })();
  });
  rl.on('close', () => process.exit(0));
  reply({ event: 'ready', port: srv.port, pid: process.pid });
}

/**
 * Listens a framework server on its TCP address and describes it to the harness: open
 * connections from `stats()`, a graceful `close()` with the report. One helper for every
 * framework server child.
 */
export async function benchFrameworkServer(
  srv: Server,
  commands?: BenchServer['commands'],
): Promise<BenchServer> {
  const [addr] = await srv.listen();
  if (!addr || addr.network === 'unix') throw new Error('expected a TCP listener');
  return {
    port: addr.port,
    open: () => srv.stats().open,
    close: async () => ({ report: await srv.close({ timeout: 10_000 }) }),
    ...(commands === undefined ? {} : { commands }),
  };
}
