/**
 * When each connection was accepted, to within a step, with no timestamp per connection: what
 * `firstRequestGrace` needs at shutdown (docs/architecture.md, "A new connection's first
 * request"), for the price of one clock read per accept and a dozen numbers per server.
 *
 * Connection ids increase with every accept. A checkpoint (an id, the time it was accepted) is
 * recorded at the first accept `step` ms or more after the previous checkpoint, so every
 * connection was accepted less than `step` ms after the latest checkpoint at or below its id:
 * that checkpoint's time plus `step` is a bound its accept time never exceeds. Checkpoints older
 * than `span` ms are dropped (one is kept): a connection older than all the kept ones is bounded
 * by the oldest, which is `span` ms old or more, as far back as any caller looks.
 *
 * @module
 */

export class AcceptClock {
  readonly #step: number;
  readonly #span: number;
  readonly #ids: number[] = [];
  readonly #times: number[] = [];

  /** Bounds accept times to within `step` ms, for connections up to `span` ms old. */
  constructor(step: number, span: number) {
    this.#step = step;
    this.#span = span;
  }

  /** Connection `id` (greater than every earlier one) was accepted at `now`. */
  accepted(id: number, now: number): void {
    const times = this.#times;
    const n = times.length;
    if (n > 0 && now - times[n - 1]! < this.#step) return;
    times.push(now);
    this.#ids.push(id);
    while (times.length > 1 && times[1]! <= now - this.#span) {
      times.shift();
      this.#ids.shift();
    }
  }

  /** The latest moment connection `id` can have been accepted (`-Infinity` if none was recorded). */
  acceptedBy(id: number): number {
    const ids = this.#ids;
    // The last checkpoint at or below `id` (a dozen of them at most: a linear scan from the end).
    for (let i = ids.length - 1; i >= 0; i--) {
      if (ids[i]! <= id) return this.#times[i]! + this.#step;
    }
    // Older than every checkpoint kept: accepted before the oldest one.
    return this.#times.length > 0 ? this.#times[0]! : -Infinity;
  }
}
