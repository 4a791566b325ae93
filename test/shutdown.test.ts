/**
 * Graceful shutdown (docs/architecture.md, "Shutdown"): each scenario asserts exact counts and timing bounds.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { address, type Conn, createServer, type Handler, handler, network, newServer } from '../src/index.js';
import { assertNoLeaks, collect, connect, readBytes, startServer, waitForStats } from './helpers.js';

const echo: Handler = async (_ctx, conn) => {
  for await (const chunk of conn) await conn.write(chunk);
};

/** A handler that opens `started` and never returns (it ignores ctx.signal on purpose). */
function neverReturns(started: { open: () => void }): () => Promise<void> {
  return async () => {
    started.open();
    await new Promise(() => {});
  };
}

/** A latch: `open()` releases every `wait`. */
function latch(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

test('(a) 50 idle connections are all closed within 100 ms of close()', async () => {
  // Silent since they connected: without a first-request grace they are idle like any other.
  const { srv, port } = await startServer({ handler: echo, firstRequestGrace: 0 });
  const clients = await Promise.all(Array.from({ length: 50 }, () => connect(port)));
  await waitForStats(srv, (s) => s.idle === 50);
  const closed = clients.map((c) => once(c, 'close'));
  const ended = clients.map((c) => once(c, 'end'));
  const start = performance.now();
  const report = await srv.close({ timeout: 5_000 });
  await Promise.all(closed);
  const elapsed = performance.now() - start;
  await Promise.all(ended); // each got a FIN, not a reset
  assert.ok(elapsed < 100, `took ${elapsed.toFixed(1)} ms`);
  assert.equal(report.graceful, 50);
  assert.equal(report.forced, 0);
  assertNoLeaks(srv);
});

test('firstRequestGrace: a request sent just after close() began, on a silent connection, is answered, then FIN', async () => {
  const { srv, port } = await startServer({ handler: echo });
  const silent = await connect(port);
  const served = await connect(port);
  served.write('one\n');
  assert.equal((await readBytes(served, 4)).toString(), 'one\n');
  await waitForStats(srv, (s) => s.idle === 2);
  const servedEnded = once(served, 'end');
  const start = performance.now();
  const closing = srv.close({ timeout: 5_000 });
  // The connection that already had a request is idle: it ends at once.
  await servedEnded;
  assert.ok(performance.now() - start < 100);
  // The silent one gets its first request answered (it may have raced the listener's close).
  silent.write('first\n');
  assert.equal((await readBytes(silent, 6)).toString(), 'first\n');
  await once(silent, 'end');
  served.end();
  silent.end();
  const report = await closing;
  assert.deepEqual([report.graceful, report.forced], [2, 0]);
  assertNoLeaks(srv);
});

test('firstRequestGrace: a connection that stays silent is ended when the grace is over, capped by the deadline', async () => {
  for (const [options, timeout, low, high] of [
    [{ firstRequestGrace: 400 }, 5_000, 350, 1_500],
    [{ firstRequestGrace: 60_000 }, 500, 400, 1_500], // 90% of the deadline: 450 ms
  ] as const) {
    const { srv, port } = await startServer({ handler: echo, ...options });
    const silent = await connect(port);
    await waitForStats(srv, (s) => s.idle === 1);
    const ended = once(silent, 'end');
    const start = performance.now();
    const closing = srv.close({ timeout });
    await ended;
    const elapsed = performance.now() - start;
    assert.ok(elapsed >= low && elapsed < high, `ended after ${elapsed.toFixed(0)} ms`);
    silent.end();
    const report = await closing;
    assert.deepEqual([report.graceful, report.forced], [1, 0]);
    assertNoLeaks(srv);
  }
  await assert.rejects(async () => startServer({ handler: echo, firstRequestGrace: -1 }), {
    code: 'ERR_INVALID_OPTION',
    message: /firstRequestGrace/,
  });
});

test('firstRequestGrace counts from the accept: one silent for longer is idle and ends at once, a younger one keeps only the rest', async () => {
  const grace = 600;
  const { srv, port } = await startServer({ handler: echo, firstRequestGrace: grace });
  const old = await connect(port);
  await waitForStats(srv, (s) => s.idle === 1);
  await sleep(grace + 100); // it has been silent for longer than the grace
  const youngFrom = performance.now();
  const young = await connect(port);
  await waitForStats(srv, (s) => s.idle === 2);
  const youngBy = performance.now();
  await sleep(200); // the young one is 200 ms into its grace
  const oldEnded = once(old, 'end');
  const youngEnded = once(young, 'end');
  const start = performance.now();
  const closing = srv.close({ timeout: 5_000 });
  await oldEnded;
  const oldAfter = performance.now() - start;
  assert.ok(oldAfter < 150, `the old silent connection ended after ${oldAfter.toFixed(0)} ms`);
  await youngEnded;
  const youngAfter = performance.now() - start;
  // Accepted between youngFrom and youngBy: its grace ends `grace` ms after that, or up to an
  // eighth of the grace later (accept times are known to within that).
  const low = youngFrom + grace - start - 2;
  const high = youngBy + grace + grace / 8 - start + 500;
  assert.ok(
    youngAfter >= low && youngAfter < high,
    `the young one ended after ${youngAfter.toFixed(0)} ms, not in [${low.toFixed(0)}, ${high.toFixed(0)})`,
  );
  old.end();
  young.end();
  const report = await closing;
  assert.deepEqual([report.graceful, report.forced], [2, 0]);
  assertNoLeaks(srv);
});

test('(b) a connection mid-request finishes its response byte for byte, then is closed', async () => {
  const started = latch();
  const parts = Array.from({ length: 20 }, (_, i) => `part-${i};`);
  const { srv, port } = await startServer({
    handler: async (_ctx, conn) => {
      const request = await conn.read();
      assert.equal(request?.toString(), 'GET');
      started.open();
      for (const part of parts) {
        await conn.write(part);
        await sleep(5); // the "work" of producing the response
      }
    },
  });
  const client = await connect(port);
  const received = collect(client);
  client.write('GET');
  await started.wait;
  const report = await srv.close({ timeout: 10_000 });
  assert.equal((await received).toString(), parts.join(''));
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  assertNoLeaks(srv);
});

test('(c) a handler that never returns is destroyed at the deadline and counted as forced', async () => {
  const started = latch();
  const { srv, port } = await startServer({
    handler: neverReturns(started),
  });
  const client = await connect(port);
  const closed = once(client, 'close');
  await started.wait;
  const start = performance.now();
  const report = await srv.close({ timeout: 200 });
  const elapsed = performance.now() - start;
  await closed;
  assert.ok(elapsed >= 195 && elapsed < 1_000, `took ${elapsed.toFixed(1)} ms`);
  assert.deepEqual([report.graceful, report.forced], [0, 1]);
  assert.equal(srv.stats().forced, 1);
  assertNoLeaks(srv);
});

test('(d) new connection attempts after close() are refused', async () => {
  const release = latch();
  const started = latch();
  const { srv, port } = await startServer({
    handler: async () => {
      started.open();
      await release.wait;
    },
  });
  const busy = await connect(port);
  await started.wait;
  const closing = srv.close({ timeout: 10_000 });
  assert.equal(srv.isClosing, true);
  const late = net.connect({ port, host: '127.0.0.1' });
  const [error] = (await once(late, 'error').catch((e) => [e])) as [NodeJS.ErrnoException];
  assert.equal(error.code, 'ECONNREFUSED');
  release.open();
  const report = await closing;
  busy.destroy();
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  assert.equal(srv.stats().accepted, 1);
  assertNoLeaks(srv);
});

test('(e) close() resolves within 20 ms after the last active connection ends (no polling)', async () => {
  const releases = Array.from({ length: 5 }, () => latch());
  let started = 0;
  const allStarted = latch();
  let lastReturn = 0;
  const { srv, port } = await startServer({
    handler: async (_ctx, conn) => {
      const mine = releases[started++]!;
      if (started === releases.length) allStarted.open();
      await mine.wait;
      await conn.write('bye');
      lastReturn = performance.now();
    },
  });
  const clients = await Promise.all(releases.map(() => connect(port)));
  for (const c of clients) c.resume();
  await allStarted.wait;
  const closing = srv.close({ timeout: 10_000 });
  for (const r of releases.slice(0, -1)) r.open();
  await waitForStats(srv, (s) => s.open === 1);
  await sleep(50); // the last connection stays busy a while: a poller would show its interval
  releases.at(-1)!.open();
  const report = await closing;
  const lag = performance.now() - lastReturn;
  assert.ok(lag < 20, `close() resolved ${lag.toFixed(2)} ms after the last handler returned`);
  assert.deepEqual([report.graceful, report.forced], [5, 0]);
  assertNoLeaks(srv);
});

test('(f) a second close({ timeout: 0 }) forces at once and both calls share the result', async () => {
  const started = latch();
  const { srv, port } = await startServer({
    handler: neverReturns(started),
  });
  await connect(port);
  await started.wait;
  const first = srv.close({ timeout: 60_000 });
  const start = performance.now();
  const second = srv.close({ timeout: 0 });
  const [a, b] = await Promise.all([first, second]);
  assert.ok(performance.now() - start < 100);
  assert.equal(first, second, 'the same promise');
  assert.deepEqual(a, b);
  assert.equal(a.forced, 1);
  assert.equal(srv.isStopped, true);
  assertNoLeaks(srv);
});

test('a later, longer timeout never extends the deadline; an aborting signal forces', async () => {
  const started = latch();
  const { srv, port } = await startServer({
    handler: neverReturns(started),
  });
  await connect(port);
  await started.wait;
  const controller = new AbortController();
  const first = srv.close({ timeout: 60_000, signal: controller.signal });
  void srv.close({ timeout: 120_000 });
  const start = performance.now();
  controller.abort();
  const report = await first;
  assert.ok(performance.now() - start < 100);
  assert.equal(report.forced, 1);
  assertNoLeaks(srv);
});

test('(g) a 16 MiB response to a slow reader arrives complete when close() is called mid-way', async () => {
  const size = 16 * 1024 * 1024;
  const block = Buffer.alloc(64 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  const expected = createHash('sha256');
  for (let sent = 0; sent < size; sent += block.length) expected.update(block);
  const started = latch();
  let maxBuffered = 0;
  const { srv, port } = await startServer({
    handler: async (_ctx, conn) => {
      started.open();
      for (let sent = 0; sent < size; sent += block.length) {
        await conn.write(block);
        maxBuffered = Math.max(maxBuffered, conn.socket.writableLength);
      }
    },
  });
  const client = await connect(port);
  const hash = createHash('sha256');
  let received = 0;
  client.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    received += chunk.length;
    // A slow reader: pause a moment every 1 MiB.
    if (received % (1024 * 1024) < chunk.length) {
      client.pause();
      setTimeout(() => client.resume(), 10);
    }
  });
  const closed = once(client, 'close');
  await started.wait;
  const report = await srv.close({ timeout: 60_000 });
  await closed;
  assert.equal(received, size);
  assert.equal(hash.digest('hex'), expected.digest('hex'));
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  assert.ok(maxBuffered <= 2 * block.length + 64 * 1024, `writer buffered ${maxBuffered} bytes`);
  assertNoLeaks(srv);
});

