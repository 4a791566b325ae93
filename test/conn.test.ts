/**
 * Conn: pull-style reads, backpressure both ways, the state machine, per-call deadlines,
 * and peers that reset.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Conn, type ConnState, type Handler, lineDecoder, type Server } from '../src/index.js';
import {
  assertNoLeaks,
  collect,
  connect,
  readBytes,
  startServer,
  stopAndCheck,
  waitForStats,
} from './helpers.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));
after(() => assert.deepEqual(unhandled, [], 'no unhandled rejections'));

/** Starts a server whose handler is `fn`, resolving the handler's outcome for the first connection. */
async function withHandler(fn: Handler): Promise<{ srv: Server; port: number; done: Promise<unknown> }> {
  let settle!: (v: unknown) => void;
  const done = new Promise<unknown>((resolve) => {
    settle = resolve;
  });
  const { srv, port } = await startServer({
    handler: async (ctx, conn) => {
      try {
        await fn(ctx, conn);
        settle('returned');
      } catch (error) {
        settle(error);
        throw error;
      }
    },
  });
  return { srv, port, done };
}

test('read() resolves chunks, then null at EOF; the handler can still reply after the peer FIN', async () => {
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    const chunks: Buffer[] = [];
    let chunk: Buffer | null;
    while ((chunk = await conn.read()) !== null) chunks.push(chunk);
    assert.equal(await conn.read(), null, 'EOF is sticky');
    await conn.write(`got ${Buffer.concat(chunks).toString()}`);
  });
  const client = await connect(port);
  const received = collect(client);
  client.end('hello world');
  assert.equal((await received).toString(), 'got hello world');
  assert.equal(await done, 'returned');
  await stopAndCheck(srv);
});

test('breaking out of for-await keeps the connection usable for writing', async () => {
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    for await (const chunk of conn) {
      assert.equal(chunk.toString(), 'first');
      break;
    }
    await conn.write('still here');
  });
  const client = await connect(port);
  const received = collect(client);
  client.write('first');
  assert.equal((await received).toString(), 'still here');
  assert.equal(await done, 'returned');
  await stopAndCheck(srv);
});

