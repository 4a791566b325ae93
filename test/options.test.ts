/**
 * Option validation: every bad option throws a typed error naming the bad value, from both
 * construction forms (`newServer(...option functions)` and `createServer({...})`), before
 * anything binds.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { serveWorker, supervise } from '../src/cluster/index.js';
import {
  address,
  createServer,
  delimiterDecoder,
  delimiterEncoder,
  encodeLine,
  fdCheckInterval,
  firstRequestGrace,
  frameTimeout,
  type Handler,
  handler,
  handshakeTimeout,
  healthServer,
  InvalidAddressError,
  InvalidOptionError,
  idleTimeout,
  keepAlive,
  lengthPrefixedDecoder,
  lengthPrefixedEncoder,
  lineDecoder,
  lingerTimeout,
  listener,
  logger,
  maxConnectionAge,
  maxConnections,
  minDataRate,
  name,
  network,
  newServer,
  noDelay,
  type Option,
  proxyProtocol,
  random,
  reusePort,
  type ServerOptions,
  service,
  shutdownOnSignals,
  shutdownSpread,
  shutdownTimeout,
  TcpServerError,
  tls,
} from '../src/index.js';
import { instrument } from '../src/metrics.js';
import { upgrader } from '../src/upgrade.js';
import { assertPortFree, freePort } from './helpers.js';

const echo: Handler = async (_ctx, conn) => {
  for await (const chunk of conn) await conn.write(chunk);
};

/** Every option function, by the options-object key it sets (a missing one fails to compile). */
const OPTION_FUNCTIONS: Record<keyof ServerOptions, (value: never) => Option> = {
  name,
  network,
  address,
  handler,
  service,
  tls,
  listener,
  maxConnections,
  idleTimeout,
  frameTimeout,
  minDataRate,
  maxConnectionAge,
  handshakeTimeout,
  proxyProtocol,
  shutdownTimeout,
  shutdownSpread,
  lingerTimeout,
  fdCheckInterval,
  firstRequestGrace,
  random,
  reusePort,
  noDelay,
  keepAlive,
  logger,
};

/** The seed form of an options object: one option function per key. */
function asFunctions(options: Record<string, unknown>): Option[] {
  return Object.entries(options).map(([key, value]) => {
    const fn = OPTION_FUNCTIONS[key as keyof ServerOptions] as (value: unknown) => Option;
    assert.ok(fn, `no option function for ${key}`);
    return fn(value);
  });
}

type ErrorClass = typeof InvalidOptionError | typeof InvalidAddressError;

interface BadCase {
  title: string;
  /** The options, given a free port and a fresh temp dir (for unix paths). */
  options: (port: number, dir: string) => Record<string, unknown>;
  error: ErrorClass;
  /** A substring the message must contain: the bad value, as written. */
  names: (port: number, dir: string) => string;
  /** A unix path that must not exist afterwards. */
  path?: (dir: string) => string;
}

const ADDRESS = InvalidAddressError;
const OPTION = InvalidOptionError;
const tcp = (port: number, extra: Record<string, unknown>): Record<string, unknown> => ({
  network: 'tcp',
  address: `:${port}`,
  handler: echo,
  ...extra,
});

