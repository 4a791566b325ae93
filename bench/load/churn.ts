/**
 * Connection churn: `--concurrency` loops each open a connection, send one byte, get it back with
 * the server's FIN (the one-shot servers close first, so TIME_WAIT piles up on the server side, not
 * in this process's ephemeral ports), and start over, until `--count` connections are done or
 * `--seconds` pass. Prints one JSON line.
 *
 * @module
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { num, parseArgs } from '../lib/args.js';

const args = parseArgs();
const port = num(args, 'port');
const count = num(args, 'count', 20_000);
const concurrency = num(args, 'concurrency', 16);
const seconds = num(args, 'seconds', 20);

const one = Buffer.from('c');
let started = 0;
let done = 0;
let errors = 0;
let unanswered = 0;
const deadline = performance.now() + seconds * 1000;

function once(): Promise<void> {
  return new Promise((resolve) => {
    let replied = false;
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
    s.once('connect', () => s.write(one));
    s.once('data', () => {
      replied = true;
    });
    s.once('error', () => {
      errors++;
    });
    // The server's FIN ends our side too (allowHalfOpen is off), then 'close'.
    s.once('close', (hadError) => {
      if (!hadError && replied) done++;
      else if (!hadError) unanswered++;
      resolve();
    });
  });
}

async function loop(): Promise<void> {
  while (started < count && performance.now() < deadline) {
    started++;
    await once();
  }
}

const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, loop));
const elapsed = (performance.now() - t0) / 1000;
process.stdout.write(
  `${JSON.stringify({ conns: done, errors, unanswered, seconds: elapsed, connsPerSec: done / elapsed })}\n`,
);
