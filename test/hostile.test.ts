/**
 * Hostile peers (issue 12, item 5): peers that reset at the worst moments, half-open peers, peers
 * that never read, floods over `maxConnections`, oversized lines, random bytes thrown at every
 * example server, invalid TLS hellos, connection churn, and SIGTERM under RESP load; plus handlers
 * that throw, reject or never return. Real sockets on 127.0.0.1, real child processes, real
 * signals, no mocks. (Misbehaving peers and handlers of smaller scale are in adversarial.test.ts;
 * slow peers and slow frames are test/slow-peers.test.ts's; one slowloris scenario is here, so the suite
 * covers issue 12's list on its own.)
 *
 * Servers whose memory or resources are measured run in a child process
 * (test/fixtures/hostile-server.ts, started with --expose-gc), so the runner's own allocations do
 * not count. Every load loop is bounded in count and in time. Random choices come from a seeded
 * generator: `HOSTILE_SEED=<n>` repeats a run (the seed is printed).
 *
 * Figures of each run are printed as `figures <name> {...}` diagnostics (docs/reliability.md,
 * "Hostile peers").
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, afterEach, test } from 'node:test';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import {
  type Conn,
  type ConnState,
  lineDecoder,
  type Server,
  type ServerOptions,
  type ServerStats,
  type ShutdownReport,
} from '../src/index.js';
import type { Peak } from './fixtures/hostile-server.js';
import { closeNet, listenNet, makeCertificate, readBytes, startServer, waitForStats } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const MiB = 1024 * 1024;
const noop = (): void => {};

// ---------------------------------------------------------------------------------------------
// No unhandledRejection, uncaughtException or warning in this process (the last test checks it,
// and so does an `after` hook for anything later); children report their own.
// ---------------------------------------------------------------------------------------------

const problems: string[] = [];
const onRejection = (reason: unknown): void => void problems.push(`unhandledRejection: ${String(reason)}`);
const onException = (error: Error): void => void problems.push(`uncaughtException: ${error.stack}`);
const onWarning = (warning: Error): void =>
  void problems.push(`warning: ${warning.name}: ${warning.message}`);
process.on('unhandledRejection', onRejection);
process.on('uncaughtException', onException);
process.on('warning', onWarning);
/** What the children reported: checked by each test, and all together by the last one. */
const childProblems: string[] = [];
after(() => {
  process.off('unhandledRejection', onRejection);
  process.off('uncaughtException', onException);
  process.off('warning', onWarning);
  assert.deepEqual(problems, [], 'no unhandledRejection, uncaughtException or warning in the test process');
});

// ---------------------------------------------------------------------------------------------
// Seeded randomness
// ---------------------------------------------------------------------------------------------

const SEED = process.env.HOSTILE_SEED === undefined ? 0x5eed : Number(process.env.HOSTILE_SEED);
assert.ok(Number.isSafeInteger(SEED), `HOSTILE_SEED must be an integer, got ${process.env.HOSTILE_SEED}`);
console.log(`hostile: seed ${SEED} (HOSTILE_SEED=${SEED} repeats this run)`);

/** mulberry32: a small, fast, seeded 32-bit generator (not for cryptography). */
class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  u32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) out.writeUInt32LE(this.u32(), i);
    for (; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Tracking: whatever a test opens is torn down after it, and every in-process server must end
// with stats().open === 0.
// ---------------------------------------------------------------------------------------------

const servers = new Set<Server>();
const sockets = new Set<net.Socket>();
/** Child processes this file started and that have not exited yet. */
const procs = new Set<ChildProcess>();

afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  sockets.clear();
  for (const proc of procs) proc.kill('SIGKILL'); // by its pid: only what this file started
  procs.clear();
  const open: string[] = [];
  for (const srv of servers) {
    await srv.close({ timeout: 0 });
    if (srv.stats().open !== 0) open.push(`${srv.name}: ${JSON.stringify(srv.stats())}`);
  }
  servers.clear();
  assert.deepEqual(open, [], 'every server ends the test with stats().open === 0');
});

async function serveOn(options: ServerOptions): Promise<{ srv: Server; port: number }> {
  const started = await startServer(options);
  servers.add(started.srv);
  return started;
}

function track<T extends net.Socket>(socket: T): T {
  sockets.add(socket);
  socket.once('close', () => sockets.delete(socket));
  return socket;
}

/** Starts a child process, tracked until it exits. */
function spawnTracked(args: string[], options: Parameters<typeof spawn>[2]): ChildProcess {
  const proc = spawn(process.execPath, args, { cwd: root, ...options });
  procs.add(proc);
  proc.once('exit', () => procs.delete(proc));
  return proc;
}

/** Connects a tracked client to 127.0.0.1 and waits until it is connected. */
async function dial(port: number, options: net.TcpNetConnectOpts | object = {}): Promise<net.Socket> {
  const socket = track(net.connect({ host: '127.0.0.1', port, ...options }));
  await once(socket, 'connect');
  return socket;
}

/** What a client saw by the time its socket closed. */
interface Seen {
  bytes: number;
  data: Buffer[];
  error: string | undefined;
  ended: boolean;
}

/** Records what `socket` receives (kept if `keep`) and resolves once it closes; never rejects. */
function watchSocket(socket: net.Socket, keep = true): Promise<Seen> {
  const seen: Seen = { bytes: 0, data: [], error: undefined, ended: false };
  socket.on('data', (chunk: Buffer) => {
    seen.bytes += chunk.length;
    if (keep) seen.data.push(chunk);
  });
  socket.on('end', () => {
    seen.ended = true;
  });
  socket.on('error', (error: NodeJS.ErrnoException) => {
    seen.error ??= error.code ?? error.message;
  });
  return new Promise((resolve) => socket.once('close', () => resolve(seen)));
}

/** Resolves when `socket` drained or closed (a writer respecting backpressure). */
function drainedOrClosed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/** Runs `task(0..count-1)` with at most `concurrency` running at once; resolves every result. */
async function pool<T>(count: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return results;
}

