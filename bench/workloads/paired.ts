/**
 * Paired workload: the performance targets, measured as `bench/lib/paired.ts` describes. Every
 * server of a comparison runs once per round, in an order that rotates every round; CPU comes from
 * schedstat; each figure is the median of the per-round ratios with a 95% bootstrap interval.
 *
 * Servers (for the CPU rounds, one group alive at a time and started afresh every
 * `roundsPerProcess` rounds; fresh per round for the idle rounds):
 * - `service`: `examples/resp.ts` (the service mode), `bench/servers/resp.ts`;
 * - `raw`: raw `node:net` doing the same work, `bench/baseline/resp.ts`, and `raw2`, a second
 *   copy of it: `raw2 / raw` is the A/A ratio, the noise band of the same run;
 * - `stream`: the RESP server as a stream-mode handler, `bench/servers/resp-stream.ts`;
 * - `floor`: the pull floor doing the same work, `bench/floor/resp.ts`;
 * - references, when installed: `go` (`bench/go/resp.go`, GOMAXPROCS=1) and `redis-server`.
 *
 * Figures: CPU per request for RESP PING_MBULK, SET and GET without and with `-P 16`
 * (`redis-benchmark`); CPU per connection of churn (a connection per request, the one-shot
 * servers of `CHURN_SCRIPTS`); RSS per idle connection and server CPU per closed connection for
 * `idleConns` idle connections.
 *
 * @module
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { type BenchConfig, serverSpec, type WorkloadContext } from '../lib/config.js';
import { type Pair, type PairedResults, roundOrder, schedCpuNs } from '../lib/paired.js';
import { BUILD_DIR, commandLog, ROOT, runToEnd, SERVER_CPU, ServerChild } from '../lib/proc.js';
import { churnLoad, churnServed } from './churn.js';
import { benchSpec, have, redisBenchmarkMissing, startRedis, TESTS } from './resp.js';
import { idleRun } from './scale.js';

/** A server of the CPU rounds. */
interface Running {
  name: string;
  port: number;
  pid: number;
  stop: () => Promise<void>;
}

/** The Node servers of the paired rounds, by name. */
const SCRIPTS = {
  service: 'bench/servers/resp.ts',
  raw: 'bench/baseline/resp.ts',
  raw2: 'bench/baseline/resp.ts',
  stream: 'bench/servers/resp-stream.ts',
  floor: 'bench/floor/resp.ts',
} as const;
type NodeSide = keyof typeof SCRIPTS;

/**
 * The CPU rounds run group by group: only a group's servers are alive while it is measured, two
 * side by side as the performance issue's figures were taken, so no idle neighbour shares the
 * server core with a measured pair (see bench/README.md, "Groups"). A server that runs in two
 * groups is two sides, `<group>:<server>`, each paired only within its own group.
 */
interface CpuGroup {
  id: string;
  servers: readonly string[];
  /** The pairs judged on this group, `a` and `b` naming its servers. */
  pairs: readonly Pair[];
}

const CPU_GROUPS: readonly CpuGroup[] = [
  {
    id: 'service',
    servers: ['service', 'raw'],
    pairs: [
      { a: 'service', b: 'raw', title: 'service / raw node:net', target: { median: 1.03, high: 1.05 } },
    ],
  },
  { id: 'aa', servers: ['raw', 'raw2'], pairs: [{ a: 'raw2', b: 'raw', title: 'A/A: raw / raw' }] },
  {
    id: 'stream',
    servers: ['stream', 'floor'],
    pairs: [{ a: 'stream', b: 'floor', title: 'stream / pull floor', target: { median: 1.02 } }],
  },
  {
    // The references: not targets, so one group of four rather than three more pairs of rounds.
    id: 'ref',
    servers: ['raw', 'stream', 'go', 'redis'],
    pairs: [
      { a: 'stream', b: 'raw', title: 'stream / raw node:net (references group)' },
      { a: 'go', b: 'raw', title: 'Go (reference) / raw node:net' },
      { a: 'redis', b: 'raw', title: 'redis-server (reference) / raw node:net' },
    ],
  },
];

/** The side a group's server is recorded as. */
function groupSide(group: CpuGroup, server: string): string {
  return `${group.id}:${server}`;
}

