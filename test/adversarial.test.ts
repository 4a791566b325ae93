/**
 * Adversarial tests of the core's state machine and shutdown: misbehaving peers (half-close,
 * never answering our FIN, resets, data after the handler returned), misbehaving handlers
 * (non-promise results, throws after end(), destroy(), close() from odd places, concurrent reads,
 * throwing decoders), and shutdown under churn. Real sockets on 127.0.0.1 only.
 *
 * Every test checks the gauges add up at every `connState` event and that each connection's
 * transitions are legal and observed in order; no unhandled rejection may happen in this file.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { promisify } from 'node:util';
import {
  type Conn,
  type ConnState,
  createServer,
  type Decoder,
  type Handler,
  InvalidFrameError,
  lineDecoder,
  type Server,
  type ServerOptions,
} from '../src/index.js';
import {
  assertNoLeaks,
  collect,
  failOnUnhandledRejections,
  makeCertificate,
  readBytes,
  startServer,
  waitForStats,
} from './helpers.js';

const run = promisify(execFile);

failOnUnhandledRejections();

// A failing test must not leave a server or a socket keeping the
// process alive: everything a test opens is tracked and torn down after it.
const servers = new Set<Server>();
const sockets = new Set<net.Socket>();
afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  sockets.clear();
  await Promise.all([...servers].map((srv) => srv.close({ timeout: 0 })));
  servers.clear();
});

/** `startServer`, tracked for the teardown. */
async function serveOn(options: ServerOptions): Promise<{ srv: Server; port: number }> {
  const started = await startServer(options);
  servers.add(started.srv);
  return started;
}

/** Tracks a client socket for the teardown. */
function track<T extends net.Socket>(socket: T): T {
  sockets.add(socket);
  return socket;
}

/** Connects a tracked client socket to 127.0.0.1 and waits until it is connected. */
async function dial(port: number): Promise<net.Socket> {
  const socket = track(net.connect({ port, host: '127.0.0.1' }));
  await once(socket, 'connect');
  return socket;
}

/** A latch: `open()` releases every `wait`. */
function latch<T = void>(): { wait: Promise<T>; open: (value: T) => void } {
  let open!: (value: T) => void;
  const wait = new Promise<T>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

const LEGAL: Record<string, readonly ConnState[]> = {
  new: ['active', 'closing', 'closed'],
  active: ['idle', 'closing', 'closed'],
  idle: ['active', 'closing', 'closed'],
  closing: ['closed'],
  closed: [],
};

/**
 * Watches every `connState` event: the gauges add up and are never negative, and each
 * connection's transitions are legal and arrive in order (`prev` is the state last announced).
 * Returns the list of violations (empty when all is well) and each connection's history.
 */
function watch(srv: Server): { violations: string[]; history: Map<number, string[]> } {
  const violations: string[] = [];
  const history = new Map<number, string[]>();
  const last = new Map<number, ConnState | undefined>();
  srv.on('connState', (conn: Conn, state: ConnState, prev: ConnState | undefined) => {
    const s = srv.stats();
    if (s.new + s.active + s.idle + s.closing !== s.open) violations.push(`gauges: ${JSON.stringify(s)}`);
    if (Math.min(s.new, s.active, s.idle, s.closing, s.open) < 0)
      violations.push(`negative: ${JSON.stringify(s)}`);
    const seen = history.get(conn.id) ?? [];
    seen.push(`${prev ?? '-'}>${state}`);
    history.set(conn.id, seen);
    if (last.get(conn.id) !== prev) {
      violations.push(`conn ${conn.id}: got ${prev ?? '-'}>${state} after ${last.get(conn.id) ?? '-'}`);
    }
    if (prev !== undefined && !LEGAL[prev]!.includes(state)) {
      violations.push(`conn ${conn.id}: illegal ${prev}>${state}`);
    }
    last.set(conn.id, state);
  });
  return { violations, history };
}

/** Final checks shared by every test: nothing open, counters add up, no violation seen. */
function finish(srv: Server, violations: string[]): void {
  assert.deepEqual(violations, []);
  assertNoLeaks(srv);
}

const serverPki = makeCertificate('localhost');
const roguePki = makeCertificate('rogue');
const tlsSkip = typeof serverPki === 'string' ? serverPki : typeof roguePki === 'string' ? roguePki : false;

/** Resolves when `socket` has closed, whatever the reason (unlike `once()`, an error does not reject). */
function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** What one client saw: the bytes it received and the error, if any, before it closed. */
interface Outcome {
  data: string;
  error: string | undefined;
}

/** Connects without waiting and resolves what the client saw once its socket closes. */
function outcomeOf(port: number): Promise<Outcome> {
  return outcomeOfSocket(track(net.connect({ port, host: '127.0.0.1' })));
}

/** Resolves what `socket` received and its error, if any, once it closes. */
function outcomeOfSocket(socket: net.Socket): Promise<Outcome> {
  const chunks: Buffer[] = [];
  let error: string | undefined;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', (err: NodeJS.ErrnoException) => {
    error = err.code ?? err.message;
  });
  // Not events.once(): it rejects on 'error', and a refused or reset client is an expected outcome.
  return new Promise((resolve) => {
    socket.on('close', () => resolve({ data: Buffer.concat(chunks).toString(), error }));
  });
}