const BAD: BadCase[] = [
  {
    title: 'an unknown network',
    options: (port) => tcp(port, { network: 'udp' }),
    error: ADDRESS,
    names: () => '"udp"',
  },
  {
    title: 'a network of the wrong type',
    options: (port) => tcp(port, { network: 4 }),
    error: ADDRESS,
    names: () => '4',
  },
  {
    title: 'a port out of range',
    options: () => tcp(0, { address: ':99999' }),
    error: ADDRESS,
    names: () => '99999',
  },
  {
    title: 'a port out of range with a host',
    options: () => tcp(0, { address: '127.0.0.1:65536' }),
    error: ADDRESS,
    names: () => '65536',
  },
  {
    title: 'a missing bracket',
    options: () => tcp(0, { address: '[::1' }),
    error: ADDRESS,
    names: () => '"[::1"',
  },
  {
    title: 'a missing bracket with a port',
    options: (port) => tcp(port, { address: `[::1:${port}` }),
    error: ADDRESS,
    names: (port) => `[::1:${port}`,
  },
  {
    title: 'a host without a port',
    options: () => tcp(0, { address: 'host:' }),
    error: ADDRESS,
    names: () => '"host:"',
  },
  { title: 'an empty address', options: () => tcp(0, { address: '' }), error: ADDRESS, names: () => '""' },
  {
    title: 'an IPv4 address without a port',
    options: () => tcp(0, { address: '1.2.3.4' }),
    error: ADDRESS,
    names: () => '"1.2.3.4"',
  },
  {
    title: 'a non-numeric port',
    options: () => tcp(0, { address: 'localhost:http' }),
    error: ADDRESS,
    names: () => '"http"',
  },
  {
    title: 'a signed port',
    options: () => tcp(0, { address: '127.0.0.1:+80' }),
    error: ADDRESS,
    names: () => '"+80"',
  },
  {
    title: 'an unbracketed IPv6 address',
    options: (port) => tcp(port, { address: `::1:${port}` }),
    error: ADDRESS,
    names: (port) => `::1:${port}`,
  },
  {
    title: 'an unbracketed IPv6 address alone',
    options: () => tcp(0, { address: '::1' }),
    error: ADDRESS,
    names: () => '::1',
  },
  {
    title: 'an IPv6 literal for tcp4',
    options: (port) => tcp(port, { network: 'tcp4', address: `[::1]:${port}` }),
    error: ADDRESS,
    names: () => '::1',
  },
  {
    title: 'an IPv4 literal for tcp6',
    options: (port) => tcp(port, { network: 'tcp6', address: `127.0.0.1:${port}` }),
    error: ADDRESS,
    names: () => '127.0.0.1',
  },
  {
    title: 'an IPv4 literal in brackets',
    options: (port) => tcp(port, { address: `[127.0.0.1]:${port}` }),
    error: ADDRESS,
    names: () => '127.0.0.1',
  },
  {
    title: 'an invalid host name',
    options: (port) => tcp(port, { address: `bad_host!:${port}` }),
    error: ADDRESS,
    names: () => 'bad_host!',
  },
  {
    title: 'an address that is not a string',
    options: () => tcp(0, { address: 8080 }),
    error: ADDRESS,
    names: () => '8080',
  },
  {
    title: 'an abstract unix address without a name',
    options: () => ({ network: 'unix', address: '@', handler: echo }),
    error: ADDRESS,
    names: () => '"@"',
  },
  {
    title: 'a unix path too long for a socket address',
    options: (_port, dir) => ({ network: 'unix', address: join(dir, 's'.repeat(120)), handler: echo }),
    error: ADDRESS,
    names: (_port, dir) => join(dir, 's'.repeat(120)),
    path: (dir) => join(dir, 's'.repeat(120)),
  },
  {
    title: 'a unix path with a NUL byte',
    options: (_port, dir) => ({ network: 'unix', address: `${dir}/a\0b`, handler: echo }),
    error: ADDRESS,
    names: () => '\\u0000',
  },
  {
    title: 'a missing handler',
    options: (port) => ({ network: 'tcp', address: `:${port}` }),
    error: OPTION,
    names: () => 'handler must be a function, got undefined',
  },
  {
    title: 'a handler that is not a function',
    options: (port) => tcp(port, { handler: 'echo' }),
    error: OPTION,
    names: () => '"echo"',
  },
  {
    title: 'a missing handler on a unix path',
    options: (_port, dir) => ({ network: 'unix', address: join(dir, 'sock') }),
    error: OPTION,
    names: () => 'handler',
    path: (dir) => join(dir, 'sock'),
  },
  {
    title: 'no address and no listener',
    options: () => ({ handler: echo }),
    error: OPTION,
    names: () => 'address',
  },
  {
    title: 'a negative idleTimeout',
    options: (port) => tcp(port, { idleTimeout: -1 }),
    error: OPTION,
    names: () => 'idleTimeout must be a number of ms from 0 to 2147483647, got -1',
  },
  {
    title: 'a NaN idleTimeout',
    options: (port) => tcp(port, { idleTimeout: Number.NaN }),
    error: OPTION,
    names: () => 'idleTimeout must be a number of ms from 0 to 2147483647, got NaN',
  },
  {
    title: 'an infinite idleTimeout',
    options: (port) => tcp(port, { idleTimeout: Number.POSITIVE_INFINITY }),
    error: OPTION,
    names: () => 'got Infinity',
  },
  {
    title: 'a negative shutdownTimeout',
    options: (port) => tcp(port, { shutdownTimeout: -5 }),
    error: OPTION,
    names: () => 'shutdownTimeout must be a number of ms from 0 to 2147483647, or Infinity, got -5',
  },
  {
    title: 'a NaN shutdownTimeout',
    options: (port) => tcp(port, { shutdownTimeout: Number.NaN }),
    error: OPTION,
    names: () => 'shutdownTimeout must be a number of ms from 0 to 2147483647, or Infinity, got NaN',
  },
  {
    title: 'a string handshakeTimeout',
    options: (port) => tcp(port, { handshakeTimeout: '10s' }),
    error: OPTION,
    names: () => 'handshakeTimeout must be a number of ms from 0 to 2147483647, or Infinity, got "10s"',
  },
  {
    title: 'a negative keepAlive delay',
    options: (port) => tcp(port, { keepAlive: -1 }),
    error: OPTION,
    names: () => 'keepAlive must be a number of ms from 0 to 2147483647, got -1',
  },
  {
    title: 'an idleTimeout beyond 2^31-1 ms (Node timers cannot hold it)',
    options: (port) => tcp(port, { idleTimeout: 2 ** 31 }),
    error: OPTION,
    names: () => 'idleTimeout must be a number of ms from 0 to 2147483647, got 2147483648',
  },
  {
    title: 'a maxConnectionAge beyond 2^31-1 ms',
    options: (port) => tcp(port, { maxConnectionAge: 2 ** 31 }),
    error: OPTION,
    names: () => 'maxConnectionAge must be a number of ms from 0 to 2147483647, or Infinity, got 2147483648',
  },
  {
    title: 'a shutdownTimeout beyond 2^31-1 ms',
    options: (port) => tcp(port, { shutdownTimeout: 2 ** 31 }),
    error: OPTION,
    names: () => 'shutdownTimeout must be a number of ms from 0 to 2147483647, or Infinity, got 2147483648',
  },
  {
    title: 'a negative lingerTimeout',
    options: (port) => tcp(port, { lingerTimeout: -1 }),
    error: OPTION,
    names: () => 'lingerTimeout must be a number of ms from 0 to 2147483647, or Infinity, got -1',
  },
  {
    title: 'a negative fdCheckInterval',
    options: (port) => tcp(port, { fdCheckInterval: -1 }),
    error: OPTION,
    names: () => 'fdCheckInterval must be a number of ms from 0 to 2147483647, got -1',
  },
  {
    title: 'an infinite shutdownSpread',
    options: (port) => tcp(port, { shutdownSpread: Number.POSITIVE_INFINITY }),
    error: OPTION,
    names: () => 'shutdownSpread must be a number of ms from 0 to 2147483647, got Infinity',
  },
  {
    title: 'a random that is not a function',
    options: (port) => tcp(port, { random: 4 as unknown as () => number }),
    error: OPTION,
    names: () => 'random must be a function returning numbers in [0, 1), got 4',
  },
  {
    title: 'proxyProtocol without trusted peers',
    options: (port) => tcp(port, { proxyProtocol: { trusted: [] } }),
    error: OPTION,
    names: () => 'proxyProtocol.trusted must be a non-empty array of addresses or CIDR subnets',
  },
  {
    title: 'proxyProtocol with a bad trusted entry',
    options: (port) => tcp(port, { proxyProtocol: { trusted: ['10.0.0.0/8', 'example.com'] } }),
    error: OPTION,
    names: () => 'proxyProtocol.trusted: "example.com" is not an IPv4 or IPv6 address or CIDR subnet',
  },
  {
    title: 'proxyProtocol with a bad prefix length',
    options: (port) => tcp(port, { proxyProtocol: { trusted: ['10.0.0.0/33'] } }),
    error: OPTION,
    names: () => 'proxyProtocol.trusted: "10.0.0.0/33" has a bad prefix length (0 to 32)',
  },
  {
    title: 'proxyProtocol with unknown versions',
    options: (port) => tcp(port, { proxyProtocol: { trusted: ['127.0.0.1'], versions: 'v3' as 'v1' } }),
    error: OPTION,
    names: () => "proxyProtocol.versions must be 'v1', 'v2' or 'any', got \"v3\"",
  },
  {
    title: 'proxyProtocol with a zero timeout (it would refuse every peer)',
    options: (port) => tcp(port, { proxyProtocol: { trusted: ['127.0.0.1'], timeout: 0 } }),
    error: OPTION,
    names: () => 'proxyProtocol.timeout must be more than 0 ms (Infinity for no limit), got 0',
  },
  {
    title: 'a zero handshakeTimeout (node:tls would read it as no limit)',
    options: (port) => tcp(port, { handshakeTimeout: 0 }),
    error: OPTION,
    names: () => 'handshakeTimeout must be more than 0 ms (Infinity for no limit), got 0',
  },
  {
    title: 'a noDelay that is not a boolean',
    options: (port) => tcp(port, { noDelay: 'false' }),
    error: OPTION,
    names: () => 'noDelay must be a boolean, got "false"',
  },
  {
    title: 'proxyProtocol with a misspelt key',
    options: (port) => tcp(port, { proxyProtocol: { trusted: ['127.0.0.1'], version: 'v2' } }),
    error: OPTION,
    names: () => 'unknown option "proxyProtocol.version" (did you mean "proxyProtocol.versions"?)',
  },
  {
    title: 'a misspelt top-level key (idleTimout would silently mean no idle timeout)',
    options: (port) => tcp(port, { idleTimout: 5000 }),
    error: OPTION,
    names: () => 'unknown option "idleTimout" (did you mean "idleTimeout"?)',
  },
  {
    title: 'a key of another case',
    options: (port) => tcp(port, { maxconnections: 5 }),
    error: OPTION,
    names: () => 'unknown option "maxconnections" (did you mean "maxConnections"?)',
  },
  {
    title: 'a key set to undefined is still a typo',
    options: (port) => tcp(port, { shutdownTimout: undefined }),
    error: OPTION,
    names: () => 'unknown option "shutdownTimout" (did you mean "shutdownTimeout"?)',
  },
  {
    title: 'minDataRate with a misspelt key',
    options: (port) => tcp(port, { minDataRate: { bytesPerSec: 100 } }),
    error: OPTION,
    names: () => 'unknown option "minDataRate.bytesPerSec" (did you mean "minDataRate.bytesPerSecond"?)',
  },
  {
    title: 'minDataRate without a rate',
    options: (port) => tcp(port, { minDataRate: { grace: 1000 } }),
    error: OPTION,
    names: () => 'minDataRate.bytesPerSecond must be a positive number, got undefined',
  },
  {
    title: 'minDataRate that is not an object',
    options: (port) => tcp(port, { minDataRate: 100 }),
    error: OPTION,
    names: () => 'minDataRate must be an object { bytesPerSecond, grace }, got 100',
  },
  {
    title: 'a negative frameTimeout',
    options: (port) => tcp(port, { frameTimeout: -1 }),
    error: OPTION,
    names: () => 'frameTimeout must be a number of ms from 0 to 2147483647, got -1',
  },
  {
    title: 'proxyProtocol with a negative timeout',
    options: (port) => tcp(port, { proxyProtocol: { trusted: ['127.0.0.1'], timeout: -1 } }),
    error: OPTION,
    names: () => 'proxyProtocol.timeout must be a number of ms from 0 to 2147483647, or Infinity, got -1',
  },
  {
    title: 'maxConnections 0',
    options: (port) => tcp(port, { maxConnections: 0 }),
    error: OPTION,
    names: () => 'maxConnections must be a positive integer or Infinity, got 0',
  },
  {
    title: 'a negative maxConnections',
    options: (port) => tcp(port, { maxConnections: -3 }),
    error: OPTION,
    names: () => 'got -3',
  },
  {
    title: 'a fractional maxConnections',
    options: (port) => tcp(port, { maxConnections: 1.5 }),
    error: OPTION,
    names: () => 'got 1.5',
  },
  {
    title: 'a NaN maxConnections',
    options: (port) => tcp(port, { maxConnections: Number.NaN }),
    error: OPTION,
    names: () => 'got NaN',
  },
  {
    title: 'a string maxConnections',
    options: (port) => tcp(port, { maxConnections: '10' }),
    error: OPTION,
    names: () => 'got "10"',
  },
  {
    title: 'a logger without methods',
    options: (port) => tcp(port, { logger: {} }),
    error: OPTION,
    names: () => 'logger must have a debug(obj, msg) method',
  },
  {
    title: 'a logger missing error()',
    options: (port) => tcp(port, { logger: { debug() {}, info() {}, warn() {} } }),
    error: OPTION,
    names: () => 'logger must have a error(obj, msg) method',
  },
  {
    title: 'a logger that is a string',
    options: (port) => tcp(port, { logger: 'pino' }),
    error: OPTION,
    names: () => 'logger',
  },
  {
    title: 'a name that is not a string',
    options: (port) => tcp(port, { name: 42 }),
    error: OPTION,
    names: () => 'name must be a string, got 42',
  },
  {
    title: 'tls that is not an object',
    options: (port) => tcp(port, { tls: true }),
    error: OPTION,
    names: () => 'got true',
  },
  {
    title: 'reusePort with an inherited descriptor (it is bound already)',
    options: () => ({ listener: { fd: 3 }, reusePort: true, handler: echo }),
    error: OPTION,
    names: () => 'reusePort applies to an address the server binds, not to a listener that is already bound',
  },
  {
    title: 'reusePort on a unix network',
    options: (_port, dir) => ({
      network: 'unix',
      address: join(dir, 'r.sock'),
      reusePort: true,
      handler: echo,
    }),
    error: OPTION,
    names: () => 'reusePort needs a TCP network (tcp, tcp4, tcp6), not unix',
    path: (dir) => join(dir, 'r.sock'),
  },
  {
    title: 'a negative listener fd',
    options: () => ({ listener: { fd: -1 }, handler: echo }),
    error: OPTION,
    names: () => 'listener must be a net.Server, { fd } or',
  },
  {
    title: 'a listener of the wrong kind',
    options: () => ({ listener: 'inetd', handler: echo }),
    error: OPTION,
    names: () => 'got "inetd"',
  },
];

