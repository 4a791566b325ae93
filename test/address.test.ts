/**
 * Go-style addresses: parsing (examples and properties), and real binds on loopback where
 * `listen()` and `addresses()` report the real port.
 */
import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import { once } from 'node:events';
import net from 'node:net';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { type ListenSpec, type Network, parseAddress, parseNetwork, toBoundAddress } from '../src/address.js';
import {
  type BoundAddress,
  createServer,
  formatAddress,
  type Handler,
  InvalidAddressError,
  ListenError,
} from '../src/index.js';
import { assertNoLeaks, freePort, readBytes, stopAndCheck } from './helpers.js';

const RUNS = {
  numRuns: Number(process.env.FC_RUNS ?? 300),
  seed: process.env.FC_SEED === undefined ? 20_240_612 : Number(process.env.FC_SEED),
};

const echo: Handler = async (_ctx, conn) => {
  for await (const chunk of conn) await conn.write(chunk);
};

describe('parseAddress', () => {
  const accepted: Array<[Network, string, ListenSpec]> = [
    ['tcp', ':8080', { network: 'tcp', host: undefined, port: 8080, ipv6Only: false }],
    ['tcp', ':0', { network: 'tcp', host: undefined, port: 0, ipv6Only: false }],
    ['tcp4', ':0', { network: 'tcp4', host: '0.0.0.0', port: 0, ipv6Only: false }],
    ['tcp6', ':0', { network: 'tcp6', host: '::', port: 0, ipv6Only: true }],
    ['tcp', '127.0.0.1:8080', { network: 'tcp', host: '127.0.0.1', port: 8080, ipv6Only: false }],
    ['tcp4', '127.0.0.1:0', { network: 'tcp4', host: '127.0.0.1', port: 0, ipv6Only: false }],
    ['tcp', '[::1]:8080', { network: 'tcp', host: '::1', port: 8080, ipv6Only: false }],
    ['tcp6', '[::1]:0', { network: 'tcp6', host: '::1', port: 0, ipv6Only: true }],
    ['tcp', '[::]:65535', { network: 'tcp', host: '::', port: 65535, ipv6Only: false }],
    ['tcp', 'localhost:0', { network: 'tcp', host: 'localhost', port: 0, ipv6Only: false }],
    ['tcp4', 'localhost:0', { network: 'tcp4', host: 'localhost', port: 0, ipv6Only: false }],
    ['tcp', 'example.com:443', { network: 'tcp', host: 'example.com', port: 443, ipv6Only: false }],
    ['tcp', '0.0.0.0:08080', { network: 'tcp', host: '0.0.0.0', port: 8080, ipv6Only: false }],
    ['unix', '/run/app.sock', { network: 'unix', path: '/run/app.sock', abstract: false }],
    ['unix', 'rel/app.sock', { network: 'unix', path: 'rel/app.sock', abstract: false }],
  ];
  for (const [net, addr, spec] of accepted) {
    test(`${net} ${addr}`, () => assert.deepEqual(parseAddress(net, addr), spec));
  }

  test('unix @name is a Linux abstract socket', {
    skip: process.platform !== 'linux' && 'Linux only',
  }, () => {
    assert.deepEqual(parseAddress('unix', '@app'), { network: 'unix', path: '\0app', abstract: true });
  });

  test('networks', () => {
    for (const n of ['tcp', 'tcp4', 'tcp6', 'unix']) assert.equal(parseNetwork(n), n);
    for (const n of ['udp', 'TCP', 'ip', '', 'unixgram', undefined, null]) {
      assert.throws(() => parseNetwork(n), InvalidAddressError);
    }
  });

  // A regression of a defect the fuzz suite found (test/fuzz/properties.ts): the message was built
  // with JSON.stringify, which throws a TypeError for a BigInt (a YAML loader's intAsBigInt) or a
  // cyclic object instead of the InvalidAddressError.
  test('a value that is not a string, a BigInt or a cyclic object too, is an InvalidAddressError', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const cases: [unknown, string][] = [
      [0n, 'bigint'],
      [2n ** 64n, 'bigint'],
      [cyclic, 'object'],
      [Object.create(null), 'object'],
      [Symbol('tcp'), 'symbol'],
      [() => 'tcp', 'a function'],
      [8080, '8080'],
    ];
    const check = (fn: () => unknown, message: string) =>
      assert.throws(fn, (err: unknown) => {
        assert.ok(err instanceof InvalidAddressError, `expected an InvalidAddressError, got ${String(err)}`);
        assert.equal(err.code, 'ERR_INVALID_ADDRESS');
        assert.ok(
          err.message.includes(message),
          `${JSON.stringify(err.message)} lacks ${JSON.stringify(message)}`,
        );
        return true;
      });
    for (const [value, shown] of cases) {
      check(() => parseNetwork(value), `unknown network ${shown}: expected one of tcp, tcp4, tcp6, unix`);
      for (const n of ['tcp', 'tcp4', 'tcp6', 'unix'] as const) {
        check(() => parseAddress(n, value), `address must be a non-empty string, got ${shown}`);
      }
    }
  });

  test('property: any IPv4 or IPv6 literal with any port round-trips through formatAddress', () => {
    const host = fc.oneof(
      fc.ipV4(),
      fc.ipV6().map((h) => h.toLowerCase()),
    );
    fc.assert(
      fc.property(host, fc.integer({ min: 0, max: 65535 }), (h, port) => {
        const network: Network = 'tcp';
        const written = formatAddress({ network, host: h, port });
        const spec = parseAddress(network, written);
        assert.deepEqual(spec, { network, host: h, port, ipv6Only: false });
        if (net.isIP(h) === 6) {
          assert.throws(() => parseAddress('tcp4', written), InvalidAddressError);
          assert.throws(() => parseAddress('tcp', `${h}:${port}`), InvalidAddressError); // unbracketed
        } else assert.throws(() => parseAddress('tcp6', written), InvalidAddressError);
      }),
      RUNS,
    );
  });

  test('property: a port outside 0-65535 is refused, naming the port', () => {
    const port = fc.oneof(fc.integer({ min: 65536, max: 99999 }), fc.integer({ min: -99999, max: -1 }));
    fc.assert(
      fc.property(fc.constantFrom('', '127.0.0.1', '[::1]', 'localhost'), port, (host, p) => {
        assert.throws(
          () => parseAddress('tcp', `${host}:${p}`),
          (err: unknown) => err instanceof InvalidAddressError && err.message.includes(String(p)),
        );
      }),
      RUNS,
    );
  });

  test('property: any string either parses or throws InvalidAddressError, never anything else', () => {
    const text = fc.oneof(
      fc.string(),
      fc.stringMatching(/^[[\]:0-9a-f.]{0,12}$/),
      fc.tuple(fc.string({ maxLength: 6 }), fc.nat(70000)).map(([h, p]) => `${h}:${p}`),
    );
    fc.assert(
      fc.property(fc.constantFrom<Network>('tcp', 'tcp4', 'tcp6'), text, (network, addr) => {
        let spec: ListenSpec;
        try {
          spec = parseAddress(network, addr);
        } catch (err) {
          assert.ok(err instanceof InvalidAddressError, String(err));
          return;
        }
        assert.ok(spec.network !== 'unix');
        assert.ok(Number.isInteger(spec.port) && spec.port >= 0 && spec.port <= 65535);
        if (spec.host !== undefined && net.isIP(spec.host) === 4) assert.notEqual(network, 'tcp6');
        if (spec.host !== undefined && net.isIP(spec.host) === 6) assert.notEqual(network, 'tcp4');
      }),
      RUNS,
    );
  });

  test('formatAddress and toBoundAddress', () => {
    assert.equal(formatAddress({ network: 'tcp4', host: '127.0.0.1', port: 80 }), '127.0.0.1:80');
    assert.equal(formatAddress({ network: 'tcp6', host: '::1', port: 80 }), '[::1]:80');
    assert.equal(formatAddress({ network: 'unix', path: '/tmp/s' }), '/tmp/s');
    assert.deepEqual(toBoundAddress('unix', '\0name'), { network: 'unix', path: '@name' });
    assert.deepEqual(toBoundAddress('unix', '/tmp/s'), { network: 'unix', path: '/tmp/s' });
    assert.deepEqual(toBoundAddress('tcp', { address: '::', family: 'IPv6', port: 9 }), {
      network: 'tcp',
      host: '::',
      port: 9,
    });
    assert.throws(() => toBoundAddress('tcp', null), InvalidAddressError);
  });
});

