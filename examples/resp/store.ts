/**
 * The in-memory key space: binary-safe string keys and values with optional expiry.
 *
 * Expiry is lazy (an expired key is deleted when it is next touched) plus an optional sweeper: one
 * unref'd interval timer per store that samples keys with a TTL, so keys that are never read again
 * do not hold memory forever. There is never a timer per key.
 *
 * @module
 */

/** A stored value. */
export interface Entry {
  /** The value's bytes; never mutated once stored (replies may reference it). */
  readonly value: Buffer;
  /** Expiry time in ms since the epoch (per the store's clock), or 0 for none. */
  readonly expiresAt: number;
}

/** Options of a {@link Store}. */
export interface StoreOptions {
  /** Clock in ms, injectable for tests. Default `Date.now`. */
  now?: () => number;
}

/**
 * Keys are held as latin1 strings: a one-to-one, binary-safe mapping of bytes to a JS string, and
 * the cheapest string decoding Node has.
 */
export function keyOf(key: Buffer): string {
  return key.toString('latin1');
}

/** A key-value map with millisecond expiry. */
export class Store {
  /** The store's clock. */
  readonly now: () => number;
  private readonly map = new Map<string, Entry>();
  /** Keys that have a TTL, for the sweeper. */
  private readonly expiring = new Set<string>();
  /** The sweeper's place in `expiring`, kept across ticks so every key gets its turn. */
  private cursor: Iterator<string> | undefined;

  constructor(options: StoreOptions = {}) {
    this.now = options.now ?? Date.now;
  }

  /** Number of keys, expired ones not yet swept included. */
  get size(): number {
    return this.map.size;
  }

  /** The live entry for key, deleting it if it has expired. */
  get(key: string): Entry | undefined {
    const entry = this.map.get(key);
    if (entry === undefined || entry.expiresAt === 0 || entry.expiresAt > this.now()) return entry;
    this.delete(key);
    return undefined;
  }

  /** Stores value (which must not be mutated afterwards); expiresAt 0 means no expiry. */
  set(key: string, value: Buffer, expiresAt = 0): void {
    this.map.set(key, { value, expiresAt });
    if (expiresAt !== 0) this.expiring.add(key);
    else if (this.expiring.size !== 0) this.expiring.delete(key);
  }

  /** Deletes key; true if it existed (and had not expired). */
  delete(key: string): boolean {
    const entry = this.map.get(key);
    if (entry === undefined) return false;
    this.map.delete(key);
    if (entry.expiresAt !== 0) {
      this.expiring.delete(key);
      return entry.expiresAt > this.now();
    }
    return true;
  }

  /** Removes every key. */
  clear(): void {
    this.map.clear();
    this.expiring.clear();
    this.cursor = undefined;
  }

  /**
   * Checks up to `budget` keys that have a TTL, deleting the expired ones. Returns how many were
   * deleted.
   */
  sweep(budget = 200): number {
    const now = this.now();
    let deleted = 0;
    for (let i = 0; i < budget; i++) {
      this.cursor ??= this.expiring.values();
      const r = this.cursor.next();
      if (r.done) {
        this.cursor = undefined;
        break;
      }
      const entry = this.map.get(r.value);
      if (entry === undefined || entry.expiresAt === 0) {
        this.expiring.delete(r.value);
      } else if (entry.expiresAt <= now) {
        this.map.delete(r.value);
        this.expiring.delete(r.value);
        deleted++;
      }
    }
    return deleted;
  }

  /**
   * Starts the sweeper: every `intervalMs`, {@link Store.sweep} runs on an unref'd timer (it never
   * keeps the process alive). Returns the function that stops it.
   */
  startSweeper(intervalMs = 100, budget = 200): () => void {
    const timer = setInterval(() => this.sweep(budget), intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
