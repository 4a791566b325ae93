/**
 * The open connections of a server, in the order they were accepted (docs/architecture.md,
 * "Connection list").
 *
 * An intrusive doubly linked list through two fields of each `Conn`, not a `Set`. A `Set`'s hash
 * table is replaced as connections come and go, and a replaced table that had reached the old
 * generation still points at the connections it held until the next full collection. The young
 * generation's collector cannot tell that table is dead, so it takes those pointers as live: every
 * connection that closes meanwhile is copied and promoted with its socket and everything the
 * socket holds, and a churning server spends its scavenges on dead connections. Unlinking clears a
 * connection's own links, so a closed connection points at no other and nothing points at it.
 *
 * @module
 */
import type { Conn } from './conn.js';
import { kNext, kPrev } from './symbols.js';

export class ConnList {
  #first: Conn | undefined = undefined;
  #last: Conn | undefined = undefined;
  #size = 0;

  /** How many connections are in the list. */
  get size(): number {
    return this.#size;
  }

  /** Appends `conn`, which is in no list. */
  add(conn: Conn): void {
    const last = this.#last;
    if (last === undefined) this.#first = conn;
    else {
      last[kNext] = conn;
      conn[kPrev] = last;
    }
    this.#last = conn;
    this.#size++;
  }

  /** Removes `conn` if it is in the list. */
  delete(conn: Conn): void {
    const prev = conn[kPrev];
    const next = conn[kNext];
    if (prev === undefined && this.#first !== conn) return;
    if (prev === undefined) this.#first = next;
    else {
      prev[kNext] = next;
      conn[kPrev] = undefined;
    }
    if (next === undefined) this.#last = prev;
    else {
      next[kPrev] = prev;
      conn[kNext] = undefined;
    }
    this.#size--;
  }

  /**
   * The connections, in accept order. The loop's body may remove the connection it is given, not
   * others; it cannot close one synchronously anyway (a socket's `'close'`, which removes its
   * connection, always comes on a later tick).
   */
  *[Symbol.iterator](): Generator<Conn, void, undefined> {
    let conn = this.#first;
    while (conn !== undefined) {
      const next = conn[kNext];
      yield conn;
      conn = next;
    }
  }
}