test('ctx.signal aborts on shutdown so a cooperative handler stops early', async () => {
  const started = latch();
  let reason: unknown;
  const { srv, port } = await startServer({
    handler: async (ctx) => {
      started.open();
      await once(ctx.signal, 'abort');
      reason = ctx.signal.reason;
    },
  });
  await connect(port);
  await started.wait;
  const report = await srv.close({ timeout: 10_000 });
  assert.equal((reason as { code?: string }).code, 'ERR_SERVER_CLOSED');
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  assertNoLeaks(srv);
});

test('an active connection is ended the moment it goes idle, with input already received served first', async () => {
  const gate = latch();
  let served: Conn | undefined;
  const { srv, port } = await startServer({
    handler: async (_ctx, conn) => {
      served = conn;
      for await (const chunk of conn) {
        await gate.wait;
        await conn.write(chunk);
      }
    },
  });
  const client = await connect(port);
  const received = collect(client);
  client.write('one');
  await waitForStats(srv, (s) => s.active === 1 && served?.socket.bytesRead === 3);
  client.write('two');
  const socket = served!.socket;
  while (socket.bytesRead < 6) await once(socket, 'data');
  const closing = srv.close({ timeout: 10_000 });
  assert.equal(served!.state, 'active');
  gate.open();
  const report = await closing;
  assert.equal((await received).toString(), 'onetwo');
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  assertNoLeaks(srv);
});

