/**
 * The cluster workload: connection churn and RESP request/response against one process, a
 * `tcpserver/cluster` supervisor in round-robin mode (the primary accepts every connection and
 * sends it to a worker over IPC) and the same in `reusePort` mode (every worker binds the port,
 * the kernel spreads connections), run alternately. Server CPU is summed over the primary and
 * every worker (each from its own `/proc/<pid>/stat`), and the primary's share is reported apart:
 * in round-robin mode that is what passing every connection through the primary costs.
 *
 * Two core layouts, since this machine has two cores and a load generator needs one:
 *
 * - `1 core`: every server process (the one process; or the primary and both workers) on the
 *   server core, the load generator alone on the other, as in every other workload. CPU figures
 *   are clean (the interference monitor works); rates show what the cluster's machinery costs
 *   when it has no extra core to use.
 * - `2 cores`: the server processes may use both cores (the kernel places them), and the load
 *   generator shares the second one with them.
 *
 * @module
 */

import { execFileSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { type BenchConfig, serverSpec, type WorkloadContext } from '../lib/config.js';
import {
  alive,
  LOAD_CPU,
  meteredGroup,
  PINNED,
  ROOT,
  runToEnd,
  SERVER_CPU,
  ServerChild,
} from '../lib/proc.js';
import type { ModeResults, Results, ServeMode } from '../lib/results.js';
import { churnLoad, churnServed } from './churn.js';
import { benchSpec, have, parseCsv } from './resp.js';

/** The bench server script of each mode, by what the workers serve. */
const SINGLE = { oneshot: 'bench/servers/oneshot.ts', resp: 'bench/servers/resp.ts' } as const;
const CLUSTER = 'bench/servers/cluster.ts';
/** What `pgrep -f` looks for: the compiled cluster server, in the primary's and the workers' command lines. */
const CLUSTER_PATTERN = 'tcpserver-bench/bench/servers/cluster.js';

type Kind = keyof typeof SINGLE;

/** Where the server processes run; `cores` is set when nothing else (no load generator) uses them. */
interface Layout {
  name: string;
  cpu: string;
  cores: string[] | null;
}

function layouts(): Layout[] {
  if (!PINNED) return [{ name: 'unpinned', cpu: SERVER_CPU, cores: null }];
  return [
    { name: '1 core', cpu: SERVER_CPU, cores: [SERVER_CPU] },
    { name: '2 cores', cpu: `${SERVER_CPU},${LOAD_CPU}`, cores: null },
  ];
}

/**
 * Why reusePort mode cannot run here, or undefined when it can: the trial bind the library does
 * (two sockets of one process on one port with `reusePort`), since Node before 22.12 drops the
 * option silently. The server children run on this same `node`.
 */
export async function reusePortUnsupported(): Promise<string | undefined> {
  const listen = (port: number) =>
    new Promise<net.Server>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen({ host: '127.0.0.1', port, reusePort: true, exclusive: true } as net.ListenOptions, () =>
        resolve(s),
      );
    });
  const open: net.Server[] = [];
  try {
    const first = await listen(0);
    open.push(first);
    open.push(await listen((first.address() as net.AddressInfo).port));
    return undefined;
  } catch {
    return `unsupported on Node ${process.version}`;
  } finally {
    for (const s of open) s.close();
  }
}

/** One server under test: the one process, or a supervisor (`pids[0]`) and its workers. */
interface ModeServer {
  mode: ServeMode;
  sc: ServerChild;
  /** Every process whose CPU counts: the server itself, or the primary then the workers. */
  pids: number[];
}

async function startServer(
  cfg: BenchConfig,
  layout: Layout,
  kind: Kind,
  mode: ServeMode,
): Promise<ModeServer> {
  const tag = `cluster-${kind}-${mode}`;
  const env: NodeJS.ProcessEnv =
    mode === 'single'
      ? {}
      : {
          BENCH_CLUSTER_KIND: kind,
          BENCH_CLUSTER_WORKERS: String(cfg.cluster.workers),
          BENCH_CLUSTER_REUSE_PORT: mode === 'reusePort' ? '1' : '0',
        };
  const spec = {
    ...serverSpec(cfg, mode === 'single' ? SINGLE[kind] : CLUSTER, tag, { env }),
    cpu: layout.cpu,
  };
  const sc = await ServerChild.start(spec, 30_000);
  if (mode === 'single') return { mode, sc, pids: [sc.pid] };
  try {
    const r = (await sc.call('pids')) as { primary: number; workers: (number | undefined)[] };
    const workers = r.workers.filter((p): p is number => typeof p === 'number');
    if (r.primary !== sc.pid || workers.length !== cfg.cluster.workers) {
      throw new Error(`${tag}: unexpected pids ${JSON.stringify(r)} (spawned ${sc.pid})`);
    }
    return { mode, sc, pids: [sc.pid, ...workers] };
  } catch (e) {
    await sc.terminate();
    throw e;
  }
}

