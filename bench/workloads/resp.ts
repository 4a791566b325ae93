/**
 * RESP workload: the real `redis-benchmark` against the framework's `examples/resp.ts`, the raw
 * `node:net` baseline (same parser and commands), the pull-style floor (the same loop as the example
 * on raw `node:net`), and `redis-server` as the reference floor.
 *
 * @module
 */

import { type ChildProcess, execFileSync } from 'node:child_process';
import net from 'node:net';
import { type BenchConfig, serverScript, serverSpec, sides, type WorkloadContext } from '../lib/config.js';
import {
  LOAD_CPU,
  metered,
  runToEnd,
  SERVER_CPU,
  ServerChild,
  type SpawnSpec,
  spawnPinned,
  waitForPort,
} from '../lib/proc.js';
import type { Side } from '../lib/results.js';

/** The redis-benchmark tests run, by their `-t` name and the name `--csv` prints. */
export const TESTS = [
  { t: 'ping_mbulk', csv: 'PING_MBULK' },
  { t: 'set', csv: 'SET' },
  { t: 'get', csv: 'GET' },
] as const;

/** One parsed `--csv` row of redis-benchmark 7: rps and latencies in ms. */
export interface CsvRow {
  test: string;
  rps: number;
  p50: number;
  p99: number;
}

/**
 * Parses redis-benchmark 7's `--csv` output, whose header is
 * `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"`.
 * Columns are found by name, so an older layout fails loudly instead of misreading.
 */
export function parseCsv(out: string): CsvRow[] {
  const lines = out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('"'));
  const cells = (l: string) => l.split(',').map((c) => c.replace(/^"|"$/g, ''));
  const header = cells(lines[0] ?? '');
  const col = (name: string) => {
    const i = header.indexOf(name);
    if (i < 0) throw new Error(`redis-benchmark --csv has no ${name} column: ${lines[0]}`);
    return i;
  };
  const [iTest, iRps, iP50, iP99] = [col('test'), col('rps'), col('p50_latency_ms'), col('p99_latency_ms')];
  return lines.slice(1).map((l) => {
    const c = cells(l);
    return { test: c[iTest]!, rps: Number(c[iRps]), p50: Number(c[iP50]), p99: Number(c[iP99]) };
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A pinned `redis-benchmark --csv` run of `test` against 127.0.0.1:`port`. */
export function benchSpec(
  port: number,
  n: number,
  clients: number,
  test: string,
  pipeline: number,
): SpawnSpec {
  const argv = [
    'redis-benchmark',
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-c',
    String(clients),
    '-n',
    String(n),
  ];
  if (pipeline > 1) argv.push('-P', String(pipeline));
  argv.push('-t', test, '--csv');
  return { argv, cpu: LOAD_CPU };
}

/** A running RESP server under test. */
export interface Target {
  side: Side;
  port: number;
  pid: number;
  stop: () => Promise<void>;
}

/** redis-server without persistence, pinned to the server core. */
export async function startRedis(): Promise<Target> {
  const port = await freePort();
  const spec: SpawnSpec = {
    argv: ['redis-server', '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1', '--port', String(port)],
    cpu: SERVER_CPU,
  };
  const child: ChildProcess = spawnPinned(spec);
  child.stdout!.resume();
  child.stderr!.resume();
  await waitForPort(port, 10_000);
  return {
    side: 'redis',
    port,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGKILL');
    },
  };
}

async function startNode(cfg: BenchConfig, side: Side, script: string): Promise<Target> {
  const sc = await ServerChild.start(serverSpec(cfg, script, `resp-${side}`));
  return { side, port: sc.port, pid: sc.pid, stop: () => sc.stop() };
}

/** True when `tool <versionArgs>` runs (`--version` for most tools; Go's is `go version`). */
export function have(tool: string, versionArgs: readonly string[] = ['--version']): boolean {
  try {
    execFileSync(tool, versionArgs, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Why the RESP figures cannot run, or undefined when `redis-benchmark` is installed. Under
 * `CI=true` a missing load generator fails the run instead of skipping its figures.
 */
export function redisBenchmarkMissing(): string | undefined {
  if (have('redis-benchmark')) return undefined;
  const msg = 'redis-benchmark not found: install redis-tools (apt-get install redis-tools)';
  if (process.env.CI === 'true') throw new Error(msg);
  return msg;
}

/** Runs the RESP figures. */
export async function runResp({ cfg, results, log }: WorkloadContext): Promise<void> {
  const { clients, pipeline } = cfg.resp;
  const configs = TESTS.flatMap((t) => [
    { ...t, pipeline: 1, n: cfg.resp.nPlain, label: `RESP ${t.csv}` },
    { ...t, pipeline, n: cfg.resp.nPipelined, label: `RESP ${t.csv} -P ${pipeline}` },
  ]).filter((c) => c.label.includes(cfg.match));
  for (const c of configs) {
    // Judged by the paired workload (median of per-round ratios, with an interval), not here.
    results.define(c.label, 'CPU per request', 'µs');
    results.define(c.label, 'requests/s', 'req/s', { kind: 'ratioMin', min: 0.95 });
    results.define(c.label, 'p50 latency', 'ms');
    results.define(c.label, 'p99 latency', 'ms', { kind: 'ratioMax', max: 1.1 });
  }

  const targets: Target[] = [];
  try {
    for (const side of sides(cfg)) targets.push(await startNode(cfg, side, serverScript(cfg, side, 'resp')));
    // redis-server is the reference floor; Debian ships it apart from redis-tools, so it may be absent.
    if (have('redis-server')) targets.push(await startRedis());
    else log('  redis-server not found: the reference floor is skipped (apt-get install redis-server)');

    if (cfg.resp.warmupN > 0) {
      for (const t of targets) {
        log(`  warmup ${t.side}`);
        for (const p of [1, pipeline]) {
          await runToEnd(benchSpec(t.port, cfg.resp.warmupN, clients, 'ping_mbulk,set,get', p), 120_000);
        }
      }
    }

    for (const c of configs) {
      for (let run = 0; run < cfg.runs; run++) {
        for (const t of targets) {
          const { value: out, m } = await metered(t.pid, () =>
            runToEnd(benchSpec(t.port, c.n, clients, c.t, c.pipeline), 300_000),
          );
          const cpu = m.cpu;
          results.noteInterference(c.label, t.side, run, m.foreign);
          const row = parseCsv(out).find((r) => r.test === c.csv);
          if (!row) throw new Error(`redis-benchmark printed no ${c.csv} row:\n${out}`);
          results.add(c.label, 'CPU per request', t.side, cpu / c.n);
          results.add(c.label, 'requests/s', t.side, row.rps);
          results.add(c.label, 'p50 latency', t.side, row.p50);
          results.add(c.label, 'p99 latency', t.side, row.p99);
          log(
            `  ${c.label} run ${run + 1} ${t.side}: ${(cpu / c.n).toFixed(3)} µs/req, ${row.rps.toFixed(0)} req/s, p99 ${row.p99} ms`,
          );
        }
      }
    }
  } finally {
    for (const t of targets) await t.stop();
  }
}
