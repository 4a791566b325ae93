/**
 * Paired measurement, the method the performance targets are judged by: every server under
 * comparison is measured once per round, the order rotating from round to round, so that two
 * servers' runs of one round are neighbours in time; CPU comes from the scheduler's own
 * nanosecond accounting; each round gives one ratio per pair, and the figure is the median of
 * those ratios with a 95% bootstrap interval. A slow drift of the machine moves both runs of a
 * round together and cancels in the ratio; what is left is the noise the interval shows.
 *
 * Rounds come in clusters: the rounds one set of server processes ran. A process keeps what its
 * JIT decided and where its code and heap landed for its whole life, so its rounds share that
 * luck, and the same code in a fresh process can read 15% apart (bench/README.md, "Server
 * processes"). The bootstrap resamples whole clusters, so the interval holds that spread too;
 * with one round per cluster (a fresh process per round) it is the plain bootstrap.
 *
 * @module
 */

import { readdirSync, readFileSync } from 'node:fs';
import { seededRandom } from '../../src/timers.js';
import { alignedTable } from './results.js';
import { median } from './stats.js';

/**
 * On-CPU time of a process, in nanoseconds: the sum over its threads of the first field of
 * `/proc/<pid>/task/<tid>/schedstat` (time spent running, as the scheduler accounts it, to the
 * nanosecond, where `/proc/<pid>/stat` counts 10 ms ticks). Threads that exited are not counted;
 * the servers measured here (Node, Go, redis-server) keep their threads for their whole life.
 */
export function schedCpuNs(pid: number): number {
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread exited between the listing and the read.
    }
  }
  return total;
}

/** The order of `sides` in round `round`: rotated by one each round, reversed every other cycle. */
export function roundOrder<T>(sides: readonly T[], round: number): T[] {
  const n = sides.length;
  const shift = round % n;
  const rotated = [...sides.slice(shift), ...sides.slice(0, shift)];
  return Math.floor(round / n) % 2 === 1 ? rotated.reverse() : rotated;
}

/** A median with its 95% percentile-bootstrap interval. */
export interface Interval {
  median: number;
  low: number;
  high: number;
  /** How many values it was computed from. */
  n: number;
  /** How many clusters they came in (server processes, see the module's doc). */
  clusters: number;
}

/**
 * The median of `values` with a 95% percentile-bootstrap interval: `resamples` resamples drawn
 * from a seeded generator, so a run's interval can be recomputed exactly from its rounds. Each
 * resample draws whole clusters with replacement (`clusters[i]` names the cluster of
 * `values[i]`; by default each value is a cluster of its own) until it holds as many clusters as
 * the sample. NaN fields for an empty sample.
 */
export function medianInterval(
  values: readonly number[],
  clusters: readonly number[] = values.map((_, i) => i),
  resamples = 4000,
  seed = 0x5eed,
): Interval {
  const n = values.length;
  const groups = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const id = clusters[i]!;
    const group = groups.get(id);
    if (group === undefined) groups.set(id, [values[i]!]);
    else group.push(values[i]!);
  }
  const members = [...groups.values()];
  const k = members.length;
  if (n === 0) return { median: Number.NaN, low: Number.NaN, high: Number.NaN, n, clusters: k };
  const random = seededRandom(seed);
  const medians = new Float64Array(resamples);
  const sample: number[] = [];
  for (let r = 0; r < resamples; r++) {
    sample.length = 0;
    for (let c = 0; c < k; c++) sample.push(...members[Math.floor(random() * k)]!);
    medians[r] = median(sample);
  }
  medians.sort();
  const at = (q: number) => medians[Math.min(resamples - 1, Math.max(0, Math.floor(q * resamples)))]!;
  return { median: median(values), low: at(0.025), high: at(0.975), n, clusters: k };
}

/**
 * Per-round ratios `a[i] / b[i]` of two sides' samples, with the cluster of each (`clusters[i]`,
 * the round's own index by default); rounds where either side is missing are skipped.
 */
export function roundRatios(
  a: readonly number[],
  b: readonly number[],
  clusters: readonly number[] = [],
): { ratios: number[]; clusters: number[] } {
  const ratios: number[] = [];
  const of: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (Number.isFinite(a[i]) && Number.isFinite(b[i]) && b[i] !== 0) {
      ratios.push(a[i]! / b[i]!);
      of.push(clusters[i] ?? i);
    }
  }
  return { ratios, clusters: of };
}

/** A target on a paired ratio: its median at most `median`, and the interval's top at most `high`. */
export interface PairTarget {
  median: number;
  high?: number;
}