/** Processes running the cluster server script from this checkout (pgrep -f, then their cwd). */
function clusterProcesses(): number[] {
  let out = '';
  try {
    out = execFileSync('pgrep', ['-f', CLUSTER_PATTERN], { encoding: 'utf8' });
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
  return out
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((pid) => {
      try {
        return readlinkSync(`/proc/${pid}/cwd`) === ROOT;
      } catch {
        return false;
      }
    });
}

/**
 * SIGTERM to each server (a supervisor drains its workers, then exits), then checks that no
 * process is left: neither a pid we know of nor anything `pgrep` finds running the cluster
 * server. Leftovers are killed and reported as an error.
 */
async function stopAll(servers: ModeServer[], log: (m: string) => void): Promise<void> {
  for (const s of servers) {
    const how = await s.sc.terminate(15_000);
    if (how !== 'code 0' && s.mode !== 'single') log(`  warning: ${s.mode} supervisor ended with ${how}`);
  }
  const deadline = Date.now() + 10_000;
  for (;;) {
    const left = [...new Set([...servers.flatMap((s) => s.pids).filter(alive), ...clusterProcesses()])];
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
      throw new Error(`processes left running 10 s after SIGTERM (killed): ${left.join(', ')}`);
    }
    await sleep(50);
  }
}

/** What one measured run produced: work units, and per-second rate. */
interface RunOutcome {
  units: number;
  rate: number;
}

/** The figures of one configuration (one workload label). */
function defineFigures(modes: ModeResults, label: string, unit: 'connection' | 'request'): void {
  modes.define(label, `server CPU per ${unit}`, 'µs');
  modes.define(label, `primary CPU per ${unit}`, 'µs');
  modes.define(label, 'primary share of server CPU', '%');
  modes.define(
    label,
    unit === 'connection' ? 'connections/s' : 'requests/s',
    unit === 'connection' ? 'conn/s' : 'req/s',
  );
  modes.define(label, "busiest worker's share of worker CPU", '%');
}

/** Runs `load` once against each server, alternately, `cfg.runs` times, and records the figures. */
async function measure(
  {
    cfg,
    results,
    modes,
    log,
  }: { cfg: BenchConfig; results: Results; modes: ModeResults; log: (m: string) => void },
  layout: Layout,
  label: string,
  unit: 'connection' | 'request',
  servers: ModeServer[],
  load: (s: ModeServer) => Promise<RunOutcome>,
): Promise<void> {
  defineFigures(modes, label, unit);
  const rateName = unit === 'connection' ? 'connections/s' : 'requests/s';
  for (let run = 0; run < cfg.runs; run++) {
    for (const s of servers) {
      const { value: r, m } = await meteredGroup(s.pids, layout.cores, () => load(s));
      if (m.foreign !== null) results.noteInterference(label, s.mode, run, m.foreign);
      const total = m.cpu.reduce((a, b) => a + b, 0);
      modes.add(label, `server CPU per ${unit}`, s.mode, total / r.units);
      modes.add(label, rateName, s.mode, r.rate);
      let extra = '';
      if (s.mode !== 'single') {
        const primary = m.cpu[0]!;
        const workers = m.cpu.slice(1);
        const workerSum = workers.reduce((a, b) => a + b, 0);
        const busiest = workerSum > 0 ? (Math.max(...workers) / workerSum) * 100 : Number.NaN;
        modes.add(label, `primary CPU per ${unit}`, s.mode, primary / r.units);
        modes.add(label, 'primary share of server CPU', s.mode, total > 0 ? (primary / total) * 100 : 0);
        modes.add(label, "busiest worker's share of worker CPU", s.mode, busiest);
        extra = `, primary ${(primary / r.units).toFixed(2)} µs (${total > 0 ? ((primary / total) * 100).toFixed(1) : '0'}%), busiest worker ${busiest.toFixed(0)}%`;
      }
      log(
        `  ${label} run ${run + 1} ${s.mode}: ${(total / r.units).toFixed(unit === 'connection' ? 1 : 3)} µs/${unit === 'connection' ? 'conn' : 'req'}${extra}, ${r.rate.toFixed(0)} ${unit === 'connection' ? 'conn' : 'req'}/s`,
      );
    }
  }
}