function expectTyped(error: ErrorClass, names: string): (err: unknown) => true {
  return (err) => {
    assert.ok(err instanceof error, `expected ${error.name}, got ${String(err)}`);
    assert.ok(err instanceof TcpServerError);
    assert.equal(err.code, error === ADDRESS ? 'ERR_INVALID_ADDRESS' : 'ERR_INVALID_OPTION');
    assert.equal(err.name, error.name);
    assert.ok(err.message.includes(names), `message ${JSON.stringify(err.message)} does not name ${names}`);
    return true;
  };
}

describe('invalid options throw a typed error naming the bad value, and nothing binds', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tcpserver-options-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const bad of BAD) {
    test(bad.title, async () => {
      const port = await freePort();
      const options = bad.options(port, dir);
      const check = expectTyped(bad.error, bad.names(port, dir));
      assert.throws(() => createServer(options as ServerOptions), check, 'createServer({...})');
      // An unknown key has no option function: the seed form cannot misspell one.
      if (Object.keys(options).every((key) => key in OPTION_FUNCTIONS))
        assert.throws(() => newServer(...asFunctions(options)), check, 'newServer(...options)');
      await assertPortFree(port);
      if (bad.path !== undefined)
        assert.equal(existsSync(bad.path(dir)), false, 'no socket file was created');
    });
  }
});

