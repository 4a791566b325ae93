/**
 * Bench sizes for the full run and for `--quick`, and the server start specs shared by workloads.
 *
 * @module
 */

import { againstScript } from './against.js';
import type { PairedResults } from './paired.js';
import { nodeArgv, SEMI_SPACE_MIB, SERVER_CPU, type SpawnSpec, youngGenFlags } from './proc.js';
import type { ModeResults, Results } from './results.js';

/** Every size and count the workloads use, so a run is bounded by construction. */
export interface BenchConfig {
  quick: boolean;
  /** Runs per server per figure (alternated A B A B ...). */
  runs: number;
  /** Write a V8 CPU profile of every server child to bench/results/profiles/. */
  profile: boolean;
  /** A/A calibration: the baseline runs in the framework's place, so ratios show the noise floor. */
  aa: boolean;
  /** Only RESP configurations whose label contains this (e.g. `GET -P 16`); all when empty. */
  match: string;
  /** `--servers`: the paired workload's servers to run (e.g. `service,raw`); all when empty. */
  servers: string[];
  /** `--semi-space`: MiB per semi-space of every Node server's young generation; 0 leaves V8's growth. */
  semiSpace: number;
  /** `--against`: the short hash of another commit whose framework runs beside this one; '' when not. */
  against: string;
  resp: { clients: number; pipeline: number; nPlain: number; nPipelined: number; warmupN: number };
  echo: { conns: number; size: number; seconds: number; warmupSeconds: number };
  pingpong: { count: number; warmup: number };
  churn: { count: number; concurrency: number; seconds: number; warmupCount: number };
  scale: { conns: number; parallel: number };
  /**
   * The paired workload (the performance targets): `rounds` rounds of every RESP configuration,
   * `nPlain` / `nPipelined` requests per server per round, on server processes started afresh
   * (and warmed up with `warmupN` requests each) every `roundsPerProcess` rounds; and
   * `idleRounds` rounds of `idleConns` idle connections per server; `rounds` rounds of
   * `churnConns` one-request connections per server.
   */
  paired: {
    rounds: number;
    roundsPerProcess: number;
    nPlain: number;
    nPipelined: number;
    warmupN: number;
    idleConns: number;
    idleRounds: number;
    /** Connections per server per churn round (a connection per request, `bench/load/churn.ts`). */
    churnConns: number;
  };
  drain: { conns: number; maxMs: number };
  /**
   * The cluster workload: `workers` per supervisor; churn connections and RESP requests per
   * measured run (with and without `-P resp.pipeline`), and per warm-up of each server.
   */
  cluster: {
    workers: number;
    churnCount: number;
    nPlain: number;
    nPipelined: number;
    warmupChurn: number;
    warmupN: number;
  };
}

/** The full bench: about 10 minutes on the 2-core reference machine (5 runs). */
export function fullConfig(runs = 5, rounds = 30, roundsPerProcess = 5): BenchConfig {
  return {
    quick: false,
    runs,
    profile: false,
    aa: false,
    match: '',
    servers: [],
    semiSpace: SEMI_SPACE_MIB,
    against: '',
    resp: { clients: 50, pipeline: 16, nPlain: 300_000, nPipelined: 2_000_000, warmupN: 100_000 },
    echo: { conns: 64, size: 64 * 1024, seconds: 5, warmupSeconds: 2 },
    pingpong: { count: 20_000, warmup: 2_000 },
    churn: { count: 20_000, concurrency: 16, seconds: 20, warmupCount: 5_000 },
    scale: { conns: 10_000, parallel: 256 },
    paired: {
      rounds,
      roundsPerProcess,
      nPlain: 60_000,
      nPipelined: 600_000,
      warmupN: 100_000,
      idleConns: 10_000,
      idleRounds: 10,
      churnConns: 10_000,
    },
    drain: { conns: 100, maxMs: 200 },
    cluster: {
      workers: 2,
      churnCount: 10_000,
      nPlain: 100_000,
      nPipelined: 500_000,
      warmupChurn: 3_000,
      warmupN: 30_000,
    },
  };
}

/** Smoke mode: every path once with tiny counts; checks nothing about speed. */
export function quickConfig(): BenchConfig {
  return {
    quick: true,
    runs: 1,
    profile: false,
    aa: false,
    match: '',
    servers: [],
    semiSpace: SEMI_SPACE_MIB,
    against: '',
    resp: { clients: 50, pipeline: 16, nPlain: 2_000, nPipelined: 10_000, warmupN: 0 },
    echo: { conns: 8, size: 64 * 1024, seconds: 0.3, warmupSeconds: 0 },
    pingpong: { count: 300, warmup: 50 },
    churn: { count: 300, concurrency: 8, seconds: 5, warmupCount: 0 },
    scale: { conns: 200, parallel: 64 },
    paired: {
      rounds: 2,
      roundsPerProcess: 1,
      nPlain: 2_000,
      nPipelined: 10_000,
      warmupN: 0,
      idleConns: 200,
      idleRounds: 2,
      churnConns: 300,
    },
    drain: { conns: 10, maxMs: 20 },
    cluster: { workers: 2, churnCount: 300, nPlain: 2_000, nPipelined: 10_000, warmupChurn: 0, warmupN: 0 },
  };
}

/** The servers a workload runs, in the order each run alternates them. */
export function sides(cfg: BenchConfig): ('framework' | 'baseline' | 'floor' | 'against')[] {
  return cfg.against === ''
    ? ['framework', 'baseline', 'floor']
    : ['framework', 'baseline', 'floor', 'against'];
}

/** What a workload gets from the runner. */
export interface WorkloadContext {
  cfg: BenchConfig;
  results: Results;
  /** The cluster workload's figures (one process, round-robin, reusePort side by side). */
  modes: ModeResults;
  /** The paired workload's figures (the performance targets). */
  paired: PairedResults;
  log: (msg: string) => void;
}

/** Spec for a TypeScript server child pinned to the server core. */
export function serverSpec(
  cfg: BenchConfig,
  script: string,
  tag: string,
  opts: { raiseNofile?: boolean; env?: NodeJS.ProcessEnv } = {},
): SpawnSpec {
  // --expose-gc lets the scale workload collect before reading RSS; it costs nothing otherwise.
  const flags = ['--expose-gc', ...youngGenFlags(cfg.semiSpace)];
  // One directory per server: the loader-hooks thread writes a profile of its own (thread id != 0).
  if (cfg.profile) flags.push('--cpu-prof', `--cpu-prof-dir=bench/results/profiles/${tag}`);
  return { argv: nodeArgv(script, flags), cpu: SERVER_CPU, raiseNofile: opts.raiseNofile, env: opts.env };
}

/**
 * Server scripts per side: the framework's (`bench/servers/`), the `'data'`-event baseline's
 * (`bench/baseline/`), the pull-style floor's (`bench/floor/`), and the framework's servers built
 * from another commit (`--against`). `--aa` swaps the framework's for the baseline's.
 */
export function serverScript(
  cfg: BenchConfig,
  side: 'framework' | 'baseline' | 'floor' | 'against',
  kind: 'echo' | 'resp' | 'oneshot',
): string {
  if (side === 'floor') return `bench/floor/${kind}.ts`;
  if (side === 'against') return againstScript(cfg.against, kind);
  return side === 'framework' && !cfg.aa ? `bench/servers/${kind}.ts` : `bench/baseline/${kind}.ts`;
}
