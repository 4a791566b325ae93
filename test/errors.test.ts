/**
 * Error isolation and observability: a failing handler ends only its own connection, is
 * reported exactly once (event, diagnostics_channel, logger, stats), and the server keeps serving.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { once } from 'node:events';
import { test } from 'node:test';
import type { Conn, Logger } from '../src/index.js';
import { collect, connect, readBytes, startServer, stopAndCheck, waitForStats } from './helpers.js';

/** A logger that records every call, to check what the library reports. */
function recordingLogger(): Logger & { lines: Array<{ level: string; obj: object; msg: string }> } {
  const lines: Array<{ level: string; obj: object; msg: string }> = [];
  const at = (level: string) => (obj: object, msg: string) => void lines.push({ level, obj, msg });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

test('a handler that throws on one connection while 20 others echo: the 20 are unaffected, one report', async () => {
  const logger = recordingLogger();
  const boom = new Error('boom');
  const reported: Array<{ error: unknown; conn: Conn }> = [];
  const published: unknown[] = [];
  const onPublish = (message: unknown): void => void published.push(message);
  diagnostics.subscribe('tcpserver:handler.error', onPublish);
  const { srv, port } = await startServer({
    logger,
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) {
        if (chunk.toString() === 'explode') throw boom;
        await conn.write(chunk);
      }
    },
  });
  srv.on('handlerError', (error: unknown, conn: Conn) => reported.push({ error, conn }));
  const clients = await Promise.all(Array.from({ length: 20 }, () => connect(port)));
  const victim = await connect(port);
  const victimClosed = once(victim, 'close');
  const rounds = clients.map(async (client, i) => {
    for (let n = 0; n < 50; n++) {
      const message = `c${i}-m${n};`;
      client.write(message);
      assert.equal((await readBytes(client, message.length)).toString(), message);
    }
  });
  victim.write('explode');
  await victimClosed;
  await Promise.all(rounds);
  assert.equal(reported.length, 1);
  assert.equal(reported[0]!.error, boom);
  assert.equal(published.length, 1);
  assert.equal((published[0] as { error: unknown }).error, boom);
  assert.equal(logger.lines.filter((l) => l.level === 'error').length, 1);
  assert.equal(srv.stats().errors, 1);
  assert.equal(srv.stats().open, 20);
  diagnostics.unsubscribe('tcpserver:handler.error', onPublish);
  const closedAll = clients.map((c) => collect(c));
  const report = await srv.close({ timeout: 5_000 });
  await Promise.all(closedAll);
  assert.deepEqual([report.graceful, report.forced], [20, 0]);
  await stopAndCheck(srv);
});

test('a handler that throws synchronously, or rejects, destroys only its connection', async () => {
  let n = 0;
  const { srv, port } = await startServer({
    handler: (_ctx, conn) => {
      n++;
      if (n === 1) throw new Error('sync');
      if (n === 2) return Promise.reject(new Error('async'));
      return conn.write('fine');
    },
  });
  const errors: string[] = [];
  srv.on('handlerError', (error: Error) => errors.push(error.message));
  for (const expected of ['', '', 'fine']) {
    const client = await connect(port);
    assert.equal((await collect(client)).toString(), expected);
  }
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual(errors.sort(), ['async', 'sync']);
  assert.equal(srv.stats().errors, 2);
  await stopAndCheck(srv);
});

test('maxConnections closes connections beyond the limit at once and counts them', async () => {
  const { srv, port } = await startServer({
    maxConnections: 2,
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const rejected: string[] = [];
  srv.on('rejected', (_socket: unknown, reason: string) => rejected.push(reason));
  const a = await connect(port);
  const b = await connect(port);
  await waitForStats(srv, (s) => s.open === 2);
  const c = await connect(port);
  await once(c, 'close');
  assert.deepEqual(rejected, ['maxConnections']);
  assert.equal(srv.stats().rejected, 1);
  assert.equal(srv.stats().accepted, 2);
  a.write('still');
  assert.equal((await readBytes(a, 5)).toString(), 'still');
  b.destroy();
  await waitForStats(srv, (s) => s.open === 1);
  const d = await connect(port);
  d.write('room');
  assert.equal((await readBytes(d, 4)).toString(), 'room');
  a.destroy();
  d.destroy();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('diagnostics_channel publishes listening, every state change, shutdown and close', async () => {
  const seen: string[] = [];
  const subscriptions: Array<[string, (m: unknown) => void]> = [
    ['tcpserver:server.listening', () => seen.push('listening')],
    ['tcpserver:conn.state', (m) => seen.push(`state:${(m as { state: string }).state}`)],
    ['tcpserver:server.shutdown', () => seen.push('shutdown')],
    [
      'tcpserver:server.close',
      (m) => seen.push(`close:${(m as { report: { graceful: number } }).report.graceful}`),
    ],
  ];
  for (const [name, fn] of subscriptions) diagnostics.subscribe(name, fn);
  try {
    const { srv, port } = await startServer({ handler: async (_ctx, conn) => void (await conn.read()) });
    const client = await connect(port);
    await waitForStats(srv, (s) => s.idle === 1);
    const closed = once(client, 'close');
    await srv.close();
    await closed;
    assert.deepEqual(seen, [
      'listening',
      'state:new',
      'state:active',
      'state:idle',
      'shutdown',
      'state:active',
      'state:closing',
      'state:closed',
      'close:1',
    ]);
    await stopAndCheck(srv);
  } finally {
    for (const [name, fn] of subscriptions) diagnostics.unsubscribe(name, fn);
  }
});

test('the logger gets structured lines: listening, shutting down, stopped', async () => {
  const logger = recordingLogger();
  const { srv } = await startServer({ logger, name: 'echo-test', handler: () => {} });
  await srv.close();
  const messages = logger.lines.filter((l) => l.level === 'info').map((l) => l.msg);
  assert.deepEqual(messages, ['listening', 'shutting down', 'stopped']);
  assert.equal((logger.lines[0]!.obj as { name: string }).name, 'echo-test');
});
