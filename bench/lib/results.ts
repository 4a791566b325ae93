/**
 * Collects per-run samples, reduces them to medians and ratios, judges the targets, and renders
 * the table and the JSON file.
 *
 * @module
 */

import { median } from './stats.js';

/**
 * Which server produced a sample. `floor` is the pull-style floor (`bench/lib/pull-floor.ts`):
 * raw `node:net` with one coroutine per connection and nothing else. `against` is the framework
 * built from another commit (`--against`). `redis` is redis-server, the reference floor for RESP.
 */
export type Side = 'framework' | 'baseline' | 'floor' | 'against' | 'redis';

/** A target on one figure. */
export type Target =
  /** framework / baseline must be at most `max` (costs, latencies, memory). */
  | { kind: 'ratioMax'; max: number }
  /** framework / baseline must be at least `min` (throughputs). */
  | { kind: 'ratioMin'; min: number }
  /** the framework's median must be below `below` (absolute, in the figure's unit). */
  | { kind: 'absBelow'; below: number };

/** One figure of one workload (e.g. RESP GET -P 16, CPU µs per request). */
export interface Figure {
  workload: string;
  figure: string;
  unit: string;
  target?: Target;
  samples: Partial<Record<Side, number[]>>;
}

/** A figure reduced to medians, ratio and verdict, as written to JSON. */
export interface FigureResult {
  workload: string;
  figure: string;
  unit: string;
  target: Target | null;
  framework: { median: number; runs: number[] } | null;
  baseline: { median: number; runs: number[] } | null;
  floor: { median: number; runs: number[] } | null;
  against: { median: number; runs: number[] } | null;
  redis: { median: number; runs: number[] } | null;
  /** framework median / baseline median, or null without both. */
  ratio: number | null;
  /**
   * Median of the per-run ratios framework[i] / baseline[i] (run i of each side are neighbours in
   * time), which cancels slow drift of the machine's speed; null without both.
   */
  pairedRatio: number | null;
  /** framework median / pull-floor median: what the framework costs beyond the programming model. */
  floorRatio: number | null;
  /** framework median / median of the framework built from the `--against` commit. */
  againstRatio: number | null;
  /** null when the figure has no target. */
  pass: boolean | null;
}

/** Share of the server core used by other processes during one measured run. */
export interface Interference {
  workload: string;
  /** The server (a {@link ServeMode} in the cluster workload). */
  side: Side | ServeMode;
  run: number;
  /** 0..1 of the run's wall time. */
  foreign: number;
}

/** Accumulates samples across runs, keyed by workload + figure. */
export class Results {
  private readonly figures = new Map<string, Figure>();
  /** Per measured run, how much of the server core others used (noise from outside the bench). */
  readonly interference: Interference[] = [];

  /** Records a run's interference (see `metered()`). */
  noteInterference(workload: string, side: Side | ServeMode, run: number, foreign: number): void {
    this.interference.push({ workload, side, run, foreign });
  }

  /** Declares a figure (idempotent) so its unit and target are known. */
  define(workload: string, figure: string, unit: string, target?: Target): void {
    const key = `${workload}\u0000${figure}`;
    if (!this.figures.has(key)) this.figures.set(key, { workload, figure, unit, target, samples: {} });
  }

  add(workload: string, figure: string, side: Side, value: number): void {
    const f = this.figures.get(`${workload}\u0000${figure}`);
    if (!f) throw new Error(`figure not defined: ${workload} / ${figure}`);
    (f.samples[side] ??= []).push(value);
  }

  reduce(): FigureResult[] {
    return [...this.figures.values()].map((f) => {
      const side = (s: Side) => {
        const runs = f.samples[s];
        return runs?.length ? { median: median(runs), runs } : null;
      };
      const framework = side('framework');
      const baseline = side('baseline');
      const floor = side('floor');
      const against = side('against');
      // The framework's median over another side's, or null without both.
      const over = (other: { median: number } | null) =>
        framework && other && other.median !== 0 ? framework.median / other.median : null;
      const ratio = over(baseline);
      const pairs =
        framework && baseline
          ? framework.runs.flatMap((v, i) => (baseline.runs[i] ? [v / baseline.runs[i]!] : []))
          : [];
      const pairedRatio = pairs.length ? median(pairs) : null;
      let pass: boolean | null = null;
      const t = f.target;
      if (t?.kind === 'ratioMax') pass = ratio !== null && ratio <= t.max;
      else if (t?.kind === 'ratioMin') pass = ratio !== null && ratio >= t.min;
      else if (t?.kind === 'absBelow') pass = framework !== null && framework.median < t.below;
      return {
        workload: f.workload,
        figure: f.figure,
        unit: f.unit,
        target: t ?? null,
        framework,
        baseline,
        floor,
        against,
        redis: side('redis'),
        ratio,
        pairedRatio,
        floorRatio: over(floor),
        againstRatio: over(against),
        pass,
      };
    });
  }
}

/** Human form of a target. */
export function targetText(t: Target | null): string {
  if (!t) return '';
  if (t.kind === 'ratioMax') return `ratio <= ${t.max.toFixed(2)}`;
  if (t.kind === 'ratioMin') return `ratio >= ${t.min.toFixed(2)}`;
  return `< ${t.below}`;
}