test('newServer rejects an argument that is not an option function', () => {
  assert.throws(
    () => newServer(network('tcp'), { address: ':0' } as unknown as Option, handler(echo)),
    expectTyped(OPTION, 'newServer takes option functions, got object'),
  );
});

test('createServer rejects options that are not an object', () => {
  assert.throws(() => createServer(null as unknown as ServerOptions), expectTyped(OPTION, 'got null'));
  assert.throws(() => createServer('tcp' as unknown as ServerOptions), expectTyped(OPTION, 'got "tcp"'));
});

test('option functions apply in order: a later one overrides an earlier one', () => {
  assert.throws(
    () => newServer(handler(echo), address(':0'), address(':99999')),
    expectTyped(ADDRESS, '99999'),
  );
  const srv = newServer(handler(echo), address(':99999'), address(':0'));
  assert.equal(srv.isStopped, false);
  assert.deepEqual(srv.addresses(), []);
});

test('valid options build the same server from both forms, without binding', async () => {
  const port = await freePort();
  const full = {
    name: 'echo',
    network: 'tcp4',
    address: `127.0.0.1:${port}`,
    handler: echo,
    maxConnections: 10,
    idleTimeout: 1_000,
    handshakeTimeout: 500,
    shutdownTimeout: Number.POSITIVE_INFINITY,
    noDelay: false,
    keepAlive: 1_000,
    logger: { debug() {}, info() {}, warn() {}, error() {} },
  };
  const a = createServer(full as ServerOptions);
  const b = newServer(...asFunctions(full));
  for (const srv of [a, b]) {
    assert.equal(srv.name, 'echo');
    assert.equal(srv.isServing, false);
    assert.deepEqual(srv.addresses(), []);
    assert.deepEqual(srv.stats().open, 0);
  }
  await assertPortFree(port);
  // Defaults: maxConnections Infinity and keepAlive true are accepted; a server never listened closes at once.
  const c = createServer({
    address: `127.0.0.1:${port}`,
    handler: echo,
    maxConnections: Infinity,
    keepAlive: true,
  });
  assert.equal(c.name, 'tcpserver');
  const report = await c.close();
  assert.deepEqual([report.graceful, report.forced], [0, 0]);
  assert.equal(c.isStopped, true);
  await assertPortFree(port);
});