/** Resolves `promise`, or rejects once `ms` have passed: a generous bound, never a pacing sleep. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

/** A latch: `open()` releases `wait`. */
function latch<T = void>(): { wait: Promise<T>; open: (value: T) => void } {
  let open!: (value: T) => void;
  const wait = new Promise<T>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

function countBy(items: Iterable<string>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[item] = (counts[item] ?? 0) + 1;
  return counts;
}

/** Figures of this run, printed for docs/reliability.md. */
const figures: Record<string, unknown> = {};
function report(t: { diagnostic(message: string): void }, name: string, value: object): void {
  figures[name] = value;
  t.diagnostic(`figures ${name} ${JSON.stringify(value)}`);
}

const mib = (bytes: number): number => Math.round((bytes / MiB) * 100) / 100;

// ---------------------------------------------------------------------------------------------
// Child-process servers (test/fixtures/hostile-server.ts)
// ---------------------------------------------------------------------------------------------

type Message = { id?: number; event?: string; error?: string } & Record<string, unknown>;
type Memory = NodeJS.MemoryUsage;

/** A server in a child process, driven over IPC. */
class ServerChild {
  readonly kind: string;
  readonly proc: ChildProcess;
  port = 0;
  stderr = '';
  readonly exited: Promise<number | null>;
  readonly #replies = new Map<number, { resolve: (m: Message) => void; reject: (e: Error) => void }>();
  readonly #events: Message[] = [];
  readonly #eventWaiters: Array<{ name: string; resolve: (m: Message) => void; reject: (e: Error) => void }> =
    [];
  #nextId = 1;
  #exitCode: number | null | undefined;

  private constructor(kind: string) {
    this.kind = kind;
    this.proc = spawnTracked(['--expose-gc', '--import', 'tsx', 'test/fixtures/hostile-server.ts', kind], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (text: string) => {
      this.stderr += text;
    });
    this.proc.on('message', (message: Message) => {
      if (message.id !== undefined) {
        const waiter = this.#replies.get(message.id);
        this.#replies.delete(message.id);
        // The reply is `{ id, ...result }`: the id is ours, not part of the result.
        const { id: _id, ...result } = message;
        if (message.error !== undefined) waiter?.reject(new Error(`${this.kind}: ${message.error}`));
        else waiter?.resolve(result);
        return;
      }
      const index = this.#eventWaiters.findIndex((w) => w.name === message.event);
      if (index >= 0) this.#eventWaiters.splice(index, 1)[0]!.resolve(message);
      else this.#events.push(message);
    });
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code) => {
        this.#exitCode = code;
        const gone = new Error(`${this.kind} server exited (code ${code}): ${this.stderr}`);
        for (const waiter of this.#replies.values()) waiter.reject(gone);
        this.#replies.clear();
        for (const waiter of this.#eventWaiters.splice(0)) waiter.reject(gone);
        resolve(code);
      });
    });
  }

  static async start(kind: string): Promise<ServerChild> {
    const child = new ServerChild(kind);
    const ready = await within(child.event('ready'), 30_000, `${kind} server start`);
    child.port = ready.port as number;
    return child;
  }

  /** The next event named `name` (events are queued until someone asks). */
  event(name: string): Promise<Message> {
    const index = this.#events.findIndex((m) => m.event === name);
    if (index >= 0) return Promise.resolve(this.#events.splice(index, 1)[0]!);
    if (this.#exitCode !== undefined) return Promise.reject(new Error(`${this.kind} server is gone`));
    return new Promise((resolve, reject) => this.#eventWaiters.push({ name, resolve, reject }));
  }

  /** Events named `name` received and not yet taken. */
  events(name: string): Message[] {
    return this.#events.filter((m) => m.event === name);
  }

  ask<T = Message>(cmd: string, args: object = {}): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      if (this.#exitCode !== undefined) {
        reject(new Error(`${this.kind} server is gone`));
        return;
      }
      this.#replies.set(id, { resolve: resolve as (m: Message) => void, reject });
      this.proc.send({ id, cmd, ...args });
    });
  }

  /**
   * Checks the child reported no problem, lets it go (disconnects), and asserts it exits by itself
   * with code 0 and a clean stderr: a leaked handle would keep it alive.
   */
  async finish(): Promise<void> {
    const { problems: seen } = await this.ask<{ problems: string[] }>('problems');
    childProblems.push(...seen.map((p) => `${this.kind}: ${p}`));
    assert.deepEqual(seen, [], `${this.kind} server: no unhandledRejection, uncaughtException or warning`);
    this.proc.disconnect();
    const code = await within(this.exited, 15_000, `${this.kind} server exiting by itself after close()`);
    assert.equal(code, 0, this.stderr);
    assert.doesNotMatch(this.stderr, /Warning|Unhandled|uncaught|Error/i, this.stderr);
  }
}

/** `retained` (heapUsed + external) of a `mem` answer, comparable with a `peak`'s. */
const retained = (m: Memory): number => m.heapUsed + m.external;

/** The active resources of this process, counted by type. */
function resourceCounts(): Record<string, number> {
  return countBy(process.getActiveResourcesInfo());
}

// =============================================================================================
// 1. Resets
// =============================================================================================

test('peers that reset mid-request, mid-response and mid-shutdown: no crash, no handler error, stats().open back to 0', {
  timeout: 30_000,
}, async (t) => {
  const rng = new Rng(SEED ^ 0x1);
  const outcomes: string[] = [];
  const causes: string[] = [];
  let handlerErrors = 0;
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      try {
        // The request is one line: `big <MiB>` asks for a reply of that size.
        const line = await conn.readFrame(lineDecoder({ maxLength: 1024 }));
        if (line === null) return;
        const chunks = Number(line.split(' ')[1]) * 16;
        for (let i = 0; i < chunks; i++) await conn.write(Buffer.alloc(64 * 1024, i & 0xff));
      } catch (error) {
        const e = error as { code?: string; cause?: { code?: string } };
        outcomes.push(String(e.code));
        causes.push(String(e.cause?.code));
        throw error; // ERR_CONN_CLOSED: not the handler's fault, never reported
      }
    },
  });
  srv.on('handlerError', () => handlerErrors++);
  // Connections whose input arrived while their read waited (idle -> active).
  let woke = 0;
  let wake = latch();
  let wakeAt = 0;
  srv.on('connState', (_conn: Conn, state: ConnState, prev: ConnState) => {
    if (prev === 'idle' && state === 'active' && ++woke === wakeAt) wake.open();
  });
  const expectWakes = (n: number): Promise<void> => {
    woke = 0;
    wakeAt = n;
    wake = latch();
    return wake.wait;
  };

  // Mid-request: half a request line is in the decoder when the peer resets.
  const midRequest = async (n: number): Promise<Promise<Seen>[]> => {
    const woken = expectWakes(n);
    const clients = await Promise.all(Array.from({ length: n }, () => dial(port)));
    const seen = clients.map((c) => watchSocket(c));
    for (const c of clients) c.write(`big ${1 + rng.int(9)}`); // no newline: the request is incomplete
    await woken;
    assert.equal(srv.stats().active, n, 'each connection holds half a request');
    for (const c of clients) c.resetAndDestroy();
    return seen;
  };
  // Mid-response: the handler is writing 32 MiB when the peer resets, at a random byte.
  const midResponse = async (n: number, reset: boolean): Promise<net.Socket[]> => {
    const clients = await Promise.all(Array.from({ length: n }, () => dial(port)));
    await Promise.all(
      clients.map(async (c) => {
        c.write('big 32\n');
        await readBytes(c, 256 * 1024 + rng.int(2 * MiB));
        if (reset) c.resetAndDestroy();
        else c.pause(); // stops reading: the handler waits for drain
      }),
    );
    return clients;
  };

  // A. mid-request
  await Promise.all(await midRequest(20));
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(outcomes.length, 20);
  // B. mid-response
  await midResponse(10, true);
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(outcomes.length, 30);
  // C. mid-shutdown: 10 connections mid-response, 10 mid-request, reset while close() waits for them.
  const writing = await midResponse(10, false);
  const woken = expectWakes(10);
  const halfRequests = await Promise.all(Array.from({ length: 10 }, () => dial(port)));
  for (const c of halfRequests) c.write('big 1');
  await woken;
  assert.equal(srv.stats().open, 20);
  const closing = srv.close({ timeout: 30_000 });
  // close() cannot end them: each is mid-request or mid-response. They reset instead.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(srv.stats().open, 20, 'active connections are not cut by close()');
  for (const c of [...writing, ...halfRequests]) c.resetAndDestroy();
  const shutdown = await closing;

  assert.deepEqual(
    countBy(outcomes),
    { ERR_CONN_CLOSED: 50 },
    'every I/O cut by a reset rejects ERR_CONN_CLOSED',
  );
  assert.equal(handlerErrors, 0, 'a reset is not a handler error');
  assert.equal(srv.stats().errors, 0);
  assert.deepEqual([shutdown.graceful, shutdown.forced], [20, 0]);
  assert.ok(shutdown.durationMs < 10_000, `close() took ${shutdown.durationMs} ms`);
  const s = srv.stats();
  assert.deepEqual([s.open, s.accepted, s.closed], [0, 50, 50]);
  report(t, 'resets', {
    midRequest: 20,
    midResponse: 10,
    midShutdown: 20,
    causes: countBy(causes),
    handlerErrors,
    closeMs: Math.round(shutdown.durationMs),
    open: s.open,
  });
});

