/**
 * One-connection 1-byte ping-pong: send one byte, wait for it to come back, repeat. The first
 * `--warmup` round trips are not recorded. Prints p50/p99/mean in microseconds as one JSON line.
 *
 * @module
 */

import net from 'node:net';
import { num, parseArgs } from '../lib/args.js';
import { percentile } from '../lib/stats.js';

const args = parseArgs();
const port = num(args, 'port');
const count = num(args, 'count', 20_000);
const warmup = num(args, 'warmup', 2_000);
const maxSeconds = num(args, 'max-seconds', 30);

const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
await new Promise<void>((resolve, reject) => {
  socket.once('connect', resolve);
  socket.once('error', reject);
});
socket.setNoDelay(true);

const samples = new Float64Array(count);
const one = Buffer.from('p');
const deadline = Date.now() + maxSeconds * 1000;
let i = -warmup;
let t = process.hrtime.bigint();

await new Promise<void>((resolve, reject) => {
  socket.on('error', reject);
  socket.on('data', () => {
    const now = process.hrtime.bigint();
    if (i >= 0) samples[i] = Number(now - t) / 1000;
    i++;
    if (i >= count || Date.now() > deadline) return resolve();
    t = process.hrtime.bigint();
    socket.write(one);
  });
  socket.write(one);
});
socket.destroy();

const got = Array.from(samples.subarray(0, Math.max(0, i)));
const mean = got.reduce((a, b) => a + b, 0) / (got.length || 1);
process.stdout.write(
  `${JSON.stringify({ count: got.length, p50: percentile(got, 50), p99: percentile(got, 99), mean })}\n`,
);
