/**
 * timers.ts: the duration policy and the two deadline queues per-connection deadlines share (a heap, and a FIFO for one fixed delay).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import {
  DeadlineQueue,
  duration,
  FixedDelayQueue,
  jitter,
  MAX_DELAY_MS,
  seededRandom,
} from '../src/timers.js';

test('duration(): 0 to 2^31-1 ms, Infinity only where allowed, anything else refused naming the option', () => {
  assert.equal(duration('x', 0, false), 0);
  assert.equal(duration('x', MAX_DELAY_MS, false), MAX_DELAY_MS);
  assert.equal(duration('x', Infinity, true), Infinity);
  for (const [value, infinite] of [
    [MAX_DELAY_MS + 1, true],
    [Infinity, false],
    [-1, true],
    [Number.NaN, true],
    ['5', true],
    [null, true],
  ] as const) {
    assert.throws(
      () => duration('lingerTimeout', value, infinite),
      (e: { code?: string; message: string }) => {
        assert.equal(e.code, 'ERR_INVALID_OPTION');
        assert.match(e.message, /^lingerTimeout must be a number of ms from 0 to 2147483647/);
        return true;
      },
    );
  }
});

test('seededRandom() repeats its sequence for a seed and stays in [0, 1); jitter() stays within ±fraction', () => {
  const a = seededRandom(42);
  const b = seededRandom(42);
  const xs = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(
    xs,
    Array.from({ length: 1000 }, () => b()),
  );
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  assert.notDeepEqual(xs.slice(0, 10), Array.from({ length: 10 }, seededRandom(43)));
  const random = seededRandom(7);
  for (let i = 0; i < 1000; i++) {
    const v = jitter(1000, 0.1, random);
    assert.ok(v >= 900 && v <= 1100, `${v}`);
  }
  assert.equal(
    jitter(1000, 0.1, () => 0.5),
    1000,
  );
});

/**
 * The queue's timer is unref'd (it never keeps a process alive: the sockets do), so a test that
 * waits on it holds the event loop open itself.
 */
function holdOpen(): () => void {
  const timer = setInterval(() => {}, 1_000);
  return () => clearInterval(timer);
}

/** Resolves once `queue` has expired `count` items, with their expiry times. */
function expiries<T>(count: number): { queue: DeadlineQueue<T>; done: Promise<Array<[T, number]>> } {
  const seen: Array<[T, number]> = [];
  let resolve!: (value: Array<[T, number]>) => void;
  const done = new Promise<Array<[T, number]>>((r) => {
    resolve = r;
  });
  const queue = new DeadlineQueue<T>((item) => {
    seen.push([item, performance.now()]);
    if (seen.length === count) resolve(seen);
  });
  return { queue, done };
}

test('DeadlineQueue expires items in deadline order, not in insertion order, never early', async () => {
  const release = holdOpen();
  const { queue, done } = expiries<number>(5);
  const start = performance.now();
  const delays = [120, 30, 90, 60, 0];
  const at = new Map<number, number>();
  for (const [i, delay] of delays.entries()) {
    at.set(i, start + delay);
    queue.add(i, start + delay);
  }
  const seen = await done;
  assert.deepEqual(
    seen.map(([i]) => i),
    [4, 1, 3, 2, 0],
  );
  for (const [i, when] of seen) assert.ok(when >= at.get(i)! - 1, `item ${i} expired early`);
  assert.equal(queue.size, 0);
  release();
});

test('DeadlineQueue: delete cancels, add moves a deadline, clear cancels all; the timer never holds the process', async () => {
  const release = holdOpen();
  const { queue, done } = expiries<string>(2);
  const now = performance.now();
  queue.add('cancelled', now + 10);
  queue.add('moved', now + 10_000);
  queue.add('kept', now + 40);
  assert.equal(queue.delete('cancelled'), true);
  assert.equal(queue.delete('cancelled'), false);
  queue.add('moved', now + 20); // earlier now
  assert.equal(queue.has('moved'), true);
  const seen = await done;
  assert.deepEqual(
    seen.map(([item]) => item),
    ['moved', 'kept'],
  );
  queue.add('never', performance.now() + 5);
  queue.clear();
  assert.equal(queue.size, 0);
  // An unref'd timer: a process with only a far deadline queued exits (checked in core-timers too).
  const far = new DeadlineQueue<string>(() => assert.fail('must not fire'));
  far.add('far', performance.now() + MAX_DELAY_MS * 3); // beyond one setTimeout: re-armed in steps
  far.clear();
  release();
});