// =============================================================================================
// 2. Half-open peers
// =============================================================================================

/** The response to half-open client `k`: 8 MiB of seeded bytes. */
const halfOpenResponse = (k: number): Buffer => new Rng(SEED ^ (0x200 + k)).bytes(8 * MiB);

test('half-open peers that end their side right after sending get the whole 8 MiB response after their FIN, byte for byte, even across close()', {
  timeout: 30_000,
}, async (t) => {
  const clients = 4;
  let writing = 0;
  const allWriting = latch();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const request: Buffer[] = [];
      for await (const chunk of conn) request.push(chunk); // until the peer's FIN
      const body = halfOpenResponse(Number(Buffer.concat(request).toString()));
      for (let at = 0; at < body.length; at += 64 * 1024) {
        await conn.write(body.subarray(at, at + 64 * 1024));
        if (at === MiB && ++writing === clients) allWriting.open();
      }
    },
  });
  const results = Array.from({ length: clients }, async (_, k) => {
    const socket = await dial(port, { allowHalfOpen: true });
    const seen = watchSocket(socket);
    socket.once('end', () => socket.end()); // after the server's FIN, close our side too
    socket.end(String(k)); // the request, then our FIN at once
    return seen;
  });
  await within(allWriting.wait, 20_000, 'every handler writing');
  // A shutdown now does not cut any of them: each is mid-response, not idle.
  const shutdown = await srv.close({ timeout: 20_000 });
  const digests: string[] = [];
  for (const [k, pending] of results.entries()) {
    const seen = await pending;
    const got = Buffer.concat(seen.data);
    const want = halfOpenResponse(k);
    assert.equal(seen.error, undefined);
    assert.ok(seen.ended, 'the response ends with the server FIN');
    assert.equal(got.length, want.length, `client ${k}: length`);
    assert.ok(got.equals(want), `client ${k}: byte for byte`);
    digests.push(createHash('sha256').update(got).digest('hex').slice(0, 16));
  }
  assert.deepEqual([shutdown.graceful, shutdown.forced], [clients, 0]);
  assert.equal(srv.stats().errors, 0);
  assert.equal(srv.stats().open, 0);
  report(t, 'halfOpen', {
    clients,
    bytesEach: 8 * MiB,
    closeMs: Math.round(shutdown.durationMs),
    graceful: shutdown.graceful,
    sha256: digests,
  });
});

// =============================================================================================
// 3. A peer that never reads
// =============================================================================================

test('a peer that never reads while the handler writes 100 MiB: server memory stays near the high-water mark; close({ timeout }) forces it and nothing leaks', {
  timeout: 45_000,
}, async (t) => {
  const child = await ServerChild.start('writer');
  const baseline = await child.ask<Memory>('mem');
  const resourcesBefore = await child.ask<Record<string, number>>('resources');
  await child.ask('sample');
  const stalled = child.event('stalled');
  const client = await dial(child.port);
  client.pause(); // never reads
  const seen = watchSocket(client, false);
  const stall = await within(stalled, 30_000, 'the writer blocking on drain');
  const peak = await child.ask<Peak>('peak');
  const after = await child.ask<Memory>('mem');
  const done = child.event('writer-done');
  const closed = await child.ask<{ report: ShutdownReport; stats: ServerStats }>('close', { timeout: 200 });
  client.resume(); // a paused socket never notices the reset
  await seen;
  const ended = await done;
  const resourcesAfter = await child.ask<Record<string, number>>('resources');

  const written = stall.written as number;
  assert.ok(written < 48 * MiB, `the writer blocked after ${mib(written)} MiB, not 100 MiB`);
  // What the process itself holds for the socket: under the high-water mark, plus the one chunk
  // whose write crossed it (the rest is in the kernel's buffers).
  assert.ok(
    (stall.writableLength as number) <= (stall.highWaterMark as number) + 64 * 1024,
    `${stall.writableLength} bytes queued in the process, high-water mark ${stall.highWaterMark}`,
  );
  const growth = peak.retained - retained(baseline);
  assert.ok(growth < 16 * MiB, `reachable memory grew by ${mib(growth)} MiB while 100 MiB were written`);
  assert.ok(peak.rss - baseline.rss < 48 * MiB, `rss grew by ${mib(peak.rss - baseline.rss)} MiB`);
  assert.deepEqual([closed.report.graceful, closed.report.forced], [0, 1]);
  assert.equal(ended.outcome, 'ERR_CONN_CLOSED', 'the blocked write rejects when the deadline forces it');
  assert.equal(closed.stats.errors, 0);
  assert.equal(closed.stats.open, 0);
  assert.deepEqual(
    { ...resourcesAfter, TCPServerWrap: (resourcesAfter.TCPServerWrap ?? 0) + 1 },
    resourcesBefore,
    'only the listener is gone',
  );
  await child.finish();
  report(t, 'neverReads', {
    writtenWhenBlockedMiB: mib(written),
    highWaterMark: stall.highWaterMark,
    writableLength: stall.writableLength,
    retainedGrowthMiB: mib(growth),
    rssGrowthMiB: mib(peak.rss - baseline.rss),
    afterGcGrowthMiB: mib(retained(after) - retained(baseline)),
    samples: peak.samples,
    forced: closed.report.forced,
    closeMs: Math.round(closed.report.durationMs),
  });
});

// =============================================================================================
// 4. Handlers that throw, reject or never return
// =============================================================================================

