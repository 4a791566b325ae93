/**
 * The RESP example over real sockets: the real `redis-cli` and `redis-benchmark` against it,
 * protocol errors, and graceful shutdown answering every pipelined command already received.
 *
 * Without redis-tools installed the redis-cli / redis-benchmark tests are skipped with a message,
 * except under CI=true where a missing tool fails them (test/helpers.ts's skipWithout).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import type net from 'node:net';
import { afterEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Store } from '../examples/resp/store.js';
import { createRespServer, type RespServerOptions } from '../examples/resp.js';
import type { Conn, Server } from '../src/index.js';
import {
  assertNoLeaks,
  collect,
  connect,
  REDIS_BENCHMARK,
  REDIS_CLI,
  readBytes,
  SCRIPT,
  skipWithout,
} from './helpers.js';

/** Runs a tool to completion and resolves its output; a failure (exit code, timeout) rejects with both streams. */
function run(
  tool: string,
  args: string[],
  input?: string,
  timeout = 10_000,
  env?: Record<string, string>,
): Promise<{ stdout: string; stderr: string }> {
  const options = { timeout, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, ...env } };
  return new Promise((resolve, reject) => {
    const child = execFile(tool, args, options, (err, stdout, stderr) => {
      if (err) reject(new Error(`${tool} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
    child.stdin?.end(input ?? '');
  });
}

const servers: Server[] = [];

afterEach(async () => {
  for (const srv of servers.splice(0)) {
    await srv.close({ timeout: 5_000 });
    assertNoLeaks(srv);
    assert.equal(srv.stats().open, 0);
  }
});

/** Starts a RESP server on 127.0.0.1:0, closed and leak-checked after the test. */
async function start(options: RespServerOptions = {}): Promise<{ srv: Server; port: number }> {
  const srv = createRespServer({ network: 'tcp4', address: '127.0.0.1:0', ...options });
  servers.push(srv);
  const [bound] = await srv.listen();
  assert.ok(bound && bound.network !== 'unix');
  return { srv, port: bound.port };
}

describe('RESP server with the real redis-cli', () => {
  /** One redis-cli invocation, replies formatted with types (`(integer) 1`, `"v"`, `(nil)`). */
  const cli = async (port: number, ...args: string[]): Promise<string> =>
    (await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--no-raw', ...args])).stdout;

  test('every command, replies checked exactly', { skip: skipWithout(REDIS_CLI) }, async () => {
    const clock = { now: 1_000_000 };
    const { srv, port } = await start({ store: new Store({ now: () => clock.now }) });
    const cases: [string[], string][] = [
      [['PING'], 'PONG\n'],
      [['ping', 'hello world'], '"hello world"\n'],
      [['PING', 'a', 'b'], "(error) ERR wrong number of arguments for 'ping' command\n"],
      [['ECHO', 'a\tb'], '"a\\tb"\n'],
      [['ECHO'], "(error) ERR wrong number of arguments for 'echo' command\n"],
      [['GET', 'k'], '(nil)\n'],
      [['SET', 'k', 'v'], 'OK\n'],
      [['GET', 'k'], '"v"\n'],
      [['SET', 'k', 'w', 'NX'], '(nil)\n'],
      [['SET', 'k', 'w', 'XX'], 'OK\n'],
      [['SET', 'other', 'w', 'XX'], '(nil)\n'],
      [['SET', 'k', 'v', 'NX', 'XX'], '(error) ERR syntax error\n'],
      [['SET', 'k', 'v', 'EX', 'soon'], '(error) ERR value is not an integer or out of range\n'],
      [['SET', 'k', 'v', 'EX', '0'], "(error) ERR invalid expire time in 'set' command\n"],
      [['SET', 'ttl', 'v', 'EX', '10'], 'OK\n'],
      [['SET', 'pttl', 'v', 'PX', '500'], 'OK\n'],
      [['GET'], "(error) ERR wrong number of arguments for 'get' command\n"],
      [['EXISTS', 'k', 'k', 'nokey', 'ttl'], '(integer) 3\n'],
      [['DEL', 'k', 'k', 'nokey'], '(integer) 1\n'],
      [['INCR', 'n'], '(integer) 1\n'],
      [['INCR', 'n'], '(integer) 2\n'],
      [['SET', 'n', 'abc'], 'OK\n'],
      [['INCR', 'n'], '(error) ERR value is not an integer or out of range\n'],
      [['SET', 'n', '9223372036854775807'], 'OK\n'],
      [['INCR', 'n'], '(error) ERR increment or decrement would overflow\n'],
      [['MSET', 'a', '1', 'b', '2'], 'OK\n'],
      [['MSET', 'a', '1', 'b'], "(error) ERR wrong number of arguments for 'mset' command\n"],
      [['MGET', 'a', 'b', 'c'], '1) "1"\n2) "2"\n3) (nil)\n'],
      [['CONFIG', 'GET', 'save'], '1) "save"\n2) ""\n'],
      [['CONFIG', 'GET', 'appendonly'], '1) "appendonly"\n2) "no"\n'],
      [['CONFIG', 'GET', 'maxmemory'], '(empty array)\n'],
      [['CONFIG', 'SET', 'x', 'y'], "(error) ERR unknown subcommand 'SET'. Try CONFIG HELP.\n"],
      [['COMMAND'], '(empty array)\n'],
      [['COMMAND', 'DOCS', 'get'], '(empty array)\n'],
      [['COMMAND', 'COUNT'], '(integer) 0\n'],
      [['FOO', 'bar', 'baz'], "(error) ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \n"],
      [['QUIT'], 'OK\n'],
    ];
    for (const [args, want] of cases) assert.equal(await cli(port, ...args), want, args.join(' '));
    // Expiry is lazy, on the store's clock.
    clock.now += 500;
    assert.equal(await cli(port, 'MGET', 'ttl', 'pttl'), '1) "v"\n2) (nil)\n');
    clock.now += 9_500;
    assert.equal(await cli(port, 'EXISTS', 'ttl'), '(integer) 0\n');
    // Several commands from one redis-cli process (one connection), and binary-safe values.
    const { stdout } = await run(
      'redis-cli',
      ['-h', '127.0.0.1', '-p', String(port), '--no-raw'],
      'SET bin "\\x00\\xff\\r\\n"\nGET bin\nINCR counter\nINCR counter\n',
    );
    assert.equal(stdout, 'OK\n"\\x00\\xff\\r\\n"\n(integer) 1\n(integer) 2\n');
    assert.equal(srv.stats().errors, 0);
  });

  test('redis-cli reading commands from a pipe, raw output', { skip: skipWithout(REDIS_CLI) }, async () => {
    const { port } = await start();
    const { stdout, stderr } = await run(
      'redis-cli',
      ['-h', '127.0.0.1', '-p', String(port)],
      'PING\nSET x 5\nGET x\n',
    );
    assert.equal(stdout, 'PONG\nOK\n5\n');
    assert.equal(stderr, '');
  });

  // Interactive mode starts with COMMAND DOCS (for its hints); `script` gives it a terminal.
  const skip = skipWithout(SCRIPT, REDIS_CLI);
  test('interactive redis-cli session (COMMAND DOCS at start-up)', { skip }, async () => {
    const { srv, port } = await start();
    // Spy on what the client sends, next to the server's own reader.
    const received: Buffer[] = [];
    srv.once('connState', (conn: Conn) => conn.socket.on('data', (chunk: Buffer) => received.push(chunk)));
    // TERM=dumb: linenoise reads plain lines instead of querying the terminal.
    const { stdout } = await run(
      'script',
      ['-qc', `redis-cli -h 127.0.0.1 -p ${port}`, '/dev/null'],
      'PING\nSET a "b c"\nGET a\nexit\n',
      10_000,
      { TERM: 'dumb' },
    );
    const prompt = `127.0.0.1:${port}> `;
    const replies = stdout
      .replace(/\r/g, '')
      .split('\n')
      .filter((line) => line.startsWith(prompt))
      .map((line) => line.slice(prompt.length));
    assert.deepEqual(replies.slice(0, 3), ['PONG', 'OK', '"b c"'], stdout);
    const sent = Buffer.concat(received).toString();
    assert.ok(sent.startsWith('*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n*1\r\n$4\r\nPING\r\n'), sent);
    assert.equal(srv.stats().errors, 0);
  });
});

describe('RESP server with the real redis-benchmark', () => {
  /** The `NAME: N requests per second` lines of `-q` output. */
  function rates(output: string): Map<string, number> {
    const found = new Map<string, number>();
    for (const line of output.split(/[\r\n]+/)) {
      const m = /^([A-Z_]+): ([\d.]+) requests per second/.exec(line.trim());
      if (m) found.set(m[1]!, Number(m[2]));
    }
    return found;
  }

  for (const pipeline of [1, 16]) {
    test(`ping, set and get, pipeline ${pipeline}: no errors, a positive rate`, {
      skip: skipWithout(REDIS_BENCHMARK),
    }, async () => {
      const { srv, port } = await start();
      const args = ['-h', '127.0.0.1', '-p', String(port), '-q', '-n', '20000', '-t', 'ping,set,get'];
      if (pipeline > 1) args.push('-P', String(pipeline));
      const { stdout, stderr } = await run('redis-benchmark', args, undefined, 120_000);
      const output = stdout + stderr;
      assert.doesNotMatch(output, /error|ERR|WARNING/i, output);
      const found = rates(output);
      assert.deepEqual([...found.keys()].sort(), ['GET', 'PING_INLINE', 'PING_MBULK', 'SET']);
      for (const [name, rate] of found) assert.ok(rate > 0, `${name}: ${rate}`);
      const stats = srv.stats();
      assert.equal(stats.errors, 0);
      assert.ok(stats.accepted >= 50 * 4, `accepted ${stats.accepted}`);
    });
  }
});

describe('RESP server over raw sockets', () => {
  const INCR = '*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n';
  const replies = (from: number, to: number): string =>
    Array.from({ length: to - from + 1 }, (_, i) => `:${from + i}\r\n`).join('');

  test('pipelined commands in one write are all answered, in order', async () => {
    const { port } = await start();
    const socket = await connect(port);
    socket.write(`${INCR.repeat(500)}PING\r\n`);
    const got = await readBytes(socket, replies(1, 500).length + 7);
    assert.equal(got.toString(), `${replies(1, 500)}+PONG\r\n`);
    socket.end();
    await once(socket, 'close');
  });

  test('a malformed request gets the replies before it, a protocol error, and the connection closes', async () => {
    const { srv, port } = await start();
    const socket = await connect(port);
    const all = collect(socket);
    socket.write('PING\r\n*1\r\nxyz\r\nPING\r\n');
    assert.equal((await all).toString(), "+PONG\r\n-ERR Protocol error: expected '$', got 'x'\r\n");
    assert.equal(srv.stats().errors, 0); // a bad client is not a handler failure
  });

  test('a bulk header over maxBulkLength is refused before its body is sent', async () => {
    const { port } = await start({ maxBulkLength: 1024 });
    const socket = await connect(port);
    const all = collect(socket);
    socket.write('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n'); // the body never comes
    assert.equal(
      (await all).toString(),
      '-ERR Protocol error: frame of 1025 bytes exceeds the maximum length of 1024 bytes\r\n',
    );
  });

  test('QUIT answers +OK, drops what follows, and closes', async () => {
    const { port } = await start();
    const socket = await connect(port);
    const all = collect(socket);
    socket.write('PING\r\nQUIT\r\nPING\r\n');
    assert.equal((await all).toString(), '+PONG\r\n+OK\r\n');
  });

  test('a peer that hangs up mid-command is not a handler error', async () => {
    const { srv, port } = await start();
    const socket = await connect(port);
    socket.end('*2\r\n$3\r\nGET\r\n$10\r\nabc');
    await once(socket, 'close');
    await srv.close();
    assert.equal(srv.stats().errors, 0);
  });

  test('a large value round-trips through SET and GET', async () => {
    const { port } = await start();
    const socket = await connect(port);
    const value = Buffer.alloc(3 * 1024 * 1024, 0x7a);
    socket.write(
      Buffer.concat([
        Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${value.length}\r\n`),
        value,
        Buffer.from('\r\n'),
      ]),
    );
    socket.write('*2\r\n$3\r\nGET\r\n$1\r\nk\r\n');
    const head = `+OK\r\n$${value.length}\r\n`;
    const got = await readBytes(socket, head.length + value.length + 2);
    assert.equal(got.subarray(0, head.length).toString(), head);
    assert.ok(got.subarray(head.length, head.length + value.length).equals(value));
    socket.end();
    await once(socket, 'close');
  });

  /**
   * Calls `srv.close()` once the server has received the client's bytes but before the handler
   * has seen them: on the connection's idle -> active transition, deferred by a microtask (the
   * handler's read resolves after it).
   */
  function closeOnReceipt(srv: Server): Promise<Awaited<ReturnType<Server['close']>>> {
    return new Promise((resolve) => {
      const onState = (_conn: unknown, state: string, prev: string): void => {
        if (state !== 'active' || prev !== 'idle') return;
        srv.off('connState', onState);
        queueMicrotask(() => resolve(srv.close({ timeout: 5_000 })));
      };
      srv.on('connState', onState);
    });
  }

  async function waitIdle(srv: Server): Promise<void> {
    while (srv.stats().idle !== 1) await once(srv, 'connState');
  }

  test('graceful close answers all 100 pipelined commands already received, then ends the connection', async () => {
    const { srv, port } = await start();
    const socket: net.Socket = await connect(port);
    await waitIdle(srv);
    const all = collect(socket);
    const closed = closeOnReceipt(srv);
    socket.write(INCR.repeat(100));
    const report = await closed;
    assert.equal((await all).toString(), replies(1, 100));
    assert.deepEqual([report.graceful, report.forced], [1, 0]);
  });

  test('graceful close waits for a half-received command, answers it, then ends the connection', async () => {
    const { srv, port } = await start();
    const socket = await connect(port);
    await waitIdle(srv);
    const all = collect(socket);
    const closed = closeOnReceipt(srv);
    const stream = INCR.repeat(51);
    const cut = INCR.length * 50 + 9; // inside the 51st command
    socket.write(stream.slice(0, cut));
    await once(srv, 'shutdown');
    await new Promise((resolve) => setTimeout(resolve, 50)); // the server holds the half command meanwhile
    assert.equal(srv.stats().open, 1);
    socket.write(stream.slice(cut));
    const report = await closed;
    assert.equal((await all).toString(), replies(1, 51));
    assert.deepEqual([report.graceful, report.forced], [1, 0]);
  });

  test('an idle connection is ended at once by a graceful close', async () => {
    const { srv, port } = await start();
    const socket = await connect(port);
    await waitIdle(srv);
    const all = collect(socket);
    const report = await srv.close({ timeout: 5_000 });
    assert.equal((await all).length, 0);
    assert.deepEqual([report.graceful, report.forced], [1, 0]);
  });

  test('runs as a program: listens on ADDRESS, drains on SIGTERM and prints the report', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'examples/resp.ts'], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      env: { ...process.env, ADDRESS: '127.0.0.1:0' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    child.stdout.setEncoding('utf8');
    const listening = new Promise<number>((resolve, reject) => {
      child.stdout.on('data', (text: string) => {
        output += text;
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(output);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', () => reject(new Error(`exited early: ${output}`)));
    });
    const exited = once(child, 'exit');
    const port = await listening;
    const socket = await connect(port);
    const all = collect(socket);
    socket.write('PING\r\n');
    assert.equal((await readBytes(socket, 7)).toString(), '+PONG\r\n');
    child.kill('SIGTERM');
    const [code] = await exited;
    await all; // the idle client got a FIN
    assert.equal(code, 0);
    assert.match(output, /received SIGTERM, shutting down gracefully/);
    assert.match(output, /shutdown complete: 1 graceful, 0 forced, in \d+ ms/);
  });

  test('bad limits are refused before anything binds', () => {
    assert.throws(() => createRespServer({ address: '127.0.0.1:0', maxBulkLength: 0 }), {
      code: 'ERR_INVALID_OPTION',
    });
  });
});