// ---------------------------------------------------------------------------------------------
// Shutdown under churn
// ---------------------------------------------------------------------------------------------

test('200 clients connecting while close() runs: no crash, each is served or refused, stats add up', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      await conn.write('hi');
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const { violations } = watch(srv);
  let rejectedEvents = 0;
  srv.on('rejected', () => rejectedEvents++);
  const outcomes: Array<Promise<Outcome>> = [];
  let closing: Promise<unknown> | undefined;
  for (let i = 0; i < 200; i++) {
    outcomes.push(outcomeOf(port));
    if (i === 100) closing = srv.close({ timeout: 10_000 });
    if (i % 10 === 9) await new Promise((resolve) => setImmediate(resolve)); // let the server accept some
  }
  const report = (await closing) as { graceful: number; forced: number };
  const seen = await Promise.all(outcomes);
  const served = seen.filter((o) => o.data === 'hi');
  const turnedAway = seen.filter((o) => o.data === '');
  assert.equal(served.length + turnedAway.length, 200, `odd outcomes: ${JSON.stringify(seen)}`);
  for (const o of turnedAway) {
    assert.ok(
      o.error === undefined || ['ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(o.error),
      `unexpected error ${o.error}`,
    );
  }
  const s = srv.stats();
  assert.ok(s.accepted > 0, 'some connections were served before close()');
  assert.equal(served.length, s.accepted, 'every accepted connection was served its greeting');
  assert.equal(s.rejected, rejectedEvents);
  assert.ok(s.accepted + s.rejected <= 200);
  assert.deepEqual([report.graceful, report.forced], [s.accepted, 0]);
  assert.equal(s.errors, 0);
  finish(srv, violations);
});

test('close({ timeout: 0 }) while handlers are blocked mid-write: all forced, no handler error, no leak', async () => {
  const block = Buffer.alloc(256 * 1024, 9);
  const stalled = latch();
  let stalledCount = 0;
  const outcomes: unknown[] = [];
  const allFailed = latch();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      let counted = false;
      try {
        for (;;) {
          const write = conn.write(block);
          if (!counted && conn.socket.writableNeedDrain) {
            counted = true;
            if (++stalledCount === 5) stalled.open();
          }
          await write;
        }
      } catch (error) {
        outcomes.push((error as { code?: string }).code);
        if (outcomes.length === 5) allFailed.open();
        throw error;
      }
    },
  });
  const { violations } = watch(srv);
  const clients = await Promise.all(Array.from({ length: 5 }, () => dial(port)));
  for (const c of clients) {
    c.pause(); // never reads
    c.on('error', () => {});
  }
  await stalled.wait;
  const allClosed = clients.map((c) => closed(c));
  const start = performance.now();
  const report = await srv.close({ timeout: 0 });
  assert.ok(performance.now() - start < 1_000);
  for (const c of clients) c.resume(); // a paused socket never notices the reset
  await Promise.all(allClosed);
  assert.deepEqual([report.graceful, report.forced], [0, 5]);
  await allFailed.wait;
  assert.deepEqual(outcomes, Array(5).fill('ERR_CONN_CLOSED'));
  assert.equal(srv.stats().errors, 0, 'a write cut by the deadline is not the handler failing');
  assert.equal(srv.stats().forced, 5);
  finish(srv, violations);
});

