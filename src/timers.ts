/**
 * Time: one policy for durations, and one shared deadline queue for per-connection deadlines.
 *
 * **The policy.** Node's timers hold at most 2^31-1 ms (about 24.8 days); a longer `setTimeout`
 * fires after 1 ms with a warning, and `socket.setTimeout` silently clamps. So every duration
 * this library takes is a number of ms from 0 to {@link MAX_DELAY_MS}, or `Infinity` where
 * "never" is meaningful; anything else is refused with `ERR_INVALID_OPTION` naming the option and
 * the limit, before anything binds. No delay is clamped, none is silently turned into "never".
 *
 * **The deadline queues.** Linger after our FIN, connection age, the PROXY header timeout,
 * spread closing (with the first request's grace) and a slow frame's check are deadlines per
 * connection. A timer each shows in churn benchmarks; a {@link DeadlineQueue} holds them in a
 * binary heap under one unref'd timer armed for the earliest, and a {@link FixedDelayQueue}
 * holds deadlines of one fixed delay (the linger) in a FIFO (see docs/architecture.md, "Timers").
 *
 * @module
 */
import { performance } from 'node:perf_hooks';
import { InvalidOptionError } from './errors.js';

/** The longest delay Node's timers can hold: 2^31-1 ms, about 24.8 days. */
export const MAX_DELAY_MS = 2 ** 31 - 1;

/**
 * Checks a duration in ms: a number from 0 to {@link MAX_DELAY_MS}, or `Infinity` where
 * `infinite` allows it. Throws `ERR_INVALID_OPTION` naming `label` otherwise.
 */
export function duration(label: string, value: unknown, infinite: boolean): number {
  if (typeof value === 'number' && value >= 0 && (value <= MAX_DELAY_MS || (infinite && value === Infinity)))
    return value;
  const want = infinite
    ? `a number of ms from 0 to ${MAX_DELAY_MS}, or Infinity`
    : `a number of ms from 0 to ${MAX_DELAY_MS}`;
  throw new InvalidOptionError(`${label} must be ${want}, got ${describeValue(value)}`);
}

/**
 * A time limit that cannot be off by being 0 (`handshakeTimeout`, `proxyProtocol.timeout`): a
 * {@link duration} that may be `Infinity` for no limit, where 0 is refused rather than read as
 * "off" (which node:tls would make it) or as "refuse every peer at once".
 */
export function timeLimit(label: string, value: unknown): number {
  if (duration(label, value, true) !== 0) return value as number;
  throw new InvalidOptionError(`${label} must be more than 0 ms (Infinity for no limit), got 0`);
}

/** True for a valid per-call timeout (`{ timeout }` of `read`, `readFrame`, `write`). */
export function isTimeout(value: unknown): value is number {
  return typeof value === 'number' && value >= 0 && (value <= MAX_DELAY_MS || value === Infinity);
}

/** How a bad value is named in error messages. */
export function describeValue(value: unknown): string {
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  return typeof value;
}

/** A boolean option: `fallback` when absent, anything but `true` or `false` refused naming `name`. */
export function flag(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean')
    throw new InvalidOptionError(`${name} must be a boolean, got ${describeValue(value)}`);
  return value;
}

/** A source of uniform random numbers in [0, 1), like `Math.random`: injectable so tests are exact. */
export type Random = () => number;

