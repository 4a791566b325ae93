/**
 * The child of `bench/close-warm.ts`: `--rounds` servers of one `--side` in turn (the service
 * mode's RESP server, or raw `node:net` closed as bench/lib/baseline.ts closes), each closed
 * gracefully once the parent has opened its connections, with the CPU of each close per closed
 * connection printed. stdout: `{"port":N}` per server, then `{"round":r,"micros":x}`; stdin: one
 * line per server when its connections are open.
 *
 * @module
 */

import net from 'node:net';
import { createInterface } from 'node:readline';
import { num, parseArgs } from './args.js';

type Side = 'service' | 'raw';
/** Past the framework's default `firstRequestGrace` (1 s): silent connections are idle then. */
const GRACE_MS = 1_500;

/** The child: `rounds` servers in turn, each closed once its connections are open. */
async function child(side: Side, conns: number, rounds: number): Promise<void> {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let round = 1; round <= rounds; round++) {
    const server = await startServer(side);
    process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
    await lines.next(); // the parent has the connections open
    await new Promise((resolve) => setTimeout(resolve, GRACE_MS));
    gc?.();
    gc?.();
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
  // As bench/lib/baseline.ts closes: stop accepting, FIN every socket, done once all are gone.
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.end();
      }),
  };
}

const args = parseArgs();
const side = args.get('side');
if (side !== 'service' && side !== 'raw')
  throw new Error(`--side must be service or raw, not ${String(side)}`);
await child(side, num(args, 'conns', 10_000), num(args, 'rounds', 3));