test('allowHalfOpen peers that never answer our FIN, or keep sending after the handler returned, are dropped by the linger; close() completes', async () => {
  const chattyReturned = latch();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const first = await conn.read();
      if (first?.toString().startsWith('C')) {
        await conn.write('bye');
        chattyReturned.open();
        return; // the peer keeps sending: nobody reads it any more
      }
      assert.equal(await conn.read(), null, 'the shutdown ends the idle read');
    },
  });
  const { violations } = watch(srv);
  const silent = track(net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
  const chatty = track(net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
  await Promise.all([once(silent, 'connect'), once(chatty, 'connect')]);
  for (const c of [silent, chatty]) c.on('error', () => {});
  // Received bytes whatever the ending: the chatty peer is reset (its unread flood is dropped).
  // (The silent peer never learns the server dropped it: it got our FIN and never writes again.)
  let silentGot = '';
  silent.on('data', (chunk: Buffer) => {
    silentGot += chunk.toString();
  });
  const chattyGot = outcomeOfSocket(chatty);
  const silentFin = once(silent, 'end');
  silent.write('S');
  chatty.write('C');
  const flood = setInterval(() => {
    if (!chatty.destroyed && chatty.writable) chatty.write(Buffer.alloc(1024, 0x43));
  }, 2);
  try {
    await chattyReturned.wait;
    await waitForStats(srv, (s) => s.idle === 1 && s.closing === 1);
    const start = performance.now();
    const report = await srv.close({ timeout: 30_000 });
    const elapsed = performance.now() - start;
    await silentFin; // the silent peer got our FIN, and never answered it
    assert.ok(elapsed < 10_000, `close() took ${elapsed.toFixed(0)} ms`);
    assert.deepEqual([report.graceful, report.forced], [2, 0]);
    assert.equal((await chattyGot).data, 'bye');
    assert.equal(silentGot, '');
  } finally {
    clearInterval(flood);
    silent.destroy();
    chatty.destroy();
  }
  assert.equal(srv.stats().errors, 0);
  finish(srv, violations);
});

test('TLS peers still in their handshake when close() is called are dropped at once and never served', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof serverPki !== 'string');
  let served = 0;
  const { srv, port } = await serveOn({
    tls: { key: serverPki.key, cert: serverPki.cert },
    handshakeTimeout: 30_000,
    handler: async (_ctx, conn) => {
      served++;
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const { violations } = watch(srv);
  // A real TLS client, fully connected and idle: ended gracefully.
  const good = track(tls.connect({ host: '127.0.0.1', port, ca: serverPki.cert, servername: 'localhost' }));
  await once(good, 'secureConnect');
  const goodEnded = once(good, 'end');
  // Raw TCP peers that never finish a handshake: silent, half a ClientHello, and one that resets.
  const raw = await Promise.all(Array.from({ length: 4 }, () => dial(port)));
  for (const r of raw) r.on('error', () => {});
  raw[1]!.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
  raw[2]!.write(Buffer.from([0x16, 0x03]));
  await waitForStats(srv, (s) => s.new === 4 && s.idle === 1);
  raw[3]!.resetAndDestroy();
  await waitForStats(srv, (s) => s.new === 3);
  const rawClosed = raw.slice(0, 3).map((r) => closed(r));
  const start = performance.now();
  const report = await srv.close({ timeout: 20_000 });
  assert.ok(performance.now() - start < 2_000, 'handshakes are not waited for');
  await Promise.all(rawClosed);
  await goodEnded;
  good.destroy();
  assert.equal(served, 1);
  assert.equal(report.forced, 0);
  assert.equal(srv.stats().errors, 0);
  finish(srv, violations);
});

// ---------------------------------------------------------------------------------------------
// Misbehaving peers
// ---------------------------------------------------------------------------------------------

test('a peer that half-closes and keeps reading gets the whole reply after its FIN', async () => {
  const parts = Array.from({ length: 50 }, (_, i) => `part-${i};`);
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const request: Buffer[] = [];
      for await (const chunk of conn) request.push(chunk);
      await conn.write(`echo:${Buffer.concat(request)};`);
      for (const part of parts) await conn.write(part);
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  const received = collect(client);
  client.end('the request');
  assert.equal((await received).toString(), `echo:the request;${parts.join('')}`);
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

test('a handler writing after the peer reset gets ERR_CONN_CLOSED every time, and it is not a handler error', async () => {
  const results: string[] = [];
  const done = latch();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      await conn.write('hello');
      const failure = await conn.read().then(
        () => 'resolved',
        (error: { code?: string; cause?: { code?: string } }) => `${error.code}/${error.cause?.code}`,
      );
      results.push(failure);
      for (let i = 0; i < 3; i++) {
        results.push(
          await conn.write('late').then(
            () => 'ok',
            (error: { code?: string }) => String(error.code),
          ),
        );
      }
      await conn.end('bye'); // resolves, never rejects
      done.open();
      await conn.write('uncaught'); // rejects: the handler fails with ERR_CONN_CLOSED
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  await readBytes(client, 5);
  await waitForStats(srv, (s) => s.idle === 1);
  client.resetAndDestroy();
  await done.wait;
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual(results, [
    'ERR_CONN_CLOSED/ECONNRESET',
    'ERR_CONN_CLOSED',
    'ERR_CONN_CLOSED',
    'ERR_CONN_CLOSED',
  ]);
  assert.equal(srv.stats().errors, 0);
  await srv.close();
  finish(srv, violations);
});

// ---------------------------------------------------------------------------------------------
// Misbehaving handlers
// ---------------------------------------------------------------------------------------------

test('a handler that calls end() then keeps reading gets the rest of the input, then null', async () => {
  const got = latch<string>();
  const states: string[] = [];
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      await conn.end('bye');
      states.push(conn.state);
      const rest: Buffer[] = [];
      for await (const chunk of conn) {
        rest.push(chunk);
        states.push(conn.state);
      }
      states.push(conn.state);
      got.open(Buffer.concat(rest).toString());
    },
  });
  const { violations, history } = watch(srv);
  const client = track(net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
  const received = collect(client);
  await once(client, 'end');
  client.end('more input after your FIN');
  assert.equal(await got.wait, 'more input after your FIN');
  assert.equal((await received).toString(), 'bye');
  await waitForStats(srv, (s) => s.open === 0);
  assert.ok(
    states.every((s) => s === 'closing'),
    `after end() the state stays closing: ${states}`,
  );
  assert.deepEqual(history.get(1), ['->new', 'new>active', 'active>closing', 'closing>closed']);
  await srv.close();
  finish(srv, violations);
});

test('a handler that throws after end(): the reply is flushed, the error reported once', async () => {
  const errors: string[] = [];
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      await conn.end('reply');
      throw new Error('after end');
    },
  });
  srv.on('handlerError', (error: Error) => errors.push(error.message));
  const { violations } = watch(srv);
  const client = await dial(port);
  assert.equal((await collect(client)).toString(), 'reply');
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual(errors, ['after end']);
  assert.equal(srv.stats().errors, 1);
  await srv.close();
  finish(srv, violations);
});