test('handlers that throw synchronously, reject, or never return: each ends only its connection, errors reported once each, never-returning ones forced at the close() deadline', {
  timeout: 30_000,
}, async (t) => {
  const n = 5;
  const kinds = ['good', ...Array.from({ length: n }, () => ['sync', 'reject', 'never']).flat()];
  const neverSignals: AbortSignal[] = [];
  const abortedAt: number[] = [];
  const { srv, port } = await serveOn({
    handler: (ctx, conn) => {
      const kind = kinds[conn.id - 1];
      if (kind === 'sync') throw new Error(`sync throw ${conn.id}`);
      if (kind === 'reject') {
        return (async () => {
          await conn.read();
          throw new Error(`rejection ${conn.id}`);
        })();
      }
      if (kind === 'never') {
        neverSignals.push(ctx.signal);
        ctx.signal.addEventListener('abort', () => abortedAt.push(performance.now()), { once: true });
        return new Promise<void>(noop); // ignores ctx.signal and never settles
      }
      return (async () => {
        for await (const chunk of conn) await conn.write(chunk);
      })();
    },
  });
  const reported: string[] = [];
  srv.on('handlerError', (error: Error) => reported.push(error.message));
  let emittedError = 0;
  srv.on('error', () => emittedError++);
  const published: string[] = [];
  const onPublished = (message: unknown): void => {
    const { server, error } = message as { server: Server; error: Error };
    if (server === srv) published.push(error.message);
  };
  diagnostics.subscribe('tcpserver:handler.error', onPublished);
  try {
    // Connect one at a time: connection ids (1, 2, ...) pick each handler's behaviour.
    // Each is watched from the start: a sync-throwing handler closes it before the next connects.
    const clients: net.Socket[] = [];
    const seen: Promise<Seen>[] = [];
    for (let i = 0; i < kinds.length; i++) {
      const client = await dial(port);
      clients.push(client);
      seen.push(watchSocket(client));
      await within(
        waitForStats(srv, (s) => s.accepted === i + 1),
        10_000,
        `connection ${i + 1} accepted`,
      );
    }
    const good = clients[0]!;
    for (const [i, c] of clients.entries()) if (kinds[i] === 'reject') c.write('x');
    // The failing ones close; the good one still echoes meanwhile.
    good.write('still there?');
    assert.equal((await readBytes(good, 12)).toString(), 'still there?');
    const failing = kinds.flatMap((kind, i) => (kind === 'sync' || kind === 'reject' ? [i] : []));
    await Promise.all(failing.map((i) => seen[i]));
    await waitForStats(srv, (s) => s.open === 1 + n);
    assert.deepEqual(
      reported.slice().sort(),
      failing.map((i) => (kinds[i] === 'sync' ? `sync throw ${i + 1}` : `rejection ${i + 1}`)).sort(),
      'each failure reported once, with its own error',
    );
    assert.deepEqual(published.slice().sort(), reported.slice().sort(), 'and published once on the channel');
    assert.equal(srv.stats().errors, 2 * n);
    good.write('after them');
    assert.equal((await readBytes(good, 10)).toString(), 'after them');
    // The never-returning handlers keep their connections until the deadline forces them.
    const closeStart = performance.now();
    const shutdown = await srv.close({ timeout: 500 });
    const closeMs = performance.now() - closeStart;
    assert.equal(neverSignals.length, n);
    assert.ok(
      neverSignals.every((s) => s.aborted),
      'their ctx.signal aborted',
    );
    assert.equal(abortedAt.length, n);
    const abortMs = Math.max(...abortedAt) - closeStart;
    assert.ok(
      abortMs < 250,
      `their ctx.signal aborted at once, not at the deadline: ${abortMs.toFixed(0)} ms`,
    );
    assert.deepEqual([shutdown.graceful, shutdown.forced], [1, n]);
    assert.ok(closeMs >= 450 && closeMs < 10_000, `forced at the deadline: ${closeMs.toFixed(0)} ms`);
    await Promise.all(seen);
    assert.equal(srv.stats().errors, 2 * n, 'being forced is not a handler error');
    assert.equal(reported.length, 2 * n);
    assert.equal(emittedError, 0, "the server never emits 'error'");
    assert.equal(srv.stats().open, 0);
    report(t, 'handlers', {
      sync: n,
      reject: n,
      never: n,
      reported: reported.length,
      forced: shutdown.forced,
      abortMs: Math.round(abortMs),
      closeMs: Math.round(closeMs),
    });
  } finally {
    diagnostics.unsubscribe('tcpserver:handler.error', onPublished);
  }
});

// =============================================================================================
// 5. maxConnections under a flood
// =============================================================================================

test('maxConnections under a flood of 2,000 connection attempts: never more handlers at once than the limit, the rest rejected, stats add up', {
  timeout: 45_000,
}, async (t) => {
  const limit = 64;
  const attempts = 2_000;
  const concurrency = 250;
  let running = 0;
  let maxRunning = 0;
  let handled = 0;
  let maxOpen = 0;
  const { srv, port } = await serveOn({
    maxConnections: limit,
    handler: async (_ctx, conn) => {
      handled++;
      maxRunning = Math.max(maxRunning, ++running);
      try {
        await conn.write('ok');
        await conn.read(); // the client's goodbye: then the server sends the first FIN
      } finally {
        running--;
      }
    },
  });
  srv.on('connState', () => {
    maxOpen = Math.max(maxOpen, srv.stats().open);
  });
  const rejectedWhy: string[] = [];
  srv.on('rejected', (_socket: net.Socket, reason: string) => rejectedWhy.push(reason));
  // A served client holds its connection until 3 more clients were turned away (or every attempt
  // has been made): the server stays at its limit while the flood goes on, by events, not timing.
  let turnedAwaySoFar = 0;
  let launched = 0;
  const holding = new Set<() => void>();
  const recheck = (): void => {
    for (const check of holding) check();
  };
  const start = performance.now();
  const outcomes = await within(
    pool(attempts, concurrency, async (i) => {
      launched = i + 1;
      if (launched === attempts) recheck();
      const socket = track(net.connect({ host: '127.0.0.1', port }));
      const seen = watchSocket(socket, false);
      let served = false;
      socket.once('data', () => {
        served = true;
        const at = turnedAwaySoFar;
        const check = (): void => {
          if (turnedAwaySoFar < at + 3 && launched < attempts) return;
          holding.delete(check);
          socket.write('bye');
        };
        holding.add(check);
        check();
      });
      const { error } = await seen;
      if (!served) turnedAwaySoFar++;
      recheck();
      return { served, error };
    }),
    30_000,
    'the flood',
  );
  const elapsed = performance.now() - start;
  await waitForStats(srv, (s) => s.open === 0);
  const s = srv.stats();
  const served = outcomes.filter((o) => o.served).length;
  const turnedAway = outcomes.filter((o) => !o.served).length;
  const refused = Object.values(s.refused).reduce((a, b) => a + b, 0);

  assert.equal(maxRunning, limit, `the limit was reached, never passed: at most ${limit} handlers at once`);
  assert.equal(maxOpen, limit, `at most ${limit} open connections at once`);
  assert.ok(s.rejected > 0, 'the flood went over the limit');
  assert.equal(s.accepted + s.rejected, attempts, 'every attempt was accepted or rejected');
  assert.equal(s.accepted, handled, 'every accepted connection ran its handler');
  assert.equal(s.closed, s.accepted, 'every accepted connection closed');
  assert.equal(refused, 0);
  assert.equal(s.errors, 0);
  assert.equal(s.open, 0);
  assert.equal(served, s.accepted, 'the clients served are the connections accepted');
  assert.equal(turnedAway, s.rejected, 'the clients turned away are the sockets rejected');
  assert.deepEqual(countBy(rejectedWhy), { maxConnections: s.rejected });
  assert.deepEqual(
    countBy(outcomes.flatMap((o) => (o.error === undefined ? [] : [o.error]))),
    {},
    'no client saw an error',
  );
  report(t, 'flood', {
    attempts,
    concurrency,
    limit,
    maxRunning,
    maxOpen,
    accepted: s.accepted,
    rejected: s.rejected,
    ms: Math.round(elapsed),
  });
});

// =============================================================================================
// 6. A 50 MiB line
// =============================================================================================

/** A line client: `ask(text)` sends a line and resolves the echoed line. */
async function askEcho(socket: net.Socket, text: string): Promise<string> {
  socket.write(`${text}\n`);
  return (await readBytes(socket, text.length + 1)).toString().trimEnd();
}

