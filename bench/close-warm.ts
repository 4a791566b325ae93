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
 * With `--jit`, the children run with V8's `--trace-opt --trace-deopt`, and each round also
 * reports what V8's optimizing compiler did during the close: functions compiled, the compile
 * jobs' wall time per closed connection (the jobs run on V8's worker threads, which share the
 * pinned core with the main thread, so this bounds their CPU from above), deopts, and deopts of
 * code whose assumptions about a field broke (a field's type or constness changed). The
 * tracing costs CPU of its own: compare those rounds' CPU only with each other.
 *
 * Run: `npx tsx bench/close-warm.ts [--conns 10000] [--rounds 3] [--pairs 5] [--jit]
 * [--semi-space 2 (MiB, as npm run bench; 0: V8's growth)]`.
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
  SEMI_SPACE_MIB,
  SERVER_CPU,
  spawnPinned,
  youngGenFlags,
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

/** What V8's optimizing compiler did during one close (`--jit`). */
interface Jit {
  compiles: number;
  /** The compile jobs' wall time, summed: the middle figure of each "took a, b, c ms" line. */
  compileMs: number;
  deopts: number;
  /** Optimized code thrown away because a field it relied on changed ("code dependencies"). */
  dependencyDeopts: number;
}

/** One round of one child: CPU per closed connection, and the JIT's work under `--jit`. */
interface Round {
  micros: number;
  jit: Jit;
}

/** Counts one `--trace-opt` / `--trace-deopt` line into `jit`. */
function countTrace(jit: Jit, line: string): void {
  if (line.startsWith('[completed compiling')) {
    jit.compiles++;
    const took = /took [\d.]+, ([\d.]+), [\d.]+ ms/.exec(line);
    if (took !== null) jit.compileMs += Number(took[1]);
  } else if (line.startsWith('[bailout')) jit.deopts++;
  else if (line.startsWith('[marking dependent code') && line.includes('code dependencies'))
    jit.dependencyDeopts++;
}

/** One child of `side`: each round's CPU per closed connection (and, with `jit`, V8's work). */
async function measure(
  side: Side,
  conns: number,
  rounds: number,
  jit: boolean,
  semiSpace: number,
): Promise<Round[]> {
  const flags = [
    '--expose-gc',
    ...youngGenFlags(semiSpace),
    ...(jit ? ['--trace-opt', '--trace-deopt'] : []),
  ];
  const proc = spawnPinned({
    argv: [
      ...nodeArgv('bench/lib/close-warm-child.ts', flags),
      ...['--side', side, '--conns', String(conns), '--rounds', String(rounds)],
    ],
    cpu: SERVER_CPU,
    raiseNofile: true,
  });
  const out = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  let counting: Jit | undefined;
  /** The child's next JSON line; trace lines on the way are counted while a close runs. */
  const next = async (): Promise<Record<string, number>> => {
    for (;;) {
      const line = await out.next();
      if (line.done === true) throw new Error(`${side}: the child exited`);
      if (line.value.startsWith('{')) return JSON.parse(line.value) as Record<string, number>;
      if (counting !== undefined) countTrace(counting, line.value);
    }
  };
  const result: Round[] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      const client = await openIdle((await next()).port!, conns);
      try {
        proc.stdin!.write('open\n');
        await next(); // {"closing":round}: trace lines from here on are the close's
        counting = { compiles: 0, compileMs: 0, deopts: 0, dependencyDeopts: 0 };
        const done = await next();
        result.push({ micros: done.micros!, jit: counting });
        counting = undefined;
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
const jit = args.has('jit');
const semiSpace = num(args, 'semi-space', SEMI_SPACE_MIB);
const by: Record<Side, Round[][]> = { service: [], raw: [] };
for (let pair = 0; pair < pairs; pair++) {
  const order: Side[] = pair % 2 === 0 ? ['service', 'raw'] : ['raw', 'service'];
  for (const side of order) by[side].push(await measure(side, conns, rounds, jit, semiSpace));
}
const young =
  semiSpace > 0 ? `young generation ${semiSpace} MiB per semi-space` : "V8's own young generation";
console.log(
  `CPU per closed connection (µs), ${conns} idle connections, ${pairs} pairs of processes, ${young}`,
);
const cells = (xs: number[], digits: number) => xs.map((x) => x.toFixed(digits)).join(' ');
for (let r = 0; r < rounds; r++) {
  const s = by.service.map((x) => x[r]!.micros);
  const w = by.raw.map((x) => x[r]!.micros);
  console.log(
    `round ${r + 1}${r === 0 ? ' (cold)' : ''}: service ${median(s).toFixed(1)} [${cells(s, 1)}], raw ${median(w).toFixed(1)} [${cells(w, 1)}], service / raw ${(median(s) / median(w)).toFixed(3)}`,
  );
  if (!jit) continue;
  for (const side of ['service', 'raw'] as const) {
    const j = by[side].map((x) => x[r]!.jit);
    const list = (f: (x: Jit) => number) => `${median(j.map(f))} [${cells(j.map(f), 0)}]`;
    const compileMicros = (median(j.map((x) => x.compileMs)) * 1000) / conns;
    console.log(
      `  ${side}, JIT during the close: ${list((x) => x.compiles)} functions compiled, compile jobs ${compileMicros.toFixed(1)} µs per connection, ${list((x) => x.deopts)} deopts, ${list((x) => x.dependencyDeopts)} dependency deopts`,
    );
  }
}
