/**
 * Closing cost, cold against warm: does a graceful close cost more than raw `node:net` every
 * time, or only the first time a process runs its close path? Each child process (the service
 * mode's RESP server, then raw `node:net` with the baseline's close) serves `--rounds` servers in
 * turn; for each, this process opens `--conns` idle connections, waits past `firstRequestGrace`,
 * and the child closes the server gracefully and reports its CPU during the close
 * (`process.cpuUsage`, every thread) per closed connection. Round 1 is what the bench's idle
 * rounds measure (a fresh process); later rounds run a close path that is already compiled.
 * `--pairs` pairs of children, alternating which side starts; the medians per round and their
 * service / raw ratio are printed.
 *
 * Run: `npx tsx bench/close-warm.ts [--conns 10000] [--rounds 3] [--pairs 5]`.
 *
 * @module
 */

import { execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { num, parseArgs } from './lib/args.js';
import {
  buildChildren,
  installExitHooks,
  LineChild,
  LOAD_CPU,
  nodeArgv,
  PINNED,
  SERVER_CPU,
  spawnPinned,
} from './lib/proc.js';
import { median } from './lib/stats.js';
import { PAST_FIRST_REQUEST_GRACE_MS } from './workloads/scale.js';

type Side = 'service' | 'raw';

/** Opens `n` idle connections (bench/load/idle.ts, which answers the server's FIN with its own). */
async function openIdle(port: number, n: number): Promise<LineChild> {
  const argv = [
    ...nodeArgv('bench/load/idle.ts'),
    '--port',
    String(port),
    '--conns',
    String(n),
    '--seconds',
    '120',
  ];
  const client = new LineChild({ argv, cpu: LOAD_CPU, raiseNofile: true });
  try {
    const connected = await client.waitFor('connected', 60_000);
    if (connected.connected !== n) throw new Error(`only ${String(connected.connected)} of ${n} connected`);
    await sleep(PAST_FIRST_REQUEST_GRACE_MS);
    return client;
  } catch (err) {
    client.kill();
    throw err;
  }
}

/** One child of `side`: CPU per closed connection of each round. */
async function measure(side: Side, conns: number, rounds: number): Promise<number[]> {
  const proc = spawnPinned({
    argv: [
      ...nodeArgv('bench/lib/close-warm-child.ts', ['--expose-gc']),
      ...['--side', side, '--conns', String(conns), '--rounds', String(rounds)],
    ],
    cpu: SERVER_CPU,
    raiseNofile: true,
  });
  const out = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const result: number[] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      const ready = await out.next();
      if (ready.done === true) throw new Error(`${side}: the child exited`);
      const client = await openIdle((JSON.parse(ready.value) as { port: number }).port, conns);
      try {
        proc.stdin!.write('open\n');
        const done = await out.next();
        if (done.done === true) throw new Error(`${side}: the child exited`);
        result.push((JSON.parse(done.value) as { micros: number }).micros);
      } finally {
        client.kill();
      }
    }
  } finally {
    proc.kill();
  }
  return result;
}

const args = parseArgs();
const conns = num(args, 'conns', 10_000);
const rounds = num(args, 'rounds', 3);
installExitHooks();
if (PINNED) execFileSync('taskset', ['-p', '-c', LOAD_CPU, String(process.pid)], { stdio: 'ignore' });
buildChildren();
const pairs = num(args, 'pairs', 5);
const by: Record<Side, number[][]> = { service: [], raw: [] };
for (let pair = 0; pair < pairs; pair++) {
  const order: Side[] = pair % 2 === 0 ? ['service', 'raw'] : ['raw', 'service'];
  for (const side of order) by[side].push(await measure(side, conns, rounds));
}
console.log(`CPU per closed connection (µs), ${conns} idle connections, ${pairs} pairs of processes`);
for (let r = 0; r < rounds; r++) {
  const s = by.service.map((x) => x[r]!);
  const w = by.raw.map((x) => x[r]!);
  const cells = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' ');
  console.log(
    `round ${r + 1}${r === 0 ? ' (cold)' : ''}: service ${median(s).toFixed(1)} [${cells(s)}], raw ${median(w).toFixed(1)} [${cells(w)}], service / raw ${(median(s) / median(w)).toFixed(3)}`,
  );
}
