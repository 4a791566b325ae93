/**
 * Scale load: opens `--conns` idle connections (at most `--parallel` handshakes in flight, so the
 * listen backlog never overflows), prints `{"event":"connected"}`, then waits (bounded by
 * `--seconds`) for the server to close them all, and prints how many it closed gracefully (FIN).
 *
 * @module
 */

import net from 'node:net';
import { num, parseArgs } from '../lib/args.js';

const args = parseArgs();
const port = num(args, 'port');
const conns = num(args, 'conns', 10_000);
const parallel = num(args, 'parallel', 256);
const seconds = num(args, 'seconds', 60);

let connected = 0;
let ended = 0;
let closed = 0;
let errors = 0;
let settle: () => void = () => {};
const allClosed = new Promise<void>((r) => {
  settle = r;
});
const sockets: net.Socket[] = [];

function open(): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    sockets.push(s);
    s.once('connect', () => {
      connected++;
      resolve();
    });
    s.on('end', () => {
      ended++;
    });
    s.on('error', () => {
      errors++;
      resolve();
    });
    s.on('close', () => {
      if (++closed === conns) settle();
    });
  });
}

const timer = setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ event: 'timeout', connected, ended, closed, errors })}\n`);
  process.exit(1);
}, seconds * 1000);

let next = 0;
async function worker(): Promise<void> {
  while (next < conns) {
    next++;
    await open();
  }
}
await Promise.all(Array.from({ length: Math.min(parallel, conns) }, worker));
process.stdout.write(`${JSON.stringify({ event: 'connected', connected, errors })}\n`);
await allClosed;
clearTimeout(timer);
process.stdout.write(`${JSON.stringify({ event: 'done', connected, ended, closed, errors })}\n`);
