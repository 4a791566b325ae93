/**
 * Summarizes a V8 `.cpuprofile` (from `npm run bench -- --profile`, written to
 * bench/results/profiles/): self time per function and inclusive time per function, hottest
 * first, optionally only for frames whose URL contains `--filter` (e.g. `src/`).
 *
 * Run: `npx tsx bench/profile.ts bench/results/profiles/churn-framework [--filter src/] [--top 30]`
 *
 * @module
 */

import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { num, parseArgs } from './lib/args.js';
import { ROOT } from './lib/proc.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const arg = process.argv[2];
if (!arg || arg.startsWith('--')) {
  console.error('usage: tsx bench/profile.ts <file.cpuprofile | profile dir> [--filter text] [--top N]');
  process.exit(2);
}
// A directory (one per server from --profile): take the main thread's profile, named CPU.<date>.<time>.<pid>.0.<seq>.
const file = statSync(arg).isDirectory()
  ? path.join(
      arg,
      readdirSync(arg)
        .filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))
        .sort()
        .at(-1) ?? '',
    )
  : arg;
const args = parseArgs(process.argv.slice(3));
const filter = args.get('filter');
const top = num(args, 'top', 30);

const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Time per sample: the delta to the next sample, in µs.
const selfUs = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i + 1] ?? 0;
  const id = profile.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

function label(n: ProfileNode): string {
  const { functionName, url, lineNumber } = n.callFrame;
  const where = url ? `${path.relative(ROOT, url.replace(/^file:\/\//, ''))}:${lineNumber + 1}` : '';
  return `${functionName || '(anonymous)'} ${where}`.trim();
}

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  self.set(label(n), (self.get(label(n)) ?? 0) + us);
  // Inclusive: count each distinct function once per stack.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(byId.get(cur)!);
    if (seen.has(l)) continue;
    seen.add(l);
    inclusive.set(l, (inclusive.get(l) ?? 0) + us);
  }
}

function print(title: string, m: Map<string, number>): void {
  console.log(`\n${title}`);
  const rows = [...m.entries()]
    .filter(([l]) => !filter || l.includes(filter))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top);
  for (const [l, us] of rows)
    console.log(
      `${((us / total) * 100).toFixed(2).padStart(6)}%  ${(us / 1000).toFixed(1).padStart(8)} ms  ${l}`,
    );
}

console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled`);
print('self time', self);
print('inclusive time', inclusive);
