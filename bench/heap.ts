/**
 * Per-connection heap breakdown, framework vs baseline vs pull floor: starts each echo server,
 * opens `--conns` idle connections, takes a heap snapshot with and without them, and prints the retained-object
 * difference per connection grouped by constructor (self sizes), biggest first. Use it to see
 * what an idle connection costs and where.
 *
 * Run: `npx tsx bench/heap.ts [--conns 2000] [--top 25] [--kind echo|resp|resp-stream]`; `--kind resp`
 * compares the RESP servers with the service mode's as the framework's (bench/servers/resp.ts),
 * `--kind resp-stream` the same with the stream mode's (bench/servers/resp-stream.ts).
 *
 * @module
 */

import { readFileSync, rmSync } from 'node:fs';
import { num, parseArgs } from './lib/args.js';
import { fullConfig, serverScript, serverSpec } from './lib/config.js';
import { buildChildren, installExitHooks, killAll, type LineChild, ServerChild } from './lib/proc.js';
import { openIdle } from './workloads/scale.js';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size and count per `type:name` of every node in a .heapsnapshot file. */
function histogram(file: string): Map<string, { size: number; count: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [
    number,
    number,
    number,
  ];
  const out = new Map<string, { size: number; count: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType]!]!;
    let name = snap.strings[snap.nodes[i + iName]!]!;
    // Strings and code are keyed by type only; objects and closures by constructor/function name.
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string' || type === 'code')
      name = '';
    if (type === 'number' || type === 'hidden' || type === 'array') name = name.slice(0, 40);
    const key = `${type}:${name}`;
    const e = out.get(key) ?? { size: 0, count: 0 };
    e.size += snap.nodes[i + iSize]!;
    e.count++;
    out.set(key, e);
  }
  return out;
}

type Kind = 'echo' | 'resp' | 'resp-stream';

async function measure(side: 'framework' | 'baseline' | 'floor', kind: Kind, conns: number) {
  const cfg = fullConfig();
  const script =
    kind === 'resp-stream'
      ? side === 'framework'
        ? 'bench/servers/resp-stream.ts'
        : serverScript(cfg, side, 'resp')
      : serverScript(cfg, side, kind);
  const sc = await ServerChild.start(serverSpec(cfg, script, `heap-${side}`, { raiseNofile: true }));
  let client: LineChild | undefined;
  try {
    const before = String((await sc.call('heap', 120_000)).file);
    client = await openIdle(sc, conns, `heap-${side}`, { seconds: 600 });
    const after = String((await sc.call('heap', 120_000)).file);
    const h0 = histogram(before);
    const h1 = histogram(after);
    rmSync(before);
    rmSync(after);
    const diff = new Map<string, { size: number; count: number }>();
    for (const [k, v] of h1) {
      const b = h0.get(k) ?? { size: 0, count: 0 };
      diff.set(k, { size: (v.size - b.size) / conns, count: (v.count - b.count) / conns });
    }
    return diff;
  } finally {
    client?.kill();
    await sc.stop();
  }
}

installExitHooks();
const args = parseArgs();
const conns = num(args, 'conns', 2000);
const top = num(args, 'top', 25);
const kind = args.get('kind') ?? 'echo';
if (kind !== 'echo' && kind !== 'resp' && kind !== 'resp-stream')
  throw new Error(`--kind must be echo, resp or resp-stream, not ${JSON.stringify(kind)}`);
buildChildren();
const fw = await measure('framework', kind, conns);
const base = await measure('baseline', kind, conns);
const floor = await measure('floor', kind, conns);
const none = { size: 0, count: 0 };
const keys = new Set([...fw.keys(), ...base.keys(), ...floor.keys()]);
// The stream mode's target is the pull floor, the others' the baseline: sort by the extra over it.
const overFloor = kind === 'resp-stream';
const extra = (r: { f: { size: number }; b: { size: number }; p: { size: number } }) =>
  r.f.size - (overFloor ? r.p.size : r.b.size);
const rows = [...keys]
  .map((k) => ({ k, f: fw.get(k) ?? none, b: base.get(k) ?? none, p: floor.get(k) ?? none }))
  .sort((x, y) => extra(y) - extra(x));
const sum = (m: Map<string, { size: number }>) => [...m.values()].reduce((a, v) => a + v.size, 0);
console.log(`heap per idle connection (${kind}, ${conns} connections, self sizes, bytes)`);
console.log(
  `framework ${sum(fw).toFixed(0)} B, baseline ${sum(base).toFixed(0)} B, pull floor ${sum(floor).toFixed(0)} B\n`,
);
const cols = ['framework', 'baseline', 'floor', overFloor ? 'fw-floor' : 'fw-base'];
console.log(`${cols.map((c) => c.padStart(10)).join(' ')}  objects/conn (fw)  type:name`);
for (const r of rows.slice(0, top)) {
  const cells = [r.f.size, r.b.size, r.p.size, extra(r)].map((v) => v.toFixed(0).padStart(10));
  console.log(`${cells.join(' ')}  ${r.f.count.toFixed(2).padStart(17)}  ${r.k}`);
}
killAll();