function fmt(n: number | undefined | null): string {
  if (n === undefined || n === null || Number.isNaN(n)) return '-';
  const a = Math.abs(n);
  if (a >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return n.toFixed(0);
  if (a >= 100) return n.toFixed(1);
  if (a >= 1) return n.toFixed(2);
  return n.toFixed(3);
}

/** An aligned text table (markdown-compatible) of a header and rows of cells. */
export function alignedTable(header: readonly string[], body: readonly string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

/** Renders the results as an aligned text table (markdown-compatible). */
export function renderTable(rows: FigureResult[], { checked }: { checked: boolean }): string {
  const ratio = (r: number | null) => (r === null ? '-' : r.toFixed(3));
  // The `--against` columns appear only when another commit ran.
  const against = rows.some((r) => r.against !== null);
  const header = [
    'workload',
    'figure',
    'framework',
    'baseline',
    'ratio',
    'paired',
    'pull floor',
    'vs floor',
    ...(against ? ['against', 'vs against'] : []),
    'redis-server',
    'target',
    'result',
  ];
  const body = rows.map((r) => [
    r.workload,
    `${r.figure} (${r.unit})`,
    fmt(r.framework?.median),
    fmt(r.baseline?.median),
    ratio(r.ratio),
    ratio(r.pairedRatio),
    fmt(r.floor?.median),
    ratio(r.floorRatio),
    ...(against ? [fmt(r.against?.median), ratio(r.againstRatio)] : []),
    fmt(r.redis?.median),
    targetText(r.target),
    r.pass === null ? '' : !checked ? (r.pass ? '(pass)' : '(fail)') : r.pass ? 'PASS' : 'FAIL',
  ]);
  return alignedTable(header, body);
}

// -- Side by side: one process, cluster round-robin, cluster reusePort (the cluster workload) ---

/** How a server runs in the cluster workload. */
export type ServeMode = 'single' | 'roundRobin' | 'reusePort';

/** The modes in table order, with their column headers. */
export const SERVE_MODES: readonly { mode: ServeMode; title: string }[] = [
  { mode: 'single', title: '1 process' },
  { mode: 'roundRobin', title: 'round-robin' },
  { mode: 'reusePort', title: 'reusePort' },
];

/** One figure of the cluster workload reduced to medians and ratios over the one-process server. */
export interface ModeFigureResult {
  workload: string;
  figure: string;
  unit: string;
  single: { median: number; runs: number[] } | null;
  roundRobin: { median: number; runs: number[] } | null;
  reusePort: { median: number; runs: number[] } | null;
  /** median(round-robin) / median(1 process), and the median of the per-run ratios. */
  roundRobinRatio: number | null;
  roundRobinPaired: number | null;
  /** median(reusePort) / median(1 process), and the median of the per-run ratios. */
  reusePortRatio: number | null;
  reusePortPaired: number | null;
}

/** Samples of the cluster workload, by workload + figure and mode; a mode may be unsupported. */
export class ModeResults {
  private readonly figures = new Map<
    string,
    { workload: string; figure: string; unit: string; samples: Partial<Record<ServeMode, number[]>> }
  >();
  /** Modes that could not run here, with why (e.g. reusePort on Node 20). */
  readonly unsupported: Partial<Record<ServeMode, string>> = {};

  define(workload: string, figure: string, unit: string): void {
    const key = `${workload}\u0000${figure}`;
    if (!this.figures.has(key)) this.figures.set(key, { workload, figure, unit, samples: {} });
  }

  add(workload: string, figure: string, mode: ServeMode, value: number): void {
    const f = this.figures.get(`${workload}\u0000${figure}`);
    if (!f) throw new Error(`figure not defined: ${workload} / ${figure}`);
    (f.samples[mode] ??= []).push(value);
  }

  get empty(): boolean {
    return this.figures.size === 0;
  }

  reduce(): ModeFigureResult[] {
    return [...this.figures.values()].map((f) => {
      const of = (m: ServeMode) => {
        const runs = f.samples[m];
        return runs?.length ? { median: median(runs), runs } : null;
      };
      const single = of('single');
      const ratios = (m: ServeMode) => {
        const other = of(m);
        if (!single || !other || single.median === 0) return { ratio: null, paired: null };
        const pairs = other.runs.flatMap((v, i) => (single.runs[i] ? [v / single.runs[i]!] : []));
        return { ratio: other.median / single.median, paired: pairs.length ? median(pairs) : null };
      };
      const rr = ratios('roundRobin');
      const rp = ratios('reusePort');
      return {
        workload: f.workload,
        figure: f.figure,
        unit: f.unit,
        single,
        roundRobin: of('roundRobin'),
        reusePort: of('reusePort'),
        roundRobinRatio: rr.ratio,
        roundRobinPaired: rr.paired,
        reusePortRatio: rp.ratio,
        reusePortPaired: rp.paired,
      };
    });
  }
}

/**
 * The cluster table: medians per mode, and each cluster mode over the one-process server
 * (`vs 1`). An unsupported mode's cells say so.
 */
export function renderModeTable(
  rows: ModeFigureResult[],
  unsupported: Partial<Record<ServeMode, string>>,
): string {
  const ratio = (r: number | null) => (r === null ? '-' : r.toFixed(3));
  const cell = (mode: ServeMode, v: { median: number } | null) =>
    unsupported[mode] !== undefined ? unsupported[mode]! : fmt(v?.median);
  const header = ['workload', 'figure', '1 process', 'round-robin', 'vs 1', 'reusePort', 'vs 1'];
  const body = rows.map((r) => [
    r.workload,
    `${r.figure} (${r.unit})`,
    cell('single', r.single),
    cell('roundRobin', r.roundRobin),
    ratio(r.roundRobinRatio),
    cell('reusePort', r.reusePort),
    ratio(r.reusePortRatio),
  ]);
  return alignedTable(header, body);
}
