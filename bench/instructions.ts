/**
 * Instructions per request of the RESP servers, counted by valgrind's callgrind: a measure that,
 * unlike CPU time, does not move with the machine's load, the core's frequency or the cache, so
 * an A/B of a few percent shows in one run per side. It counts user-space instructions only (the
 * kernel's TCP work, about half the CPU here, is outside it), and it cannot see cache misses or
 * branch mispredictions; the CPU rounds of `npm run bench` stay the judge of the targets.
 *
 * Each server runs under callgrind with its JIT's code named (`--perf-basic-prof`) and a fixed
 * hash seed (the seed decides the command table's collisions: see bench/README.md,
 * "Instructions per request"). One long `redis-benchmark` run drives it: counting starts after
 * `--warmup` seconds and stops `--seconds` later, both inside that run, so no connection opens or
 * closes in the window and the JIT is at rest. Requests are the calls of the latin1 string slice
 * that the shared command dispatch (`examples/resp/commands.ts`, `execute`) makes once per command.
 *
 * Run: `npx tsx bench/instructions.ts [--servers raw,service] [--test ping_mbulk] [--pipeline 16]
 * [--warmup 60] [--seconds 30] [--hash-seed 7] [--top 25]` (needs `valgrind` and `redis-benchmark`).
 *
 * @module
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { num, parseArgs } from './lib/args.js';
import { type Count, countDiff, jitNamer, readCallerTree } from './lib/callgrind.js';
import {
  BUILD_DIR,
  buildChildren,
  installExitHooks,
  killAll,
  nodeArgv,
  ROOT,
  SERVER_CPU,
  ServerChild,
  spawnPinned,
} from './lib/proc.js';
import { benchSpec } from './workloads/resp.js';

/** The per-command call that counts requests (see the module comment). */
const REQUEST_MARK = 'StringSlice<(node::encoding)4>';

const SERVERS: Record<string, string> = {
  service: 'bench/servers/resp.ts',
  raw: 'bench/baseline/resp.ts',
  stream: 'bench/servers/resp-stream.ts',
  floor: 'bench/floor/resp.ts',
};

/** One server under callgrind, counted inside one long client run. */
async function measure(
  server: string,
  opts: { test: string; pipeline: number; warmup: number; seconds: number; hashSeed: number; dir: string },
): Promise<Count> {
  const out = path.join(opts.dir, `callgrind.${server}.%p`);
  const node = nodeArgv(SERVERS[server]!, [
    '--expose-gc',
    '--perf-basic-prof',
    `--hash-seed=${opts.hashSeed}`,
  ]);
  const argv = [
    'valgrind',
    '--tool=callgrind',
    '--instr-atstart=no',
    '--smc-check=all-non-file',
    `--callgrind-out-file=${out}`,
    ...node,
  ];
  const sc = await ServerChild.start({ argv, cpu: SERVER_CPU }, 120_000);
  const load = spawnPinned(benchSpec(sc.port, 1_000_000_000, 50, opts.test, opts.pipeline));
  try {
    await sleep(opts.warmup * 1000);
    execFileSync('callgrind_control', ['-i', 'on', String(sc.pid)], { stdio: 'ignore' });
    await sleep(opts.seconds * 1000);
    execFileSync('callgrind_control', ['-i', 'off', String(sc.pid)], { stdio: 'ignore' });
    execFileSync('callgrind_control', ['-d', String(sc.pid)], { stdio: 'ignore' });
  } finally {
    load.kill('SIGKILL');
    await sc.stop();
  }
  // The dump is `<out>.1`; the end-of-run file beside it holds only the shutdown.
  const dumps = readdirSync(opts.dir)
    .filter((f) => f.startsWith(`callgrind.${server}.${sc.pid}`))
    .map((f) => path.join(opts.dir, f));
  const file = dumps.sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (file === undefined) throw new Error(`no callgrind output for ${server}`);
  const tree = execFileSync('callgrind_annotate', ['--tree=caller', '--threshold=100', file], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  const perfMap = `/tmp/perf-${sc.pid}.map`;
  const count = readCallerTree(
    tree,
    jitNamer(readFileSync(perfMap, 'utf8'), `file://${ROOT}/${BUILD_DIR}/`),
    REQUEST_MARK,
  );
  rmSync(perfMap, { force: true });
  return count;
}

async function main(): Promise<void> {
  const args = parseArgs();
  const servers = (args.get('servers') ?? 'raw,service').split(',');
  for (const s of servers) if (!(s in SERVERS)) throw new Error(`--servers: unknown server ${s}`);
  const opts = {
    test: args.get('test') ?? 'ping_mbulk',
    pipeline: num(args, 'pipeline', 16),
    warmup: num(args, 'warmup', 60),
    seconds: num(args, 'seconds', 30),
    hashSeed: num(args, 'hash-seed', 7),
    dir: mkdtempSync(path.join(tmpdir(), 'tcpserver-instructions-')),
  };
  const top = num(args, 'top', 25);
  installExitHooks();
  buildChildren();
  const counts: Count[] = [];
  try {
    for (const s of servers) {
      const c = await measure(s, opts);
      counts.push(c);
      console.log(
        `${s}: ${c.total.toFixed(0)} instructions per request (${c.requests} requests counted; TurboFan ${c.compiler.toFixed(0)} per request)`,
      );
    }
  } finally {
    rmSync(opts.dir, { recursive: true, force: true });
    killAll();
  }
  if (counts.length < 2) return;
  const [a, b] = counts as [Count, Count];
  console.log(`\n${servers[1]} / ${servers[0]}: ${(b.total / a.total).toFixed(3)}`);
  console.log(`\nper request: ${servers[1]} - ${servers[0]}, ${servers[0]}, ${servers[1]}, function`);
  for (const { fn, a: x, b: y } of countDiff(a, b).slice(0, top)) {
    console.log(
      `${(y - x).toFixed(1).padStart(8)} ${x.toFixed(1).padStart(8)} ${y.toFixed(1).padStart(8)}  ${fn.slice(0, 110)}`,
    );
  }
}

await main();
