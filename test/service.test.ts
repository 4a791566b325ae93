/**
 * The service mode (`service: { decoder, call }`): replies in request order, one write per
 * received chunk, no promise for a synchronous reply, backpressure (drain and `maxInFlight`), the
 * connection states, the shutdown contract, the read limits, errors, `end()`; real sockets.
 */
import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import {
  type Conn,
  type ConnState,
  createServer,
  InvalidOptionError,
  lengthPrefixedDecoder,
  lineDecoder,
  newServer,
  type Reply,
  type Service,
  service,
  type TcpServerError,
} from '../src/index.js';
import { connect, readBytes, startServer, stopAndCheck, waitForStats } from './helpers.js';

const codeOf = (error: unknown): string | undefined => (error as TcpServerError | undefined)?.code;

/** A line service: `upper` of each line, with the given extras. */
function lines(
  call: Service<string>['call'] = (line) => `${line.toUpperCase()}\n`,
  extra: Partial<Service<string>> = {},
): Service<string> {
  return { decoder: () => lineDecoder({ maxLength: 1024 }), call, ...extra };
}

/** A service output accumulating text, as `Service.output` wants: `length` and `take()`. */
class TextOutput {
  text = '';
  takes = 0;
  get length(): number {
    return this.text.length;
  }
  write(text: string): void {
    this.text += text;
  }
  take(): Reply {
    this.takes++;
    const text = this.text;
    this.text = '';
    return text === '' ? undefined : text;
  }
}