/** Connects to a bound TCP address (the wildcard through loopback) and echoes one message. */
async function echoThrough(bound: BoundAddress): Promise<void> {
  assert.ok(bound.network !== 'unix');
  const host = bound.host === '::' ? '::1' : bound.host === '0.0.0.0' ? '127.0.0.1' : bound.host;
  const socket = net.connect({ host, port: bound.port });
  await once(socket, 'connect');
  socket.write('ping');
  assert.equal((await readBytes(socket, 4)).toString(), 'ping');
  socket.resume();
  const closed = once(socket, 'close');
  socket.end();
  await closed;
}

describe('Go-style addresses bind on loopback and report the real port', () => {
  const localhostV4 = lookup('localhost', { family: 4 }).then(
    (r) => r.address,
    () => undefined,
  );
  const localhostV6 = lookup('localhost', { family: 6 }).then(
    (r) => r.address,
    () => undefined,
  );
  const localhostAny = lookup('localhost').then((r) => r.address);

  const cases: Array<[Network, string, () => Promise<string | string[] | undefined>]> = [
    ['tcp', ':0', async () => ['::', '0.0.0.0']], // '0.0.0.0' only on a host without IPv6
    ['tcp4', ':0', async () => '0.0.0.0'],
    ['tcp6', ':0', async () => '::'],
    ['tcp', '127.0.0.1:0', async () => '127.0.0.1'],
    ['tcp4', '127.0.0.1:0', async () => '127.0.0.1'],
    ['tcp', '[::1]:0', async () => '::1'],
    ['tcp6', '[::1]:0', async () => '::1'],
    ['tcp', 'localhost:0', () => localhostAny],
    ['tcp4', 'localhost:0', () => localhostV4],
  ];
  for (const [network, address, expected] of cases) {
    test(`${network} ${address}`, async () => {
      const want = await expected();
      assert.ok(want !== undefined);
      const srv = createServer({ network, address, handler: echo });
      const listening = once(srv, 'listening');
      const bound = await srv.listen();
      assert.equal(bound.length, 1);
      const [b] = bound;
      assert.ok(b !== undefined && b.network !== 'unix');
      assert.equal(b.network, network);
      assert.ok(
        Array.isArray(want) ? want.includes(b.host) : b.host === want,
        `bound ${b.host}, want ${want}`,
      );
      assert.ok(b.port > 0 && b.port <= 65535, `real port, got ${b.port}`);
      assert.deepEqual(srv.addresses(), bound);
      assert.deepEqual((await listening)[0], bound);
      assert.equal(await srv.listen(), await srv.listen(), 'listen() again returns the same result');
      assert.equal(srv.isServing, true);
      await echoThrough(b);
      await stopAndCheck(srv);
      assert.equal(srv.stats().accepted, 1);
    });
  }

  test('tcp6 localhost:0 binds an IPv6 address of localhost, never an IPv4 one', async () => {
    const v6 = await localhostV6;
    const srv = createServer({ network: 'tcp6', address: 'localhost:0', handler: echo });
    if (v6 === undefined) {
      // This host's localhost has no IPv6 address: as in Go, there is nothing for tcp6 to bind.
      await assert.rejects(
        srv.listen(),
        (err: unknown) => err instanceof ListenError && err.code === 'ENOTFOUND',
      );
      assert.equal(srv.isStopped, true);
    } else {
      const [b] = await srv.listen();
      assert.ok(b !== undefined && b.network === 'tcp6');
      assert.equal(b.host, v6);
      await echoThrough(b);
      await srv.close({ timeout: 5_000 });
    }
    assertNoLeaks(srv);
  });

  test('a fixed port is bound as written and formatted back the same way', async () => {
    const port = await freePort();
    for (const [network, address] of [
      ['tcp4', `127.0.0.1:${port}`],
      ['tcp6', `[::1]:${port}`],
    ] as const) {
      const srv = createServer({ network, address, handler: echo });
      const [b] = await srv.listen();
      assert.ok(b !== undefined);
      assert.equal(formatAddress(b), address);
      await echoThrough(b);
      await stopAndCheck(srv);
    }
  });

  test('addresses() is empty before listen() and kept after close()', async () => {
    const srv = createServer({ network: 'tcp4', address: '127.0.0.1:0', handler: echo });
    assert.deepEqual(srv.addresses(), []);
    const bound = await srv.listen();
    await stopAndCheck(srv);
    assert.deepEqual(srv.addresses(), bound);
  });
});