/** Every pair of `groups`, naming the sides they are recorded as. */
function groupPairs(groups: readonly CpuGroup[]): Pair[] {
  return groups.flatMap((g) => g.pairs.map((p) => ({ ...p, a: groupSide(g, p.a), b: groupSide(g, p.b) })));
}

const CPU_PAIRS: readonly Pair[] = groupPairs(CPU_GROUPS);

const MEMORY_PAIRS: readonly Pair[] = [
  { a: 'service', b: 'raw', title: 'service / raw node:net', target: { median: 1.15 } },
  { a: 'stream', b: 'floor', title: 'stream / pull floor', target: { median: 1.1 } },
  { a: 'raw2', b: 'raw', title: 'A/A: raw / raw' },
];

/**
 * The JS heap per idle connection, beside RSS: no target (native memory, the socket's handle and
 * kernel-side buffers, is not in it), but steadier than RSS, which moves with the size V8 gives
 * the young generation from run to run.
 */
const HEAP_PAIRS: readonly Pair[] = MEMORY_PAIRS.map(({ target: _target, ...pair }) => pair);

const CLOSE_PAIRS: readonly Pair[] = [
  { a: 'service', b: 'raw', title: 'service / raw node:net' },
  { a: 'stream', b: 'floor', title: 'stream / pull floor' },
  { a: 'raw2', b: 'raw', title: 'A/A: raw / raw' },
];

/**
 * Builds the Go reference server when Go is installed (`apt-get install golang-go`); undefined
 * otherwise: it is a reference, and the bench runs without it.
 */
function buildGo(log: (m: string) => void): string | undefined {
  if (!have('go', ['version'])) {
    log('  go not found: the Go reference is skipped (apt-get install golang-go)');
    return undefined;
  }
  const out = path.join(ROOT, BUILD_DIR, 'go');
  mkdirSync(out, { recursive: true });
  const bin = path.join(out, 'resp');
  commandLog.add('go build -o <cache>/go/resp bench/go/resp.go');
  execFileSync('go', ['build', '-o', bin, 'bench/go/resp.go'], {
    cwd: ROOT,
    stdio: 'inherit',
    // Inside the bench's cache, so a run needs no HOME and leaves nothing elsewhere.
    env: { ...process.env, GOCACHE: path.join(out, 'gocache'), GOPATH: path.join(out, 'gopath') },
  });
  return bin;
}

/** True when `--servers` is not given or names `name`. */
function wanted(cfg: BenchConfig, name: string): boolean {
  return cfg.servers.length === 0 || cfg.servers.includes(name);
}

/** The Node servers to run, in the order that keeps each compared pair adjacent in a round. */
function nodeSides(cfg: BenchConfig): NodeSide[] {
  return (Object.keys(SCRIPTS) as NodeSide[]).filter((name) => wanted(cfg, name));
}

async function startNode(cfg: BenchConfig, name: NodeSide): Promise<Running> {
  const sc = await ServerChild.start(serverSpec(cfg, SCRIPTS[name], `paired-${name}`));
  return { name, port: sc.port, pid: sc.pid, stop: () => sc.stop() };
}

async function startGo(bin: string): Promise<Running> {
  const sc = await ServerChild.start({
    argv: [bin, '-port', '0'],
    cpu: SERVER_CPU,
    env: { GOMAXPROCS: '1' },
  });
  return { name: 'go', port: sc.port, pid: sc.pid, stop: () => sc.stop() };
}

/**
 * Starts the servers of `group` that this run wants and has (`go` and `redis-server` only when
 * installed; `goBin` is the Go build, undefined without Go).
 */
async function startGroup(
  cfg: BenchConfig,
  group: CpuGroup,
  goBin: string | undefined,
  log: (m: string) => void,
): Promise<Running[]> {
  const servers: Running[] = [];
  try {
    for (const name of group.servers) {
      if (!wanted(cfg, name)) continue;
      if (name in SCRIPTS) servers.push(await startNode(cfg, name as NodeSide));
      else if (name === 'go') {
        if (goBin) servers.push(await startGo(goBin));
      } else if (have('redis-server')) servers.push({ ...(await startRedis()), name: 'redis' });
      else log('  redis-server not found: the reference is skipped (apt-get install redis-server)');
    }
  } catch (error) {
    for (const s of servers) await s.stop();
    throw error;
  }
  return servers;
}