/** Collects what a socket receives; `until(text)` resolves once that much has come. */
function receiver(socket: net.Socket): { text: () => string; until: (n: number) => Promise<string> } {
  let text = '';
  let wake: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    wake?.();
  });
  return {
    text: () => text,
    until: async (n) => {
      const deadline = performance.now() + 10_000;
      while (text.length < n) {
        if (performance.now() > deadline)
          throw new Error(`got ${text.length} of ${n} chars: ${text.slice(-80)}`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 200);
        });
      }
      return text;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test('synchronous replies, pipelined: in order, the replies of one chunk in one write', async () => {
  const flushes: number[] = [];
  const { srv, port } = await startServer({
    service: lines((line, _ctx, conn) => {
      const socket = conn.socket as net.Socket & { counted?: boolean };
      if (!socket.counted) {
        // Count the writes that reach the kernel: an uncorked write, or an uncork.
        socket.counted = true;
        const write = socket.write.bind(socket) as (data: string | Uint8Array) => boolean;
        const uncork = socket.uncork.bind(socket);
        let count = 0;
        socket.write = ((data: string | Uint8Array) => {
          if (socket.writableCorked === 0) flushes.push(++count);
          return write(data);
        }) as typeof socket.write;
        socket.uncork = () => {
          uncork();
          if (socket.writableCorked === 0) flushes.push(++count);
        };
      }
      return `${line.toUpperCase()}\n`;
    }),
  });
  const client = await connect(port);
  const got = receiver(client);
  const requests = Array.from({ length: 200 }, (_, i) => `req${i}`);
  client.write(`${requests.join('\n')}\n`); // one chunk on loopback
  const expected = requests.map((r) => `${r.toUpperCase()}\n`).join('');
  assert.equal(await got.until(expected.length), expected);
  assert.equal(flushes.length, 1, 'one write for the 200 replies of one chunk');
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('replies that are adjacent views of one buffer go out as one view; views of another buffer do not join them', async () => {
  // Two pools with one cursor: a view of pool B can start exactly where a run in pool A ends.
  const pools = [Buffer.alloc(4096), Buffer.alloc(4096)];
  let pos = 0;
  const written: string[] = [];
  const { srv, port } = await startServer({
    service: lines((line, _ctx, conn) => {
      const socket = conn.socket as net.Socket & { watched?: boolean };
      if (!socket.watched) {
        socket.watched = true;
        const write = socket.write.bind(socket) as (data: string | Uint8Array) => boolean;
        socket.write = ((data: string | Uint8Array) => {
          written.push(Buffer.from(data).toString());
          return write(data);
        }) as typeof socket.write;
      }
      const pool = pools[line.startsWith('#') ? 1 : 0]!;
      const start = pos;
      pos += pool.write(`${line.toUpperCase()}\n`, pos);
      return pool.subarray(start, pos);
    }),
  });
  const client = await connect(port);
  const got = receiver(client);
  client.write('a\nb\n#c\nd\ne\n'); // one chunk on loopback
  const expected = 'A\nB\n#C\nD\nE\n';
  assert.equal(await got.until(expected.length), expected);
  assert.deepEqual(written, ['A\nB\n', '#C\n', 'D\nE\n']);
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('async replies finishing out of order are written in request order, sync ones wait behind them', async () => {
  const { srv, port } = await startServer({
    service: lines(async (line) => {
      const delay = Number(line.split(' ')[1] ?? 0);
      if (delay === 0) return `${line}\n`;
      await sleep(delay);
      return `${line}\n`;
    }),
  });
  const client = await connect(port);
  const got = receiver(client);
  const requests = ['a 60', 'b 30', 'c', 'd 1', 'e 45', 'f'];
  client.write(`${requests.join('\n')}\n`);
  const expected = requests.map((r) => `${r}\n`).join('');
  assert.equal(await got.until(expected.length), expected);
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('a synchronous reply creates no promise on the server', async () => {
  const { srv, port } = await startServer({ service: lines() });
  const client = await connect(port);
  let promises = 0;
  const hook = createHook({
    init(_id, type) {
      if (type !== 'PROMISE') return;
      // Only the server's: made with one of the framework's frames on the stack. (The test
      // runner of this process makes promises of its own, when it reports the previous test.)
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 100;
      const stack = new Error('promise').stack ?? '';
      Error.stackTraceLimit = limit;
      if (!/[/\\]src[/\\]/.test(stack)) return;
      promises++;
      if (process.env.DEBUG_PROMISES) console.error(stack);
    },
  });
  // Wait by callbacks only: any promise made while the hook is on is the server's.
  const done = new Promise<number>((resolve) => {
    let text = '';
    client.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.length === 500 * 4) {
        hook.disable();
        resolve(promises);
      }
    });
  });
  // Enabled from a callback, after this function's own await below has made its promise.
  setImmediate(() => {
    hook.enable();
    client.write('abc\n'.repeat(500));
  });
  try {
    assert.equal(await done, 0);
  } finally {
    hook.disable();
    client.end();
    await waitForStats(srv, (s) => s.open === 0);
    await stopAndCheck(srv);
  }
});

for (const viaOutput of [false, true]) {
  const how = viaOutput ? 'replies written to output' : 'replies returned';
  test(`a peer that never reads (${how}): reading stops once replies wait for drain, memory stays bounded`, async () => {
    const reply = Buffer.alloc(64 * 1024, 'x');
    const out = new TextOutput();
    const text = reply.toString();
    let calls = 0;
    let conn: Conn | undefined;
    const { srv, port } = await startServer({
      service: lines(
        (_line, _ctx, c) => {
          conn = c;
          calls++;
          if (!viaOutput) return reply;
          out.write(text);
          return undefined;
        },
        viaOutput ? { output: out } : {},
      ),
    });
    const client = net.connect({ port, host: '127.0.0.1' });
    client.pause();
    await once(client, 'connect');
    // 20,000 requests for 64 KiB each: 1.25 GiB of replies if nothing pushed back.
    const request = Buffer.from('get\n'.repeat(1000));
    for (let i = 0; i < 20; i++) client.write(request);
    await waitForStats(srv, (s) => s.active === 1);
    let last = -1;
    for (let i = 0; i < 50 && calls !== last; i++) {
      last = calls;
      await sleep(100);
    }
    assert.equal(calls, last, 'the service stopped being called');
    assert.ok(calls < 1_000, `${calls} replies made for a peer that reads nothing`);
    const socket = conn!.socket;
    assert.ok(
      socket.writableLength <= socket.writableHighWaterMark + reply.length,
      `${socket.writableLength} queued`,
    );
    assert.equal(conn!.state, 'active', 'replies waiting for drain: active, not idle');
    // Reading again lets everything through, in order.
    let received = 0;
    client.on('data', (chunk: Buffer) => (received += chunk.length));
    client.resume();
    const deadline = performance.now() + 30_000;
    while (received < 20_000 * reply.length && performance.now() < deadline) await sleep(50);
    assert.equal(received, 20_000 * reply.length);
    assert.equal(calls, 20_000);
    client.end();
    await waitForStats(srv, (s) => s.open === 0);
    await stopAndCheck(srv);
  });
}

test('maxInFlight: at most that many async replies pending; reading resumes as they settle', async () => {
  const pending: Array<() => void> = [];
  let peak = 0;
  let inFlight = 0;
  const { srv, port } = await startServer({
    service: lines(
      (line) =>
        new Promise<Reply>((resolve) => {
          inFlight++;
          peak = Math.max(peak, inFlight);
          pending.push(() => {
            inFlight--;
            resolve(`${line}\n`);
          });
        }),
      { maxInFlight: 4 },
    ),
  });
  const client = await connect(port);
  const got = receiver(client);
  const requests = Array.from({ length: 100 }, (_, i) => `r${i}`);
  client.write(`${requests.join('\n')}\n`);
  await waitForStats(srv, (s) => s.active === 1);
  while (pending.length < 4) await sleep(10);
  await sleep(50);
  assert.equal(pending.length, 4, 'no fifth call while four replies are pending');
  // Settle each batch newest first: order is kept, and each settlement lets one more in.
  const waiting = (): number => pending.length;
  for (let settled = 0; settled < requests.length; ) {
    while (waiting() === 0) await sleep(5);
    const batch = pending.splice(0).reverse();
    for (const settle of batch) settle();
    settled += batch.length;
  }
  const expected = requests.map((r) => `${r}\n`).join('');
  assert.equal(await got.until(expected.length), expected);
  assert.equal(peak, 4);
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('states: idle between requests; active while a reply is pending or half a frame is buffered', async () => {
  const transitions: string[] = [];
  let release!: () => void;
  const { srv, port } = await startServer({
    service: lines((line) =>
      line === 'wait' ? new Promise<Reply>((resolve) => (release = () => resolve('done\n'))) : `${line}\n`,
    ),
  });
  srv.on('connState', (_conn: Conn, state: ConnState) => transitions.push(state));
  const client = await connect(port);
  const got = receiver(client);
  await waitForStats(srv, (s) => s.idle === 1);
  client.write('wait\n');
  await waitForStats(srv, (s) => s.active === 1);
  release();
  assert.equal(await got.until(5), 'done\n');
  await waitForStats(srv, (s) => s.idle === 1);
  client.write('hal');
  await waitForStats(srv, (s) => s.active === 1);
  client.write('f\n');
  await got.until(10);
  await waitForStats(srv, (s) => s.idle === 1);
  assert.deepEqual(transitions, ['new', 'active', 'idle', 'active', 'idle', 'active', 'idle']);
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('shutdown: idle connections end at once; a busy one ends right after its last reply; nothing received is unanswered', async () => {
  let release!: () => void;
  const { srv, port } = await startServer({
    service: lines((line) =>
      line === 'wait' ? new Promise<Reply>((resolve) => (release = () => resolve('late\n'))) : `${line}\n`,
    ),
  });
  const idle = await connect(port);
  const idleEnded = once(idle, 'end');
  const busy = await connect(port);
  const got = receiver(busy);
  const busyEnded = once(busy, 'end');
  busy.write('one\nwait\ntwo\nthree\n');
  await waitForStats(srv, (s) => s.active === 1 && s.idle === 1);
  const closed = srv.close({ timeout: 10_000 });
  await idleEnded;
  assert.equal(got.text(), 'one\n', 'the reply before the pending one is out; the rest waits in order');
  await sleep(50);
  assert.equal(srv.stats().active, 1, 'the busy one waits for its pending reply');
  release();
  await busyEnded;
  assert.equal(got.text(), 'one\nlate\ntwo\nthree\n');
  idle.end();
  busy.end();
  const report = await closed;
  assert.deepEqual([report.graceful, report.forced], [2, 0]);
  assert.equal(srv.stats().open, 0);
});

test('ctx.signal aborts at shutdown: an async reply can stop early and still answer', async () => {
  const { srv, port } = await startServer({
    service: lines(
      (_line, ctx) =>
        new Promise<Reply>((resolve) => {
          ctx.signal.addEventListener('abort', () => resolve(`aborted: ${codeOf(ctx.signal.reason)}\n`));
        }),
    ),
  });
  const client = await connect(port);
  const got = receiver(client);
  client.write('work\n');
  await waitForStats(srv, (s) => s.active === 1);
  const report = await srv.close({ timeout: 5_000 });
  assert.equal(await got.until(26), 'aborted: ERR_SERVER_CLOSED\n');
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
  client.end();
});

test('a peer that half-closes after pipelined requests gets every reply, then FIN; a last line without newline is answered', async () => {
  const { srv, port } = await startServer({ service: lines() });
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(client, 'connect');
  const got = receiver(client);
  const ended = once(client, 'end');
  client.end('a\nb\nlast');
  await ended;
  assert.equal(got.text(), 'A\nB\nLAST\n');
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('maxLength: an oversized frame gets errorReply after the replies before it, then FIN; without errorReply, just FIN', async () => {
  for (const withReply of [true, false]) {
    const { srv, port } = await startServer({
      service: {
        decoder: () => lineDecoder({ maxLength: 16 }),
        call: (line: string) => `${line}\n`,
        ...(withReply ? { errorReply: (error: unknown) => `-ERR ${codeOf(error)}\n` } : {}),
      },
    });
    const client = await connect(port);
    const got = receiver(client);
    const ended = once(client, 'end');
    client.write(`ok\n${'x'.repeat(64)}\nnever\n`);
    await ended;
    assert.equal(got.text(), withReply ? 'ok\n-ERR ERR_FRAME_TOO_LARGE\n' : 'ok\n');
    client.end();
    await waitForStats(srv, (s) => s.open === 0);
    assert.equal(srv.stats().errors, 0, 'bad input is not a handler error');
    await stopAndCheck(srv);
  }
});

test('errors: a throwing or rejecting call ends only its connection, reported; with errorReply it becomes a reply', async () => {
  const errors: unknown[] = [];
  const service = (errorReply?: Service<string>['errorReply']): Service<string> =>
    lines(
      (line) => {
        if (line === 'throw') throw new Error('boom');
        if (line === 'reject') return Promise.reject(new Error('async boom'));
        return `${line}\n`;
      },
      errorReply ? { errorReply } : {},
    );
  const { srv, port } = await startServer({ service: service() });
  srv.on('handlerError', (error: unknown) => errors.push((error as Error).message));
  const bystander = await connect(port);
  const watched = receiver(bystander);
  for (const bad of ['throw', 'reject']) {
    const client = await connect(port);
    client.on('error', () => {});
    const got = receiver(client);
    client.write(`fine\n${bad}\nafter\n`);
    await once(client, 'close');
    assert.ok(!got.text().includes('after'), `${bad}: nothing after the failure`);
  }
  bystander.write('still\n');
  assert.equal(await watched.until(5), 'still\n');
  bystander.end();
  await waitForStats(srv, (s) => s.open === 0);
  assert.deepEqual(errors, ['boom', 'async boom']);
  assert.equal(srv.stats().errors, 2);
  await stopAndCheck(srv);

  const withReply = await startServer({ service: service((error) => `-ERR ${(error as Error).message}\n`) });
  const client = await connect(withReply.port);
  const got = receiver(client);
  client.write('a\nthrow\nreject\nb\n');
  assert.equal(await got.until(29), 'a\n-ERR boom\n-ERR async boom\nb\n');
  client.end();
  await waitForStats(withReply.srv, (s) => s.open === 0);
  assert.equal(withReply.srv.stats().errors, 0);
  await stopAndCheck(withReply.srv);
});

test('end() from call (QUIT): this reply and those before it go out, later frames are not read, then FIN', async () => {
  const { srv, port } = await startServer({
    service: lines((line, _ctx, conn) => {
      if (line === 'quit') {
        void conn.end('bye\n');
        return 'OK\n';
      }
      if (line === 'slow') return sleep(30).then(() => 'slow\n');
      return `${line}\n`;
    }),
  });
  const client = await connect(port);
  const got = receiver(client);
  const ended = once(client, 'end');
  client.write('slow\na\nquit\nb\n');
  await ended;
  assert.equal(got.text(), 'slow\na\nOK\nbye\n');
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

for (const how of ['conn.destroy()', 'conn.socket.destroy()', 'conn.socket.end()'] as const) {
  test(`a call that runs ${how} mid-chunk: no later frame of the chunk is called, no reply is written after it`, async () => {
    const called: string[] = [];
    const { srv, port } = await startServer({
      service: lines((line, _ctx, conn) => {
        called.push(line);
        if (line !== 'stop') return `${line}\n`;
        if (how === 'conn.destroy()') conn.destroy();
        else if (how === 'conn.socket.destroy()') conn.socket.destroy();
        else conn.socket.end();
        return 'late\n';
      }),
    });
    const client = await connect(port);
    const got = receiver(client);
    client.on('error', () => {}); // a destroy may reset the connection
    const closed = once(client, 'close');
    client.write('a\nstop\nb\nc\n');
    if (how === 'conn.socket.end()') await once(client, 'end');
    client.end();
    await closed;
    // After `stop` the socket takes no writes: `b` and `c` (same chunk) never reach call, and
    // `late` never reaches the peer.
    assert.deepEqual(called, ['a', 'stop']);
    assert.ok(!got.text().includes('late'), got.text());
    assert.ok(!got.text().includes('b'), got.text());
    await waitForStats(srv, (s) => s.open === 0);
    await stopAndCheck(srv);
  });
}

test('idleTimeout and frameTimeout apply: idle ends gracefully, half a frame is cut off, a dripped frame too', async () => {
  const { srv, port } = await startServer({
    idleTimeout: 200,
    frameTimeout: 400,
    service: lines(),
  });
  const idle = await connect(port);
  const half = await connect(port);
  const drip = await connect(port);
  const ends = [idle, half, drip].map((socket) => once(socket, 'end'));
  half.write('hal');
  drip.write('d');
  const dripping = setInterval(() => drip.write('d'), 100);
  await Promise.all(ends);
  clearInterval(dripping);
  for (const socket of [idle, half, drip]) socket.end();
  await waitForStats(srv, (s) => s.open === 0);
  const stats = srv.stats();
  assert.deepEqual([stats.idleTimeouts, stats.frameTimeouts, stats.errors], [2, 1, 0]);
  await stopAndCheck(srv);
});

test('reads are refused on a service-mode connection; handler and service are exclusive; a bad service is named', async () => {
  let refused: unknown;
  const { srv, port } = await startServer({
    service: lines(async (_line, _ctx, conn) => {
      refused = await conn.read().catch((error: unknown) => error);
      return 'ok\n';
    }),
  });
  const client = await connect(port);
  client.write('x\n');
  assert.equal((await readBytes(client, 3)).toString(), 'ok\n');
  assert.equal(codeOf(refused), 'ERR_CONCURRENT_READ');
  assert.match((refused as Error).message, /service-mode/);
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);

  const bad: Array<[unknown, RegExp]> = [
    [{ handler: () => {}, service: lines() }, /handler and service are exclusive/],
    [{ service: 'nope' }, /service must be an object, got "nope"/],
    [{ service: { call: () => 'x' } }, /service.decoder must be a function, got undefined/],
    [{ service: { ...lines(), maxInFlight: 0 } }, /service.maxInFlight must be a positive integer, got 0/],
    [
      { service: { ...lines(), maxInflight: 3 } },
      /unknown option "service.maxInflight" \(did you mean "service.maxInFlight"\?\)/,
    ],
    [{ service: { ...lines(), errorReply: 1 } }, /service.errorReply must be a function, got 1/],
    [{ service: { ...lines(), output: {} } }, /service.output must be an object with a take\(\) method/],
    [{ service: { ...lines(), output: { take: () => undefined } } }, /numeric length, got/],
  ];
  for (const [options, message] of bad) {
    assert.throws(
      () => createServer({ address: '127.0.0.1:0', ...(options as object) }),
      (error: unknown) => error instanceof InvalidOptionError && message.test((error as Error).message),
    );
  }
});

test('the seed form: newServer(service(...)) serves length-prefixed frames', async () => {
  const srv = newServer(
    (o) => void Object.assign(o, { network: 'tcp4', address: '127.0.0.1:0' }),
    service({
      decoder: () => lengthPrefixedDecoder({ maxLength: 1024 }),
      call: (frame: Buffer) => {
        const out = Buffer.alloc(4 + frame.length);
        out.writeUInt32BE(frame.length);
        frame.reverse().copy(out, 4);
        return out;
      },
    }),
  );
  const [bound] = await srv.listen();
  const client = await connect((bound as { port: number }).port);
  const frame = Buffer.alloc(4 + 3);
  frame.writeUInt32BE(3);
  frame.write('abc', 4);
  client.write(Buffer.concat([frame, frame]));
  const reply = await readBytes(client, 14);
  assert.equal(reply.subarray(4, 7).toString(), 'cba');
  assert.equal(reply.subarray(11, 14).toString(), 'cba');
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('shutdown: a connection silent so far gets firstRequestGrace: its first request is answered, then FIN', async () => {
  const { srv, port } = await startServer({ firstRequestGrace: 2_000, service: lines() });
  const client = await connect(port);
  const got = receiver(client);
  const ended = once(client, 'end');
  await waitForStats(srv, (s) => s.idle === 1);
  const closed = srv.close({ timeout: 5_000 });
  await sleep(50);
  client.write('late\n');
  await ended;
  assert.equal(got.text(), 'LATE\n');
  client.end();
  const report = await closed;
  assert.deepEqual([report.graceful, report.forced], [1, 0]);
});

test("output: replies written to the service's output go out in order; one output serves many connections without mixing", async () => {
  const out = new TextOutput();
  const { srv, port } = await startServer({
    service: lines(
      (line) => {
        out.write(`${line.toUpperCase()}\n`);
        return undefined;
      },
      { output: out },
    ),
  });
  const clients = await Promise.all([connect(port), connect(port), connect(port)]);
  const expected = clients.map((_, c) => Array.from({ length: 300 }, (_, i) => `c${c}r${i}`));
  const gots = clients.map((client) => receiver(client));
  // Interleave the clients' pipelined chunks so their passes alternate.
  for (let part = 0; part < 3; part++) {
    clients.forEach((client, c) => {
      client.write(`${expected[c]!.slice(part * 100, part * 100 + 100).join('\n')}\n`);
    });
  }
  for (const [c, got] of gots.entries()) {
    const want = expected[c]!.map((r) => `${r.toUpperCase()}\n`).join('');
    assert.equal(await got.until(want.length), want);
  }
  assert.ok(
    out.takes <= 900 / 50,
    `${out.takes} takes for 900 pipelined replies: one per pass, not per reply`,
  );
  for (const client of clients) client.end();
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(out.text, '', 'nothing left in the output');
  await stopAndCheck(srv);
});

test('output with async replies: written replies wait behind a pending one; errorReply written for a rejection takes its place', async () => {
  const out = new TextOutput();
  const { srv, port } = await startServer({
    service: lines(
      (line) => {
        const [name, delay] = line.split(' ');
        if (delay === undefined) {
          out.write(`${name}\n`); // synchronous: written to the output, nothing returned
          return undefined;
        }
        return sleep(Number(delay)).then(() => {
          if (name === 'bad') throw new Error('refused');
          return `${name}\n`;
        });
      },
      {
        output: out,
        errorReply: (error) => {
          out.write(`ERR ${(error as Error).message}\n`);
          return undefined;
        },
      },
    ),
  });
  const client = await connect(port);
  const got = receiver(client);
  client.write('a\nb 40\nc\nbad 20\nd\ne 10\nf\n');
  const expected = 'a\nb\nc\nERR refused\nd\ne\nf\n';
  assert.equal(await got.until(expected.length), expected);
  client.end();
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(out.text, '');
  await stopAndCheck(srv);
});

test('the decoder is made on the first byte: silent connections hold none; a throwing factory fails only its connection', async () => {
  let made = 0;
  let fail = false;
  const errors: string[] = [];
  const { srv, port } = await startServer({
    service: {
      decoder: () => {
        made++;
        if (fail) throw new Error('no decoder');
        return lineDecoder({ maxLength: 64 });
      },
      call: (line: string) => `${line}\n`,
    },
  });
  srv.on('handlerError', (error: unknown) => errors.push((error as Error).message));
  const silent = await Promise.all([connect(port), connect(port), connect(port)]);
  await waitForStats(srv, (s) => s.idle === 3);
  assert.equal(made, 0, 'no decoder for connections that sent nothing');
  // A silent peer that half-closes makes none either: there is nothing to decode.
  const halfClosed = once(silent[0]!, 'end');
  silent[0]!.end();
  await halfClosed;
  await once(silent[0]!, 'close');
  assert.equal(made, 0);

  const speaker = await connect(port);
  const got = receiver(speaker);
  speaker.write('hi\nthere\n');
  assert.equal(await got.until(9), 'hi\nthere\n');
  assert.equal(made, 1, 'one decoder per connection that spoke');

  fail = true;
  const doomed = await connect(port);
  doomed.on('error', () => {});
  doomed.write('x\n');
  await once(doomed, 'close');
  assert.deepEqual(errors, ['no decoder']);
  speaker.write('still\n');
  assert.equal(await got.until(15), 'hi\nthere\nstill\n', 'the other connection goes on');

  for (const socket of [speaker, silent[1]!, silent[2]!]) socket.end();
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(made, 2);
  await stopAndCheck(srv);
});