test('a listener may replace the address', () => {
  const existing = net.createServer();
  assert.doesNotThrow(() => createServer({ listener: existing, handler: echo }));
  assert.doesNotThrow(() => newServer(listener({ fd: 3 }), handler(echo)));
  assert.doesNotThrow(() => newServer(listener('systemd'), handler(echo)));
});

test('every options object refuses a misspelt key, naming it and the nearest known one', async () => {
  const typo = (call: () => unknown, message: string): void =>
    assert.throws(call, expectTyped(OPTION, message), message);
  typo(
    () => lineDecoder({ maxLenght: 10 } as never),
    'lineDecoder: unknown option "maxLenght" (did you mean "maxLength"?)',
  );
  typo(
    () => encodeLine('x', { encodng: 'utf8' } as never),
    'encodeLine: unknown option "encodng" (did you mean "encoding"?)',
  );
  typo(
    () => delimiterDecoder({ delimiter: ';', maxLength: 9, keepDelimeter: true } as never),
    'delimiterDecoder: unknown option "keepDelimeter" (did you mean "keepDelimiter"?)',
  );
  typo(
    () => delimiterEncoder({ delimiter: ';', maxlength: 9 } as never),
    'delimiterEncoder: unknown option "maxlength" (did you mean "maxLength"?)',
  );
  typo(
    () => lengthPrefixedDecoder({ maxLength: 9, lengthFeildLength: 2 } as never),
    'lengthPrefixedDecoder: unknown option "lengthFeildLength" (did you mean "lengthFieldLength"?)',
  );
  typo(
    () => lengthPrefixedEncoder({ littleEndien: true } as never),
    'lengthPrefixedEncoder: unknown option "littleEndien" (did you mean "littleEndian"?)',
  );
  typo(
    () => healthServer(createServer({ address: ':0', handler: echo }), { adress: ':0' } as never),
    'healthServer: unknown option "adress" (did you mean "address"?)',
  );
  typo(
    () => supervise({ workres: 2 } as never),
    'supervise: unknown option "workres" (did you mean "workers"?)',
  );
  typo(
    () => upgrader({ pidfile: '/tmp/x.pid' } as never),
    'upgrader: unknown option "pidfile" (did you mean "pidFile"?)',
  );
  await assert.rejects(
    serveWorker([], { statInterval: 5 } as never),
    expectTyped(OPTION, 'serveWorker: unknown option "statInterval" (did you mean "statsInterval"?)'),
  );
  const srv = createServer({ address: '127.0.0.1:0', handler: echo });
  typo(
    () => instrument(srv, { prefx: 'x_' } as never),
    'instrument: unknown option "prefx" (did you mean "prefix"?)',
  );
  typo(
    () => shutdownOnSignals(srv, { closeDelya: 5 } as never),
    'shutdownOnSignals: unknown option "closeDelya" (did you mean "closeDelay"?)',
  );
  await assert.rejects(
    srv.close({ timout: 0 } as never),
    expectTyped(OPTION, 'close: unknown option "timout" (did you mean "timeout"?)'),
  );
  await srv.close();
});