test('DeadlineQueue property: any mix of adds, moves and deletes expires exactly the live items, in order', async () => {
  const release = holdOpen();
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 19 }), fc.integer({ min: 0, max: 30 }), fc.boolean()), {
        maxLength: 60,
      }),
      async (ops) => {
        const expected = new Map<number, number>();
        const start = performance.now() + 5;
        const fired: number[] = [];
        const queue = new DeadlineQueue<number>((item) => fired.push(item));
        for (const [item, delay, remove] of ops) {
          if (remove) {
            queue.delete(item);
            expected.delete(item);
          } else {
            queue.add(item, start + delay);
            expected.set(item, start + delay);
          }
        }
        assert.equal(queue.size, expected.size);
        await new Promise((resolve) => setTimeout(resolve, 50));
        const order = [...expected.entries()].sort((x, y) => x[1] - y[1]);
        assert.deepEqual(new Set(fired), new Set(expected.keys()));
        // Expired in deadline order (ties in any order).
        const firedAt = fired.map((item) => expected.get(item)!);
        for (let i = 1; i < firedAt.length; i++)
          assert.ok(firedAt[i]! >= firedAt[i - 1]!, JSON.stringify(order));
      },
    ),
    { numRuns: 40, seed: 20261201 },
  );
  release();
});

/** Items of a FixedDelayQueue test: waiting until released or expired. */
interface Waiting {
  id: number;
  waiting: boolean;
}

function fixedQueue(delay: number, onExpire: (item: Waiting) => void): FixedDelayQueue<Waiting> {
  return new FixedDelayQueue<Waiting>(delay, onExpire, (item) => item.waiting);
}

test('FixedDelayQueue expires items in the order added, each no sooner than the delay after its add', async () => {
  const release = holdOpen();
  const seen: Array<[number, number]> = [];
  const added = new Map<number, number>();
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  const queue = fixedQueue(40, (item) => {
    item.waiting = false;
    seen.push([item.id, performance.now()]);
    if (seen.length === 4) resolve();
  });
  for (let id = 0; id < 4; id++) {
    added.set(id, performance.now());
    queue.add({ id, waiting: true });
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(queue.size, 4 - seen.length);
  await promise;
  assert.deepEqual(
    seen.map(([id]) => id),
    [0, 1, 2, 3],
  );
  for (const [id, when] of seen) assert.ok(when >= added.get(id)! + 40 - 1, `item ${id} expired early`);
  assert.equal(queue.size, 0);
  release();
});

test('FixedDelayQueue: a released item never expires and is let go before its deadline', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const queue = fixedQueue(60_000, () => assert.fail('must not fire'));
  const refs: Array<WeakRef<Waiting>> = [];
  const items: Waiting[] = [];
  for (let id = 0; id < 1_000; id++) {
    const item = { id, waiting: true };
    items.push(item);
    refs.push(new WeakRef(item));
    queue.add(item);
  }
  assert.equal(queue.size, 1_000);
  for (const item of items.splice(0)) {
    item.waiting = false;
    queue.release();
  }
  assert.equal(queue.size, 0);
  // The queue holds no released item for the minute of its delay: a closed connection is not kept.
  await new Promise((r) => setImmediate(r));
  gc();
  const kept = refs.filter((ref) => ref.deref() !== undefined).length;
  assert.ok(kept <= 32, `${kept} released items still held`);
});

test('FixedDelayQueue property: any mix of adds and releases expires exactly the items still waiting, in order', async () => {
  const release = holdOpen();
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.oneof(fc.constant(-1), fc.nat({ max: 200 })), { maxLength: 300 }),
      async (ops) => {
        const fired: number[] = [];
        const queue = fixedQueue(15, (item) => {
          assert.ok(item.waiting, `item ${item.id} expired after its release`);
          item.waiting = false;
          fired.push(item.id);
        });
        const waiting: Waiting[] = [];
        let next = 0;
        for (const op of ops) {
          if (op === -1 || waiting.length === 0) {
            const item = { id: next++, waiting: true };
            waiting.push(item);
            queue.add(item);
          } else {
            const [item] = waiting.splice(op % waiting.length, 1);
            item!.waiting = false;
            queue.release();
          }
        }
        assert.equal(queue.size, waiting.length);
        await new Promise((r) => setTimeout(r, 60));
        assert.deepEqual(
          fired,
          waiting.map((item) => item.id),
        );
        assert.equal(queue.size, 0);
      },
    ),
    { numRuns: 40, seed: 20261206 },
  );
  release();
});