test('destroy() inside the handler, with and without an error: later I/O rejects, nothing crashes', async () => {
  const seen: string[] = [];
  const allSeen = latch();
  const reported: string[] = [];
  let n = 0;
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const which = ++n;
      if (which === 1) conn.destroy();
      else conn.destroy(new Error(`reason ${which}`));
      const read = await conn.read().then(
        (v) => `resolved ${v}`,
        (e: Error & { code?: string }) => `${e.code}:${(e.cause as Error | undefined)?.message ?? '-'}`,
      );
      const write = await conn.write('x').then(
        () => 'resolved',
        (e: { code?: string }) => String(e.code),
      );
      await conn.end('ignored');
      seen.push(`${which} ${read} ${write} ${conn.state}`);
      if (seen.length === 3) allSeen.open();
      if (which === 3) throw new Error('thrown after destroy');
    },
  });
  srv.on('handlerError', (error: Error) => reported.push(error.message));
  const { violations } = watch(srv);
  for (let i = 0; i < 3; i++) {
    const client = await dial(port);
    client.on('error', () => {});
    await closed(client);
  }
  await waitForStats(srv, (s) => s.open === 0 && s.closed === 3);
  await allSeen.wait;
  seen.sort();
  assert.match(seen[0]!, /^1 ERR_CONN_CLOSED:- ERR_CONN_CLOSED closed$/);
  assert.match(seen[1]!, /^2 ERR_CONN_CLOSED:reason 2 ERR_CONN_CLOSED closed$/);
  assert.match(seen[2]!, /^3 ERR_CONN_CLOSED:reason 3 ERR_CONN_CLOSED closed$/);
  assert.deepEqual(reported, ['thrown after destroy']);
  assert.equal(srv.stats().errors, 1);
  await srv.close();
  finish(srv, violations);
});

test('handlers returning non-promise values (a number, a string, an object) end gracefully', async () => {
  // biome-ignore lint/suspicious/noThenProperty: a non-callable `then` must not be taken for a promise
  const values: unknown[] = [42, 'text', { then: 'not a function' }, false];
  let n = 0;
  const { srv, port } = await serveOn({
    handler: ((_ctx: unknown, conn: Conn) => {
      void conn.write('served');
      return values[n++];
    }) as unknown as Handler,
  });
  const { violations } = watch(srv);
  for (let i = 0; i < values.length; i++) {
    const client = await dial(port);
    assert.equal((await collect(client)).toString(), 'served');
  }
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().errors, 0);
  await srv.close();
  finish(srv, violations);
});

test('a handler returning null (plain JS) must not crash the process', async () => {
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', 'test/fixtures/adv-crash.ts', 'null-return'],
    {
      timeout: 15_000,
    },
  );
  const result = JSON.parse(stdout) as { open: number; errors: number };
  assert.deepEqual([result.open, result.errors], [0, 0]);
});

