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
  fieldSlot,
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

/** A DeadlineQueue test's item: a name, and its place in the queue (`fieldSlot`). */
interface Item {
  name: string;
  slot: number;
}
const item = (name: string): Item => ({ name, slot: -1 });

/** Resolves once `queue` has expired `count` items, with their expiry times. */
function expiries(count: number): { queue: DeadlineQueue<Item>; done: Promise<Array<[Item, number]>> } {
  const seen: Array<[Item, number]> = [];
  let resolve!: (value: Array<[Item, number]>) => void;
  const done = new Promise<Array<[Item, number]>>((r) => {
    resolve = r;
  });
  const queue = new DeadlineQueue<Item>((expired) => {
    // Out of the queue before its callback runs.
    assert.equal(expired.slot, -1);
    seen.push([expired, performance.now()]);
    if (seen.length === count) resolve(seen);
  }, fieldSlot);
  return { queue, done };
}

test('DeadlineQueue expires items in deadline order, not in insertion order, never early', async () => {
  const release = holdOpen();
  const { queue, done } = expiries(5);
  const start = performance.now();
  const delays = [120, 30, 90, 60, 0];
  const at = new Map<string, number>();
  for (const [i, delay] of delays.entries()) {
    at.set(String(i), start + delay);
    queue.add(item(String(i)), start + delay);
  }
  const seen = await done;
  assert.deepEqual(
    seen.map(([expired]) => expired.name),
    ['4', '1', '3', '2', '0'],
  );
  for (const [expired, when] of seen)
    assert.ok(when >= at.get(expired.name)! - 1, `item ${expired.name} expired early`);
  assert.equal(queue.size, 0);
  release();
});

test('DeadlineQueue: delete cancels, add moves a deadline, clear cancels all; the timer never holds the process', async () => {
  const release = holdOpen();
  const { queue, done } = expiries(2);
  const now = performance.now();
  const [cancelled, moved, kept, never] = ['cancelled', 'moved', 'kept', 'never'].map(item) as [
    Item,
    Item,
    Item,
    Item,
  ];
  queue.add(cancelled, now + 10);
  queue.add(moved, now + 10_000);
  queue.add(kept, now + 40);
  assert.equal(queue.delete(cancelled), true);
  assert.equal(queue.delete(cancelled), false);
  assert.equal(cancelled.slot, -1);
  queue.add(moved, now + 20); // earlier now
  assert.equal(queue.has(moved), true);
  assert.equal(queue.size, 2);
  const seen = await done;
  assert.deepEqual(
    seen.map(([expired]) => expired.name),
    ['moved', 'kept'],
  );
  queue.add(never, performance.now() + 5);
  queue.clear();
  assert.equal(queue.size, 0);
  assert.equal(never.slot, -1, 'clear() gives every item its place back');
  assert.equal(queue.has(never), false);
  // An unref'd timer: a process with only a far deadline queued exits (checked in core-timers too).
  const far = new DeadlineQueue<Item>(() => assert.fail('must not fire'), fieldSlot);
  far.add(item('far'), performance.now() + MAX_DELAY_MS * 3); // beyond one setTimeout: re-armed in steps
  far.clear();
  release();
});

test('DeadlineQueue: an item in two queues keeps a place in each; the queue holds no item it let go', () => {
  // Two slots on one item, as a connection has for its age and a shutdown's spread.
  interface Twice {
    a: number;
    b: number;
  }
  const slotA = { get: (x: Twice) => x.a, set: (x: Twice, i: number) => void (x.a = i) };
  const slotB = { get: (x: Twice) => x.b, set: (x: Twice, i: number) => void (x.b = i) };
  const qa = new DeadlineQueue<Twice>(() => {}, slotA);
  const qb = new DeadlineQueue<Twice>(() => {}, slotB);
  const items = Array.from({ length: 50 }, () => ({ a: -1, b: -1 }));
  const far = performance.now() + 60_000;
  for (const [i, x] of items.entries()) {
    qa.add(x, far + i);
    qb.add(x, far - i);
  }
  for (const x of items.slice(0, 25)) assert.equal(qa.delete(x), true);
  assert.deepEqual([qa.size, qb.size], [25, 50]);
  for (const x of items.slice(0, 25)) assert.deepEqual([x.a, qb.has(x)], [-1, true]);
  // What is left of each queue is exactly its live items, each at the place it records.
  for (const x of items.slice(25)) assert.ok(x.a >= 0 && x.a < 25 && x.b >= 0 && x.b < 50);
  assert.equal(new Set(items.slice(25).map((x) => x.a)).size, 25);
  qa.clear();
  qb.clear();
  assert.ok(items.every((x) => x.a === -1 && x.b === -1));
});

test('DeadlineQueue: an expiry callback may re-add its item, delete a later one and add an earlier one', async () => {
  const release = holdOpen();
  const fired: string[] = [];
  const [again, doomed, late, early] = ['again', 'doomed', 'late', 'early'].map(item) as [
    Item,
    Item,
    Item,
    Item,
  ];
  let done!: () => void;
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const queue = new DeadlineQueue<Item>((expired) => {
    fired.push(expired.name);
    if (expired === again && fired.length === 1) {
      queue.add(again, performance.now() + 30); // as a slow frame's check moves itself on
      assert.equal(queue.delete(doomed), true);
      queue.add(early, performance.now() + 10);
    }
    if (expired === late) done();
  }, fieldSlot);
  const now = performance.now();
  queue.add(again, now + 5);
  queue.add(doomed, now + 20);
  queue.add(late, now + 80);
  await finished;
  assert.deepEqual(fired, ['again', 'early', 'again', 'late']);
  assert.ok([again, doomed, late, early].every((x) => x.slot === -1));
  assert.equal(queue.size, 0);
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
        const items = Array.from({ length: 20 }, (_, i) => item(String(i)));
        const expected = new Map<Item, number>();
        const start = performance.now() + 5;
        const fired: Item[] = [];
        const queue = new DeadlineQueue<Item>((expired) => fired.push(expired), fieldSlot);
        for (const [i, delay, remove] of ops) {
          const x = items[i]!;
          if (remove) {
            assert.equal(queue.delete(x), expected.delete(x));
          } else {
            queue.add(x, start + delay);
            expected.set(x, start + delay);
          }
          assert.equal(queue.has(x), expected.has(x));
        }
        assert.equal(queue.size, expected.size);
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.deepEqual(new Set(fired), new Set(expected.keys()));
        assert.equal(fired.length, expected.size);
        assert.ok(items.every((x) => x.slot === -1));
        // Expired in deadline order (ties in any order).
        const firedAt = fired.map((x) => expected.get(x)!);
        for (let i = 1; i < firedAt.length; i++) assert.ok(firedAt[i]! >= firedAt[i - 1]!);
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
    import { DeadlineQueue, FixedDelayQueue, fieldSlot } from ${JSON.stringify(new URL('../src/timers.ts', import.meta.url).href)};
    const fired = [];
    const errors = [];
    process.on('uncaughtException', (error) => errors.push(error.message));
    const fixed = new FixedDelayQueue(10, (item) => {
      item.waiting = false;
      fired.push(item.id);
      if (item.id === 0) throw new Error('fixed');
    }, (item) => item.waiting);
    for (let id = 0; id < 3; id++) fixed.add({ id, waiting: true });
    const heap = new DeadlineQueue((item) => {
      fired.push(item.id);
      if (item.id === 10) throw new Error('heap');
    }, fieldSlot);
    heap.add({ id: 10, slot: -1 }, performance.now() + 10);
    heap.add({ id: 11, slot: -1 }, performance.now() + 10);
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
