/**
 * The child of `bench/close-warm.ts`: `--rounds` servers of one `--side` in turn (the service
 * mode's RESP server, or the raw `node:net` baseline's, `startBaseline`), each closed
 * gracefully once the parent has opened its connections, with the CPU of each close per closed
 * connection printed. stdout: `{"port":N}` per server, then `{"closing":r}` as its close begins
 * and `{"round":r,"micros":x}`; stdin: one line per server when its connections are open.
 *
 * @module
 */

import { createInterface } from 'node:readline';
import { num, parseArgs } from './args.js';
import { startBaseline } from './baseline.js';

type Side = 'service' | 'raw';

/** The child: `rounds` servers in turn, each closed once its connections are open. */
async function child(side: Side, conns: number, rounds: number): Promise<void> {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let round = 1; round <= rounds; round++) {
    const server = await startServer(side);
    process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
    await lines.next(); // the parent has the connections open, and they are past the grace
    gc?.();
    gc?.();
    // Marks where the close starts, for a parent counting V8's trace lines (`--jit`).
    process.stdout.write(`${JSON.stringify({ closing: round })}\n`);
    const before = process.cpuUsage();
    await server.close();
    const cpu = process.cpuUsage(before);
    process.stdout.write(`${JSON.stringify({ round, micros: (cpu.user + cpu.system) / conns })}\n`);
  }
}

async function startServer(side: Side): Promise<{ port: number; close: () => Promise<unknown> }> {
  if (side === 'service') {
    const tcpserver = await import('../../src/index.js');
    const { respService } = await import('../../examples/resp.js');
    const { Store } = await import('../../examples/resp/store.js');
    const srv = tcpserver.createServer({
      network: 'tcp4',
      address: '127.0.0.1:0',
      service: respService({}, new Store()),
    });
    const [addr] = await srv.listen();
    if (addr === undefined || addr.network === 'unix') throw new Error('expected a TCP listener');
    return { port: addr.port, close: () => srv.close({ timeout: 30_000 }) };
  }
  return startBaseline(() => {});
}

const args = parseArgs();
const side = args.get('side');
if (side !== 'service' && side !== 'raw')
  throw new Error(`--side must be service or raw, not ${String(side)}`);
await child(side, num(args, 'conns', 10_000), num(args, 'rounds', 3));