test('close() from inside a handler: its own connection and the others drain gracefully', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) {
        if (chunk.toString() === 'shutdown') {
          void srv.close({ timeout: 10_000 });
          await conn.write('closing');
        } else await conn.write(chunk);
      }
      await conn.write(';bye');
    },
  });
  const { violations } = watch(srv);
  const others = await Promise.all(Array.from({ length: 3 }, () => dial(port)));
  const admin = await dial(port);
  await waitForStats(srv, (s) => s.idle === 4);
  const replies = [admin, ...others].map((c) => collect(c));
  admin.write('shutdown');
  const report = await srv.stopped;
  const texts = (await Promise.all(replies)).map(String);
  assert.deepEqual(texts, ['closing;bye', ';bye', ';bye', ';bye']);
  assert.deepEqual([report.graceful, report.forced], [4, 0]);
  finish(srv, violations);
});

test('a handler that awaits close() (waiting for itself) is forced at the deadline, no error, no leak', async () => {
  const after: string[] = [];
  const resumed = latch();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const report = await srv.close({ timeout: 100 });
      after.push(`forced=${report.forced}`);
      after.push(
        await conn.write('x').then(
          () => 'ok',
          (e: { code?: string }) => String(e.code),
        ),
      );
      resumed.open();
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  client.on('error', () => {});
  client.resume();
  const clientClosed = closed(client);
  const report = await srv.stopped;
  await clientClosed;
  assert.deepEqual([report.graceful, report.forced], [0, 1]);
  await resumed.wait;
  assert.deepEqual(after, ['forced=1', 'ERR_CONN_CLOSED']);
  assert.equal(srv.stats().errors, 0);
  finish(srv, violations);
});

test('close() from a connState listener: every connection drains, the gauges add up', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  let started: Promise<unknown> | undefined;
  srv.on('connState', (_conn: Conn, state: ConnState) => {
    if (state === 'idle' && srv.stats().idle === 3) started ??= srv.close({ timeout: 10_000 });
  });
  const clients = await Promise.all(Array.from({ length: 3 }, () => dial(port)));
  const ends = clients.map((c) => once(c, 'end'));
  const report = await srv.stopped;
  await Promise.all(ends);
  assert.ok(started !== undefined);
  assert.deepEqual([report.graceful, report.forced], [3, 0]);
  for (const c of clients) c.destroy();
  const s = srv.stats();
  assert.equal(s.new + s.active + s.idle + s.closing, s.open);
  assertNoLeaks(srv);
});

test('close() from a connState listener: listeners registered after it still see each transition in order', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  srv.on('connState', (_conn: Conn, state: ConnState) => {
    if (state === 'idle') void srv.close({ timeout: 10_000 });
  });
  const { violations, history } = watch(srv);
  const client = await dial(port);
  client.resume();
  await srv.stopped;
  assert.deepEqual(history.get(1), [
    '->new',
    'new>active',
    'active>idle',
    'idle>active',
    'active>closing',
    'closing>closed',
  ]);
  finish(srv, violations);
});

test('conn.end() from a connState listener (a policy ending idle connections): later listeners see transitions in order', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  srv.on('connState', (conn: Conn, state: ConnState) => {
    if (state === 'idle') void conn.end(); // e.g. "at most N idle connections"
  });
  const { violations, history } = watch(srv);
  const client = await dial(port);
  const clientClosed = closed(client);
  client.resume();
  await clientClosed;
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual(history.get(1), ['->new', 'new>active', 'active>idle', 'idle>closing', 'closing>closed']);
  await srv.close();
  finish(srv, violations);
});
test('close() from a listening listener: the server stops and never reports ready after the shutdown', async () => {
  const events: string[] = [];
  const srv = createServer({ network: 'tcp4', address: '127.0.0.1:0', handler: () => {} });
  servers.add(srv);
  srv.on('ready', (ready: boolean) => events.push(`ready:${ready}`));
  srv.on('listening', () => {
    events.push('listening');
    void srv.close();
  });
  const [bound] = await srv.listen();
  const report = await srv.stopped;
  assert.deepEqual([report.graceful, report.forced], [0, 0]);
  assert.equal(srv.ready, false);
  const late = track(net.connect({ port: (bound as { port: number }).port, host: '127.0.0.1' }));
  const [error] = (await once(late, 'error')) as [NodeJS.ErrnoException];
  assert.equal(error.code, 'ECONNREFUSED');
  assert.equal(events.at(-1), 'ready:false', `events: ${events.join(', ')}`);
});

// ---------------------------------------------------------------------------------------------
// Reads, frames and writes
// ---------------------------------------------------------------------------------------------

