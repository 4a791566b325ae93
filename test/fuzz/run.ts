/**
 * `npm run fuzz`: runs every property of test/fuzz/properties.ts (10,000 runs each by default) with
 * one seed, printed first, and reports run counts and timings per property and per target. Exits
 * 1 if a property fails, after printing its counterexample and the command that replays it.
 *
 * Environment:
 * - `FUZZ_RUNS`: runs per property (default 10000).
 * - `FUZZ_SEED`: the seed (default: a fresh one). The same seed replays the same inputs.
 * - `FUZZ_ONLY`: run only the properties whose "target: name" contains this text.
 * - `FUZZ_PATH`: with FUZZ_SEED and FUZZ_ONLY, replay just the failing case at that path.
 */

import { type FuzzProperty, type FuzzRun, properties, replayCommand, runProperty } from './properties.js';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) {
    console.error(`${name}=${raw} is not an integer`);
    process.exit(2);
  }
  return n;
}

const runs = envInt('FUZZ_RUNS', 10_000);
const seed = envInt('FUZZ_SEED', (Date.now() ^ (Math.random() * 0x1_0000_0000)) | 0);
const only = process.env.FUZZ_ONLY ?? '';
const path = process.env.FUZZ_PATH || undefined;

const label = (p: FuzzProperty) => `${p.target}: ${p.name}`;
const selected = properties.filter((p) => label(p).includes(only));

if (selected.length === 0) {
  console.error(`FUZZ_ONLY=${JSON.stringify(only)} matches no property`);
  process.exit(2);
}
if (path !== undefined && selected.length !== 1) {
  console.error('FUZZ_PATH replays one property: set FUZZ_ONLY to match exactly one');
  process.exit(2);
}

console.log(`fuzz: seed ${seed}, ${runs} runs per property (replay: ${replayCommand(seed)})`);
console.log(
  'fuzz: a failing property prints its counterexample and a FUZZ_ONLY + FUZZ_PATH command replaying just it',
);
if (only !== '') console.log(`fuzz: only properties matching ${JSON.stringify(only)}`);

const ms = (n: number) => `${Math.round(n)} ms`.padStart(9);

function line(status: string, r: FuzzRun): void {
  console.log(`${status.padEnd(6)} ${String(r.runs).padStart(6)} runs ${ms(r.ms)}  ${label(r.property)}`);
}

const results: FuzzRun[] = [];
for (const p of selected) {
  const r = runProperty(p, runs, seed, path);
  results.push(r);
  line(r.failed ? 'FAIL' : 'ok', r);
  if (r.failed) console.log(`\n${r.report}\n`);
}

// Per target: runs and time.
const targets = new Map<string, { runs: number; ms: number; properties: number }>();
for (const r of results) {
  const t = targets.get(r.property.target) ?? { runs: 0, ms: 0, properties: 0 };
  t.runs += r.runs;
  t.ms += r.ms;
  t.properties += 1;
  targets.set(r.property.target, t);
}
console.log('\nper target:');
for (const [target, t] of targets) {
  console.log(
    `  ${target.padEnd(22)} ${String(t.properties).padStart(2)} properties ${String(t.runs).padStart(7)} runs ${ms(t.ms)}`,
  );
}
const failed = results.filter((r) => r.failed);
const total = results.reduce((n, r) => n + r.ms, 0);
console.log(
  `\nfuzz: ${results.length - failed.length}/${results.length} properties passed, ` +
    `${(total / 1000).toFixed(1)} s in properties, ${(performance.now() / 1000).toFixed(1)} s wall, seed ${seed}`,
);
if (failed.length > 0) {
  console.log(`\nFAILED (seed ${seed}):`);
  for (const r of failed) console.log(`  ${label(r.property)}`);
  process.exitCode = 1;
}
