import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import {
  encodeLine,
  frames,
  type Handler,
  lengthPrefixedDecoder,
  lengthPrefixedEncoder,
  lineDecoder,
} from '../src/index.js';
import {
  assertNoLeaks,
  collect,
  connect,
  readBytes,
  startServer,
  stopAndCheck,
  waitForStats,
} from './helpers.js';

/** Upper-cases each line; records how the handler's loop ended. */
function upperServer(outcome: { code?: string; done?: boolean }, maxLength = 16): Handler {
  return async (_ctx, conn) => {
    try {
      for await (const line of frames(conn, lineDecoder({ maxLength }))) {
        await conn.write(encodeLine(line.toUpperCase()));
      }
      outcome.done = true;
    } catch (err) {
      outcome.code = (err as { code?: string }).code;
      await conn.write(encodeLine(`-ERR ${outcome.code}`));
    }
  };
}

describe('codecs over real connections', () => {
  test('a line server answers each line, CRLF or LF, in any split, until the peer ends', async () => {
    const outcome: { code?: string; done?: boolean } = {};
    const { srv, port } = await startServer({ handler: upperServer(outcome) });
    const client = await connect(port);
    const received = collect(client);
    client.write('hello\r');
    await tick();
    client.write('\nwor');
    await tick();
    client.end('ld\nlast');
    assert.equal((await received).toString(), 'HELLO\nWORLD\nLAST\n');
    assert.equal(outcome.done, true);
    await stopAndCheck(srv);
  });

  test('a line longer than maxLength ends the connection; the handler sees ERR_FRAME_TOO_LARGE', async () => {
    const outcome: { code?: string; done?: boolean } = {};
    const { srv, port } = await startServer({ handler: upperServer(outcome, 8) });
    const client = await connect(port);
    const received = collect(client);
    client.write('short\n');
    client.write('x'.repeat(9)); // no newline needed: 9 bytes already exceed the limit
    assert.equal((await received).toString(), 'SHORT\n-ERR ERR_FRAME_TOO_LARGE\n');
    assert.equal(outcome.code, 'ERR_FRAME_TOO_LARGE');
    await stopAndCheck(srv);
  });

  test('an uncaught framing error is reported as a handler error and the connection is closed', async () => {
    const { srv, port } = await startServer({
      handler: async (_ctx, conn) => {
        for await (const frame of frames(conn, lengthPrefixedDecoder({ maxLength: 4 })))
          await conn.write(frame);
      },
    });
    const errors: unknown[] = [];
    srv.on('handlerError', (err) => errors.push(err));
    const client = await connect(port);
    const received = collect(client);
    client.write(Buffer.of(0, 0, 0, 5)); // announces 5 bytes: refused before any payload
    await received;
    assert.equal(errors.length, 1);
    assert.equal((errors[0] as { code?: string }).code, 'ERR_FRAME_TOO_LARGE');
    await stopAndCheck(srv);
  });

  test('a stream ending inside a length-prefixed frame is ERR_INCOMPLETE_FRAME', async () => {
    let code: string | undefined;
    const { srv, port } = await startServer({
      handler: async (_ctx, conn) => {
        try {
          for await (const frame of frames(conn, lengthPrefixedDecoder({ maxLength: 64 })))
            await conn.write(frame);
        } catch (err) {
          code = (err as { code?: string }).code;
        }
      },
    });
    const client = await connect(port);
    const received = collect(client);
    const frame = lengthPrefixedEncoder()('hello');
    client.end(Buffer.concat([frame, frame.subarray(0, 6)]));
    assert.equal((await received).toString(), 'hello');
    assert.equal(code, 'ERR_INCOMPLETE_FRAME');
    await stopAndCheck(srv);
  });

  test('close() does not cut a half-received frame: the rest is served, then the connection ends gracefully', async () => {
    const outcome: { code?: string; done?: boolean } = {};
    const { srv, port } = await startServer({ handler: upperServer(outcome) });
    const client = await connect(port);
    const closed = once(client, 'close');
    await waitForStats(srv, (s) => s.idle === 1); // the handler waits for its first line
    client.write('hal');
    await waitForStats(srv, (s) => s.active === 1);
    await tick(); // the bytes reach the decoder
    assert.equal(srv.stats().idle, 0, 'bytes held in the decoder keep the connection active');

    const report = srv.close({ timeout: 10_000 });
    await tick();
    assert.equal(srv.stats().open, 1, 'the half-received frame holds the connection open');
    client.write('f\n');
    assert.equal((await readBytes(client, 5)).toString(), 'HALF\n');
    await closed;
    assert.deepEqual({ ...(await report), durationMs: 0 }, { graceful: 1, forced: 0, durationMs: 0 });
    assert.equal(outcome.done, true);
    assertNoLeaks(srv);
  });
});