test('concurrent reads, readFrame and iterators while a read is pending are refused; the pending read is intact', async () => {
  const checked = latch();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const pending = conn.read();
      await assert.rejects(conn.read(), { code: 'ERR_CONCURRENT_READ' });
      await assert.rejects(conn.readFrame(lineDecoder({ maxLength: 64 })), { code: 'ERR_CONCURRENT_READ' });
      await assert.rejects(conn[Symbol.asyncIterator]().next(), { code: 'ERR_CONCURRENT_READ' });
      await assert.rejects(conn.read({ timeout: 1 }), { code: 'ERR_CONCURRENT_READ' });
      assert.equal(conn.state, 'idle', 'the refused reads did not disturb the pending one');
      checked.open();
      assert.equal((await pending)?.toString(), 'raw');
      const decoder = lineDecoder({ maxLength: 64 });
      const frame = conn.readFrame(decoder);
      await assert.rejects(conn.read(), { code: 'ERR_CONCURRENT_READ' });
      assert.equal(await frame, 'line one');
      assert.equal(await conn.readFrame(decoder), 'line two');
      await conn.write('ok');
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  const received = collect(client);
  await checked.wait;
  client.write('raw');
  await waitForStats(srv, (s) => s.active === 1);
  client.write('line one\nline two\n');
  assert.equal((await received).toString(), 'ok');
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

/** A decoder whose push throws: the handler sees that error, caught or not. */
function throwingDecoder(): Decoder<Buffer> {
  return {
    buffered: 0,
    push() {
      throw new InvalidFrameError('push refused');
    },
    next: () => undefined,
    end: () => undefined,
  };
}

test('a decoder that throws from push: caught it is a value, uncaught one handler error; the server keeps going', async () => {
  const reported: string[] = [];
  let n = 0;
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const which = ++n;
      if (which === 2) {
        // Input already queued before readFrame: the synchronous path.
        await once(conn.socket, 'data'); // Conn's own listener has queued the chunk by now
      }
      if (which === 3) {
        await conn.readFrame(throwingDecoder()); // uncaught
        return;
      }
      const outcome = await conn.readFrame(throwingDecoder()).then(
        () => 'resolved',
        (e: { code?: string }) => String(e.code),
      );
      await conn.write(outcome);
      const next = await conn.read();
      await conn.write(`;then ${next}`);
    },
  });
  srv.on('handlerError', (error: Error) => reported.push(error.message));
  const { violations } = watch(srv);
  for (const which of [1, 2]) {
    const client = await dial(port);
    const received = collect(client);
    client.write('abc');
    if (which === 1) await readBytes(client, 'ERR_INVALID_FRAME'.length);
    else await readBytes(client, 'ERR_INVALID_FRAME'.length);
    client.end('def');
    assert.equal((await received).toString(), 'ERR_INVALID_FRAME;then def');
  }
  const third = await dial(port);
  third.on('error', () => {});
  third.write('xyz');
  await closed(third);
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual(reported, ['push refused']);
  assert.equal(srv.stats().errors, 1);
  await srv.close();
  finish(srv, violations);
});

