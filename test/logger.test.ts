/** The `logger` option with real pino, writing JSON lines to a stream the test captures. */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import pino from 'pino';
import { connect, startServer, waitForStats } from './helpers.js';

interface Line {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A pino logger at `level` whose lines land, parsed, in `lines`. */
function capture(level = 'info'): { logger: pino.Logger; lines: Line[] } {
  const lines: Line[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const text of chunk.toString().split('\n')) if (text) lines.push(JSON.parse(text) as Line);
      cb();
    },
  });
  return { logger: pino({ level, base: null }, stream), lines };
}

const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;

function find(lines: Line[], msg: string): Line {
  const line = lines.find((l) => l.msg === msg);
  assert.ok(line, `no "${msg}" line in:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
  return line;
}

describe('logger option (pino)', () => {
  it('logs listening, a handler error at error level, and the shutdown at info', async () => {
    const { logger, lines } = capture();
    const { srv, port } = await startServer({
      name: 'logged',
      logger,
      handler: async (_ctx, conn) => {
        const chunk = await conn.read();
        if (chunk?.toString() === 'boom') throw new TypeError('handler exploded');
      },
    });

    const listening = find(lines, 'listening');
    assert.equal(listening.level, LEVEL.info);
    assert.equal(listening.name, 'logged');
    assert.deepEqual(listening.addresses, [`127.0.0.1:${port}`]);

    const sock = await connect(port);
    sock.on('error', () => {});
    sock.write('boom');
    await waitForStats(srv, (s) => s.errors === 1);
    const failed = find(lines, 'handler failed');
    assert.equal(failed.level, LEVEL.error);
    assert.equal(typeof failed.conn, 'number');
    // pino's standard `err` serializer: type, message and stack, so log tools index it.
    const err = failed.err as { type: string; message: string; stack: string };
    assert.equal(err.type, 'TypeError');
    assert.equal(err.message, 'handler exploded');
    assert.match(err.stack, /handler exploded/);

    const report = await srv.close({ timeout: 1000 });
    const shutting = find(lines, 'shutting down');
    assert.equal(shutting.level, LEVEL.info);
    assert.equal(shutting.name, 'logged');
    assert.equal(shutting.timeout, 1000);
    assert.equal(typeof shutting.open, 'number');
    const stopped = find(lines, 'stopped');
    assert.equal(stopped.level, LEVEL.info);
    assert.deepEqual(
      { graceful: stopped.graceful, forced: stopped.forced, durationMs: stopped.durationMs },
      { ...report },
    );
    assert.ok(lines.indexOf(shutting) < lines.indexOf(stopped));
    assert.ok(lines.every((l) => typeof l.time === 'number'));
  });

  it('warns when a shutdown deadline forces connections', async () => {
    const { logger, lines } = capture();
    const { srv, port } = await startServer({
      logger,
      handler: async (_ctx, conn) => {
        await conn.read();
        await new Promise(() => {}); // busy until forced
      },
    });
    const sock = await connect(port);
    sock.on('error', () => {});
    sock.write('work');
    await waitForStats(srv, (s) => s.active === 1);
    const report = await srv.close({ timeout: 50 });
    assert.equal(report.forced, 1);
    const forcing = find(lines, 'shutdown deadline: forcing');
    assert.equal(forcing.level, LEVEL.warn);
    assert.equal(forcing.open, 1);
    assert.equal(find(lines, 'stopped').forced, 1);
  });

  it('a peer closing under the handler is debug, not an error; nothing below info by default', async () => {
    for (const level of ['debug', 'info'] as const) {
      const { logger, lines } = capture(level);
      let settled!: () => void;
      const handlerSettled = new Promise<void>((r) => {
        settled = r;
      });
      const { srv, port } = await startServer({
        logger,
        handler: async (_ctx, conn) => {
          try {
            await conn.read();
            await new Promise((r) => conn.socket.once('close', r)); // the peer resets
            await conn.write('too late'); // rejects with ConnClosedError
          } finally {
            settled();
          }
        },
      });
      const sock = await connect(port);
      sock.on('error', () => {});
      sock.write('x');
      await waitForStats(srv, (s) => s.active === 1);
      sock.resetAndDestroy();
      await handlerSettled;
      // The server sees the handler's rejection in a promise reaction: let those run first.
      await new Promise((r) => setImmediate(r));
      await srv.close();
      assert.equal(srv.stats().errors, 0);
      assert.equal(lines.filter((l) => l.level >= LEVEL.error).length, 0, 'no error line');
      if (level === 'debug') {
        const closedUnder = find(lines, 'connection closed under the handler');
        assert.equal(closedUnder.level, LEVEL.debug);
      } else {
        assert.equal(lines.filter((l) => l.level < LEVEL.info).length, 0);
      }
    }
  });
});
