/**
 * What the supervisor (primary) and its workers say to each other over node:cluster's IPC
 * channel, and the environment a supervisor gives each worker. docs/architecture.md ("All cores, and upgrades")
 * walks through a worker's life.
 *
 * @module
 */
import { REFUSE_REASONS } from '../accept.js';
import type { ServerStats, ShutdownReport } from '../server.js';

/** Set in a worker's environment by the supervisor: the worker's slot, 1 to `workers`. */
export const ENV_SLOT = 'TCPSERVER_WORKER';
/** Set in a worker's environment: the generation (0 at start, +1 per rolling restart). */
export const ENV_GENERATION = 'TCPSERVER_GENERATION';
/** Set to `1` in a worker's environment in reusePort mode: its servers bind the port themselves. */
export const ENV_REUSE_PORT = 'TCPSERVER_REUSE_PORT';

/** Worker to primary. */
export type WorkerMessage =
  /** Every server listens, every listener is bound. */
  | { type: 'tcpserver:ready'; addresses: string[] }
  /** The worker cannot serve (a listener failed to bind): it exits next. */
  | { type: 'tcpserver:failed'; code: string | undefined; message: string }
  /** The latest counters, sent every `statsInterval` and on every phase change. */
  | { type: 'tcpserver:stats'; stats: ServerStats }
  /** Every server has stopped accepting (its listeners are closed); connections drain. */
  | { type: 'tcpserver:closing'; stats: ServerStats }
  /** Every server has stopped: the summed report, and the final counters. */
  | { type: 'tcpserver:stopped'; report: ShutdownReport; stats: ServerStats };

/** Primary to worker. */
export type PrimaryMessage =
  /** Shut down gracefully within `timeout` ms; a later one with a shorter timeout tightens it. */
  | { type: 'tcpserver:close'; timeout: number }
  /** Mirror the supervisor's `setReady()` on every server. */
  | { type: 'tcpserver:set-ready'; ready: boolean };

/** True for a message of this protocol (anything else on the channel is the application's). */
export function isProtocolMessage<T extends { type: string }>(message: unknown): message is T {
  return (
    typeof message === 'object' &&
    message !== null &&
    typeof (message as { type?: unknown }).type === 'string' &&
    (message as { type: string }).type.startsWith('tcpserver:')
  );
}

/** All-zero counters: the sum of nothing. */
export function zeroStats(): ServerStats {
  return {
    open: 0,
    new: 0,
    active: 0,
    idle: 0,
    closing: 0,
    accepted: 0,
    rejected: 0,
    refused: Object.fromEntries(REFUSE_REASONS.map((reason) => [reason, 0])) as ServerStats['refused'],
    closed: 0,
    forced: 0,
    errors: 0,
    idleTimeouts: 0,
    frameTimeouts: 0,
    minDataRateTimeouts: 0,
    lingerTimeouts: 0,
    fdExhaustions: 0,
  };
}

/** Adds `b` into `into`: every gauge and counter, `refused` by reason. */
export function addStats(into: ServerStats, b: ServerStats): ServerStats {
  for (const key of Object.keys(into) as Array<keyof ServerStats>) {
    if (key === 'refused') {
      for (const reason of REFUSE_REASONS) into.refused[reason] += b.refused[reason] ?? 0;
    } else into[key] += b[key] ?? 0;
  }
  return into;
}

/** The counters of `stats` with the gauges (open connections by state) zeroed: what a gone worker leaves. */
export function countersOnly(stats: ServerStats): ServerStats {
  return { ...stats, open: 0, new: 0, active: 0, idle: 0, closing: 0, refused: { ...stats.refused } };
}
