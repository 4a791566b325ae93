/**
 * Reading valgrind's callgrind output for `bench/instructions.ts`: instructions by function, with
 * V8's JIT code named by a `--perf-basic-prof` map, and the totals of every event counted (the
 * simulated cache misses and mispredicted branches, with `--cache-sim`).
 *
 * @module
 */

/** TurboFan's own work: zero when the JIT is at rest, as it should be inside a measuring window. */
export const COMPILER = /compiler::|turboshaft|Zone::/;

/** One server's count: instructions per request by function, and in all (without TurboFan's). */
export interface Count {
  byFunction: Map<string, number>;
  total: number;
  compiler: number;
  requests: number;
  /** With `--cache-sim`: the simulated cache misses and branch mispredictions, per request. */
  simulated?: Simulated;
}

/**
 * What callgrind's cache and branch simulation (`--cache-sim=yes --branch-sim=yes`) counted, per
 * request: misses of the first-level data and instruction caches, misses of the last level
 * (data and instructions), and mispredicted branches (conditional and indirect). A model of this
 * machine's caches, not its counters (a VM here has none): it shows whether a CPU ratio above the
 * instruction ratio comes from the memory system or the branch predictor, not how many cycles.
 */
export interface Simulated {
  l1Data: number;
  l1Instructions: number;
  lastLevel: number;
  mispredicts: number;
}

/**
 * The event totals of a `callgrind_annotate` report: its event names (the header line above the
 * totals) with the numbers of its `PROGRAM TOTALS` line. Throws if the report has no totals.
 */
export function readTotals(report: string): Map<string, number> {
  const lines = report.split('\n');
  const at = lines.findIndex((l) => l.trimEnd().endsWith('PROGRAM TOTALS'));
  if (at < 0) throw new Error('no PROGRAM TOTALS line in the callgrind_annotate report');
  const header = lines
    .slice(0, at)
    .reverse()
    .find((l) => /^Ir\b/.test(l));
  if (header === undefined) throw new Error('no event header above the PROGRAM TOTALS line');
  const events = header.trim().split(/\s+/);
  const values = [...lines[at]!.matchAll(/([\d,]+) \(\s*[\d.]+%\)/g)].map((m) =>
    Number(m[1]!.replace(/,/g, '')),
  );
  if (values.length !== events.length)
    throw new Error(`${events.length} events (${events.join(' ')}) but ${values.length} totals`);
  return new Map(events.map((e, i) => [e, values[i]!]));
}

/** The simulated misses per request (`per` of them), or undefined if the run simulated nothing. */
export function simulatedPer(totals: Map<string, number>, per: number): Simulated | undefined {
  const sum = (...events: string[]): number | undefined => {
    let n = 0;
    for (const e of events) {
      const v = totals.get(e);
      if (v === undefined) return undefined;
      n += v;
    }
    return n / per;
  };
  const l1Data = sum('D1mr', 'D1mw');
  const l1Instructions = sum('I1mr');
  const lastLevel = sum('ILmr', 'DLmr', 'DLmw');
  const mispredicts = sum('Bcm', 'Bim');
  if (
    l1Data === undefined ||
    l1Instructions === undefined ||
    lastLevel === undefined ||
    mispredicts === undefined
  )
    return undefined;
  return { l1Data, l1Instructions, lastLevel, mispredicts };
}

/**
 * A function naming `???:0x...` entries by a `/tmp/perf-<pid>.map` text (`start size name` per
 * line, hex), with `strip` removed from the names; other entries are returned as they are.
 */
export function jitNamer(perfMap: string, strip = ''): (fn: string) => string {
  const ranges = perfMap
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [start, size, ...name] = line.split(' ');
      const s = Number.parseInt(start!, 16);
      return { start: s, end: s + Number.parseInt(size!, 16), name: name.join(' ') };
    })
    .sort((a, b) => a.start - b.start);
  return (fn) => {
    const m = /^\?\?\?:0x([0-9a-f]+)/.exec(fn);
    if (m === null) return fn;
    const address = Number.parseInt(m[1]!, 16);
    let lo = 0;
    let hi = ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = ranges[mid]!;
      if (address < r.start) hi = mid - 1;
      else if (address >= r.end) lo = mid + 1;
      else return `JIT ${strip === '' ? r.name : r.name.replace(strip, '')}`;
    }
    return fn;
  };
}

/**
 * Reads `callgrind_annotate --tree=caller` output: each function's own instructions (its `*`
 * line), named by `name`, divided by `requests` (requests, or closed connections).
 */
export function readCallerTree(tree: string, name: (fn: string) => string, requests: number): Count {
  const raw = new Map<string, number>();
  for (const line of tree.split('\n')) {
    // `  Ir (pct)  < caller (Nx) [obj]` lines precede their callee's `  Ir (pct)  *  callee [obj]`;
    // the object is left out for some (libc's functions named by their source file).
    const m = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+\*\s+(.*?)(?: \[[^\]]*\])?\s*$/.exec(line);
    if (m === null) continue;
    const [, ir, fn] = m;
    const key = name(fn!);
    raw.set(key, (raw.get(key) ?? 0) + Number(ir!.replace(/,/g, '')));
  }
  const byFunction = new Map<string, number>();
  let total = 0;
  let compiler = 0;
  for (const [fn, ir] of raw) {
    const perRequest = ir / requests;
    byFunction.set(fn, perRequest);
    if (COMPILER.test(fn)) compiler += perRequest;
    else total += perRequest;
  }
  return { byFunction, total, compiler, requests };
}

/** Rows of `b - a` per function (TurboFan's left out), biggest difference first. */
export function countDiff(a: Count, b: Count): { fn: string; a: number; b: number }[] {
  const names = new Set([...a.byFunction.keys(), ...b.byFunction.keys()].filter((f) => !COMPILER.test(f)));
  const rows = [...names].map((fn) => ({ fn, a: a.byFunction.get(fn) ?? 0, b: b.byFunction.get(fn) ?? 0 }));
  return rows.sort((p, q) => Math.abs(q.b - q.a) - Math.abs(p.b - p.a));
}
