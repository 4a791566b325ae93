/**
 * Server-level time limits: TLS handshake timeout, idle timeout, connection age, full-duplex
 * `hold()`, and no stray timers after close().
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { collect, connect, readBytes, startServer, stopAndCheck, waitForStats } from './helpers.js';

const run = promisify(execFile);

test('handshakeTimeout drops a TLS peer that never completes its handshake; it never reaches the handler', async () => {
  let handled = 0;
  const { srv, port } = await startServer({
    tls: {}, // no certificate is needed: the peer never sends a ClientHello
    handshakeTimeout: 150,
    handler: () => void handled++,
  });
  const silent = await connect(port);
  const garbage = await connect(port);
  garbage.on('error', () => {});
  const start = performance.now();
  const silentClosed = once(silent, 'close');
  garbage.write('GET / HTTP/1.1\r\n\r\n'); // not TLS at all: the handshake fails at once
  await once(garbage, 'close');
  await silentClosed;
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 140 && elapsed < 2_000, `silent peer dropped after ${elapsed.toFixed(0)} ms`);
  assert.equal(handled, 0);
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual([srv.stats().accepted, srv.stats().closed, srv.stats().errors], [2, 2, 0]);
  await stopAndCheck(srv);
});

test('maxConnectionAge ends a busy connection at its next idle moment, never mid-request', async () => {
  let reason: unknown;
  const { srv, port } = await startServer({
    maxConnectionAge: 200,
    random: () => 0.5, // no jitter: the age is exactly 200 ms (its ±10% is accept.test.ts's)
    handler: async (ctx, conn) => {
      ctx.signal.addEventListener('abort', () => (reason = ctx.signal.reason));
      for await (const chunk of conn) {
        await sleep(5);
        await conn.write(chunk);
      }
    },
  });
  const start = performance.now(); // before connecting: the age counts from the accept
  const client = await connect(port);
  const ended = once(client, 'end');
  let echoed = 0;
  let open = true;
  void ended.then(() => (open = false));
  while (open && performance.now() - start < 5_000) {
    client.write('ping');
    const reply = await Promise.race([readBytes(client, 4).catch(() => null), ended.then(() => null)]);
    if (reply === null) break;
    assert.equal(reply.toString(), 'ping');
    echoed++;
  }
  await ended;
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 190 && elapsed < 2_000, `ended after ${elapsed.toFixed(0)} ms`);
  assert.ok(echoed > 0);
  assert.equal((reason as { code?: string }).code, 'ERR_CONNECTION_AGE');
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('hold() for a full-duplex handler: pushes and echoes concurrently, drains cooperatively on shutdown', async () => {
  const { srv, port } = await startServer({
    handler: async (ctx, conn) => {
      const release = conn.hold(); // server push: waiting for input is not idle
      const pusher = (async () => {
        let n = 0;
        while (!ctx.signal.aborted) {
          await conn.write(`tick ${n++}\n`);
          await sleep(10);
        }
        await conn.write('bye\n');
        release();
      })();
      for await (const chunk of conn) await conn.write(`echo ${chunk}\n`);
      await pusher;
    },
  });
  const client = await connect(port);
  const received = collect(client);
  await readBytes(client, 1);
  client.write('hi');
  await sleep(50);
  assert.equal(srv.stats().idle, 0, 'a held connection is never idle');
  const report = await srv.close({ timeout: 10_000 });
  const text = (await received).toString();
  assert.match(text, /echo hi\n/);
  assert.match(text, /tick 0\n/);
  assert.ok(text.endsWith('bye\n'), 'the last push arrives before FIN');
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  await stopAndCheck(srv);
});

test('no stray timers: a process that used every timeout exits by itself after close()', async () => {
  const start = performance.now();
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'test/fixtures/core-timers.ts'], {
    timeout: 20_000,
  });
  const report = JSON.parse(stdout) as { graceful: number; forced: number };
  assert.deepEqual([report.graceful, report.forced], [5, 0]);
  assert.ok(performance.now() - start < 15_000);
});
