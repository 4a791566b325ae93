/**
 * Drain-latency load: opens `--conns` connections, then sends one byte on each and waits for every
 * reply and for the server to close every connection (bounded by `--seconds`). Prints one JSON line
 * saying how many replies came back: a graceful shutdown must lose none.
 *
 * @module
 */

import net from 'node:net';
import { num, parseArgs } from '../lib/args.js';

const args = parseArgs();
const port = num(args, 'port');
const conns = num(args, 'conns', 100);
const seconds = num(args, 'seconds', 20);

let replies = 0;
let ended = 0;
let errors = 0;

const sockets = await Promise.all(
  Array.from(
    { length: conns },
    () =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
  ),
);

const timer = setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ timeout: true, replies, ended, errors })}\n`);
  process.exit(1);
}, seconds * 1000);

await Promise.all(
  sockets.map(
    (s) =>
      new Promise<void>((resolve) => {
        s.on('data', (d: Buffer) => {
          replies += d.length;
        });
        s.on('end', () => {
          ended++;
        });
        s.on('error', () => {
          errors++;
        });
        s.on('close', () => resolve());
        s.write('d');
      }),
  ),
);
clearTimeout(timer);
process.stdout.write(`${JSON.stringify({ replies, ended, errors })}\n`);