test('the state machine: new → active ⇄ idle → closing → closed, and stats add up at every step', async () => {
  const transitions: string[] = [];
  const { srv, port } = await startServer({
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  srv.on('connState', (_conn: Conn, state: ConnState, prev: ConnState | undefined) => {
    transitions.push(`${prev ?? '-'}>${state}`);
    const s = srv.stats();
    assert.equal(s.new + s.active + s.idle + s.closing, s.open);
  });
  const client = await connect(port);
  await waitForStats(srv, (s) => s.idle === 1);
  client.write('ping');
  await readBytes(client, 4);
  await waitForStats(srv, (s) => s.idle === 1);
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual(transitions, [
    '->new',
    'new>active',
    'active>idle',
    'idle>active',
    'active>idle',
    'idle>active',
    'active>closing',
    'closing>closed',
  ]);
  await stopAndCheck(srv);
});

test("'connState' reaches every listener, however it was added, also after removeAllListeners()", async (t) => {
  const { srv, port } = await startServer({
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const client = await connect(port);
  // A failed assertion must not leave the server holding the file's process.
  t.after(() => {
    client.destroy();
    void srv.close({ timeout: 0 });
  });
  await waitForStats(srv, (s) => s.idle === 1);
  /** One request: the connection goes idle → active → idle. */
  const ping = async (): Promise<void> => {
    client.write('ping');
    await readBytes(client, 4);
    await waitForStats(srv, (s) => s.idle === 1 && s.active === 0);
  };
  const seen: string[] = [];
  const record =
    (name: string) =>
    (_conn: Conn, state: ConnState): void => {
      seen.push(`${name}:${state}`);
    };
  const take = (): string[] => seen.splice(0);
  type Listener = (conn: Conn, state: ConnState) => void;
  const adders: Array<[string, (l: Listener) => unknown]> = [
    ['on', (l) => srv.on('connState', l)],
    ['addListener', (l) => srv.addListener('connState', l)],
    ['prependListener', (l) => srv.prependListener('connState', l)],
    ['once', (l) => srv.once('connState', l)],
    ['prependOnceListener', (l) => srv.prependOnceListener('connState', l)],
  ];
  const removers: Array<[string, (l: Listener) => unknown]> = [
    ['off', (l) => srv.off('connState', l)],
    ['removeListener', (l) => srv.removeListener('connState', l)],
    ['removeAllListeners()', () => srv.removeAllListeners()],
    ["removeAllListeners('connState')", () => srv.removeAllListeners('connState')],
  ];
  // Every way to remove, then every way to add: each listener sees the next request.
  for (const [remove, removeFn] of removers) {
    for (const [add, addFn] of adders) {
      const listener = record(add);
      addFn(listener);
      await ping();
      const expected = add.toLowerCase().includes('once')
        ? [`${add}:active`]
        : [`${add}:active`, `${add}:idle`];
      assert.deepEqual(take(), expected, `${add} after ${remove}`);
      removeFn(listener);
      await ping();
      assert.deepEqual(take(), [], `${remove} after ${add}`);
    }
  }

  const first = once(srv, 'connState');
  await ping();
  assert.equal((await first)[1], 'active', "node:events' once() sees a transition");
  const c = record('c');
  srv.on('connState', c);
  srv.on('connState', record('e'));
  srv.removeListener('connState', c);
  await ping();
  assert.deepEqual(take(), ['e:active', 'e:idle'], 'removing one of two leaves the other');
  srv.removeAllListeners('connState');
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('write() waits for drain: a peer that stops reading bounds the memory a writer uses', async () => {
  const block = Buffer.alloc(64 * 1024, 7);
  let writes = 0;
  let maxBuffered = 0;
  let stalled!: () => void;
  const isStalled = new Promise<void>((resolve) => {
    stalled = resolve;
  });
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    for (;;) {
      const write = conn.write(block);
      maxBuffered = Math.max(maxBuffered, conn.socket.writableLength);
      const pending = await Promise.race([write.then(() => false), sleep(200).then(() => true)]);
      if (pending) {
        stalled();
        await write; // rejects once the peer goes away
      }
      writes++;
    }
  });
  const client = await connect(port);
  client.pause(); // never reads
  await isStalled;
  const writesWhenStalled = writes;
  await sleep(100);
  assert.equal(writes, writesWhenStalled, 'the handler is blocked, not buffering');
  assert.ok(maxBuffered <= 2 * block.length, `writer buffered ${maxBuffered} bytes`);
  client.destroy();
  const outcome = (await done) as { code?: string };
  assert.equal(outcome.code, 'ERR_CONN_CLOSED');
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().errors, 0, 'a peer going away is not a handler error');
  await stopAndCheck(srv);
});

test('reads apply backpressure: unread input pauses the socket instead of growing memory', async () => {
  const total = 8 * 1024 * 1024;
  let conn!: Conn;
  let startReading!: () => void;
  const go = new Promise<void>((resolve) => {
    startReading = resolve;
  });
  let arrived!: () => void;
  const accepted = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  let received = 0;
  const { srv, port, done } = await withHandler(async (_ctx, c) => {
    conn = c;
    arrived();
    await go;
    for await (const chunk of c) received += chunk.length;
    await c.write('done');
  });
  const client = await connect(port);
  await accepted;
  const block = Buffer.alloc(64 * 1024, 1);
  let sent = 0;
  while (sent < total && client.write(block)) sent += block.length;
  sent += block.length;
  // Wait until the server stops taking bytes: its socket is paused.
  while (!conn.socket.isPaused()) await sleep(5);
  const readWhilePaused = conn.socket.bytesRead;
  await sleep(100);
  assert.equal(conn.socket.bytesRead, readWhilePaused, 'nothing read while paused');
  assert.ok(readWhilePaused < 1024 * 1024, `queued ${readWhilePaused} bytes`);
  startReading();
  while (sent < total) {
    if (!client.write(block)) await once(client, 'drain');
    sent += block.length;
  }
  const reply = collect(client);
  client.end();
  assert.equal((await reply).toString(), 'done');
  assert.equal(await done, 'returned');
  assert.equal(received, sent);
  await stopAndCheck(srv);
});

test('a peer that resets mid-read: read() rejects with ERR_CONN_CLOSED (cause ECONNRESET), never a crash', async () => {
  let gotChunk!: () => void;
  const got = new Promise<void>((resolve) => {
    gotChunk = resolve;
  });
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    for await (const chunk of conn) {
      assert.equal(chunk.toString(), 'partial');
      gotChunk();
    }
  });
  const client = await connect(port);
  client.write('partial');
  await got;
  await waitForStats(srv, (s) => s.idle === 1);
  client.resetAndDestroy();
  const error = (await done) as { code?: string; cause?: { code?: string } };
  assert.equal(error.code, 'ERR_CONN_CLOSED');
  assert.equal(error.cause?.code, 'ECONNRESET');
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().errors, 0);
  await stopAndCheck(srv);
});

