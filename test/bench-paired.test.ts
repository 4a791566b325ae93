/**
 * The bench's paired method (bench/lib/paired.ts): rotating round order, medians of per-round
 * ratios with bootstrap intervals, target verdicts, and schedstat CPU of a real process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { medianInterval, PairedResults, roundOrder, roundRatios, schedCpuNs } from '../bench/lib/paired.js';

test('roundOrder: every side runs first equally often, and pairs listed together stay adjacent', () => {
  const sides = ['service', 'raw', 'raw2', 'stream', 'floor'];
  const firsts = new Map<string, number>();
  let apart = 0;
  for (let round = 0; round < 30; round++) {
    const order = roundOrder(sides, round);
    assert.deepEqual([...order].sort(), [...sides].sort(), 'a permutation');
    firsts.set(order[0]!, (firsts.get(order[0]!) ?? 0) + 1);
    if (Math.abs(order.indexOf('service') - order.indexOf('raw')) !== 1) apart++;
  }
  assert.deepEqual([...firsts.values()], [6, 6, 6, 6, 6]);
  assert.ok(apart <= 6, `service and raw apart in ${apart} of 30 rounds (only when the rotation wraps)`);
  assert.deepEqual(roundOrder(['a', 'b'], 0), ['a', 'b']);
  assert.deepEqual(roundOrder(['a', 'b'], 1), ['b', 'a']);
});

test('medianInterval: the median with a 95% bootstrap interval that holds it, reproducible by seed', () => {
  const values = Array.from({ length: 31 }, (_, i) => 1 + (i - 15) / 100);
  const r = medianInterval(values);
  assert.equal(r.median, 1);
  assert.equal(r.n, 31);
  assert.ok(r.low < 1 && r.high > 1 && r.low >= 0.85 && r.high <= 1.15, JSON.stringify(r));
  assert.deepEqual(medianInterval(values), r, 'same seed, same interval');
  const constant = medianInterval([2, 2, 2, 2]);
  assert.deepEqual([constant.median, constant.low, constant.high], [2, 2, 2]);
  assert.ok(Number.isNaN(medianInterval([]).median));
  assert.deepEqual(roundRatios([2, 4, Number.NaN, 9], [1, 2, 3, 0]), { ratios: [2, 2], clusters: [0, 1] });
  assert.deepEqual(roundRatios([2, 4, 6], [1, 2, 3], [0, 0, 1]), { ratios: [2, 2, 2], clusters: [0, 0, 1] });
});

test('medianInterval: rounds of one server process resample together, so the spread between processes shows', () => {
  // Six processes of five rounds each: rounds agree within a process, processes do not.
  const levels = [0.96, 0.99, 1.0, 1.01, 1.04, 1.12];
  const values = levels.flatMap((v) => [v - 0.002, v - 0.001, v, v + 0.001, v + 0.002]);
  const clusters = levels.flatMap((_, c) => [c, c, c, c, c]);
  const byRound = medianInterval(values);
  const byProcess = medianInterval(values, clusters);
  assert.equal(byProcess.median, byRound.median);
  assert.deepEqual([byRound.n, byRound.clusters, byProcess.n, byProcess.clusters], [30, 30, 30, 6]);
  assert.ok(
    byProcess.high - byProcess.low > 1.5 * (byRound.high - byRound.low),
    JSON.stringify({ byRound, byProcess }),
  );
  assert.ok(byProcess.low <= 0.99 && byProcess.high >= 1.04, JSON.stringify(byProcess));
  // One round per process is the plain bootstrap.
  assert.deepEqual(
    medianInterval(
      values,
      values.map((_, i) => i),
    ),
    byRound,
  );
});

test('PairedResults: a pair passes only when its median and its interval top meet the target', () => {
  const paired = new PairedResults();
  paired.define('W', 'CPU', 'µs', [
    { a: 'x', b: 'y', title: 'x / y', target: { median: 1.03, high: 1.05 } },
    { a: 'z', b: 'y', title: 'z / y', target: { median: 1.03 } },
    { a: 'absent', b: 'y', title: 'not installed' },
  ]);
  for (let round = 0; round < 20; round++) {
    paired.add('W', 'CPU', 'y', round, 10);
    paired.add('W', 'CPU', 'x', round, round % 2 ? 10.1 : 10.8); // median 1.045: fails
    paired.add('W', 'CPU', 'z', round, 10.1);
  }
  const rows = paired.reduce();
  assert.deepEqual(
    rows.map((r) => [r.pair.title, r.pass]),
    [
      ['x / y', false],
      ['z / y', true],
    ],
  );
  assert.throws(() => paired.add('W', 'nope', 'x', 0, 1), /not defined/);
});

test('PairedResults: rounds recorded with their server processes are judged by process', () => {
  // Six processes of five rounds: five at 1.00, one at 1.20. By round, the interval is tight and
  // passes; by process, one process in six can be half a resample, and the interval says so.
  const record = (byProcess: boolean) => {
    const paired = new PairedResults();
    paired.define('W', 'CPU', 'µs', [
      { a: 'x', b: 'y', title: 'x / y', target: { median: 1.03, high: 1.05 } },
    ]);
    for (let round = 0; round < 30; round++) {
      const cluster = Math.floor(round / 5);
      const x = (cluster === 5 ? 12 : 10) + round / 1000;
      paired.add('W', 'CPU', 'y', round, 10, byProcess ? cluster : round);
      paired.add('W', 'CPU', 'x', round, x, byProcess ? cluster : round);
    }
    return paired.reduce()[0]!;
  };
  const byRound = record(false);
  const byProcess = record(true);
  assert.deepEqual([byRound.ratio.clusters, byProcess.ratio.clusters], [30, 6]);
  assert.equal(byRound.ratio.median, byProcess.ratio.median);
  assert.equal(byRound.pass, true, JSON.stringify(byRound.ratio));
  assert.ok(byProcess.ratio.high > 1.05, JSON.stringify(byProcess.ratio));
  assert.equal(byProcess.pass, false);
});

test('schedCpuNs: nanoseconds a real process spends on CPU, over all its threads', async () => {
  const child = spawn(process.execPath, ['-e', 'const end = Date.now() + 300; while (Date.now() < end);']);
  const before = schedCpuNs(child.pid!);
  await new Promise((resolve) => setTimeout(resolve, 250));
  const during = schedCpuNs(child.pid!);
  assert.ok(during - before > 50e6, `${(during - before) / 1e6} ms of CPU while spinning`);
  await once(child, 'exit');
});