test('ten thousand tiny writes arrive complete and in order', async () => {
  const count = 10_000;
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      for (let i = 0; i < count; i++) await conn.write(String(i % 10));
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  const text = (await collect(client)).toString();
  assert.equal(text.length, count);
  for (let i = 0; i < count; i += 997) assert.equal(text[i], String(i % 10));
  assert.equal(text, Array.from({ length: count }, (_, i) => String(i % 10)).join(''));
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

test('writes of empty data resolve and send nothing; end() with empty data still ends', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      await conn.write('');
      await conn.write(Buffer.alloc(0));
      await conn.write(new Uint8Array(0));
      await conn.write('ok');
      await conn.write(Buffer.alloc(0));
      await conn.end('');
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  assert.equal((await collect(client)).toString(), 'ok');
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

test('a write waiting for drain when end() is called resolves once its data is flushed', async () => {
  const size = 4 * 1024 * 1024;
  const outcome = latch<string>();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const write = conn.write(Buffer.alloc(size, 1));
      const end = conn.end();
      outcome.open(
        await Promise.all([write, end]).then(
          () => 'resolved',
          (e: { code?: string }) => String(e.code),
        ),
      );
    },
  });
  const { violations } = watch(srv);
  const client = track(net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
  let received = 0;
  client.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  await once(client, 'end');
  assert.equal(received, size, 'every byte arrived');
  // The peer has everything and our FIN, but keeps its side open: the write is done regardless.
  const result = await Promise.race([outcome.wait, sleep(2_000).then(() => 'still pending')]);
  client.end();
  assert.equal(result, 'resolved');
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

test('a large write left un-awaited when the handler returns must not crash the process', async () => {
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', 'test/fixtures/adv-crash.ts', 'fire-and-forget'],
    { timeout: 15_000 },
  );
  const result = JSON.parse(stdout) as { received: number; open: number };
  assert.deepEqual([result.received, result.open], [4 * 1024 * 1024, 0]);
});

test('a write waiting for drain while a read is pending makes the connection active, not idle', async () => {
  const observed = latch<string>();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const reading = conn.read(); // full duplex: a read waits while another task writes
      const writing = conn.write(Buffer.alloc(8 * 1024 * 1024, 2));
      observed.open(`${conn.state} idle=${srv.stats().idle}`);
      await writing;
      await reading;
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  client.pause();
  const state = await observed.wait;
  client.resume();
  client.end();
  await closed(client);
  assert.equal(state, 'active idle=0');
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

// ---------------------------------------------------------------------------------------------
// Timeouts beyond setTimeout's range
// ---------------------------------------------------------------------------------------------

test('delays beyond 2^31-1 ms are refused with a typed error, never clamped or fired at once', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const refused = await conn.read({ timeout: 2 ** 31 }).catch((e: { code?: string }) => e.code);
      await conn.write(`${refused} `);
      const chunk = await conn.read({ timeout: Number.POSITIVE_INFINITY }); // Infinity: no deadline
      await conn.write(`got ${chunk}`);
    },
  });
  const { violations } = watch(srv);
  for (const key of [
    'idleTimeout',
    'maxConnectionAge',
    'handshakeTimeout',
    'shutdownTimeout',
    'lingerTimeout',
  ]) {
    assert.throws(
      () => createServer({ address: '127.0.0.1:0', handler: () => {}, [key]: 2 ** 31 }),
      (e: { code?: string; message: string }) =>
        e.code === 'ERR_INVALID_OPTION' &&
        e.message.includes(`${key} must be a number of ms from 0 to 2147483647`),
      key,
    );
  }
  await assert.rejects(srv.close({ timeout: 2 ** 31 }), { code: 'ERR_INVALID_OPTION' });
  assert.ok(srv.isServing, 'a refused close() does not start a shutdown');
  const client = await dial(port);
  const received = collect(client);
  await waitForStats(srv, (s) => s.idle === 1 || s.open === 0);
  await sleep(50); // an overflowing timer would have fired after 1 ms
  client.end('data');
  assert.equal((await received).toString(), 'ERR_INVALID_OPTION got data');
  await waitForStats(srv, (s) => s.open === 0);
  const report = await srv.close({ timeout: Number.POSITIVE_INFINITY });
  assert.deepEqual([report.graceful, report.forced], [0, 0]);
  finish(srv, violations);
});
// ---------------------------------------------------------------------------------------------
// TLS client certificates
// ---------------------------------------------------------------------------------------------

test('requestCert with rejectUnauthorized: a client with an untrusted certificate never reaches the handler', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof serverPki !== 'string' && typeof roguePki !== 'string');
  let served = 0;
  const authorized: boolean[] = [];
  const { srv, port } = await serveOn({
    tls: { key: serverPki.key, cert: serverPki.cert, ca: [serverPki.cert], requestCert: true },
    handler: async (_ctx, conn) => {
      served++;
      authorized.push((conn.socket as tls.TLSSocket).authorized);
      await conn.write('secret');
    },
  });
  const { violations } = watch(srv);
  // A client whose certificate the server trusts is served, and the handler sees it authorized.
  const trusted = track(
    tls.connect({
      host: '127.0.0.1',
      port,
      ca: serverPki.cert,
      servername: 'localhost',
      key: serverPki.key,
      cert: serverPki.cert,
    }),
  );
  assert.equal((await collect(trusted)).toString(), 'secret');
  assert.deepEqual(authorized, [true]);
  const rogue = track(
    tls.connect({
      host: '127.0.0.1',
      port,
      ca: serverPki.cert,
      servername: 'localhost',
      key: roguePki.key,
      cert: roguePki.cert,
    }),
  );
  rogue.on('error', () => {});
  const got = collect(rogue).catch(() => Buffer.alloc(0));
  await closed(rogue);
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal((await got).toString(), '', 'the rogue client read the reply');
  assert.equal(served, 1, 'only the trusted client was served');
  await srv.close();
  finish(srv, violations);
});

