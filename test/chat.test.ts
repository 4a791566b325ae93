import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, test } from 'node:test';
import { createChatServer, GOODBYE } from '../examples/chat.js';
import { type Decoder, lineDecoder, type Server } from '../src/index.js';
import { assertNoLeaks, waitForStats } from './helpers.js';

const PROMPT = '* welcome! what is your nickname?';

/** A chat client over a real socket: lines in arrival order, and whether the server hung up. */
class Client {
  readonly socket: net.Socket;
  readonly closed: Promise<unknown>;
  readonly #decoder: Decoder<string> = lineDecoder({ maxLength: 4096 });
  readonly #lines: string[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = once(socket, 'close');
    socket.on('data', (chunk: Buffer) => {
      this.#decoder.push(chunk);
      for (let line = this.#decoder.next(); line !== undefined; line = this.#decoder.next())
        this.#lines.push(line);
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

  /** Every line until the server ends the connection. */
  async rest(): Promise<string[]> {
    await this.closed;
    return this.#lines.splice(0);
  }
}

async function start(
  options: Parameters<typeof createChatServer>[0] = {},
): Promise<{ srv: Server; port: number }> {
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
    const alice = await Client.connect(port);
    await alice.expect(PROMPT);
    alice.send('alice');
    await alice.expect('* welcome alice, online: alice');

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
});
