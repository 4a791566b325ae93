/**
 * `npm run bench`: every workload against the framework and the raw `node:net` baseline, run
 * alternately, reduced to medians and framework/baseline ratios, judged against the targets of
 * the performance issue, printed as a table and written to bench/results/latest.json (and a
 * timestamped copy).
 *
 * Flags: `--quick` (smoke mode: every path once, tiny counts, checks nothing about speed),
 * `--runs N` (default 5), `--rounds N` (rounds of the paired workload, default 30),
 * `--rounds-per-process N` (the paired workload's servers start afresh every N rounds, default 5),
 * `--only paired,resp,echo,churn,scale,drain,cluster`, `--profile` (V8 CPU
 * profiles of the server children into bench/results/profiles/), `--aa` (A/A calibration:
 * baseline vs baseline),
 * `--semi-space N` (MiB per semi-space of every Node server's young generation, default 2; 0 leaves
 * V8's own growth: see bench/README.md, "Fairness"), `--match 'GET -P 16'` (only the RESP configurations, or the paired workload's idle figures with
 * `--match idle`, whose label contains the text), `--servers service,raw` (only these servers in the
 * paired workload), `--against
 * <rev>` (the framework built from another commit runs beside this one: see lib/against.ts).
 *
 * @module
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildAgainst } from './lib/against.js';
import { num, parseArgs } from './lib/args.js';
import { type BenchConfig, fullConfig, quickConfig, type WorkloadContext } from './lib/config.js';
import { PairedResults, renderPairedTable } from './lib/paired.js';
import {
  buildChildren,
  CLK_TCK,
  commandLog,
  installExitHooks,
  killAll,
  LOAD_CPU,
  PINNED,
  ROOT,
  SEMI_SPACE_MIB,
  SERVER_CPU,
} from './lib/proc.js';
import { type FigureResult, ModeResults, Results, renderModeTable, renderTable } from './lib/results.js';
import { runChurn } from './workloads/churn.js';
import { runCluster } from './workloads/cluster.js';
import { runDrain } from './workloads/drain.js';
import { runEcho } from './workloads/echo.js';
import { runPaired } from './workloads/paired.js';
import { redisBenchmarkMissing, runResp } from './workloads/resp.js';
import { runScale } from './workloads/scale.js';

const WORKLOADS = ['paired', 'resp', 'echo', 'churn', 'scale', 'drain', 'cluster'] as const;
type Workload = (typeof WORKLOADS)[number];

function cpuModel(): string {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const mhz = /^cpu MHz\s*:\s*(.+)$/m.exec(info)?.[1];
  return `${model.trim()}${mhz ? ` @ ${Number(mhz).toFixed(0)} MHz` : ''} x ${os.cpus().length}`;
}

function toolVersion(cmd: string): string {
  try {
    return execFileSync(cmd, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'not installed';
  }
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'none';
  }
}

/**
 * Which results file a run writes: only a full, real run of every workload is `latest`; a real
 * run of the cluster workload alone is `cluster-node<major>` (its record per Node line, since
 * reusePort mode needs Node >= 22.12); a real run of the paired workload alone is `paired`.
 */
function resultsName(cfg: BenchConfig, partial: boolean, clusterOnly: boolean, pairedOnly: boolean): string {
  if (cfg.quick) return 'quick';
  if (cfg.aa) return 'aa';
  if (cfg.profile) return 'profile';
  if (cfg.against !== '') return 'against';
  if (clusterOnly && cfg.match === '') return `cluster-node${process.versions.node.split('.')[0]}`;
  if (pairedOnly && cfg.match === '' && cfg.servers.length === 0) return 'paired';
  return partial ? 'partial' : 'latest';
}

