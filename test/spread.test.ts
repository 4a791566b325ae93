/**
 * Spread closing (docs/architecture.md, "Shutdown", step 3): idle connections end at random
 * moments over a window instead of in the same millisecond, so their clients do not all
 * reconnect to the remaining servers at once.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { seededRandom } from '../src/index.js';
import { assertNoLeaks, connect, startServer, waitForStats } from './helpers.js';

const echoLines = async (_ctx: unknown, conn: import('../src/index.js').Conn): Promise<void> => {
  for await (const chunk of conn) await conn.write(chunk);
};

/** Opens `count` connections, `batch` at a time (a burst of thousands overflows the backlog). */
async function openMany(port: number, count: number, batch = 200): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  for (let i = 0; i < count; i += batch) {
    const n = Math.min(batch, count - i);
    sockets.push(...(await Promise.all(Array.from({ length: n }, () => connect(port)))));
  }
  return sockets;
}

test('2,000 idle connections closed with a 2 s spread: FINs spread over the window, none forced', async () => {
  const count = 2_000;
  const window = 2_000;
  const { srv, port } = await startServer({
    handler: echoLines,
    random: seededRandom(1),
    maxConnections: 5_000,
    firstRequestGrace: 0, // the clients never send: this is about spreading, not the grace
  });
  const clients = await openMany(port, count);
  await waitForStats(srv, (s) => s.idle === count);
  const endedAt: number[] = [];
  const closed = clients.map((socket) => {
    socket.on('end', () => {
      endedAt.push(performance.now());
      socket.end();
    });
    return once(socket, 'close');
  });
  const start = performance.now();
  const closing = srv.close({ timeout: 10_000, spread: window });
  assert.equal(srv.isServing, false, 'listeners close at once');
  const report = await closing;
  await Promise.all(closed);
  assert.equal(endedAt.length, count, 'every client got a FIN (none was reset)');
  assert.deepEqual([report.graceful, report.forced], [count, 0]);
  // Histogram in 100 ms slices: each holds about 5% of the connections; none more than 3x that.
  const slices = new Array<number>(Math.ceil(window / 100) + 5).fill(0);
  for (const t of endedAt) slices[Math.floor((t - start) / 100)]! += 1;
  const share = count / (window / 100);
  console.log(`# spread histogram (100 ms slices, share ${share}): ${slices.join(' ')}`);
  const last = Math.max(...endedAt) - start;
  assert.ok(last < window + 500, `the last FIN came ${last.toFixed(0)} ms after close()`);
  assert.ok(Math.max(...slices) <= 3 * share, `a slice held ${Math.max(...slices)} (share ${share})`);
  const firstHalf = endedAt.filter((t) => t - start < window / 2).length;
  assert.ok(
    firstHalf > count * 0.35 && firstHalf < count * 0.65,
    `${firstHalf} of ${count} in the first half`,
  );
  assertNoLeaks(srv);
});

test('spread: moments come from the injected random, ctx.signal aborts at once, a late idler ends at once', async () => {
  // random() = 0.5 for everyone: every idle connection's moment is at half the window.
  let aborted = 0;
  let release!: () => void;
  const busy = new Promise<void>((resolve) => {
    release = resolve;
  });
  const { srv, port } = await startServer({
    random: () => 0.5,
    shutdownSpread: 600,
    handler: async (ctx, conn) => {
      ctx.signal.addEventListener('abort', () => aborted++);
      const first = await conn.read();
      if (first?.toString() === 'busy') {
        await busy; // works past its moment, then goes idle: it must end at once
        await conn.write('done');
      }
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const idle = await connect(port);
  idle.write('idle');
  const worker = await connect(port);
  worker.resume(); // it gets 'done': read it, or its 'end' never comes
  worker.write('busy');
  await waitForStats(srv, (s) => s.idle === 1 && s.active === 1);
  const start = performance.now();
  const idleEnd = once(idle, 'end').then(() => performance.now() - start);
  const closing = srv.close({ timeout: 5_000 }); // spread from the server option
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(aborted, 2, 'every ctx.signal aborts at once, spread or not');
  const idleAfter = await idleEnd;
  assert.ok(
    idleAfter >= 290 && idleAfter < 1_000,
    `the idle connection ended after ${idleAfter.toFixed(0)} ms`,
  );
  await new Promise((resolve) => setTimeout(resolve, 50)); // its moment (300 ms) has passed
  const workerEnd = once(worker, 'end').then(() => performance.now());
  const released = performance.now();
  release();
  const late = (await workerEnd) - released;
  assert.ok(late < 200, `went idle after its moment and ended ${late.toFixed(0)} ms later`);
  idle.end();
  worker.end();
  const report = await closing;
  assert.deepEqual([report.graceful, report.forced], [2, 0]);
  assertNoLeaks(srv);
});

test('spread: a tighter deadline ends connections still waiting for their moment now; the window is capped below the deadline', async () => {
  const { srv, port } = await startServer({ random: () => 0.99, handler: echoLines });
  const clients = await Promise.all(Array.from({ length: 5 }, () => connect(port)));
  await waitForStats(srv, (s) => s.idle === 5);
  const start = performance.now();
  const ended = Promise.all(clients.map((c) => once(c, 'end')));
  for (const c of clients) c.on('end', () => c.end());
  // spread 60 s, deadline 1 s: the window is capped at 90% of the deadline (moments at ~891 ms).
  const closing = srv.close({ timeout: 1_000, spread: 60_000 });
  await ended;
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 850 && elapsed < 1_000, `ended after ${elapsed.toFixed(0)} ms (capped window)`);
  const report = await closing;
  assert.deepEqual([report.graceful, report.forced], [5, 0]);

  const second = await startServer({ random: () => 0.99, handler: echoLines });
  const more = await Promise.all(Array.from({ length: 5 }, () => connect(second.port)));
  await waitForStats(second.srv, (s) => s.idle === 5);
  for (const c of more) c.on('end', () => c.end());
  const t0 = performance.now();
  const closing2 = second.srv.close({ timeout: 10_000, spread: 5_000 });
  const allEnded = Promise.all(more.map((c) => once(c, 'end')));
  void second.srv.close({ timeout: 3_000 }); // tightens: the waiting ones end now, gracefully
  await allEnded;
  assert.ok(performance.now() - t0 < 500, 'tightening ended the spread');
  const report2 = await closing2;
  assert.deepEqual([report2.graceful, report2.forced], [5, 0]);
  assertNoLeaks(second.srv);
});

test('close({ spread }) validates its value, and spread 0 ends every idle connection at once', async () => {
  const { srv, port } = await startServer({
    shutdownSpread: 10_000,
    firstRequestGrace: 0,
    handler: echoLines,
  });
  await assert.rejects(srv.close({ spread: -1 }), { code: 'ERR_INVALID_OPTION' });
  const clients = await Promise.all(Array.from({ length: 20 }, () => connect(port)));
  await waitForStats(srv, (s) => s.idle === 20);
  for (const c of clients) c.on('end', () => c.end());
  const start = performance.now();
  const report = await srv.close({ spread: 0 });
  assert.ok(performance.now() - start < 300);
  assert.deepEqual([report.graceful, report.forced], [20, 0]);
  assertNoLeaks(srv);
});