/**
 * The CPU rounds, group by group (`CPU_GROUPS`): `rounds` rounds of every RESP configuration,
 * on the group's servers started afresh (and warmed up) every `roundsPerProcess` rounds, since a
 * process keeps its JIT's and its memory layout's luck for life (bench/README.md, "Server
 * processes"); each set of processes is one cluster of the bootstrap. A group's servers stop
 * before the next group starts.
 */
async function cpuRounds({ cfg, log }: WorkloadContext, paired: PairedResults): Promise<void> {
  const { rounds, roundsPerProcess: perProcess, nPlain, nPipelined, warmupN } = cfg.paired;
  const { clients, pipeline } = cfg.resp;
  if (!Number.isInteger(perProcess) || perProcess < 1)
    throw new Error(`--rounds-per-process must be a whole number of rounds >= 1, got ${perProcess}`);
  const configs = TESTS.flatMap((t) => [
    { ...t, pipeline: 1, n: nPlain, label: `RESP ${t.csv}` },
    { ...t, pipeline, n: nPipelined, label: `RESP ${t.csv} -P ${pipeline}` },
  ]).filter((c) => c.label.includes(cfg.match));
  for (const c of configs) paired.define(c.label, 'CPU per request', 'µs', CPU_PAIRS);
  if (configs.length === 0) return;

  const goBin = wanted(cfg, 'go') ? buildGo(log) : undefined;
  const processes = Math.ceil(rounds / perProcess);
  for (const group of CPU_GROUPS) {
    for (let cluster = 0; cluster < processes; cluster++) {
      const servers = await startGroup(cfg, group, goBin, log);
      try {
        if (servers.length < 2) break; // nothing to compare (`--servers`, or a reference missing)
        log(
          `  group ${group.id}, processes ${cluster + 1}/${processes}: ${servers.map((s) => s.name).join(', ')} (only these alive)`,
        );
        if (warmupN > 0) {
          for (const s of servers)
            for (const p of [1, pipeline])
              await runToEnd(benchSpec(s.port, warmupN, clients, 'ping_mbulk,set,get', p), 120_000);
        }
        const first = cluster * perProcess;
        const end = Math.min(rounds, first + perProcess);
        for (const c of configs) {
          for (let round = first; round < end; round++) {
            const cells: string[] = [];
            for (const s of roundOrder(servers, round)) {
              const cpu0 = schedCpuNs(s.pid);
              await runToEnd(benchSpec(s.port, c.n, clients, c.t, c.pipeline), 300_000);
              const perRequest = (schedCpuNs(s.pid) - cpu0) / 1000 / c.n;
              paired.add(c.label, 'CPU per request', groupSide(group, s.name), round, perRequest, cluster);
              cells.push(`${s.name} ${perRequest.toFixed(3)}`);
            }
            log(`  ${group.id}: ${c.label} round ${round + 1}/${rounds} (µs/req): ${cells.join(', ')}`);
          }
        }
      } finally {
        for (const s of servers) await s.stop();
      }
    }
  }
}

/** The idle rounds: a fresh server per side per round, `idleConns` idle connections, then close(). */
async function idleRounds({ cfg, log }: WorkloadContext, paired: PairedResults): Promise<void> {
  const { idleRounds: rounds, idleConns: n } = cfg.paired;
  const W = `${n} idle connections`;
  if (!W.includes(cfg.match)) return;
  paired.define(W, 'RSS per connection', 'bytes', MEMORY_PAIRS);
  paired.define(W, 'heap per connection', 'bytes', HEAP_PAIRS);
  paired.define(W, 'CPU per closed connection', 'µs', CLOSE_PAIRS);
  const sides = nodeSides(cfg);
  for (let round = 0; round < rounds; round++) {
    const cells: string[] = [];
    for (const side of roundOrder(sides, round)) {
      const r = await idleRun(cfg, SCRIPTS[side], `paired-idle-${side}-${round}`, n);
      paired.add(W, 'RSS per connection', side, round, r.rss);
      paired.add(W, 'heap per connection', side, round, r.heap);
      paired.add(W, 'CPU per closed connection', side, round, r.closeCpu);
      cells.push(`${side} ${r.rss.toFixed(0)} B (heap ${r.heap.toFixed(0)} B), ${r.closeCpu.toFixed(1)} µs`);
    }
    log(`  ${W} round ${round + 1}/${rounds}: ${cells.join('; ')}`);
  }
}