/** Starts one server per supported mode, runs `body`, and always stops them all (and checks). */
async function withServers(
  cfg: BenchConfig,
  layout: Layout,
  kind: Kind,
  serveModes: ServeMode[],
  log: (m: string) => void,
  body: (servers: ModeServer[]) => Promise<void>,
): Promise<void> {
  const servers: ModeServer[] = [];
  try {
    for (const mode of serveModes) servers.push(await startServer(cfg, layout, kind, mode));
    await body(servers);
  } finally {
    await stopAll(servers, log);
  }
}

/** Runs the cluster figures. */
export async function runCluster(ctx: WorkloadContext): Promise<void> {
  const { cfg, modes, log } = ctx;
  const unsupported = await reusePortUnsupported();
  const serveModes: ServeMode[] = ['single', 'roundRobin'];
  if (unsupported === undefined) serveModes.push('reusePort');
  else {
    modes.unsupported.reusePort = unsupported;
    log(`  reusePort mode: ${unsupported} (needs Node >= 22.12 on Linux); its rows say so`);
  }
  const resp = have('redis-benchmark');
  if (!resp) {
    const msg = 'redis-benchmark not found: the cluster RESP figures need redis-tools';
    if (process.env.CI === 'true') throw new Error(msg);
    log(`  ${msg}; skipped`);
  }
  const { pipeline, clients } = cfg.resp;
  const respConfigs = [
    { t: 'set', csv: 'SET', pipeline: 1, n: cfg.cluster.nPlain },
    { t: 'set', csv: 'SET', pipeline, n: cfg.cluster.nPipelined },
    { t: 'get', csv: 'GET', pipeline: 1, n: cfg.cluster.nPlain },
    { t: 'get', csv: 'GET', pipeline, n: cfg.cluster.nPipelined },
  ]
    .map((c) => ({ ...c, label: `RESP ${c.csv}${c.pipeline > 1 ? ` -P ${c.pipeline}` : ''}` }))
    .filter((c) => c.label.includes(cfg.match));

  for (const layout of layouts()) {
    log(`  layout ${layout.name}: servers on CPU ${layout.cpu}, load generators on CPU ${LOAD_CPU}`);
    await withServers(cfg, layout, 'oneshot', serveModes, log, async (servers) => {
      if (cfg.cluster.warmupChurn > 0) {
        for (const s of servers) {
          log(`  warmup churn ${s.mode}`);
          await churnLoad(cfg, s.sc.port, cfg.cluster.warmupChurn);
        }
      }
      await measure(ctx, layout, `cluster churn [${layout.name}]`, 'connection', servers, async (s) => {
        const r = await churnServed(cfg, s.sc.port, cfg.cluster.churnCount, s.mode);
        return { units: r.conns, rate: r.connsPerSec };
      });
    });
    if (!resp || respConfigs.length === 0) continue;
    await withServers(cfg, layout, 'resp', serveModes, log, async (servers) => {
      if (cfg.cluster.warmupN > 0) {
        for (const s of servers) {
          log(`  warmup RESP ${s.mode}`);
          for (const p of new Set(respConfigs.map((c) => c.pipeline))) {
            await runToEnd(benchSpec(s.sc.port, cfg.cluster.warmupN, clients, 'set,get', p), 120_000);
          }
        }
      }
      for (const c of respConfigs) {
        await measure(ctx, layout, `cluster ${c.label} [${layout.name}]`, 'request', servers, async (s) => {
          const out = await runToEnd(benchSpec(s.sc.port, c.n, clients, c.t, c.pipeline), 300_000);
          const row = parseCsv(out).find((r) => r.test === c.csv);
          if (!row) throw new Error(`redis-benchmark printed no ${c.csv} row:\n${out}`);
          return { units: c.n, rate: row.rps };
        });
      }
    });
  }
}