test('a 50 MiB line to lineDecoder({ maxLength: 4096 }): rejected early with ERR_FRAME_TOO_LARGE, never buffered, the connection closed, others still served', {
  timeout: 45_000,
}, async (t) => {
  const child = await ServerChild.start('line');
  const baseline = await child.ask<Memory>('mem');
  const normal = await dial(child.port);
  assert.equal(await askEcho(normal, 'before'), 'before');
  await child.ask('sample');
  const hostile = await dial(child.port);
  const seen = watchSocket(hostile, false);
  const chunk = Buffer.alloc(MiB, 0x61); // no newline anywhere
  const total = 50 * MiB;
  const pumping = (async () => {
    let queued = 0;
    while (queued < total && !hostile.destroyed) {
      queued += chunk.length;
      if (!hostile.write(chunk)) await drainedOrClosed(hostile);
    }
  })();
  // Served meanwhile.
  const during: string[] = [];
  for (let i = 0; i < 20; i++) during.push(await askEcho(normal, `during ${i}`));
  const hostileSeen = await within(seen, 30_000, 'the hostile connection closing');
  await pumping;
  const rejection = await child.event('handlerError');
  const peak = await child.ask<Peak>('peak');
  const after = await child.ask<Memory>('mem');
  assert.equal(await askEcho(normal, 'after'), 'after');
  normal.end();
  const settled = await child.ask<ServerStats>('settle');
  const closed = await child.ask<{ report: ShutdownReport; stats: ServerStats }>('close', { timeout: 5_000 });

  assert.equal(rejection.code, 'ERR_FRAME_TOO_LARGE');
  assert.ok(
    (rejection.bytesRead as number) < 4 * MiB,
    `rejected after reading ${rejection.bytesRead} bytes, not 50 MiB`,
  );
  assert.ok(hostile.bytesWritten < total, `the peer could not send it all (${hostile.bytesWritten} bytes)`);
  assert.ok(hostileSeen.error !== undefined || hostileSeen.ended, 'the connection was closed');
  const growth = peak.retained - retained(baseline);
  assert.ok(growth < 16 * MiB, `reachable memory grew by ${mib(growth)} MiB`);
  assert.ok(peak.rss - baseline.rss < 40 * MiB, `rss grew by ${mib(peak.rss - baseline.rss)} MiB`);
  assert.deepEqual(
    during,
    during.map((_, i) => `during ${i}`),
  );
  assert.equal(settled.errors, 1, 'reported once');
  assert.equal(settled.accepted, 2);
  assert.equal(closed.stats.open, 0);
  assert.equal(child.events('handlerError').length, 0, 'no other handler error');
  await child.finish();
  report(t, 'longLine', {
    lineMiB: 50,
    serverBytesReadAtRejection: rejection.bytesRead,
    peerBytesWritten: hostile.bytesWritten,
    peerError: hostileSeen.error,
    retainedGrowthMiB: mib(growth),
    rssGrowthMiB: mib(peak.rss - baseline.rss),
    afterGcGrowthMiB: mib(retained(after) - retained(baseline)),
    servedDuring: during.length,
  });
});

// =============================================================================================
// 6b. Slowloris (the full set is test/slow-peers.test.ts's)
// =============================================================================================

