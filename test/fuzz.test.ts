/**
 * The short pass of the fuzz properties (test/fuzz/properties.ts): every property, a few hundred
 * runs, a fixed seed so the suite is deterministic. `npm run fuzz` runs the same properties 10,000
 * times each with a fresh seed. FUZZ_TEST_RUNS / FUZZ_SEED change the runs and the seed here; a
 * failure prints fast-check's counterexample and the `npm run fuzz` command that replays it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type FuzzProperty, properties, replayCommand, runProperty } from './fuzz/properties.js';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${raw} is not an integer`);
  return n;
}

const RUNS = envInt('FUZZ_TEST_RUNS', 300);
const SEED = envInt('FUZZ_SEED', 12_006);

console.log(`fuzz (short pass): seed ${SEED}, ${RUNS} runs per property (replay: ${replayCommand(SEED)})`);

const label = (p: FuzzProperty) => `${p.target}: ${p.name}`;

function check(p: FuzzProperty): void {
  const r = runProperty(p, RUNS, SEED);
  if (r.failed) assert.fail(r.report);
  assert.equal(r.runs, RUNS);
}

describe(`fuzz properties (short pass, seed ${SEED}, ${RUNS} runs each)`, () => {
  test('names are unique, and FUZZ_ONLY=<name> selects exactly that property', () => {
    assert.equal(new Set(properties.map((p) => p.name)).size, properties.length);
    for (const p of properties) {
      assert.deepEqual(
        properties.filter((q) => label(q).includes(p.name)).map(label),
        [label(p)],
        'FUZZ_PATH replays need FUZZ_ONLY to match one property',
      );
    }
  });

  for (const p of properties) {
    test(label(p), () => check(p));
  }
});
