/**
 * Echo throughput load: `--conns` connections each keep up to `--window` bytes of `--size`-byte
 * writes in flight for `--seconds`, then stop writing and wait (bounded) for every byte to come
 * back, so bytes counted = bytes the server echoed. Prints one JSON line.
 *
 * @module
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { num, parseArgs } from '../lib/args.js';

const args = parseArgs();
const port = num(args, 'port');
const conns = num(args, 'conns', 64);
const size = num(args, 'size', 64 * 1024);
const seconds = num(args, 'seconds', 5);
const windowBytes = num(args, 'window', 4 * size);

const payload = Buffer.alloc(size, 'x');
let stopped = false;
let totalEchoed = 0;
let lastEcho = 0;
let errors = 0;

interface Stream {
  socket: net.Socket;
  sent: number;
  received: number;
}

function connect(): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const st: Stream = { socket, sent: 0, received: 0 };
    socket.once('connect', () => resolve(st));
    socket.once('error', (e) => {
      errors++;
      reject(e);
    });
  });
}

function pump(st: Stream): void {
  while (!stopped && st.sent - st.received < windowBytes) {
    st.socket.write(payload);
    st.sent += size;
  }
}

const streams = await Promise.all(Array.from({ length: conns }, connect));
let settle: () => void = () => {};
const allBack = new Promise<void>((r) => {
  settle = r;
});
function checkDone(): void {
  if (stopped && streams.every((s) => s.received >= s.sent)) settle();
}

const t0 = performance.now();
for (const st of streams) {
  st.socket.on('data', (d: Buffer) => {
    st.received += d.length;
    totalEchoed += d.length;
    lastEcho = performance.now();
    if (stopped) checkDone();
    else pump(st);
  });
  pump(st);
}

await new Promise((r) => setTimeout(r, seconds * 1000));
stopped = true;
checkDone();
const drainTimer = setTimeout(settle, 10_000);
await allBack;
clearTimeout(drainTimer);
const complete = streams.every((s) => s.received >= s.sent);
for (const st of streams) st.socket.destroy();

const elapsed = (lastEcho - t0) / 1000;
process.stdout.write(
  `${JSON.stringify({ bytes: totalEchoed, seconds: elapsed, mibps: totalEchoed / 1048576 / elapsed, complete, errors })}\n`,
);
