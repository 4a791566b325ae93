/**
 * Instructions per request of the RESP servers, counted by valgrind's callgrind: a measure that,
 * unlike CPU time, does not move with the machine's load, the core's frequency or the cache, so
 * an A/B of a few percent shows in one run per side. It counts user-space instructions only (the
 * kernel's TCP work, about half the CPU here, is outside it), and it does not see cache misses or
 * branch mispredictions unless `--cache-sim` asks callgrind to simulate them (a model of the
 * caches and predictor, several times slower); the CPU rounds of `npm run bench` stay the judge
 * of the targets.
 *
 * Each server runs under callgrind with its JIT's code named (`--perf-basic-prof`) and a fixed
 * hash seed (the seed decides the command table's collisions: see bench/README.md,
 * "Instructions per request"). One long `redis-benchmark` run drives it: counting starts after
 * `--warmup` seconds and stops `--seconds` later, both inside that run, so no connection opens or
 * closes in the window and the JIT is at rest. Requests are the commands the server ran in the
 * window, by its own count (`examples/resp/commands.ts`, `commandsExecuted`), read through the
 * harness at both ends of the window.
 *
 * `--workload close` counts the closing cost instead: `--conns` idle connections opened as the
 * idle rounds of `npm run bench` open them, `--warmup` seconds of rest, then the graceful close of
 * all of them, from the harness's command to the last connection gone, per closed connection.
 *
 * `--workload churn` counts a connection per request instead (the churn workload's one-shot
 * servers): `--warmup-conns` connections run uncounted, then `--conns` counted ones, from the first
 * connect to the server's last connection gone, per connection.
 *
 * Run: `npx tsx bench/instructions.ts [--servers raw,service] [--workload requests|close|churn]
 * [--test ping_mbulk] [--pipeline 16] [--warmup 60 (close: 5)] [--seconds 30]
 * [--conns 10000 (churn: 3000)] [--warmup-conns 5000]
 * [--hash-seed 7] [--semi-space 2 (MiB, as npm run bench; 0: V8's growth)] [--top 25] [--cache-sim] [--keep]` (`--keep` leaves the dumps and perf maps). Needs
 * `valgrind`, and `redis-benchmark` for requests.
 *
 * @module
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { num, parseArgs } from './lib/args.js';
import {
  type Count,
  countDiff,
  jitNamer,
  readCallerTree,
  readTotals,
  type Simulated,
  simulatedPer,
} from './lib/callgrind.js';
import {
  BUILD_DIR,
  buildChildren,
  installExitHooks,
  killAll,
  lastJson,
  loadSpec,
  nodeArgv,
  ROOT,
  runToEnd,
  SEMI_SPACE_MIB,
  SERVER_CPU,
  ServerChild,
  spawnPinned,
  youngGenFlags,
} from './lib/proc.js';
import type { ChurnResult } from './workloads/churn.js';
import { benchSpec } from './workloads/resp.js';
import { expectFins, type IdleTimeouts, openIdle } from './workloads/scale.js';

/** A server under callgrind runs some 50 times slower: the idle run's waits, stretched. */
const UNDER_VALGRIND: IdleTimeouts = { open: 600_000, close: 600_000 };

const SERVERS: Record<string, string> = {
  service: 'bench/servers/resp.ts',
  raw: 'bench/baseline/resp.ts',
  stream: 'bench/servers/resp-stream.ts',
  floor: 'bench/floor/resp.ts',
};

/** The churn workload's one-shot servers, by the same names. */
const ONESHOT: Record<string, string> = {
  service: 'bench/servers/oneshot.ts',
  raw: 'bench/baseline/oneshot.ts',
  stream: 'bench/servers/oneshot-stream.ts',
  floor: 'bench/floor/oneshot.ts',
};

interface Options {
  workload: 'requests' | 'close' | 'churn';
  test: string;
  pipeline: number;
  warmup: number;
  seconds: number;
  conns: number;
  warmupConns: number;
  hashSeed: number;
  semiSpace: number;
  dir: string;
  keep: boolean;
  cacheSim: boolean;
}

/** One server under callgrind, counting nothing until `callgrind_control -i on`. */
function startUnderCallgrind(server: string, opts: Options): Promise<ServerChild> {
  const node = nodeArgv((opts.workload === 'churn' ? ONESHOT : SERVERS)[server]!, [
    '--expose-gc',
    '--perf-basic-prof',
    `--hash-seed=${opts.hashSeed}`,
    ...youngGenFlags(opts.semiSpace),
  ]);
  const argv = [
    'valgrind',
    '--tool=callgrind',
    '--instr-atstart=no',
    '--smc-check=all-non-file',
    ...(opts.cacheSim ? ['--cache-sim=yes', '--branch-sim=yes'] : []),
    `--callgrind-out-file=${path.join(opts.dir, `callgrind.${server}.%p`)}`,
    ...node,
  ];
  return ServerChild.start({ argv, cpu: SERVER_CPU, raiseNofile: opts.workload === 'close' }, 120_000);
}