test('slowloris: 40 peers that are served one line, then drip the next a byte every 100 ms, are each cut off by frameTimeout: 1000 about 1 s after its first byte (ERR_FRAME_TIMEOUT, counted once, not a handler error); a normal client is served throughout', {
  timeout: 30_000,
}, async (t) => {
  const drippers = 40;
  const frameTimeout = 1_000;
  const maxDrips = 60; // 6 s: a dripper the server never cuts off gives up, and the test fails
  const readErrors: string[] = [];
  const { srv, port } = await serveOn({
    frameTimeout,
    handler: async (_ctx, conn) => {
      const decoder = lineDecoder({ maxLength: 4096 });
      try {
        for (;;) {
          const line = await conn.readFrame(decoder);
          if (line === null) return;
          await conn.write(`${line}\n`);
        }
      } catch (error) {
        readErrors.push(String((error as { code?: string }).code));
        throw error; // left to the server: a timeout is not the handler's fault
      }
    },
  });
  const timeouts: string[] = [];
  srv.on('timeout', (_conn: Conn, error: { code?: string }) => timeouts.push(String(error.code)));
  let handlerErrors = 0;
  srv.on('handlerError', () => handlerErrors++);

  /** One dripper: its first line answered, then the ms from its first dripped byte to our FIN. */
  const drip = async (i: number): Promise<{ answered: boolean; lifetime: number; gaveUp: boolean }> => {
    const socket = await dial(port);
    const seen = watchSocket(socket, false);
    const line = `hello ${i}\n`;
    socket.write(line);
    const answered = (await readBytes(socket, line.length)).toString() === line;
    const start = performance.now();
    let drips = 0;
    let lifetime = Number.NaN;
    socket.write('x');
    const timer = setInterval(() => {
      if (++drips < maxDrips) socket.write('x');
      else socket.destroy(); // never cut off: give up
    }, 100);
    socket.once('end', () => {
      lifetime = performance.now() - start;
      clearInterval(timer);
    });
    await seen;
    clearInterval(timer);
    return { answered, lifetime, gaveUp: drips >= maxDrips };
  };
  const dripping = Promise.all(Array.from({ length: drippers }, (_, i) => drip(i)));
  let done = false;
  void dripping.finally(() => {
    done = true;
  });
  // A normal client meanwhile, a line every 10 ms (pacing only), at most 1,000 of them.
  const normal = await dial(port);
  const latencies: number[] = [];
  while (!done && latencies.length < 1_000) {
    const t0 = performance.now();
    assert.equal(await askEcho(normal, `normal ${latencies.length}`), `normal ${latencies.length}`);
    latencies.push(performance.now() - t0);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const results = await within(dripping, 15_000, 'every dripper closing');
  normal.end();
  await within(
    waitForStats(srv, (s) => s.open === 0),
    10_000,
    'every connection closing',
  );
  const s = srv.stats();
  const lifetimes = results.map((r) => r.lifetime).sort((a, b) => a - b);
  latencies.sort((a, b) => a - b);
  const worst = latencies.at(-1)!;

  assert.deepEqual(
    results.filter((r) => !r.answered || r.gaveUp).length,
    0,
    'each dripper had its first line answered, and was cut off',
  );
  assert.ok(
    lifetimes.every((ms) => ms >= frameTimeout - 50 && ms < frameTimeout + 3_000),
    `cut off ${frameTimeout} ms after the frame's first byte (generous bounds): ${lifetimes.map(Math.round)}`,
  );
  assert.ok(latencies.length >= 10, `the normal client was served ${latencies.length} times meanwhile`);
  assert.ok(worst < 500, `its slowest round trip took ${worst.toFixed(1)} ms`);
  assert.deepEqual(countBy(readErrors), { ERR_FRAME_TIMEOUT: drippers }, 'the pending read rejects');
  assert.deepEqual(countBy(timeouts), { ERR_FRAME_TIMEOUT: drippers }, "one 'timeout' event each");
  assert.deepEqual([s.frameTimeouts, s.idleTimeouts, s.minDataRateTimeouts], [drippers, 0, 0]);
  assert.deepEqual([s.errors, handlerErrors], [0, 0], 'a timeout is not a handler error');
  assert.deepEqual([s.accepted, s.closed, s.open], [drippers + 1, drippers + 1, 0]);
  report(t, 'slowloris', {
    drippers,
    frameTimeout,
    firstCutMs: Math.round(lifetimes[0]!),
    lastCutMs: Math.round(lifetimes.at(-1)!),
    normalRequests: latencies.length,
    normalMedianMs: Number(latencies[latencies.length >> 1]!.toFixed(2)),
    normalWorstMs: Number(worst.toFixed(2)),
  });
});

// =============================================================================================
// 7. Random bytes to every example server
// =============================================================================================

/** One hostile session: random bytes in random-sized chunks, then a random ending. */
async function hostileSession(
  port: number,
  rng: Rng,
  maxBytes: number,
): Promise<{ sent: number; how: string; hung: boolean; error: string | undefined }> {
  const socket = track(net.connect({ host: '127.0.0.1', port }));
  const seen = watchSocket(socket, false); // reads (and drops) whatever the server answers
  await new Promise<unknown>((resolve) => {
    socket.once('connect', resolve);
    void seen.then(resolve);
  });
  const length = 1 + rng.int(maxBytes);
  let sent = 0;
  while (sent < length && socket.writable) {
    // Mostly small chunks, sometimes up to 64 KiB.
    const size = Math.min(length - sent, 1 + Math.floor(rng.float() ** 3 * 65_536));
    sent += size;
    if (!socket.write(rng.bytes(size))) await drainedOrClosed(socket);
    else if (rng.int(4) === 0) await new Promise((resolve) => setImmediate(resolve)); // chunks apart
  }
  const how = ['end', 'reset', 'destroy'][rng.int(3)]!;
  if (how === 'end') socket.end();
  else if (how === 'reset') socket.resetAndDestroy();
  else socket.destroy();
  let hung = false;
  const result = await within(seen, 15_000, 'session').catch(() => {
    hung = true; // the server did not close after our FIN
    socket.destroy();
    return seen;
  });
  return { sent, how, hung, error: result.error };
}

/** A normal client of one example: `check()` does one exchange and asserts its answer. */
interface NormalClient {
  check(n: number): Promise<void>;
  close(): void;
}

/** A line reader over a socket: `next(match)` resolves the next line matching, skipping others. */
function lineReader(socket: net.Socket): (match: (line: string) => boolean) => Promise<string> {
  const decoder = lineDecoder({ maxLength: 64 * 1024 });
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  socket.on('data', (chunk: Buffer) => {
    decoder.push(chunk);
    for (let line = decoder.next(); line !== undefined; line = decoder.next()) lines.push(line);
    wake?.();
  });
  socket.on('close', () => {
    ended = true;
    wake?.();
  });
  return async (match) => {
    for (;;) {
      const index = lines.findIndex(match);
      if (index >= 0) {
        const [line] = lines.splice(0, index + 1).slice(-1);
        return line!;
      }
      lines.length = 0;
      assert.ok(!ended, 'the server closed a normal client');
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  };
}

/** Normal clients by example; `tag` tells apart two of them at once (chat nicknames are unique). */
const normalClients: Record<string, (port: number, tag: string) => Promise<NormalClient>> = {
  async echo(port) {
    const socket = await dial(port);
    return {
      async check(n) {
        const text = `echo check ${n} `.repeat(1 + (n % 50));
        socket.write(text);
        assert.equal((await readBytes(socket, text.length)).toString(), text);
      },
      close: () => socket.end(),
    };
  },
  async chat(port, tag) {
    const nick = (name: string): string => `${name}_${tag}_${SEED % 100_000}`;
    const alice = await dial(port);
    const bob = await dial(port);
    const fromAlice = lineReader(alice);
    const fromBob = lineReader(bob);
    alice.write(`${nick('alice')}\n`);
    await fromAlice((l) => l.startsWith(`* welcome ${nick('alice')}`));
    bob.write(`${nick('bob')}\n`);
    await fromBob((l) => l.startsWith(`* welcome ${nick('bob')}`));
    return {
      async check(n) {
        const want = `<${nick('alice')}> message ${n}`;
        alice.write(`message ${n}\n`);
        await fromBob((l) => l === want); // hostile members may broadcast in between
      },
      close: () => {
        alice.end('/quit\n');
        bob.end('/quit\n');
      },
    };
  },
  async resp(port) {
    const socket = await dial(port);
    const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
    return {
      async check(n) {
        const key = `normal:${n}`;
        const value = `value ${n} ${'v'.repeat(n % 100)}`;
        socket.write(`*3\r\n${bulk('SET')}${bulk(key)}${bulk(value)}*2\r\n${bulk('GET')}${bulk(key)}`);
        const want = `+OK\r\n${bulk(value)}`;
        assert.equal((await readBytes(socket, want.length)).toString(), want);
      },
      close: () => socket.end(),
    };
  },
};

for (const [index, example] of ['echo', 'chat', 'resp'].entries()) {
  test(`random bytes in random-sized chunks to examples/${example}.ts: no crash, bounded memory, a normal client served meanwhile and afterwards`, {
    timeout: 60_000,
  }, async (t) => {
    t.diagnostic(`seed ${SEED}`);
    const rng = new Rng(SEED ^ (0x700 + index));
    const child = await ServerChild.start(example);
    const baseline = await child.ask<Memory>('mem');
    const normal = await normalClients[example]!(child.port, 'normal');
    await normal.check(0);
    await child.ask('sample');
    const budget = 24 * MiB;
    const maxSessions = 300;
    const deadline = performance.now() + 15_000;
    let sent = 0;
    let sessions = 0;
    const endings: string[] = [];
    const hung: number[] = [];
    const storm = pool(4, 4, async (lane) => {
      const laneRng = new Rng(rng.u32() ^ lane);
      while (sent < budget && sessions < maxSessions && performance.now() < deadline) {
        const id = sessions++;
        const session = await hostileSession(child.port, laneRng, 4 * MiB);
        sent += session.sent;
        endings.push(session.how);
        if (session.hung) hung.push(id);
      }
    });
    let stormDone = false;
    void storm.finally(() => {
      stormDone = true;
    });
    let checks = 1;
    while (!stormDone && checks < 10_000) await normal.check(checks++);
    await storm;
    const peak = await child.ask<Peak>('peak');
    for (let i = 0; i < 5; i++) await normal.check(checks++);
    // A fresh client is served too.
    const fresh = await normalClients[example]!(child.port, 'fresh');
    await fresh.check(checks++);
    normal.close();
    fresh.close();
    const settled = await within(child.ask<ServerStats>('settle'), 15_000, 'every connection closing');
    const after = await child.ask<Memory>('mem');
    const closed = await child.ask<{ report: ShutdownReport; stats: ServerStats }>('close', {
      timeout: 5_000,
    });

    assert.deepEqual(hung, [], 'every session the peer ended was closed by the server');
    assert.equal(settled.errors, 0, `no handler error: ${JSON.stringify(child.events('handlerError'))}`);
    const growth = peak.retained - retained(baseline);
    assert.ok(growth < 16 * MiB, `reachable memory grew by ${mib(growth)} MiB (${mib(sent)} MiB sent)`);
    assert.ok(peak.rss - baseline.rss < 64 * MiB, `rss grew by ${mib(peak.rss - baseline.rss)} MiB`);
    assert.equal(closed.stats.open, 0);
    assert.deepEqual([closed.report.forced], [0]);
    await child.finish();
    report(t, `random-${example}`, {
      seed: SEED,
      sessions,
      sentMiB: mib(sent),
      endings: countBy(endings),
      normalChecks: checks,
      accepted: settled.accepted,
      retainedGrowthMiB: mib(growth),
      rssGrowthMiB: mib(peak.rss - baseline.rss),
      afterGcGrowthMiB: mib(retained(after) - retained(baseline)),
    });
  });
}

// =============================================================================================
// 8. Invalid TLS hellos
// =============================================================================================

const pki = makeCertificate('localhost');

/** A real ClientHello record, as node:tls sends it, caught by a plain TCP server. */
async function realClientHello(): Promise<Buffer> {
  const server = await listenNet({ host: '127.0.0.1', port: 0 });
  const port = (server.address() as net.AddressInfo).port;
  const hello = new Promise<Buffer>((resolve) => {
    server.once('connection', (socket: net.Socket) => {
      let got = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
          resolve(got.subarray(0, 5 + got.readUInt16BE(3)));
          socket.destroy();
        }
      });
    });
  });
  const client = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
  client.on('error', noop);
  const record = await hello;
  client.destroy();
  await closeNet(server);
  return record;
}