test('close() before serve() is not lost: serve() then returns at once', async () => {
  const srv = createServer({ address: '127.0.0.1:0', handler: echo });
  const report = await srv.close();
  assert.deepEqual([report.graceful, report.forced], [0, 0]);
  const served = await srv.serve();
  assert.equal(served, report);
  assert.equal(srv.isStopped, true);
  assert.equal(srv.addresses().length, 0);
  await assert.rejects(srv.serving, { code: 'ERR_SERVER_CLOSED' });
  await assert.rejects(srv.listen(), { code: 'ERR_SERVER_CLOSED' });
});

test('close() while listen() binds: listen() resolves once the listeners are closed again', async () => {
  const srv = createServer({ address: '127.0.0.1:0', handler: echo });
  const listening = srv.listen();
  const closing = srv.close();
  const [bound] = await listening;
  assert.equal(srv.isServing, false);
  await assert.rejects(srv.serving, { code: 'ERR_SERVER_CLOSED' });
  const report = await closing;
  assert.deepEqual([report.graceful, report.forced], [0, 0]);
  assert.equal(await srv.serve(), report);
  // Bound, then closed: nothing listens on the port any more.
  const peer = net.connect({ host: '127.0.0.1', port: (bound as { port: number }).port });
  await assert.rejects(once(peer, 'connect'), { code: 'ECONNREFUSED' });
  assertNoLeaks(srv);
});

