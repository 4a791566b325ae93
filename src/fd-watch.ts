/**
 * Descriptor exhaustion, made visible (docs/architecture.md, "Descriptor exhaustion").
 *
 * When the process has no descriptor left, libuv accepts each waiting connection with a reserve
 * descriptor and closes it at once, so that the listen backlog does not spin the event loop. Node
 * emits nothing for this: no `'connection'`, no `'error'`. The only public view of it is the
 * process's own descriptor count against its limit, which Linux shows in `/proc`. This module
 * samples both on one unref'd timer per interval, shared by every server that watches with that
 * interval, and only while one does.
 *
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import { openFdCount } from './proc-fds.js';

/** The process's descriptors: how many are open and its soft limit (`ulimit -n`). */
export interface FdUsage {
  readonly open: number;
  readonly limit: number;
}

type Watcher = (usage: FdUsage) => void;

/** The watchers by interval, each interval with its one timer. */
const timers = new Map<number, { timer: NodeJS.Timeout; watchers: Set<Watcher> }>();

/** The last soft limit read; kept when the limits file cannot be opened (no descriptor left). */
let knownLimit = Number.POSITIVE_INFINITY;

/**
 * This process's descriptor usage, or `undefined` where `/proc` does not show it (not Linux).
 * Reading it needs no descriptor on Linux 6.2 and later (the size of `/proc/self/fd` is the
 * count); older kernels list the directory, which fails with EMFILE exactly when none is left.
 */
export function fdUsage(): FdUsage | undefined {
  try {
    knownLimit = softLimit(readFileSync('/proc/self/limits', 'latin1'));
  } catch (error) {
    if (!isExhaustion(error)) return undefined;
  }
  let open: number;
  try {
    open = statSync('/proc/self/fd').size || openFdCount();
  } catch (error) {
    if (!isExhaustion(error)) return undefined;
    open = knownLimit;
  }
  return { open, limit: knownLimit };
}

/** The soft "Max open files" of a `/proc/<pid>/limits` text; `Infinity` for "unlimited". */
export function softLimit(limits: string): number {
  const soft = /^Max open files\s+(\S+)/m.exec(limits)?.[1];
  const value = soft === undefined || soft === 'unlimited' ? Number.NaN : Number(soft);
  return Number.isFinite(value) ? value : Number.POSITIVE_INFINITY;
}

function isExhaustion(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EMFILE' || code === 'ENFILE';
}

/**
 * Calls `watcher` with the usage every `interval` ms until the returned function is called.
 * Returns `undefined` (and never calls it) where the usage cannot be read.
 */
export function watchFds(interval: number, watcher: Watcher): (() => void) | undefined {
  if (fdUsage() === undefined) return undefined;
  let entry = timers.get(interval);
  if (entry === undefined) {
    const watchers = new Set<Watcher>();
    const timer = setInterval(() => {
      const usage = fdUsage();
      if (usage !== undefined) for (const w of watchers) w(usage);
    }, interval);
    timer.unref(); // watching never keeps the process alive
    entry = { timer, watchers };
    timers.set(interval, entry);
  }
  const { watchers, timer } = entry;
  watchers.add(watcher);
  return () => {
    if (!watchers.delete(watcher) || watchers.size > 0) return;
    clearInterval(timer);
    timers.delete(interval);
  };
}
