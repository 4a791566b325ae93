/**
 * AcceptClock (docs/architecture.md, "A new connection's first request"): accept times bounded
 * to within a step from a few checkpoints, never earlier than the true accept.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AcceptClock } from '../src/accept-clock.js';
import { seededRandom } from '../src/timers.js';

test('AcceptClock: every bound is at or after the true accept time and at most a step after it', () => {
  const random = seededRandom(42);
  const step = 125;
  const clock = new AcceptClock(step, 1_000 + step);
  const accepted: number[] = [];
  let now = 0;
  // Bursts and long quiet gaps: 2,000 accepts over about 40 s.
  for (let id = 1; id <= 2_000; id++) {
    now += random() < 0.05 ? random() * 3_000 : random() * 5;
    accepted[id] = now;
    clock.accepted(id, now);
  }
  for (let id = 1; id <= 2_000; id++) {
    const by = clock.acceptedBy(id);
    const t = accepted[id]!;
    assert.ok(by >= t, `id ${id}: bound ${by} before its accept ${t}`);
    // Within the span the bound is tight; older connections may be bounded by the oldest checkpoint kept.
    if (now - t <= 1_000) assert.ok(by - t <= step, `id ${id}: bound ${by} is ${by - t} ms after ${t}`);
    else assert.ok(now - by >= 1_000 - step, `id ${id}: an old connection looks ${now - by} ms old`);
  }
});

test('AcceptClock: keeps a handful of checkpoints however many accepts, and none before the first', () => {
  const clock = new AcceptClock(10, 100);
  assert.equal(clock.acceptedBy(1), -Infinity);
  for (let id = 1; id <= 100_000; id++) clock.accepted(id, id * 0.5); // 50 s of accepts
  // Only the last ~110 ms of checkpoints remain: one per 10 ms.
  const oldest = clock.acceptedBy(1);
  assert.ok(oldest >= 50_000 - 120 && oldest <= 50_000, `oldest checkpoint at ${oldest}`);
  // Checkpoints at 0.5, 10.5, 20.5 ... ms: the last one at or below id 100,000 (at 50,000) is 49,990.5.
  assert.equal(clock.acceptedBy(100_000), 49_990.5 + 10);
});