test('FixedDelayQueue: a queue that empties starts again at the front, and fires only what was added since', async () => {
  const release = holdOpen();
  const fired: number[] = [];
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  const queue = fixedQueue(20, (item) => {
    item.waiting = false;
    fired.push(item.id);
    if (fired.length === 2) resolve();
  });
  // Emptied twice: the slots behind the front hold earlier items' (past) deadlines, not theirs.
  for (let round = 0; round < 2; round++) {
    const earlier = Array.from({ length: 5 }, (_, i) => ({ id: round * 10 + i, waiting: true }));
    for (const item of earlier) queue.add(item);
    for (const item of earlier.reverse()) {
      item.waiting = false;
      queue.release();
    }
    assert.equal(queue.size, 0);
  }
  await new Promise((r) => setTimeout(r, 30)); // the earlier deadlines are past
  queue.add({ id: 100, waiting: true });
  queue.add({ id: 101, waiting: true });
  assert.equal(queue.size, 2);
  await promise;
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(fired, [100, 101]);
  assert.equal(queue.size, 0);
  release();
});

test('FixedDelayQueue: a callback may add and release while items expire', async () => {
  const release = holdOpen();
  const fired: number[] = [];
  const late = { id: 99, waiting: true };
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  const others: Waiting[] = Array.from({ length: 40 }, (_, i) => ({ id: 10 + i, waiting: true }));
  const queue = fixedQueue(10, (item) => {
    item.waiting = false;
    fired.push(item.id);
    if (item.id === 0) {
      queue.add(late); // due a full delay from now
      for (const other of others) {
        other.waiting = false;
        queue.release(); // compacts the queue under the running expiry
      }
    }
    if (item.id === 99) resolve();
  });
  queue.add({ id: 0, waiting: true });
  for (const other of others) queue.add(other);
  queue.add({ id: 1, waiting: true });
  await promise;
  assert.deepEqual(fired, [0, 1, 99]);
  assert.equal(queue.size, 0);
  release();
});

test('FixedDelayQueue: released out of order with items left waiting, it holds fewer released items than waiting ones (or under 32)', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const release = holdOpen();
  const fired: number[] = [];
  let resolve!: () => void;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  const queue = fixedQueue(400, (item) => {
    item.waiting = false;
    fired.push(item.id);
    if (fired.length === kept.length) resolve();
  });
  const random = seededRandom(11);
  const refs: Array<WeakRef<Waiting>> = [];
  let items: Waiting[] = [];
  // 3,000 items: the first 1,500 released in order (dropped at the head, the emptied front of the
  // arrays cut off past 1,024), then 1,200 of the rest in random order, leaving 300 waiting.
  for (let id = 0; id < 3_000; id++) {
    const item = { id, waiting: true };
    items.push(item);
    refs.push(new WeakRef(item));
    queue.add(item);
  }
  for (const item of items.splice(0, 1_500)) {
    item.waiting = false;
    queue.release();
  }
  for (let i = 0; i < 1_200; i++) {
    const [item] = items.splice(Math.floor(random() * items.length), 1);
    item!.waiting = false;
    queue.release();
  }
  const kept = items.map((item) => item.id);
  assert.equal(queue.size, 300);
  items = [];
  await new Promise((r) => setImmediate(r));
  gc();
  const held = refs.filter((ref) => ref.deref()?.waiting === false).length;
  assert.ok(held < 300, `${held} released items still held beside 300 waiting`);
  await done;
  assert.deepEqual(fired, kept, 'the waiting items expire, in the order added');
  assert.equal(queue.size, 0);
  release();
});

test('both queues re-arm when a callback throws: the items due after it still expire', async () => {
  // In a child process: the throw is an uncaught exception, which the test runner would take as
  // this test's failure.
  const script = `
    import { DeadlineQueue, FixedDelayQueue } from ${JSON.stringify(new URL('../src/timers.ts', import.meta.url).href)};
    const fired = [];
    const errors = [];
    process.on('uncaughtException', (error) => errors.push(error.message));
    const fixed = new FixedDelayQueue(10, (item) => {
      item.waiting = false;
      fired.push(item.id);
      if (item.id === 0) throw new Error('fixed');
    }, (item) => item.waiting);
    for (let id = 0; id < 3; id++) fixed.add({ id, waiting: true });
    const heap = new DeadlineQueue((id) => {
      fired.push(id);
      if (id === 10) throw new Error('heap');
    });
    heap.add(10, performance.now() + 10);
    heap.add(11, performance.now() + 10);
    setTimeout(() => console.log(JSON.stringify({ fired: fired.sort((a, b) => a - b), errors: errors.sort(), sizes: [fixed.size, heap.size] })), 300);
  `;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    { timeout: 30_000 },
  );
  assert.deepEqual(JSON.parse(stdout), {
    fired: [0, 1, 2, 10, 11],
    errors: ['fixed', 'heap'],
    sizes: [0, 0],
  });
});