test('needsDrain: false while writes are accepted at once, true while one waits; un-awaited writes never reject unhandled', async () => {
  const block = Buffer.alloc(64 * 1024, 5);
  const seen: boolean[] = [];
  let blocked!: () => void;
  const isBlocked = new Promise<void>((resolve) => {
    blocked = resolve;
  });
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    const first = conn.write('hi');
    seen.push(conn.needsDrain); // a small write is accepted at once
    await first;
    for (;;) {
      const written = conn.write(block);
      if (!conn.needsDrain) continue; // accepted: skipping the await loses no backpressure
      seen.push(conn.needsDrain);
      blocked();
      await written.catch(() => {}); // the peer goes away below
      break;
    }
    seen.push(conn.needsDrain); // the waiting write settled (rejected): nothing waits any more
    // Writes to a gone peer that nobody awaits must not surface as unhandled rejections.
    void conn.write('late');
    void conn.write('later');
  });
  const client = await connect(port);
  client.pause(); // never reads: the handler's writes pile up until one must wait
  await isBlocked;
  client.destroy();
  assert.equal(await done, 'returned');
  assert.deepEqual(seen, [false, true, false]);
  await waitForStats(srv, (s) => s.open === 0);
  await new Promise((resolve) => setImmediate(resolve)); // unhandled rejections are reported by now
  await stopAndCheck(srv);
});

test('a peer that resets mid-write: write() rejects, the server keeps serving', async () => {
  const block = Buffer.alloc(256 * 1024, 3);
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    for (;;) await conn.write(block);
  });
  const client = await connect(port);
  await readBytes(client, 1024);
  client.resetAndDestroy();
  const error = (await done) as { code?: string };
  assert.equal(error.code, 'ERR_CONN_CLOSED');
  const second = await connect(port);
  await readBytes(second, 1024);
  second.destroy();
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().errors, 0);
  await stopAndCheck(srv);
});

test('read({ timeout }) rejects with ERR_READ_TIMEOUT and the connection stays usable', async () => {
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    await assert.rejects(conn.read({ timeout: 50 }), { code: 'ERR_READ_TIMEOUT', name: 'ReadTimeoutError' });
    assert.equal(conn.state, 'active', 'a timed-out read leaves the handler working');
    await conn.write('timed out;');
    const chunk = await conn.read({ timeout: 10_000 });
    await conn.write(`then ${chunk}`);
  });
  const client = await connect(port);
  const received = collect(client);
  await readBytes(client, 10);
  client.write('data');
  assert.equal((await received).toString(), 'timed out;then data');
  assert.equal(await done, 'returned');
  await stopAndCheck(srv);
});

test('read({ signal }) rejects with ERR_ABORTED; a second concurrent read() is refused', async () => {
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    const controller = new AbortController();
    const pending = conn.read({ signal: controller.signal });
    await assert.rejects(conn.read(), { code: 'ERR_CONCURRENT_READ' });
    controller.abort(new Error('stop'));
    await assert.rejects(pending, (error: Error & { code?: string }) => {
      assert.equal(error.code, 'ERR_ABORTED');
      assert.equal((error.cause as Error).message, 'stop');
      return true;
    });
    await assert.rejects(conn.read({ signal: AbortSignal.abort() }), { code: 'ERR_ABORTED' });
  });
  const client = await connect(port);
  const received = collect(client);
  assert.equal(await done, 'returned');
  await received;
  await stopAndCheck(srv);
});

test('readFrame() and write() refuse bad options; a write given an aborted signal rejects once it must wait', async () => {
  let written = 0;
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    const lines = lineDecoder({ maxLength: 64 });
    await assert.rejects(conn.readFrame(lines, { timeout: -1 }), { code: 'ERR_INVALID_OPTION' });
    await assert.rejects(conn.readFrame(lines, { signal: AbortSignal.abort() }), { code: 'ERR_ABORTED' });
    await assert.rejects(conn.write('x', { timeout: Number.NaN }), { code: 'ERR_INVALID_OPTION' });
    // Writes the socket takes at once succeed; the first that must wait for drain is aborted.
    const block = Buffer.alloc(256 * 1024, 2);
    let aborted: (Error & { code?: string }) | undefined;
    for (let i = 0; i < 1000 && aborted === undefined; i++) {
      written += block.length; // queued either way
      await conn.write(block, { signal: AbortSignal.abort() }).catch((error: Error) => {
        aborted = error;
      });
    }
    assert.equal(aborted?.code, 'ERR_ABORTED');
    assert.equal(conn.needsDrain, false, 'the aborted write no longer waits');
    assert.equal(await conn.readFrame(lines), 'still usable');
  });
  const client = await connect(port);
  client.pause(); // not reading yet: the server's writes pile up
  client.end('still usable\n');
  assert.equal(await done, 'returned');
  const receiving = collect(client);
  client.resume(); // paused explicitly above: a 'data' listener alone does not restart it
  const received = await receiving;
  assert.equal(received.length, written, "the aborted write's data was still sent");
  await stopAndCheck(srv);
});

