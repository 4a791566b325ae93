/**
 * Paired measurement, the method the performance targets are judged by: every server under
 * comparison is measured once per round, the order rotating from round to round, so that two
 * servers' runs of one round are neighbours in time; CPU comes from the scheduler's own
 * nanosecond accounting; each round gives one ratio per pair, and the figure is the median of
 * those ratios with a 95% bootstrap interval. A slow drift of the machine moves both runs of a
 * round together and cancels in the ratio; what is left is the noise the interval shows.
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
}

/**
 * The median of `values` with a 95% percentile-bootstrap interval: `resamples` resamples with
 * replacement, drawn from a seeded generator so a run's interval can be recomputed exactly from
 * its JSON. NaN fields for an empty sample.
 */
export function medianInterval(values: readonly number[], resamples = 4000, seed = 0x5eed): Interval {
  const n = values.length;
  if (n === 0) return { median: Number.NaN, low: Number.NaN, high: Number.NaN, n };
  const random = seededRandom(seed);
  const medians = new Float64Array(resamples);
  const sample = new Float64Array(n);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < n; i++) sample[i] = values[Math.floor(random() * n)]!;
    sample.sort();
    const mid = n >> 1;
    medians[r] = n % 2 ? sample[mid]! : (sample[mid - 1]! + sample[mid]!) / 2;
  }
  medians.sort();
  const at = (q: number) => medians[Math.min(resamples - 1, Math.max(0, Math.floor(q * resamples)))]!;
  return { median: median(values), low: at(0.025), high: at(0.975), n };
}

/** Per-round ratios `a[i] / b[i]` of two sides' samples (rounds where either is missing are skipped). */
export function roundRatios(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (Number.isFinite(a[i]) && Number.isFinite(b[i]) && b[i] !== 0) out.push(a[i]! / b[i]!);
  }
  return out;
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
}

/** Samples of the paired rounds, keyed by workload and figure, reduced to {@link PairedRow}s. */
export class PairedResults {
  readonly #figures = new Map<string, PairedFigure>();

  /** Declares a figure (idempotent) with the pairs it is judged on. */
  define(workload: string, figure: string, unit: string, pairs: readonly Pair[]): void {
    const key = `${workload}\u0000${figure}`;
    if (!this.#figures.has(key))
      this.#figures.set(key, { workload, figure, unit, pairs, samples: new Map() });
  }

  /** Records one side's value in round `round`. */
  add(workload: string, figure: string, side: string, round: number, value: number): void {
    const f = this.#figures.get(`${workload}\u0000${figure}`);
    if (!f) throw new Error(`paired figure not defined: ${workload} / ${figure}`);
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
        const ratio = medianInterval(roundRatios(a, b));
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
  const header = ['workload', 'figure', 'pair', 'a', 'b', 'ratio a/b [95%]', 'rounds', 'target', 'result'];
  const body = rows.map((r) => [
    r.workload,
    `${r.figure} (${r.unit})`,
    r.pair.title,
    fmt(r.a),
    fmt(r.b),
    `${r.ratio.median.toFixed(3)} [${r.ratio.low.toFixed(3)}, ${r.ratio.high.toFixed(3)}]`,
    String(r.ratio.n),
    pairTargetText(r.pair.target),
    r.pass === null ? '' : !checked ? (r.pass ? '(pass)' : '(fail)') : r.pass ? 'PASS' : 'FAIL',
  ]);
  return alignedTable(header, body);
}