test('after end(), a read that comes after the socket closed cleanly still gets the queued input, then null', async () => {
  const got = latch<string[]>();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const socketClosed = closed(conn.socket);
      await conn.end('bye');
      await socketClosed; // busy elsewhere while the peer sends its last bytes and its FIN
      const results: string[] = [];
      for (let i = 0; i < 3; i++) {
        results.push(
          await conn.read().then(
            (chunk) => String(chunk),
            (error: { code?: string }) => String(error.code),
          ),
        );
      }
      got.open(results);
    },
  });
  const { violations } = watch(srv);
  const client = track(net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
  client.resume();
  await once(client, 'end');
  client.end('last words');
  assert.deepEqual(await got.wait, ['last words', 'null', 'null']);
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

test('a write that times out while a read is pending leaves the connection idle, and a shutdown ends it', async () => {
  const size = 8 * 1024 * 1024;
  const observed = latch<string>();
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      const reading = conn.read();
      const outcome = await conn.write(Buffer.alloc(size, 3), { timeout: 50 }).then(
        () => 'resolved',
        (error: { code?: string }) => String(error.code),
      );
      observed.open(`${outcome} ${conn.state} idle=${srv.stats().idle}`);
      assert.equal(await reading, null, 'the shutdown ends the idle read');
    },
  });
  const { violations } = watch(srv);
  const client = await dial(port);
  client.pause();
  assert.equal(await observed.wait, 'ERR_WRITE_TIMEOUT idle idle=1');
  let received = 0;
  client.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  client.resume();
  const clientClosed = closed(client);
  const report = await srv.close({ timeout: 10_000 });
  await clientClosed;
  assert.equal(received, size, 'the timed-out write was still flushed before the FIN');
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  finish(srv, violations);
});

test('requestCert: a client resuming its TLS session is served again', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof serverPki !== 'string');
  const { srv, port } = await serveOn({
    tls: { key: serverPki.key, cert: serverPki.cert, ca: [serverPki.cert], requestCert: true },
    handler: async (_ctx, conn) => {
      await conn.write('hi');
    },
  });
  const { violations } = watch(srv);
  let session: Buffer | undefined;
  const results: string[] = [];
  for (let i = 0; i < 2; i++) {
    const client = track(
      tls.connect({
        host: '127.0.0.1',
        port,
        ca: serverPki.cert,
        servername: 'localhost',
        key: serverPki.key,
        cert: serverPki.cert,
        maxVersion: 'TLSv1.2', // the session is known at the handshake, no ticket race
        session,
      }),
    );
    client.on('session', (s: Buffer) => {
      session = s;
    });
    let reused: boolean | undefined;
    client.once('secureConnect', () => {
      reused = client.isSessionReused();
    });
    const outcome = await outcomeOfSocket(client);
    results.push(`${outcome.data} reused=${reused} error=${outcome.error ?? '-'}`);
  }
  assert.deepEqual(results, ['hi reused=false error=-', 'hi reused=true error=-']);
  await waitForStats(srv, (s) => s.open === 0);
  await srv.close();
  finish(srv, violations);
});

// ---------------------------------------------------------------------------------------------
// Observers and the remaining timers
// ---------------------------------------------------------------------------------------------

test('after removeAllListeners(), a new connState listener still gets every transition', async () => {
  const { srv, port } = await serveOn({
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  srv.on('connState', () => {});
  srv.removeAllListeners(); // e.g. a test harness or a hot reload resetting its observers
  const { violations, history } = watch(srv);
  const client = await dial(port);
  client.resume();
  await waitForStats(srv, (s) => s.idle === 1);
  client.end();
  await closed(client);
  await srv.close();
  assert.deepEqual(history.get(1), [
    '->new',
    'new>active',
    'active>idle',
    'idle>active',
    'active>closing',
    'closing>closed',
  ]);
  finish(srv, violations);
});

test('requestCert without rejectUnauthorized: authorized/authorizationError as tls.Server reports them', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof serverPki !== 'string' && typeof roguePki !== 'string');
  const options = { key: serverPki.key, cert: serverPki.cert, ca: [serverPki.cert], requestCert: true };
  const clientOptions = {
    host: '127.0.0.1',
    ca: serverPki.cert,
    servername: 'localhost',
    key: roguePki.key,
    cert: roguePki.cert,
  };
  // The oracle: node's own tls.Server with the same options.
  const reference = tls.createServer({ ...options, rejectUnauthorized: false }, (socket) => {
    socket.end(JSON.stringify([socket.authorized, socket.authorizationError]));
  });
  await new Promise<void>((resolve) => reference.listen(0, '127.0.0.1', resolve));
  const referencePort = (reference.address() as net.AddressInfo).port;
  try {
    const expected = (
      await collect(track(tls.connect({ ...clientOptions, port: referencePort })))
    ).toString();
    const { srv, port } = await serveOn({
      tls: { ...options, rejectUnauthorized: false },
      handler: async (_ctx, conn) => {
        const socket = conn.socket as tls.TLSSocket;
        await conn.end(JSON.stringify([socket.authorized, socket.authorizationError]));
      },
    });
    const { violations } = watch(srv);
    const actual = (await collect(track(tls.connect({ ...clientOptions, port })))).toString();
    assert.equal(actual, expected);
    await waitForStats(srv, (s) => s.open === 0);
    await srv.close();
    finish(srv, violations);
  } finally {
    reference.close();
  }
});