/** One compared pair of sides of a figure: `a / b`, per round. */
export interface Pair {
  a: string;
  b: string;
  /** How the row reads, e.g. `service / raw node:net`. */
  title: string;
  target?: PairTarget;
}

/** A paired figure reduced: each side's median, and per pair the ratio's median and interval. */
export interface PairedRow {
  workload: string;
  figure: string;
  unit: string;
  pair: Pair;
  a: number;
  b: number;
  ratio: Interval;
  /** null when the pair has no target (A/A, references). */
  pass: boolean | null;
}

interface PairedFigure {
  workload: string;
  figure: string;
  unit: string;
  pairs: readonly Pair[];
  /** side -> value per round (NaN where the side did not run in that round). */
  samples: Map<string, number[]>;
  /** The cluster (set of server processes) of each round. */
  clusters: number[];
}

/** Samples of the paired rounds, keyed by workload and figure, reduced to {@link PairedRow}s. */
export class PairedResults {
  readonly #figures = new Map<string, PairedFigure>();

  /** Declares a figure (idempotent) with the pairs it is judged on. */
  define(workload: string, figure: string, unit: string, pairs: readonly Pair[]): void {
    const key = `${workload}\u0000${figure}`;
    if (!this.#figures.has(key))
      this.#figures.set(key, { workload, figure, unit, pairs, samples: new Map(), clusters: [] });
  }

  /**
   * Records one side's value in round `round`, run by the server processes of cluster `cluster`
   * (by default the round's own: fresh processes every round).
   */
  add(workload: string, figure: string, side: string, round: number, value: number, cluster = round): void {
    const f = this.#figures.get(`${workload}\u0000${figure}`);
    if (!f) throw new Error(`paired figure not defined: ${workload} / ${figure}`);
    f.clusters[round] = cluster;
    let values = f.samples.get(side);
    if (!values) f.samples.set(side, (values = []));
    while (values.length < round) values.push(Number.NaN);
    values[round] = value;
  }

  get empty(): boolean {
    return this.#figures.size === 0;
  }

  reduce(): PairedRow[] {
    const rows: PairedRow[] = [];
    for (const f of this.#figures.values()) {
      for (const pair of f.pairs) {
        const a = f.samples.get(pair.a);
        const b = f.samples.get(pair.b);
        if (!a || !b) continue; // a reference that is not installed
        const { ratios, clusters } = roundRatios(a, b, f.clusters);
        const ratio = medianInterval(ratios, clusters);
        const t = pair.target;
        const pass = t ? ratio.median <= t.median && (t.high === undefined || ratio.high <= t.high) : null;
        const finite = (v: number[]) => v.filter(Number.isFinite);
        rows.push({
          workload: f.workload,
          figure: f.figure,
          unit: f.unit,
          pair,
          a: median(finite(a)),
          b: median(finite(b)),
          ratio,
          pass,
        });
      }
    }
    return rows;
  }
}

function fmt(n: number): string {
  const a = Math.abs(n);
  if (!Number.isFinite(n)) return '-';
  if (a >= 100) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  return n.toFixed(3);
}

/** Human form of a pair target. */
export function pairTargetText(t: PairTarget | undefined): string {
  if (!t) return '';
  return t.high === undefined
    ? `<= ${t.median.toFixed(2)}`
    : `<= ${t.median.toFixed(2)} (high <= ${t.high.toFixed(2)})`;
}

/** The paired rows as an aligned (markdown-compatible) table. */
export function renderPairedTable(rows: readonly PairedRow[], { checked }: { checked: boolean }): string {
  const header = [
    'workload',
    'figure',
    'pair',
    'a',
    'b',
    'ratio a/b [95%]',
    'rounds (processes)',
    'target',
    'result',
  ];
  const body = rows.map((r) => [
    r.workload,
    `${r.figure} (${r.unit})`,
    r.pair.title,
    fmt(r.a),
    fmt(r.b),
    `${r.ratio.median.toFixed(3)} [${r.ratio.low.toFixed(3)}, ${r.ratio.high.toFixed(3)}]`,
    r.ratio.clusters === r.ratio.n ? String(r.ratio.n) : `${r.ratio.n} (${r.ratio.clusters})`,
    pairTargetText(r.pair.target),
    r.pass === null ? '' : !checked ? (r.pass ? '(pass)' : '(fail)') : r.pass ? 'PASS' : 'FAIL',
  ]);
  return alignedTable(header, body);
}