test('read, readFrame and write refuse a misspelt per-call option, and the connection stays usable', async () => {
  const seen: string[] = [];
  const srv = createServer({
    address: '127.0.0.1:0',
    handler: async (_ctx, conn) => {
      for (const call of [
        () => conn.read({ timout: 5 } as never),
        () => conn.readFrame(lineDecoder({ maxLength: 9 }), { singal: undefined } as never),
        () => conn.write('x', { timeOut: 5 } as never),
      ]) {
        await call().catch((error: Error & { code?: string }) => seen.push(`${error.code} ${error.message}`));
      }
      const line = await conn.readFrame(lineDecoder({ maxLength: 9 }));
      await conn.write(`${line}\n`);
    },
  });
  const [bound] = await srv.listen();
  const client = net.connect((bound as { port: number }).port, '127.0.0.1');
  client.end('ok\n');
  let reply = '';
  for await (const chunk of client) reply += chunk;
  assert.equal(reply, 'ok\n');
  assert.deepEqual(seen, [
    'ERR_INVALID_OPTION conn: unknown option "timout" (did you mean "timeout"?)',
    'ERR_INVALID_OPTION conn: unknown option "singal" (did you mean "signal"?)',
    'ERR_INVALID_OPTION conn: unknown option "timeOut" (did you mean "timeout"?)',
  ]);
  await srv.close();
  assert.equal(srv.stats().open, 0);
});