async function main(): Promise<number> {
  installExitHooks();
  // The harness itself stays off the server core (it only waits on children, but still).
  if (PINNED) execFileSync('taskset', ['-p', '-c', LOAD_CPU, String(process.pid)], { stdio: 'ignore' });
  const args = parseArgs();
  const quick = args.has('quick');
  const cfg: BenchConfig = quick
    ? quickConfig()
    : fullConfig(num(args, 'runs', 5), num(args, 'rounds', 30), num(args, 'rounds-per-process', 5));
  cfg.profile = args.has('profile');
  cfg.aa = args.has('aa');
  cfg.match = args.get('match') ?? '';
  cfg.servers = args.get('servers')?.split(',') ?? [];
  cfg.semiSpace = num(args, 'semi-space', SEMI_SPACE_MIB);
  const againstRev = args.get('against');
  if (againstRev !== undefined) cfg.against = buildAgainst(againstRev);
  const only = new Set((args.get('only') ?? WORKLOADS.join(',')).split(',') as Workload[]);
  for (const w of only)
    if (!WORKLOADS.includes(w)) throw new Error(`unknown workload ${w}; use ${WORKLOADS}`);
  if (cfg.profile) mkdirSync(path.join(ROOT, 'bench/results/profiles'), { recursive: true });

  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    cpu: cpuModel(),
    kernel: `${os.type()} ${os.release()}`,
    clkTck: CLK_TCK,
    redisBenchmark: toolVersion('redis-benchmark'),
    redisServer: toolVersion('redis-server'),
    commit: gitCommit(),
    mode: quick ? 'quick' : 'full',
    aa: cfg.aa,
    against: cfg.against,
    runs: cfg.runs,
    pinning: PINNED
      ? `servers: taskset -c ${SERVER_CPU}; load generators and this runner: taskset -c ${LOAD_CPU}`
      : 'NOT PINNED (needs taskset and 2 CPUs): speed figures are meaningless',
    config: cfg,
    commands: [] as string[],
  };
  console.log(
    `tcpserver bench (${meta.mode}${cfg.aa ? ', A/A calibration' : ''}${cfg.against ? `, against ${cfg.against}` : ''}), ${cfg.runs} run(s) per server`,
  );
  console.log(`node ${meta.node} (V8 ${meta.v8}), ${meta.cpu}, ${meta.kernel}, CLK_TCK ${CLK_TCK}`);
  console.log(`${meta.redisBenchmark}; ${meta.redisServer}`);
  console.log(`${meta.pinning}`);
  console.log(
    `young generation: ${cfg.semiSpace > 0 ? `${cfg.semiSpace} MiB per semi-space in every Node server` : "V8's own growth (--semi-space 0)"}\n`,
  );

  buildChildren();
  const results = new Results();
  const modes = new ModeResults();
  const paired = new PairedResults();
  const t0 = Date.now();
  const ctx: WorkloadContext = { cfg, results, modes, paired, log: (m) => console.log(m) };
  for (const w of WORKLOADS) {
    if (!only.has(w)) continue;
    // Framework-only figures; the paired workload has its own A/A pair.
    if ((w === 'drain' || w === 'cluster' || w === 'paired') && cfg.aa) continue;
    const missing = w === 'resp' ? redisBenchmarkMissing() : undefined;
    if (missing !== undefined) {
      console.log(`[resp] skipped: ${missing}`);
      continue;
    }
    console.log(`[${w}]`);
    const started = Date.now();
    if (w === 'paired') await runPaired(ctx);
    else if (w === 'resp') await runResp(ctx);
    else if (w === 'echo') await runEcho(ctx);
    else if (w === 'churn') await runChurn(ctx);
    else if (w === 'scale') await runScale(ctx);
    else if (w === 'drain') await runDrain(ctx);
    else await runCluster(ctx);
    console.log(`[${w}] ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }

  const rows: FigureResult[] = results.reduce();
  const pairedRows = paired.reduce();
  meta.commands = [...commandLog];
  const failed = [
    ...rows.filter((r) => r.pass === false).map((f) => `${f.workload} ${f.figure}`),
    ...pairedRows.filter((r) => r.pass === false).map((f) => `${f.workload} ${f.figure} ${f.pair.title}`),
  ];
  console.log(`${((Date.now() - t0) / 1000).toFixed(0)} s total`);
  if (!paired.empty) {
    console.log(
      `\nthe performance targets, paired: ${cfg.paired.rounds} rounds on fresh server processes every ${cfg.paired.roundsPerProcess} (idle: ${cfg.paired.idleRounds}, a fresh process each), order rotating each round, CPU from schedstat; ratio = median of the per-round ratios a/b, with its 95% bootstrap interval over processes\n`,
    );
    console.log(renderPairedTable(pairedRows, { checked: !quick }));
  }
  if (rows.length > 0) {
    console.log(`\nmedians of ${cfg.runs} run(s); ratio = framework / baseline\n`);
    console.log(renderTable(rows, { checked: !quick }));
  }
  const clusterRows = modes.reduce();
  if (!modes.empty) {
    console.log(
      `\ncluster (${cfg.cluster.workers} workers): server CPU = the one process, or the primary + every worker; vs 1 = mode / 1 process; medians of ${cfg.runs} run(s)\n`,
    );
    console.log(renderModeTable(clusterRows, modes.unsupported));
  }
  const disturbed = results.interference.filter((i) => i.foreign > 0.05);
  if (disturbed.length) {
    const worst = Math.max(...disturbed.map((i) => i.foreign));
    console.log(
      `\nwarning: in ${disturbed.length} of ${results.interference.length} measured runs other processes used more than 5% of the server core (worst ${(worst * 100).toFixed(0)}%): the machine was not quiet, expect noise.`,
    );
  }
  console.log('\ncommands:');
  for (const c of meta.commands) console.log(`  ${c}`);

  const dir = path.join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const cluster = modes.empty ? undefined : { figures: clusterRows, unsupported: modes.unsupported };
  const json = `${JSON.stringify({ meta, paired: pairedRows, figures: rows, cluster, interference: results.interference }, null, 2)}\n`;
  const stamp = meta.date.replace(/[:.]/g, '-');
  const partial = WORKLOADS.some((w) => !only.has(w)) || cfg.match !== '';
  const name = resultsName(
    cfg,
    partial,
    only.size === 1 && only.has('cluster'),
    only.size === 1 && only.has('paired'),
  );
  writeFileSync(path.join(dir, `${name}.json`), json);
  if (quick) console.log(`\nwrote bench/results/${name}.json`);
  else {
    // Timestamped copies keep the history; smoke runs (CI) only overwrite quick.json.
    writeFileSync(path.join(dir, `${name}-${stamp}.json`), json);
    console.log(`\nwrote bench/results/${name}.json and ${name}-${stamp}.json`);
    if (name === 'latest') {
      execFileSync(process.execPath, ['--import', 'tsx', 'bench/chart.ts'], { cwd: ROOT, stdio: 'inherit' });
    }
  }

  if (quick) {
    console.log('\n--quick: every workload path ran; speed is not checked in smoke mode.');
    return 0;
  }
  if (failed.length) {
    console.log(`\n${failed.length} target(s) FAILED: ${failed.join('; ')}`);
    return 1;
  }
  console.log('\nall targets PASS');
  return 0;
}

main()
  .then((code) => {
    killAll();
    process.exitCode = code;
  })
  .catch((e: unknown) => {
    console.error(e);
    killAll();
    process.exitCode = 2;
  });