/** Counts `window` (instrumentation on around it), then dumps the count. */
async function counted(sc: ServerChild, window: () => Promise<unknown>): Promise<void> {
  execFileSync('callgrind_control', ['-i', 'on', String(sc.pid)], { stdio: 'ignore' });
  await window();
  execFileSync('callgrind_control', ['-i', 'off', String(sc.pid)], { stdio: 'ignore' });
  execFileSync('callgrind_control', ['-d', String(sc.pid)], { stdio: 'ignore' });
}

/** Reads the dump of a stopped server: instructions per `per` (requests, or closed connections). */
function readDump(server: string, pid: number, opts: Options, per: number): Count {
  // The dump is `<out>.1`; the end-of-run file beside it holds only the shutdown.
  const dumps = readdirSync(opts.dir)
    .filter((f) => f.startsWith(`callgrind.${server}.${pid}`))
    .map((f) => path.join(opts.dir, f));
  const file = dumps.sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (file === undefined) throw new Error(`no callgrind output for ${server}`);
  const annotate = (args: string[]): string =>
    execFileSync('callgrind_annotate', [...args, file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  // Instructions only in the tree, whatever else the run simulated.
  const tree = annotate(['--tree=caller', '--show=Ir', '--threshold=100']);
  const perfMap = `/tmp/perf-${pid}.map`;
  const count = readCallerTree(
    tree,
    jitNamer(readFileSync(perfMap, 'utf8'), `file://${ROOT}/${BUILD_DIR}/`),
    per,
  );
  if (opts.cacheSim) count.simulated = simulatedPer(readTotals(annotate(['--threshold=1'])), count.requests);
  // Kept beside the dumps with --keep, for callgrind_annotate by hand.
  if (opts.keep) renameSync(perfMap, path.join(opts.dir, `perf-${server}-${pid}.map`));
  else rmSync(perfMap, { force: true });
  return count;
}

/** The commands a RESP bench server has run (its `requests` harness command). */
async function commandsRun(sc: ServerChild): Promise<number> {
  const n = Number((await sc.call('requests', UNDER_VALGRIND.close)).requests);
  if (!Number.isInteger(n)) throw new Error('the server did not answer `requests` with a count');
  return n;
}

/** Requests: counted inside one long client run. */
async function measureRequests(server: string, opts: Options): Promise<Count> {
  const sc = await startUnderCallgrind(server, opts);
  const load = spawnPinned(benchSpec(sc.port, 1_000_000_000, 50, opts.test, opts.pipeline));
  let requests = 0;
  try {
    await sleep(opts.warmup * 1000);
    // The server's own count at both ends of the window, from inside it: the two harness calls
    // are counted too (some 0.01% of the window), and no request runs uncounted.
    await counted(sc, async () => {
      const first = await commandsRun(sc);
      await sleep(opts.seconds * 1000);
      requests = (await commandsRun(sc)) - first;
    });
  } finally {
    load.kill('SIGKILL');
    await sc.stop();
  }
  if (requests <= 0) throw new Error(`${server}: no request ran in the counted window`);
  return readDump(server, sc.pid, opts, requests);
}

/**
 * Closing: `--conns` idle connections opened (as the idle rounds of `npm run bench` do), then
 * the graceful close of all of them counted, from the harness's command to the last connection
 * gone; per closed connection. Every connection must have got its FIN.
 */
async function measureClose(server: string, opts: Options): Promise<Count> {
  const n = opts.conns;
  const sc = await startUnderCallgrind(server, opts);
  try {
    const client = await openIdle(sc, n, server, { timeouts: UNDER_VALGRIND });
    try {
      await sleep(opts.warmup * 1000); // the accept burst's compiles settle
      await sc.call('mem', UNDER_VALGRIND.close); // as the idle rounds do before closing: two full GCs
      await counted(sc, () => sc.call('close', UNDER_VALGRIND.close));
      await expectFins(client, n, server, UNDER_VALGRIND);
    } finally {
      client.kill();
    }
  } finally {
    await sc.stop();
  }
  return readDump(server, sc.pid, opts, n);
}

/** `count` one-shot connections from the churn client, 16 at a time (as the churn rounds run); all must be answered. */
async function churn(sc: ServerChild, server: string, count: number): Promise<void> {
  const spec = loadSpec('bench/load/churn.ts', { port: sc.port, count, concurrency: 16, seconds: 3600 });
  const r = lastJson<ChurnResult>(await runToEnd(spec, UNDER_VALGRIND.close));
  if (r.conns !== count || r.unanswered || r.errors)
    throw new Error(`${server} churn failed: ${JSON.stringify(r)}`);
}

/**
 * Churn: `--warmup-conns` connections uncounted (the JIT settles), then `--conns` counted, until
 * the server's last connection is gone (the client sees the FIN before the server's 'close').
 */
async function measureChurn(server: string, opts: Options): Promise<Count> {
  const sc = await startUnderCallgrind(server, opts);
  try {
    await churn(sc, server, opts.warmupConns);
    await sleep(opts.warmup * 1000);
    await counted(sc, async () => {
      await churn(sc, server, opts.conns);
      while (Number((await sc.call('open', UNDER_VALGRIND.close)).open) > 0) await sleep(100);
    });
  } finally {
    await sc.stop();
  }
  return readDump(server, sc.pid, opts, opts.conns);
}

/** The simulated figures, as printed. */
const SIMULATED: ReadonlyArray<[keyof Simulated, string]> = [
  ['l1Data', 'L1 data misses'],
  ['l1Instructions', 'L1 instruction misses'],
  ['lastLevel', 'last-level misses'],
  ['mispredicts', 'mispredicted branches'],
];

/** Every simulated figure by its label, with `value` formatting each. */
function describe(value: (k: keyof Simulated) => string): string {
  return SIMULATED.map(([k, label]) => `${label} ${value(k)}`).join(', ');
}

async function main(): Promise<void> {
  const args = parseArgs();
  const servers = (args.get('servers') ?? 'raw,service').split(',');
  for (const s of servers) if (!(s in SERVERS)) throw new Error(`--servers: unknown server ${s}`);
  const workload = args.get('workload') ?? 'requests';
  if (workload !== 'requests' && workload !== 'close' && workload !== 'churn')
    throw new Error(`--workload: requests, close or churn, not ${workload}`);
  const opts: Options = {
    workload,
    test: args.get('test') ?? 'ping_mbulk',
    pipeline: num(args, 'pipeline', 16),
    warmup: num(args, 'warmup', workload === 'requests' ? 60 : 5),
    seconds: num(args, 'seconds', 30),
    conns: num(args, 'conns', workload === 'churn' ? 3_000 : 10_000),
    warmupConns: num(args, 'warmup-conns', 5_000),
    hashSeed: num(args, 'hash-seed', 7),
    semiSpace: num(args, 'semi-space', SEMI_SPACE_MIB),
    dir: mkdtempSync(path.join(tmpdir(), 'tcpserver-instructions-')),
    keep: args.has('keep'),
    cacheSim: args.has('cache-sim'),
  };
  const top = num(args, 'top', 25);
  const unit = { requests: 'request', close: 'closed connection', churn: 'connection' }[workload];
  const measure = { requests: measureRequests, close: measureClose, churn: measureChurn }[workload];
  installExitHooks();
  buildChildren();
  const counts: Count[] = [];
  try {
    for (const s of servers) {
      const c = await measure(s, opts);
      counts.push(c);
      console.log(
        `${s}: ${c.total.toFixed(0)} instructions per ${unit} (${c.requests} counted; TurboFan ${c.compiler.toFixed(0)} per ${unit})`,
      );
      const sim = c.simulated;
      if (sim !== undefined) console.log(`  simulated, per ${unit}: ${describe((k) => sim[k].toFixed(2))}`);
    }
  } finally {
    if (opts.keep) console.log(`callgrind files and perf maps kept in ${opts.dir}`);
    else rmSync(opts.dir, { recursive: true, force: true });
    killAll();
  }
  if (counts.length < 2) return;
  const [a, b] = counts as [Count, Count];
  console.log(`\n${servers[1]} / ${servers[0]}: ${(b.total / a.total).toFixed(3)}`);
  const [simA, simB] = [a.simulated, b.simulated];
  if (simA !== undefined && simB !== undefined)
    console.log(`  simulated: ${describe((k) => (simB[k] / simA[k]).toFixed(3))}`);
  console.log(`\nper ${unit}: ${servers[1]} - ${servers[0]}, ${servers[0]}, ${servers[1]}, function`);
  for (const { fn, a: x, b: y } of countDiff(a, b).slice(0, top)) {
    console.log(
      `${(y - x).toFixed(1).padStart(8)} ${x.toFixed(1).padStart(8)} ${y.toFixed(1).padStart(8)}  ${fn.slice(0, 110)}`,
    );
  }
}

await main();