test('a handler that returns while its unread input has paused the socket still ends cleanly', async () => {
  let conn!: Conn;
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const { srv, port, done } = await withHandler(async (_ctx, c) => {
    conn = c;
    await released; // never reads: input piles up until the socket pauses
  });
  const client = await connect(port);
  const block = Buffer.alloc(64 * 1024, 1);
  while (client.write(block));
  while (conn === undefined || !conn.socket.isPaused()) await sleep(5);
  release();
  assert.equal(await done, 'returned');
  client.resume();
  await once(client, 'end'); // our FIN arrives although the peer was still sending
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('write({ timeout }) rejects with ERR_WRITE_TIMEOUT when the peer does not read', async () => {
  const block = Buffer.alloc(1024 * 1024, 5);
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    for (;;) await conn.write(block, { timeout: 100 });
  });
  const client = await connect(port);
  client.pause();
  const error = (await done) as { code?: string };
  assert.equal(error.code, 'ERR_WRITE_TIMEOUT');
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().errors, 1, 'an uncaught write timeout is the handler failing');
  client.destroy();
  await stopAndCheck(srv);
});

test('hold() keeps a connection active through a shutdown until released', async () => {
  let release!: () => void;
  let holding!: () => void;
  const held = new Promise<void>((resolve) => {
    holding = resolve;
  });
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    release = conn.hold();
    holding();
    const chunk = await conn.read(); // waits for input, but is not idle: work is held
    assert.equal(chunk, null, 'after release, the draining server ends the read');
    await conn.write('released');
  });
  const client = await connect(port);
  const received = collect(client);
  await held;
  await sleep(20);
  assert.equal(srv.stats().idle, 0);
  assert.equal(srv.stats().active, 1);
  const closing = srv.close({ timeout: 10_000 });
  await sleep(50);
  assert.equal(srv.stats().open, 1, 'held connection is not ended');
  release();
  release(); // twice is harmless
  const report = await closing;
  assert.equal((await received).toString(), 'released');
  assert.equal(await done, 'returned');
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  assertNoLeaks(srv);
});

test('conn.end(data) sends the last bytes then FIN; addresses and id are exposed', async () => {
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    assert.equal(conn.id, 1);
    assert.equal(conn.remoteAddress, '127.0.0.1');
    assert.equal(typeof conn.remotePort, 'number');
    assert.equal(conn.localAddress, '127.0.0.1');
    assert.equal(conn.localPort, port);
    await conn.end('goodbye');
    assert.equal(conn.state, 'closing');
    await assert.rejects(conn.write('late'), { code: 'ERR_CONN_CLOSED' });
  });
  const client = await connect(port);
  const ended = once(client, 'end');
  const received = collect(client);
  await ended;
  assert.equal((await received).toString(), 'goodbye');
  assert.equal(await done, 'returned');
  await stopAndCheck(srv);
});

test('idleTimeout ends a silent connection gracefully and counts it; traffic keeps one alive', async () => {
  const { srv, port } = await startServer({
    idleTimeout: 150,
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const silent = await connect(port);
  const chatty = await connect(port);
  const silentEnded = once(silent, 'end');
  let stop = false;
  const talking = (async () => {
    while (!stop) {
      chatty.write('.');
      await readBytes(chatty, 1);
      await sleep(30);
    }
  })();
  await silentEnded;
  await waitForStats(srv, (s) => s.open === 1);
  assert.equal(srv.stats().idleTimeouts, 1);
  assert.equal(srv.stats().open, 1, 'the chatty connection is still open');
  stop = true;
  await talking;
  chatty.end();
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().idleTimeouts, 1);
  await stopAndCheck(srv);
});

test('a handler that returns without awaiting a pending read ends cleanly', async () => {
  const { srv, port, done } = await withHandler(async (_ctx, conn) => {
    void conn.read();
  });
  const client = await connect(port);
  await once(client, 'end');
  assert.equal(await done, 'returned');
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});