/**
 * A small seeded generator (mulberry32) for reproducible spreads and jitter: the same seed gives
 * the same sequence on every run and every Node version.
 */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `ms` moved by up to `±fraction` of itself (gRPC's MAX_CONNECTION_AGE jitter is ±10%). */
export function jitter(ms: number, fraction: number, random: Random): number {
  return ms * (1 + fraction * (2 * random() - 1));
}

/**
 * Where an item keeps its place in one {@link DeadlineQueue}: its index in the queue's heap, or
 * `-1` while it has no deadline there. The item holds it, not the queue: a queue that mapped
 * items to places would keep pointing at items it let go (see {@link DeadlineQueue}).
 */
export interface DeadlineSlot<T> {
  get(item: T): number;
  set(item: T, index: number): void;
}

/** An item that keeps its place in a field of its own (one queue per item). */
export interface Slotted {
  slot: number;
}

/** The {@link DeadlineSlot} of a {@link Slotted} item. */
export const fieldSlot: DeadlineSlot<Slotted> = {
  get: (item) => item.slot,
  set: (item, index) => {
    item.slot = index;
  },
};

/**
 * Deadlines for many items under one timer. `add(item, at)` schedules `onExpire(item)` at the
 * absolute time `at` (`performance.now()` ms), `delete(item)` cancels it. A binary min-heap keyed
 * by `at` keeps both O(log n), whatever order the deadlines come in (a fixed delay, jitter, a
 * random spread), and the timer is re-armed only when the earliest deadline changes. Deadlines
 * are absolute, so a queue has no length limit of its own; the timer is unref'd: the sockets whose
 * deadlines these are keep the process alive, the queue never does.
 *
 * The heap is two arrays (items, deadlines) and each item keeps its own index (`slot`), so
 * adding allocates no entry per item, and an item that leaves is referenced by nothing the
 * queue holds.
 * A `Map` from item to place would keep closed connections alive: its discarded hash tables,
 * once old, point at the items they held until the next full collection, and the young
 * generation's collector then copies each closed connection (docs/architecture.md, "Timers").
 */
export class DeadlineQueue<T> {
  readonly #onExpire: (item: T) => void;
  readonly #slot: DeadlineSlot<T>;
  readonly #items: T[] = [];
  readonly #ats: number[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** When the timer fires, while armed. */
  #armedAt = Infinity;

  constructor(onExpire: (item: T) => void, slot: DeadlineSlot<T>) {
    this.#onExpire = onExpire;
    this.#slot = slot;
  }

  /** How many items wait for their deadline. */
  get size(): number {
    return this.#items.length;
  }

  /** Schedules (or moves) `item`'s deadline to the absolute time `at`. */
  add(item: T, at: number): void {
    const index = this.#slot.get(item);
    if (index >= 0) {
      this.#ats[index] = at;
      this.#sift(index);
    } else {
      this.#items.push(item);
      this.#ats.push(at);
      this.#sift(this.#items.length - 1);
    }
    if (at < this.#armedAt) this.#arm();
  }

  /**
   * Cancels `item`'s deadline, if it has one. The timer is left as it is and catches up when it
   * fires (it then re-arms for the earliest deadline left, or stops): clearing and re-arming it
   * for every connection that closes before its deadline is what one shared timer saves.
   */
  delete(item: T): boolean {
    const index = this.#slot.get(item);
    if (index < 0) return false;
    this.#slot.set(item, -1);
    this.#removeAt(index);
    return true;
  }

  /** True while `item` has a deadline. */
  has(item: T): boolean {
    return this.#slot.get(item) >= 0;
  }

  /** Cancels every deadline. */
  clear(): void {
    for (const item of this.#items) this.#slot.set(item, -1);
    this.#items.length = 0;
    this.#ats.length = 0;
    this.#disarm();
  }

  #arm(): void {
    if (this.#items.length === 0) {
      this.#disarm();
      return;
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const at = this.#ats[0]!;
    this.#armedAt = at;
    const delay = Math.min(Math.max(0, at - performance.now()), MAX_DELAY_MS);
    this.#timer = setTimeout(this.#fire, delay);
    this.#timer.unref();
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Infinity;
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = performance.now();
    const items = this.#items;
    try {
      // Expire everything due; a callback may add or delete items meanwhile (the heap stays valid).
      while (items.length > 0 && this.#ats[0]! <= now) {
        const item = items[0]!;
        this.#slot.set(item, -1);
        this.#removeAt(0);
        this.#onExpire(item);
      }
    } finally {
      // Re-armed even when a callback throws: the items after it are not stranded.
      if (this.#timer === undefined) this.#arm();
    }
  };

  /** Takes the item at `index` out (its slot is already cleared): the last one fills the gap. */
  #removeAt(index: number): void {
    const item = this.#items.pop()!;
    const at = this.#ats.pop()!;
    if (index === this.#items.length) return;
    this.#items[index] = item;
    this.#ats[index] = at;
    this.#sift(index);
  }

  /** Moves the item at `index` up or down to where its deadline belongs, and records its place. */
  #sift(index: number): void {
    const items = this.#items;
    const ats = this.#ats;
    const item = items[index]!;
    const at = ats[index]!;
    let hole = index;
    while (hole > 0) {
      const parent = (hole - 1) >> 1;
      if (ats[parent]! <= at) break;
      this.#place(hole, items[parent]!, ats[parent]!);
      hole = parent;
    }
    if (hole === index) {
      const length = items.length;
      for (;;) {
        let child = 2 * hole + 1;
        if (child >= length) break;
        if (child + 1 < length && ats[child + 1]! < ats[child]!) child++;
        if (ats[child]! >= at) break;
        this.#place(hole, items[child]!, ats[child]!);
        hole = child;
      }
    }
    this.#place(hole, item, at);
  }

  #place(index: number, item: T, at: number): void {
    this.#items[index] = item;
    this.#ats[index] = at;
    this.#slot.set(item, index);
  }
}

/** Slots an emptied {@link FixedDelayQueue} keeps for reuse. */
const REUSE_LIMIT = 1024;

/**
 * Deadlines that are all the same `delay` after the moment they are added, so they come due in
 * the order they were added: a FIFO under one unref'd timer, where a {@link DeadlineQueue} would
 * pay a heap (the linger after our FIN: thousands of closing connections at once, each
 * with the server's one `lingerTimeout`; see docs/architecture.md, "Timers").
 *
 * Adding is two stores. Cancelling is O(1) and lazy: the item's owner makes `isWaiting(item)`
 * false and calls `release()`; a released item is skipped when it comes due, and dropped sooner,
 * by a compaction, once released items are half the queue: the queue never holds more released
 * items than the items still waiting, plus up to 31, so a closed connection is not kept for the
 * delay. A queue that empties starts again at the front of the same arrays, so a server whose
 * connections close a few at a time (churn) allocates nothing per connection here; arrays grown
 * past `REUSE_LIMIT` slots by a burst (a shutdown) are let go once it is over.
 */
export class FixedDelayQueue<T> {
  readonly #delay: number;
  readonly #onExpire: (item: T) => void;
  readonly #isWaiting: (item: T) => boolean;
  /** The items from `#head` to `#tail`, in the order added; `#ats` holds their deadlines. */
  #items: Array<T | undefined> = [];
  #ats: number[] = [];
  #head = 0;
  /** One past the last item: the arrays' slots from here on are free (an emptied queue's, reused). */
  #tail = 0;
  /** Items in the queue whose owner released them. */
  #released = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(delay: number, onExpire: (item: T) => void, isWaiting: (item: T) => boolean) {
    this.#delay = delay;
    this.#onExpire = onExpire;
    this.#isWaiting = isWaiting;
  }

  /** How many items wait for their deadline. */
  get size(): number {
    return this.#tail - this.#head - this.#released;
  }

  /** Schedules `onExpire(item)` `delay` ms from now, unless `item` is released before. */
  add(item: T): void {
    // A store at the arrays' length appends; below it, the slot of an emptied queue is reused.
    const tail = this.#tail++;
    this.#items[tail] = item;
    this.#ats[tail] = performance.now() + this.#delay;
    if (this.#timer === undefined) this.#arm();
  }

  /** One item added earlier no longer waits (`isWaiting` says false for it from now on). */
  release(): void {
    this.#released++;
    // Items mostly stop waiting in the order they came (peers answer our FINs in turn): the
    // released ones at the head go at once; a compaction catches the rest.
    this.#dropReleasedHead();
    const released = this.#released;
    if (released >= 32 && released * 2 >= this.#tail - this.#head) this.#compact();
  }

  /** Drops released items at the head; an emptied queue starts again at the front of its arrays. */
  #dropReleasedHead(): void {
    const items = this.#items;
    const tail = this.#tail;
    let head = this.#head;
    while (this.#released > 0 && head < tail && !this.#isWaiting(items[head] as T)) {
      items[head++] = undefined;
      this.#released--;
    }
    if (head === tail) {
      this.#head = 0;
      this.#tail = 0;
      if (tail > REUSE_LIMIT) {
        this.#items = [];
        this.#ats = [];
      }
    } else {
      this.#head = head;
      if (head >= 1024 && head * 2 >= tail) this.#compact();
    }
  }

  /** Keeps the items still waiting, in order, in arrays of their own size. */
  #compact(): void {
    const items: T[] = [];
    const ats: number[] = [];
    const from = this.#items;
    for (let i = this.#head; i < this.#tail; i++) {
      const item = from[i] as T;
      if (!this.#isWaiting(item)) continue;
      items.push(item);
      ats.push(this.#ats[i]!);
    }
    this.#items = items;
    this.#ats = ats;
    this.#head = 0;
    this.#tail = items.length;
    this.#released = 0;
  }

  #arm(): void {
    const delay = Math.max(0, this.#ats[this.#head]! - performance.now());
    this.#timer = setTimeout(this.#fire, Math.min(delay, MAX_DELAY_MS));
    this.#timer.unref();
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    try {
      // Fields are read again per item: a callback may add, or release (and so compact).
      while (this.#head < this.#tail && this.#ats[this.#head]! <= now) {
        const item = this.#items[this.#head] as T;
        this.#items[this.#head++] = undefined;
        if (this.#isWaiting(item)) this.#onExpire(item);
        else this.#released--;
      }
      this.#dropReleasedHead();
    } finally {
      // Re-armed even when a callback throws: the items after it are not stranded.
      if (this.#timer === undefined && this.#tail > this.#head) this.#arm();
    }
  };
}