test('serve(signal): aborting with no connection ever arriving stops at once', async () => {
  const srv = newServer(network('tcp4'), address('127.0.0.1:0'), handler(echo));
  const controller = new AbortController();
  const serving = srv.serve(controller.signal);
  await srv.serving;
  assert.equal(srv.isServing, true);
  const start = performance.now();
  controller.abort();
  const report = await serving;
  assert.ok(performance.now() - start < 50);
  assert.deepEqual(report, await srv.stopped);
  assert.equal(srv.isServing, false);
  assert.equal(srv.isStopped, true);
});

test('serve(signal) with an already aborted signal never binds', async () => {
  const srv = createServer({ address: '127.0.0.1:0', handler: echo });
  const report = await srv.serve(AbortSignal.abort());
  assert.equal(report.graceful, 0);
  assert.equal(srv.addresses().length, 0);
});

test('serve(signal) drains with shutdownTimeout: a busy handler is forced at that deadline', async () => {
  const started = latch();
  const srv = createServer({
    network: 'tcp4',
    address: '127.0.0.1:0',
    shutdownTimeout: 150,
    handler: neverReturns(started),
  });
  const controller = new AbortController();
  const serving = srv.serve(controller.signal);
  await srv.serving;
  const [bound] = srv.addresses();
  await connect((bound as { port: number }).port);
  await started.wait;
  const start = performance.now();
  controller.abort();
  const report = await serving;
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 145 && elapsed < 1_000, `took ${elapsed.toFixed(1)} ms`);
  assert.equal(report.forced, 1);
  assertNoLeaks(srv);
});

test('Symbol.asyncDispose closes the server gracefully', async () => {
  const { srv, port } = await startServer({ handler: echo });
  const client = await connect(port);
  client.write('x');
  await readBytes(client, 1);
  await srv[Symbol.asyncDispose]();
  assert.equal(srv.isStopped, true);
  assertNoLeaks(srv);
});

test('close() started from a connState listener loses no chunk that woke the connection', async () => {
  const got: string[] = [];
  const { srv, port } = await startServer({
    handler: async (_ctx, conn) => {
      for (let c = await conn.read(); c !== null; c = await conn.read()) got.push(c.toString());
    },
  });
  let closing: Promise<unknown> | undefined;
  srv.on('connState', (_conn: Conn, state: string, prev: string) => {
    if (state === 'active' && prev === 'idle') closing ??= srv.close({ timeout: 5_000 });
  });
  const client = await connect(port);
  await waitForStats(srv, (s) => s.idle === 1);
  const closed = collect(client);
  client.write('request\n');
  await closed;
  assert.deepEqual(got, ['request\n']);
  assert.deepEqual(await closing, { graceful: 1, forced: 0, durationMs: (await srv.stopped).durationMs });
  assertNoLeaks(srv);
});

test('a request already in the kernel when close() starts is served, not dropped', async () => {
  const { srv, port } = await startServer({ handler: echo });
  const clients = await Promise.all(Array.from({ length: 10 }, () => connect(port)));
  await waitForStats(srv, (s) => s.idle === 10);
  const replies = clients.map((c) => collect(c));
  // Same process: each write reaches the server's receive queue before close() runs, but the
  // server has not read it yet, so every connection is still idle when the shutdown starts.
  for (const [i, c] of clients.entries()) c.write(`request ${i}`);
  assert.equal(srv.stats().idle, 10);
  const report = await srv.close({ timeout: 5_000 });
  assert.deepEqual(
    (await Promise.all(replies)).map((b) => b.toString()),
    clients.map((_, i) => `request ${i}`),
  );
  assert.deepEqual([report.graceful, report.forced], [10, 0]);
  assertNoLeaks(srv);
});
