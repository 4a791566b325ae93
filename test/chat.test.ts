import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { createChatServer, GOODBYE } from '../examples/chat.js';
import { type Decoder, InvalidOptionError, type Logger, lineDecoder, type Server } from '../src/index.js';
import { assertNoLeaks, waitForStats } from './helpers.js';

const PROMPT = '* welcome! what is your nickname?';

/** A chat client over a real socket: lines in arrival order, and whether the server hung up. */
class Client {
  readonly socket: net.Socket;
  readonly closed: Promise<unknown>;
  /** Every line received, in order, skipped ones included. */
  readonly transcript: string[] = [];
  /** Lines `line()` passes over (still in the transcript): announcements whose moment is not fixed. */
  readonly skip = new Set<string>();
  readonly #decoder: Decoder<string> = lineDecoder({ maxLength: 4096 });
  readonly #lines: string[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = once(socket, 'close');
    socket.on('data', (chunk: Buffer) => {
      this.#decoder.push(chunk);
      for (let line = this.#decoder.next(); line !== undefined; line = this.#decoder.next()) {
        this.transcript.push(line);
        if (!this.skip.has(line)) this.#lines.push(line);
      }
      this.#wake?.();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#wake?.();
    });
  }

  static async connect(port: number): Promise<Client> {
    const socket = net.connect({ port, host: '127.0.0.1' });
    await once(socket, 'connect');
    return new Client(socket);
  }

  /** Connects and joins as `nick`; `online` is the welcome's list of who is in the room. */
  static async join(port: number, nick: string, online: string): Promise<Client> {
    const client = await Client.connect(port);
    await client.expect(PROMPT);
    client.send(nick);
    await client.expect(`* welcome ${nick}, online: ${online}`);
    return client;
  }

  send(text: string): void {
    this.socket.write(`${text}\n`);
  }

  /** The next line; fails if the server hangs up first. */
  async line(): Promise<string> {
    while (this.#lines.length === 0) {
      assert.ok(!this.#ended, 'server closed the connection');
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
    return this.#lines.shift()!;
  }

  async expect(...lines: string[]): Promise<void> {
    for (const expected of lines) assert.equal(await this.line(), expected);
  }

  /** Waits until `line` has arrived (skipped or not); fails if the server hangs up first. */
  async seen(line: string): Promise<void> {
    while (!this.transcript.includes(line)) {
      assert.ok(!this.#ended, `server closed the connection before ${JSON.stringify(line)}`);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  /** Every line until the server ends the connection. */
  async rest(): Promise<string[]> {
    await this.closed;
    return this.#lines.splice(0);
  }
}

/**
 * A member that never reads: it joins as `nick` and leaves everything the server sends in the
 * socket buffers (the stream is paused, so the kernel's receive window closes once they fill).
 * When the server drops it, it is reset if it had sent input the server never read (so its
 * errors are expected); otherwise the server's FIN waits behind the unread data, and this
 * socket sees neither 'end' nor 'close' until it is resumed or destroyed.
 */
async function connectSilent(port: number, nick: string): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.pause();
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(`${nick}\n`);
  return socket;
}

/**
 * alice and carol in the room, then `slow`, a member that never reads (see `connectSilent`).
 * Dropped slow members are announced when they go, at a moment these tests do not fix, so
 * alice and carol skip that line.
 */
async function roomWithSilentMember(
  port: number,
): Promise<{ alice: Client; carol: Client; slow: net.Socket }> {
  const alice = await Client.join(port, 'alice', 'alice');
  const carol = await Client.join(port, 'carol', 'alice, carol');
  await alice.expect('* carol joined');
  const slow = await connectSilent(port, 'slow');
  await alice.expect('* slow joined');
  await carol.expect('* slow joined');
  alice.skip.add('* slow left');
  carol.skip.add('* slow left');
  return { alice, carol, slow };
}

/**
 * Enough commands that their replies outgrow every buffer between the server and a silent
 * client several times over (about 21 MB; loopback buffers held about 4 MB where this was
 * written), so the server's reply write must wait for a drain that never comes. Each command is
 * long (its reply echoes it), so the server reaches that point after a few thousand commands,
 * not the CPU time of a hundred thousand short ones that would delay everyone's lines.
 */
const FLOOD = `/${'x'.repeat(1000)}\n`.repeat(20_000);

/** Generous per-test bound: a regression fails the test instead of hanging the run. */
const BOUND = { timeout: 30_000 };

/** A logger that records `warn` lines (the chat's slow-consumer drops) and resolves on the first. */
function warnings(): {
  logger: Logger;
  lines: Array<{ obj: Record<string, unknown>; msg: string }>;
  first: Promise<void>;
} {
  const lines: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  let resolve!: () => void;
  const first = new Promise<void>((r) => {
    resolve = r;
  });
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    error: () => {},
    warn: (obj, msg) => {
      lines.push({ obj: obj as Record<string, unknown>, msg });
      resolve();
    },
  };
  return { logger, lines, first };
}

async function start(
  options: Parameters<typeof createChatServer>[0] = {},
): Promise<{ srv: ReturnType<typeof createChatServer>; port: number }> {
  const srv = createChatServer({ address: ':0', ...options });
  const [bound] = await srv.listen();
  assert.ok(bound && bound.network !== 'unix');
  return { srv, port: bound.port };
}

describe('chat example', () => {
  test('nicknames, broadcast, /nick, /quit, and a goodbye for everyone at shutdown', async () => {
    const { srv, port } = await start();
    const alice = await Client.connect(port);
    await alice.expect(PROMPT);
    alice.send('alice');
    await alice.expect('* welcome alice, online: alice');

    const bob = await Client.connect(port);
    await bob.expect(PROMPT);
    bob.send('bob');
    await bob.expect('* welcome bob, online: alice, bob');
    await alice.expect('* bob joined');

    const carol = await Client.connect(port);
    await carol.expect(PROMPT);
    carol.send('ALICE');
    await carol.expect('* nickname ALICE is taken; try another');
    carol.send('no spaces please');
    await carol.expect('* a nickname is 1 to 24 letters, digits, _ or -; try again');
    carol.send('carol');
    await carol.expect('* welcome carol, online: alice, bob, carol');
    await alice.expect('* carol joined');
    await bob.expect('* carol joined');

    alice.send('hello everyone');
    await bob.expect('<alice> hello everyone');
    await carol.expect('<alice> hello everyone');

    carol.send('/nick caroline');
    await carol.expect('* you are now caroline');
    await alice.expect('* carol is now caroline');
    await bob.expect('* carol is now caroline');

    carol.send('/dance');
    await carol.expect('* unknown command /dance; try /nick NAME or /quit');

    bob.send('/quit');
    assert.deepEqual(await bob.rest(), ['* bye']);
    await alice.expect('* bob left');
    await carol.expect('* bob left');

    const lurker = await Client.connect(port); // never picks a nickname
    await lurker.expect(PROMPT);
    await waitForStats(srv, (s) => s.open === 3 && s.idle === 3);

    // Shut down right after caroline's next line reaches the server, before her handler has
    // broadcast it: it must still reach alice before her goodbye. The close starts inside the
    // connState event, which fires from the socket's 'data' dispatch.
    let closing: ReturnType<Server['close']> | undefined;
    srv.on('connState', (_conn, state, prev) => {
      if (state !== 'active' || prev !== 'idle') return;
      closing ??= srv.close({ timeout: 10_000 });
    });
    carol.send('last words');

    assert.deepEqual(await alice.rest(), ['<caroline> last words', GOODBYE]);
    assert.deepEqual(await carol.rest(), [GOODBYE]);
    assert.deepEqual(await lurker.rest(), [GOODBYE]);
    assert.ok(closing !== undefined);
    const report = await closing;
    assert.equal(report.graceful, 3);
    assert.equal(report.forced, 0);
    assert.equal(srv.stats().open, 0);
    assertNoLeaks(srv);
  });

  test('a client that disconnects or sends an overlong line leaves, announced', async () => {
    const { srv, port } = await start({ maxLineLength: 16 });
    const alice = await Client.join(port, 'alice', 'alice');

    const bob = await Client.connect(port);
    await bob.expect(PROMPT);
    bob.send('/nick bob');
    await bob.expect('* welcome bob, online: alice, bob');
    await alice.expect('* bob joined');
    bob.socket.end('see you\n');
    await alice.expect('<bob> see you', '* bob left');
    assert.deepEqual(await bob.rest(), []);

    const mallory = await Client.connect(port);
    await mallory.expect(PROMPT);
    mallory.send('mallory');
    await mallory.expect('* welcome mallory, online: alice, mallory');
    await alice.expect('* mallory joined');
    mallory.socket.write('x'.repeat(17)); // over the limit, no newline needed
    assert.deepEqual(await mallory.rest(), ['* line too long (max 16 bytes), goodbye']);
    await alice.expect('* mallory left');
    await waitForStats(srv, (st) => st.open === 1);

    const report = await srv.close({ timeout: 10_000 });
    assert.deepEqual(await alice.rest(), [GOODBYE]);
    assert.deepEqual([report.graceful, report.forced], [1, 0]);
    assert.equal(srv.stats().open, 0);
    assertNoLeaks(srv);
  });
  test(
    'a member that never reads its replies is dropped at shutdown; the others get every line and the goodbye',
    BOUND,
    async (t) => {
      const log = warnings();
      const { srv, port } = await start({ writeTimeout: 1000, logger: log.logger });
      const { alice, carol, slow } = await roomWithSilentMember(port);

      // Every command earns a reply the silent member never takes: its handler ends up waiting
      // in its own reply's write, with the rest of its commands unread behind it.
      const flooded = performance.now();
      let droppedAt = Number.NaN;
      void log.first.then(() => {
        droppedAt = performance.now();
      });
      slow.write(FLOOD);
      alice.send('hello');
      await carol.expect('<alice> hello');
      carol.send('hi alice');
      await alice.expect('<carol> hi alice');
      await waitForStats(srv, (s) => s.idle === 2); // alice and carol wait for input; slow is busy

      // Shut down right after carol's next line reaches the server, before her handler has
      // broadcast it (as in the first test).
      const carolPort = carol.socket.localPort;
      let closing: ReturnType<Server['close']> | undefined;
      let droppedBeforeClose = false;
      let closeStarted = Number.NaN;
      srv.on('connState', (conn, state, prev) => {
        if (state !== 'active' || prev !== 'idle' || conn.remotePort !== carolPort || closing) return;
        droppedBeforeClose = srv.slowConsumers > 0;
        closeStarted = performance.now();
        closing = srv.close({ timeout: 10_000 });
      });
      carol.send('last words');

      assert.deepEqual(await alice.rest(), ['<carol> last words', GOODBYE]);
      assert.deepEqual(await carol.rest(), [GOODBYE]);
      assert.ok(closing !== undefined);
      const report = await closing;
      t.diagnostic(
        `close() began ${(closeStarted - flooded).toFixed(0)} ms after the flood and took ` +
          `${report.durationMs.toFixed(0)} ms of its 10 s deadline (writeTimeout 1000); ` +
          `slow was dropped ${(droppedAt - closeStarted).toFixed(0)} ms into it`,
      );
      assert.equal(
        droppedBeforeClose,
        false,
        'the slow member was still in the room when the shutdown began',
      );
      // All three ended without the deadline: alice and carol with their goodbye, slow by its drop.
      assert.deepEqual([report.graceful, report.forced], [3, 0], 'nobody waited for the deadline');
      assert.ok(report.durationMs < 5_000, `close() took ${report.durationMs} ms of its 10 s`);
      assert.equal(srv.slowConsumers, 1);
      assert.equal(log.lines.length, 1);
      assert.equal(log.lines[0]!.obj.reason, 'write timeout');
      assert.equal(log.lines[0]!.obj.nick, 'slow');
      for (const client of [alice, carol]) {
        const left = client.transcript.indexOf('* slow left');
        assert.ok(left !== -1 && left < client.transcript.indexOf(GOODBYE), 'slow left before the goodbye');
      }
      slow.destroy();
      assert.equal(srv.stats().open, 0);
      assertNoLeaks(srv);
    },
  );
  test(
    'a member stuck on its own replies is dropped while the room chats on, in order and promptly',
    BOUND,
    async (t) => {
      const log = warnings();
      const { srv, port } = await start({ writeTimeout: 300, logger: log.logger });
      const { alice, carol, slow } = await roomWithSilentMember(port);
      let dropped = false;
      let droppedAt = Number.NaN;
      void log.first.then(() => {
        dropped = true;
        droppedAt = performance.now();
      });

      const flooded = performance.now();
      slow.write(FLOOD);
      // Alice and carol take turns until the drop and 20 turns past it (bounded: 10 s). Every line
      // arrives, in order, while slow's handler waits in its reply and then when it is gone.
      const deadline = performance.now() + 10_000;
      let slowest = 0;
      let round = 0;
      for (let after = 0; after < 20; round++) {
        assert.ok(performance.now() < deadline, `slow was not dropped within 10 s (${round} rounds)`);
        if (dropped) after++;
        const sent = performance.now();
        alice.send(`ping ${round}`);
        await carol.expect(`<alice> ping ${round}`);
        carol.send(`pong ${round}`);
        await alice.expect(`<carol> pong ${round}`);
        slowest = Math.max(slowest, performance.now() - sent);
      }
      t.diagnostic(
        `slow dropped ${(droppedAt - flooded).toFixed(0)} ms after its flood (writeTimeout 300); ` +
          `${round} rounds, slowest round trip ${slowest.toFixed(1)} ms`,
      );
      assert.ok(slowest < 1_000, `a round trip took ${slowest.toFixed(1)} ms`);
      assert.equal(srv.slowConsumers, 1);
      assert.equal(log.lines.length, 1);
      assert.equal(log.lines[0]!.obj.nick, 'slow');
      assert.equal(log.lines[0]!.obj.reason, 'write timeout');
      for (const client of [alice, carol]) {
        await client.seen('* slow left');
        assert.equal(client.transcript.filter((line) => line === '* slow left').length, 1);
      }
      assert.equal(srv.stats().open, 2);
      slow.destroy();

      const report = await srv.close({ timeout: 10_000 });
      assert.deepEqual(await alice.rest(), [GOODBYE]);
      assert.deepEqual(await carol.rest(), [GOODBYE]);
      assert.deepEqual([report.graceful, report.forced], [2, 0]);
      assertNoLeaks(srv);
    },
  );

  test(
    'a member whose queued output passes maxBacklog is dropped; the others get every line',
    BOUND,
    async (t) => {
      const log = warnings();
      const maxBacklog = 64 * 1024;
      // The write timeout is out of reach here: only the byte bound can drop anyone.
      const { srv, port } = await start({
        maxBacklog,
        writeTimeout: 60_000,
        maxLineLength: 2048,
        logger: log.logger,
      });
      const { alice, carol, slow } = await roomWithSilentMember(port); // slow sends and reads nothing more
      const slowClosed = once(slow, 'close');
      let dropped = false;
      void log.first.then(() => {
        dropped = true;
      });
      const started = performance.now();

      // Alice talks in batches of 64 lines of 1 KB, each batch read by carol, in order, until
      // the drop (bounded: 64 MB, far past what the kernel buffers for slow).
      const text = 'x'.repeat(1000);
      let sent = 0;
      while (!dropped) {
        assert.ok(sent < 65_536, 'slow was not dropped within 64 MB of broadcasts');
        for (let i = 0; i < 64; i++) alice.send(`${sent++} ${text}`);
        for (let i = sent - 64; i < sent; i++) await carol.expect(`<alice> ${i} ${text}`);
      }
      t.diagnostic(
        `slow dropped after ${sent} broadcast lines, ${(performance.now() - started).toFixed(0)} ms`,
      );
      // Its departure is announced once its connection has closed on the server.
      await carol.seen('* slow left');
      assert.equal(srv.stats().open, 2);
      alice.send('still here');
      await carol.expect('<alice> still here');
      assert.equal(srv.slowConsumers, 1);
      assert.equal(log.lines.length, 1);
      const { reason, queued } = log.lines[0]!.obj;
      assert.equal(reason, 'backlog');
      assert.ok(
        typeof queued === 'number' && queued > maxBacklog && queued <= maxBacklog + 2048,
        `queued ${queued}`,
      );
      assert.equal(carol.transcript.filter((line) => line === '* slow left').length, 1);
      // It sent nothing unread, so the server's FIN waits behind the data slow never read: it
      // sees the hang-up once it reads (awaiting 'close' while it is paused would wait forever).
      slow.resume();
      await slowClosed;

      const report = await srv.close({ timeout: 10_000 });
      assert.deepEqual(await alice.rest(), [GOODBYE]);
      assert.deepEqual(await carol.rest(), [GOODBYE]);
      assert.deepEqual([report.graceful, report.forced], [2, 0]);
      assertNoLeaks(srv);
    },
  );

  test('maxBacklog and writeTimeout are checked up front, naming the bad value', () => {
    const bad: Array<[Parameters<typeof createChatServer>[0], RegExp]> = [
      [{ maxBacklog: 0 }, /^maxBacklog must be a positive integer \(bytes\), got 0$/],
      [{ maxBacklog: 1.5 }, /^maxBacklog must be a positive integer \(bytes\), got 1\.5$/],
      [{ writeTimeout: -1 }, /^writeTimeout must be a number of ms from 1 to 2147483647, got -1$/],
      [{ writeTimeout: Infinity }, /^writeTimeout must be .*, got Infinity$/],
      [{ writeTimeout: '5s' as unknown as number }, /^writeTimeout must be .*, got "5s"$/],
    ];
    for (const [options, message] of bad) {
      assert.throws(
        () => createChatServer(options),
        (err: unknown) => {
          assert.ok(err instanceof InvalidOptionError);
          assert.equal(err.code, 'ERR_INVALID_OPTION');
          assert.match(err.message, message);
          return true;
        },
      );
    }
  });
});