test('invalid TLS hellos (garbage after a record header, a truncated ClientHello, SSLv2-style hellos, plain text, an oversized record): each refused as tls-handshake, no handler run, a good TLS client still served', {
  skip: typeof pki === 'string' ? pki : false,
  timeout: 45_000,
}, async (t) => {
  assert.ok(typeof pki !== 'string');
  const rng = new Rng(SEED ^ 0x800);
  const hello = await realClientHello();
  assert.equal(hello[0], 0x16, 'a handshake record');
  const sslv2 = (version: number, ciphers: number[]): Buffer => {
    const body = Buffer.from([
      0x01, // CLIENT-HELLO
      version >> 8,
      version & 0xff,
      0x00,
      ciphers.length, // cipher-specs length
      0x00,
      0x00, // session id length
      0x00,
      0x10, // challenge length
      ...ciphers,
      ...rng.bytes(16),
    ]);
    return Buffer.concat([Buffer.from([0x80 | (body.length >> 8), body.length & 0xff]), body]);
  };
  const variants: Array<{ name: string; bytes: Buffer; fin: boolean }> = [
    {
      name: 'garbage after a TLS record header',
      bytes: Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8]), rng.bytes(200)]),
      fin: false,
    },
    { name: 'truncated ClientHello, then FIN', bytes: hello.subarray(0, hello.length >> 1), fin: true },
    { name: 'ClientHello cut after its record header', bytes: hello.subarray(0, 5), fin: true },
    { name: 'SSLv2 CLIENT-HELLO', bytes: sslv2(0x0002, [0x01, 0x00, 0x80]), fin: false },
    { name: 'SSLv2-format hello asking for TLS 1.2', bytes: sslv2(0x0303, [0x00, 0x00, 0x2f]), fin: false },
    { name: 'plain text (RESP inline PING)', bytes: Buffer.from('PING\r\n'), fin: false },
    { name: 'plain text (SMTP greeting)', bytes: Buffer.from('EHLO hostile.example\r\n'), fin: false },
    {
      name: 'record header announcing a 64 KiB record',
      bytes: Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), rng.bytes(1024)]),
      fin: false,
    },
  ];
  let handled = 0;
  const { srv, port } = await serveOn({
    tls: { key: pki.key, cert: pki.cert },
    handshakeTimeout: 20_000, // far away: a refusal must come from the bytes, not the clock
    handler: async (_ctx, conn) => {
      handled++;
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const refusals: string[] = [];
  srv.on('refused', (_conn: Conn, reason: string) => refusals.push(reason));
  const goodClient = async (text: string): Promise<string> => {
    const socket = track(
      tls.connect({ host: '127.0.0.1', port, ca: pki.cert, servername: 'localhost' }) as net.Socket,
    );
    await once(socket, 'secureConnect');
    socket.write(text);
    const echoed = (await readBytes(socket, text.length)).toString();
    socket.end();
    return echoed;
  };
  assert.equal(await goodClient('before'), 'before');
  const start = performance.now();
  const hostile = variants.map(async (variant) => {
    const socket = track(net.connect({ host: '127.0.0.1', port }));
    const seen = watchSocket(socket);
    await once(socket, 'connect');
    socket.write(variant.bytes);
    if (variant.fin) socket.end();
    const result = await within(seen, 15_000, variant.name);
    return { name: variant.name, ms: Math.round(performance.now() - start), answer: result.bytes };
  });
  const during = await Promise.all([goodClient('during 1'), goodClient('during 2'), goodClient('during 3')]);
  const outcomes = await Promise.all(hostile);
  assert.deepEqual(during, ['during 1', 'during 2', 'during 3']);
  assert.equal(await goodClient('after'), 'after');
  await waitForStats(srv, (s) => s.open === 0);
  const s = srv.stats();
  assert.deepEqual(countBy(refusals), { 'tls-handshake': variants.length }, JSON.stringify(outcomes));
  assert.equal(s.refused['tls-handshake'], variants.length);
  assert.equal(s.refused['tls-timeout'], 0);
  assert.equal(handled, 5, 'only the good clients reached the handler');
  assert.equal(s.accepted, variants.length + 5);
  assert.equal(s.errors, 0);
  await srv.close();
  assert.equal(srv.stats().open, 0);
  report(t, 'tlsHellos', {
    variants: outcomes.map((o) => `${o.name}: closed after ${o.ms} ms, ${o.answer} bytes answered`),
    refused: s.refused['tls-handshake'],
    goodClients: handled,
  });
});

// =============================================================================================
// 9. Connection churn
// =============================================================================================

/** `count` clients, `concurrency` at a time: connect, send a byte, expect it back and the FIN. */
async function churnClients(port: number, count: number, concurrency: number): Promise<number> {
  const results = await pool(count, concurrency, async (i) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const byte = String.fromCharCode(97 + (i % 26));
    let got = '';
    let failed = false;
    socket.setEncoding('latin1');
    socket.on('connect', () => socket.write(byte));
    socket.on('data', (text: string) => {
      got += text;
    });
    socket.on('error', () => {
      failed = true;
    });
    await once(socket, 'close');
    return failed || got !== byte ? 1 : 0;
  });
  return results.reduce((a, b) => a + b, 0 as number);
}

test('20,000 connections opened and closed, 200 at a time: stats().open back to 0, active resources back to baseline, heap after GC within 2 MiB', {
  timeout: 90_000,
}, async (t) => {
  const count = 20_000;
  const child = await ServerChild.start('churn');
  // Warm up (JIT, pools), then take the baselines.
  assert.equal(await churnClients(child.port, 1_000, 200), 0);
  await child.ask('settle');
  const baseline = await child.ask<Memory>('mem');
  const resourcesBefore = await child.ask<Record<string, number>>('resources');
  const ownBefore = resourceCounts();
  const start = performance.now();
  const failures = await within(churnClients(child.port, count, 200), 45_000, 'the churn');
  const elapsed = performance.now() - start;
  const settled = await within(child.ask<ServerStats>('settle'), 15_000, 'every connection closing');
  const after = await child.ask<Memory>('mem');
  const resourcesAfter = await child.ask<Record<string, number>>('resources');
  const ownAfter = resourceCounts();
  const closed = await child.ask<{ report: ShutdownReport; stats: ServerStats }>('close', { timeout: 5_000 });

  assert.equal(failures, 0, 'every client got its byte back');
  assert.equal(settled.open, 0);
  assert.equal(settled.accepted, count + 1_000);
  assert.equal(settled.closed, count + 1_000);
  assert.equal(settled.errors, 0);
  assert.deepEqual(resourcesAfter, resourcesBefore, 'the server process holds the same resources as before');
  assert.deepEqual(ownAfter, ownBefore, 'and so does the test process');
  const heapDelta = after.heapUsed - baseline.heapUsed;
  assert.ok(Math.abs(heapDelta) < 2 * MiB, `heap after GC moved by ${mib(heapDelta)} MiB`);
  assert.equal(closed.stats.open, 0);
  await child.finish();
  report(t, 'churn', {
    connections: count,
    concurrency: 200,
    ms: Math.round(elapsed),
    perSecond: Math.round(count / (elapsed / 1000)),
    heapDeltaKiB: Math.round(heapDelta / 1024),
    externalDeltaKiB: Math.round((after.external - baseline.external) / 1024),
    rssDeltaMiB: mib(after.rss - baseline.rss),
    resources: resourcesAfter,
  });
});