/** The churn rounds' servers: the one-shot protocol in each mode, raw node:net, the floor. */
const CHURN_SCRIPTS: Record<string, string> = {
  service: 'bench/servers/oneshot.ts',
  raw: 'bench/baseline/oneshot.ts',
  raw2: 'bench/baseline/oneshot.ts',
  stream: 'bench/servers/oneshot-stream.ts',
  floor: 'bench/floor/oneshot.ts',
};

/** Churn's groups, as the CPU rounds' (two servers alive at a time, an A/A pair beside). */
const CHURN_GROUPS: readonly CpuGroup[] = [
  {
    id: 'service',
    servers: ['service', 'raw'],
    pairs: [{ a: 'service', b: 'raw', title: 'service / raw node:net', target: { median: 1.05 } }],
  },
  { id: 'aa', servers: ['raw', 'raw2'], pairs: [{ a: 'raw2', b: 'raw', title: 'A/A: raw / raw' }] },
  {
    id: 'stream',
    servers: ['stream', 'floor'],
    pairs: [{ a: 'stream', b: 'floor', title: 'stream / pull floor' }],
  },
];

/**
 * The churn rounds, group by group: `rounds` rounds of `churnConns` connections per server (each
 * one request, then the server's FIN), on processes started afresh every `roundsPerProcess`
 * rounds, CPU from schedstat per connection.
 */
async function churnRounds({ cfg, log }: WorkloadContext, paired: PairedResults): Promise<void> {
  const { rounds, roundsPerProcess: perProcess, churnConns: n } = cfg.paired;
  const W = 'churn (a connection per request)';
  if (!W.includes(cfg.match)) return;
  paired.define(W, 'CPU per connection', 'µs', groupPairs(CHURN_GROUPS));
  const processes = Math.ceil(rounds / perProcess);
  for (const group of CHURN_GROUPS) {
    const names = group.servers.filter((name) => wanted(cfg, name));
    if (names.length < 2) continue;
    for (let cluster = 0; cluster < processes; cluster++) {
      const servers: ServerChild[] = [];
      try {
        for (const name of names)
          servers.push(
            await ServerChild.start(serverSpec(cfg, CHURN_SCRIPTS[name]!, `paired-churn-${name}`)),
          );
        const byName = names.map((name, i) => ({ name, sc: servers[i]! }));
        if (cfg.churn.warmupCount > 0)
          for (const s of byName) await churnLoad(cfg, s.sc.port, cfg.churn.warmupCount);
        const end = Math.min(rounds, (cluster + 1) * perProcess);
        for (let round = cluster * perProcess; round < end; round++) {
          const cells: string[] = [];
          for (const s of roundOrder(byName, round)) {
            const cpu0 = schedCpuNs(s.sc.pid);
            const r = await churnServed(cfg, s.sc.port, n, s.name);
            const perConn = (schedCpuNs(s.sc.pid) - cpu0) / 1000 / r.conns;
            paired.add(W, 'CPU per connection', groupSide(group, s.name), round, perConn, cluster);
            cells.push(`${s.name} ${perConn.toFixed(1)}`);
          }
          log(`  ${group.id}: churn round ${round + 1}/${rounds} (µs/conn): ${cells.join(', ')}`);
        }
      } finally {
        for (const sc of servers) await sc.stop();
      }
    }
  }
}

/** Runs the paired figures into `ctx.paired`. */
export async function runPaired(ctx: WorkloadContext): Promise<void> {
  const missing = redisBenchmarkMissing();
  if (missing !== undefined) ctx.log(`  CPU rounds skipped: ${missing}`);
  else await cpuRounds(ctx, ctx.paired);
  await churnRounds(ctx, ctx.paired);
  await idleRounds(ctx, ctx.paired);
}
