/**
 * Reading valgrind's callgrind output for `bench/instructions.ts`: instructions by function, with
 * V8's JIT code named by a `--perf-basic-prof` map, and a request count taken from the calls of
 * one function that runs once per request.
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
 * line), named by `name`, divided by the requests. `per` is their number, or the name (a part
 * of it) of a function called once per request: the requests are then its calls from all
 * callers, and it throws if that function was never called.
 */
export function readCallerTree(tree: string, name: (fn: string) => string, per: string | number): Count {
  const raw = new Map<string, number>();
  let requests = 0;
  let callers = 0;
  for (const line of tree.split('\n')) {
    // `  Ir (pct)  < caller (Nx) [obj]` lines precede their callee's `  Ir (pct)  *  callee [obj]`.
    const m = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+([<*>])\s+(.*?)(?: \((\d[\d,]*)x\))? \[[^\]]*\]\s*$/.exec(line);
    if (m === null) {
      callers = 0;
      continue;
    }
    const [, ir, kind, fn, calls] = m;
    if (kind === '<') callers += Number((calls ?? '0').replace(/,/g, ''));
    else if (kind === '*') {
      const key = name(fn!);
      raw.set(key, (raw.get(key) ?? 0) + Number(ir!.replace(/,/g, '')));
      if (typeof per === 'string' && fn!.includes(per)) requests += callers;
      callers = 0;
    }
  }
  if (typeof per === 'number') requests = per;
  else if (requests === 0) throw new Error(`no calls of ${per} counted: was the window empty?`);
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