// =============================================================================================
// 10. SIGTERM under RESP load
// =============================================================================================

/** The RESP example as a program (test/fixtures/hostile-resp.ts), `keys` client keys reported. */
function startResp(keys: number): { proc: ChildProcess; port: Promise<number>; output: () => string } {
  const proc = spawnTracked(['--import', 'tsx', 'test/fixtures/hostile-resp.ts'], {
    env: { ...process.env, HOSTILE_KEYS: String(keys) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8');
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (text: string) => {
    stderr += text;
  });
  const port = new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (text: string) => {
      stdout += text;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(stdout);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) =>
      reject(new Error(`resp exited (${code}) before listening: ${stdout}${stderr}`)),
    );
  });
  port.catch(noop);
  return { proc, port, output: () => `${stdout}\n--- stderr ---\n${stderr}` };
}

const incr = (key: string): string => `*2\r\n$4\r\nINCR\r\n$${key.length}\r\n${key}\r\n`;

/** One load client: INCR c:<i>, one at a time, until the server's FIN. */
class RespClient {
  sent = 0;
  answered = 0;
  error: string | undefined;
  wrong: string | undefined;
  readonly closed: Promise<void>;
  readonly #socket: net.Socket;
  readonly #command: string;
  #buffer = '';
  #ended = false;
  #started = false;

  constructor(socket: net.Socket, key: string, onAnswer: (first: boolean) => void) {
    this.#socket = socket;
    this.#command = incr(key);
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      this.#buffer += text;
      for (let nl = this.#buffer.indexOf('\r\n'); nl >= 0; nl = this.#buffer.indexOf('\r\n')) {
        const reply = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 2);
        this.answered++;
        if (reply !== `:${this.answered}`) this.wrong ??= `reply ${reply} to command ${this.answered}`;
        onAnswer(this.answered === 1);
      }
      if (this.answered === this.sent && !this.#ended) this.#send();
    });
    socket.on('end', () => {
      this.#ended = true;
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      this.error ??= error.code ?? error.message;
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#send();
  }

  #send(): void {
    if (this.#ended || !this.#socket.writable) return;
    this.sent++;
    this.#socket.write(this.#command);
  }
}

test('30 rounds of SIGTERM under 200 connections of RESP load: zero executed-but-unanswered commands, zero resets', {
  timeout: 120_000,
}, async (t) => {
  const rounds = 30;
  const clients = 200;
  const rng = new Rng(SEED ^ 0xa00);
  const totals = { sent: 0, answered: 0, executed: 0, raced: 0, unanswered: 0, resets: 0, errors: 0 };
  const roundMs: number[] = [];
  const drainMs: number[] = [];
  let next = startResp(clients);
  for (let round = 0; round < rounds; round++) {
    const current = next;
    // The next server starts while this round runs: its start-up is not on the clock.
    if (round + 1 < rounds) next = startResp(clients);
    const roundStart = performance.now();
    const port = await within(current.port, 30_000, `round ${round}: resp listening`);
    const exited = new Promise<number | null>((resolve) =>
      current.proc.once('exit', (code) => resolve(code)),
    );
    // SIGTERM once every client has been answered at least once (so the server accepted all 200:
    // a connection still in the kernel's accept queue when the listener closes is reset, which is
    // not what this scenario is about) and this many answers, all clients together, were seen.
    const threshold = 1_000 + rng.int(4_000);
    let answers = 0;
    let served = 0;
    const signalled = latch();
    const onAnswer = (first: boolean): void => {
      answers++;
      if (first) served++;
      if (served === clients && answers >= threshold) signalled.open();
    };
    const sockets = await Promise.all(Array.from({ length: clients }, () => dial(port)));
    const load = sockets.map((socket, i) => new RespClient(socket, `c:${i}`, onAnswer));
    for (const client of load) client.start();
    await within(signalled.wait, 20_000, `round ${round}: every client served, ${threshold} answers`);
    const signalledAt = performance.now();
    current.proc.kill('SIGTERM');
    const code = await within(exited, 30_000, `round ${round}: resp exiting`);
    drainMs.push(Math.round(performance.now() - signalledAt));
    await within(Promise.all(load.map((c) => c.closed)), 15_000, `round ${round}: clients closing`);
    roundMs.push(Math.round(performance.now() - roundStart));

    const output = current.output();
    assert.equal(code, 0, `round ${round}: a clean drain exits 0\n${output}`);
    assert.match(output, new RegExp(`shutdown complete: ${clients} graceful, 0 forced`), output);
    assert.doesNotMatch(output.split('--- stderr ---')[1] ?? '', /\S/, `round ${round}: stderr is empty`);
    const summary = /resp: executed (\{.*\})/.exec(output);
    assert.ok(summary, output);
    const {
      executed,
      stats,
      problems: seen,
    } = JSON.parse(summary[1]!) as {
      executed: number[];
      stats: ServerStats;
      problems: string[];
    };
    childProblems.push(...seen.map((p) => `resp round ${round}: ${p}`));
    assert.deepEqual(seen, [], `round ${round}: no unhandledRejection, uncaughtException or warning`);
    assert.equal(stats.errors, 0);
    assert.equal(stats.accepted, clients);
    for (const [i, client] of load.entries()) {
      const ran = executed[i]!;
      assert.equal(client.wrong, undefined, `round ${round} client ${i}: ${client.wrong}`);
      assert.equal(ran, client.answered, `round ${round} client ${i}: every executed command was answered`);
      assert.ok(client.sent - ran <= 1, `round ${round} client ${i}: at most the last command raced the FIN`);
      totals.sent += client.sent;
      totals.answered += client.answered;
      totals.executed += ran;
      totals.raced += client.sent - ran;
      totals.unanswered += ran - client.answered;
      if (client.error === 'ECONNRESET') totals.resets++;
      if (client.error !== undefined) totals.errors++;
    }
  }
  assert.equal(totals.unanswered, 0, 'zero executed-but-unanswered commands');
  assert.equal(totals.resets, 0, 'zero resets seen by clients');
  assert.equal(totals.errors, 0, 'no client error at all');
  const sorted = roundMs.slice().sort((a, b) => a - b);
  report(t, 'sigterm', {
    rounds,
    clients,
    ...totals,
    roundMsMedian: sorted[sorted.length >> 1],
    roundMsMax: sorted.at(-1),
    drainMsMax: Math.max(...drainMs),
  });
});

// =============================================================================================
// 11. No process-level problem anywhere
// =============================================================================================

test('no unhandledRejection, uncaughtException or process warning in any server process', (t) => {
  assert.deepEqual(problems, [], 'the test process (in-process servers)');
  assert.deepEqual(childProblems, [], 'the child-process servers');
  report(t, 'problems', { testProcess: problems.length, children: childProblems.length });
  t.diagnostic(`figures all ${JSON.stringify(figures)}`);
});
