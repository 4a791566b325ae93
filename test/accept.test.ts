/**
 * The accept pipeline (docs/architecture.md, "Accept pipeline"): the TLS stage on node:tls's own
 * tls.Server, which handshake belongs to which connection, refusals by reason, connection-age
 * jitter, and the linger after our FIN (`lingerTimeout`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, test } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { type Conn, createServer, type Server, seededRandom } from '../src/index.js';
import {
  assertNoLeaks,
  collect,
  makeCertificate,
  startServer,
  stopAndCheck,
  waitForStats,
} from './helpers.js';

const pki = makeCertificate('localhost');
const tlsSkip = typeof pki === 'string' ? pki : false;
const dir = mkdtempSync(join(tmpdir(), 'tcpserver-accept-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A v1 PROXY header naming `port` as the client's source port. */
const proxyV1 = (port: number): string => `PROXY TCP4 203.0.113.7 198.51.100.1 ${port} 443\r\n`;

/** Replies with what the handler sees of its peer, over TLS. */
const whoAmI = async (_ctx: unknown, conn: Conn): Promise<void> => {
  await conn.end(
    `${conn.remoteAddress}:${conn.remotePort} ${(conn.socket as tls.TLSSocket).encrypted === true}`,
  );
};

/**
 * Opens `count` raw connections, sends each its own PROXY header, then runs their TLS handshakes
 * in the reverse order of connecting (the last accepted finishes first): each must be served as
 * itself, with its own header's address.
 */
async function handshakesOutOfOrder(srv: Server, dial: () => net.Socket, count: number): Promise<void> {
  const raws: net.Socket[] = [];
  for (let i = 0; i < count; i++) {
    const raw = dial();
    await once(raw, 'connect');
    raw.write(proxyV1(40_000 + i));
    raws.push(raw);
  }
  await waitForStats(srv, (s) => s.new === count);
  const answers: Promise<string>[] = [];
  for (let i = count - 1; i >= 0; i--) {
    const secure = tls.connect({
      socket: raws[i]!,
      ca: (pki as { cert: Buffer }).cert,
      servername: 'localhost',
    });
    answers[i] = collect(secure).then((b) => b.toString());
    await once(secure, 'secureConnect'); // one at a time, newest first
  }
  const got = await Promise.all(answers);
  assert.deepEqual(
    got,
    raws.map((_, i) => `203.0.113.7:${40_000 + i} true`),
  );
}

test('TLS after PROXY over TCP: handshakes finishing out of order each reach their own connection', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof pki !== 'string');
  const { srv, port } = await startServer({
    tls: { key: pki.key, cert: pki.cert },
    proxyProtocol: { trusted: ['127.0.0.1'] },
    handler: whoAmI,
  });
  await handshakesOutOfOrder(srv, () => net.connect(port, '127.0.0.1'), 8);
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('TLS after PROXY over a unix socket (no peer address): each handshake runs on its own pool server', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof pki !== 'string');
  const path = join(dir, 'tls.sock');
  const srv = createServer({
    network: 'unix',
    address: path,
    tls: { key: pki.key, cert: pki.cert },
    proxyProtocol: { trusted: ['unix'] },
    handler: whoAmI,
  });
  await srv.listen();
  await handshakesOutOfOrder(srv, () => net.connect(path), 6);
  // Twice: the pool's servers are reused, and a reused server still serves only its own socket.
  await waitForStats(srv, (s) => s.open === 0);
  await handshakesOutOfOrder(srv, () => net.connect(path), 6);
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});

test('TLS failures are refused by reason: tls-timeout for a silent peer, tls-handshake for garbage and untrusted certs', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof pki !== 'string');
  let handled = 0;
  const { srv, port } = await startServer({
    tls: { key: pki.key, cert: pki.cert, requestCert: true, rejectUnauthorized: true, ca: [pki.cert] },
    handshakeTimeout: 200,
    handler: () => void handled++,
  });
  const refused: string[] = [];
  srv.on('refused', (_conn, reason, error) =>
    refused.push(`${reason}:${(error as { code?: string })?.code ?? ''}`),
  );
  const silent = net.connect(port, '127.0.0.1');
  const garbage = net.connect(port, '127.0.0.1');
  garbage.on('error', () => {});
  silent.on('error', () => {});
  await Promise.all([once(silent, 'connect'), once(garbage, 'connect')]);
  garbage.write('GET / HTTP/1.1\r\n\r\n');
  const noCert = tls.connect({ port, host: '127.0.0.1', ca: pki.cert, servername: 'localhost' });
  noCert.on('error', () => {});
  const closed = (socket: net.Socket): Promise<void> =>
    new Promise((resolve) => socket.once('close', () => resolve()));
  await Promise.all([closed(silent), closed(garbage), closed(noCert)]);
  await waitForStats(srv, (s) => s.open === 0);
  const counts = srv.stats().refused;
  assert.equal(counts['tls-timeout'], 1, JSON.stringify(refused));
  assert.equal(counts['tls-handshake'], 2, JSON.stringify(refused));
  assert.ok(refused.includes('tls-timeout:ERR_TLS_HANDSHAKE_TIMEOUT'), JSON.stringify(refused));
  assert.equal(handled, 0);
  const s = srv.stats();
  assert.equal(s.accepted, 3);
  await stopAndCheck(srv);
});

test('maxConnectionAge is jittered by ±10% with the injected random: connections made together end apart', async () => {
  const ended: number[] = [];
  let calls = 0;
  const values = [0, 1 - 1e-9]; // the extremes: 90% and 110% of the age
  const { srv, port } = await startServer({
    maxConnectionAge: 400,
    random: () => values[calls++ % 2]!,
    handler: async (_ctx, conn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  const start = performance.now();
  const clients = await Promise.all([0, 1].map(() => net.connect(port, '127.0.0.1')));
  for (const c of clients) {
    c.on('end', () => {
      ended.push(performance.now() - start);
      c.end();
    });
  }
  await Promise.all(clients.map((c) => once(c, 'close')));
  ended.sort((a, b) => a - b);
  assert.ok(ended[0]! >= 355 && ended[0]! < 420, `first ended at ${ended[0]!.toFixed(0)} ms (90% of 400)`);
  assert.ok(ended[1]! >= 435 && ended[1]! < 520, `second ended at ${ended[1]!.toFixed(0)} ms (110% of 400)`);
  await stopAndCheck(srv);
});

test('lingerTimeout: a peer that never answers our FIN is dropped after it, and counted', async () => {
  const { srv, port } = await startServer({
    lingerTimeout: 150,
    handler: async (_ctx, conn) => conn.end('bye'),
  });
  const peer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }); // never ends its side
  peer.on('error', () => {});
  peer.resume();
  await once(peer, 'end');
  const finAt = performance.now();
  // (The peer is not told: our FIN is out, and closing our side sends nothing more.)
  await waitForStats(srv, (s) => s.open === 0);
  const lingered = performance.now() - finAt;
  assert.ok(lingered >= 120 && lingered < 1_000, `dropped ${lingered.toFixed(0)} ms after our FIN`);
  assert.equal(srv.stats().lingerTimeouts, 1);
  peer.destroy();
  await stopAndCheck(srv);
});

test('lingerTimeout counts from the FIN leaving: a peer slow to read the last bytes is not dropped for it', async () => {
  const size = 64 * 1024 * 1024; // more than loopback's buffers hold: most of it waits in the socket
  const { srv, port } = await startServer({
    lingerTimeout: 150,
    // Returns with the bytes still queued: the FIN waits behind them, and so does the linger.
    handler: async (_ctx, conn) => {
      conn.write(Buffer.alloc(size, 'x')).catch(() => {});
    },
  });
  const peer = net.connect({ port, host: '127.0.0.1' });
  await once(peer, 'connect');
  peer.write('go');
  peer.pause();
  await new Promise((resolve) => setTimeout(resolve, 600)); // four lingers long, reading nothing
  let received = 0;
  peer.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  peer.resume();
  await once(peer, 'end');
  assert.equal(received, size, 'every byte arrived before our FIN');
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().lingerTimeouts, 0);
  await stopAndCheck(srv);
});

test('lingerTimeout behind bytes queued with no write waiting: counted from the FIN leaving, then a silent peer is dropped', async () => {
  let written = 0;
  const { srv, port } = await startServer({
    lingerTimeout: 150,
    // Writes until bytes wait in Node's buffer while the last write still returned true: the
    // handler returns with no write waiting for 'drain', so only the linger waits for 'finish'.
    handler: async (_ctx, conn) => {
      const chunk = Buffer.alloc(8 * 1024, 'y');
      for (;;) {
        const done = conn.write(chunk);
        written += chunk.length;
        if (conn.needsDrain) await done;
        else if (conn.socket.writableLength > 0) return;
      }
    },
  });
  const peer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(peer, 'connect');
  peer.write('go');
  peer.pause();
  await new Promise((resolve) => setTimeout(resolve, 300)); // two lingers long, reading nothing
  let received = 0;
  peer.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  peer.resume();
  await once(peer, 'end'); // our FIN, after every byte; the peer never sends its own
  assert.ok(written > 0 && received === written, `received ${received} of ${written} bytes`);
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().lingerTimeouts, 1);
  peer.destroy();
  await stopAndCheck(srv);
});

test('lingerTimeout: a logger that throws on the linger report cannot leave the connection open', async () => {
  // In a child process: the logger's throw is an uncaught exception, which the test runner would
  // take as this test's failure.
  const script = `
    import net from 'node:net';
    import { createServer } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)};
    const errors = [];
    process.on('uncaughtException', (error) => errors.push(error.message));
    const quiet = () => {};
    const logger = { info: quiet, warn: quiet, error: quiet, debug: (_obj, msg) => {
      if (msg === 'linger timeout') throw new Error('logger failed');
    } };
    const srv = createServer({ network: 'tcp4', address: '127.0.0.1:0', lingerTimeout: 50, logger,
      handler: async (_ctx, conn) => conn.end('bye') });
    const [bound] = await srv.listen();
    const peer = net.connect({ port: bound.port, host: '127.0.0.1', allowHalfOpen: true });
    peer.resume(); // reads our FIN, never sends its own
    srv.on('connState', () => {
      const { open, lingerTimeouts } = srv.stats();
      if (lingerTimeouts !== 1 || open !== 0) return;
      console.log(JSON.stringify({ open, lingerTimeouts, errors }));
      peer.destroy();
      srv.close().then(() => process.exit(0));
    });
  `;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    { timeout: 30_000 },
  );
  assert.deepEqual(JSON.parse(stdout), { open: 0, lingerTimeouts: 1, errors: ['logger failed'] });
});

test('lingerTimeout: Infinity waits as long as the peer does; a peer that answers is never counted', async () => {
  const { srv, port } = await startServer({
    lingerTimeout: Number.POSITIVE_INFINITY,
    handler: async (_ctx, conn) => conn.end('bye'),
  });
  const peer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  peer.resume();
  await once(peer, 'end');
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(srv.stats().closing, 1, 'still lingering, as asked');
  peer.end();
  await waitForStats(srv, (s) => s.open === 0);
  const polite = net.connect({ port, host: '127.0.0.1' }); // answers our FIN at once
  polite.resume();
  await once(polite, 'close');
  await waitForStats(srv, (s) => s.open === 0);
  assert.equal(srv.stats().lingerTimeouts, 0);
  await stopAndCheck(srv);
  assertNoLeaks(srv);
});

test('seededRandom makes a spread shutdown repeatable: the same seed, the same order of endings', async () => {
  const orders: number[][] = [];
  for (let round = 0; round < 2; round++) {
    const { srv, port } = await startServer({
      random: seededRandom(99),
      handler: async (_ctx, conn) => {
        for await (const chunk of conn) await conn.write(chunk);
      },
    });
    const order: number[] = [];
    const clients: net.Socket[] = [];
    for (let i = 0; i < 10; i++) {
      const c = net.connect(port, '127.0.0.1');
      await once(c, 'connect');
      await waitForStats(srv, (s) => s.idle === i + 1);
      c.on('end', () => {
        order.push(i);
        c.end();
      });
      clients.push(c);
    }
    await srv.close({ spread: 500 });
    orders.push(order);
    assertNoLeaks(srv);
  }
  assert.equal(orders[0]!.length, 10);
  assert.deepEqual(orders[0], orders[1]);
});

test('a TLS peer that half-closes after its request still gets the reply (half-open after the handshake)', {
  skip: tlsSkip,
}, async () => {
  assert.ok(typeof pki !== 'string');
  const { srv, port } = await startServer({
    tls: { key: pki.key, cert: pki.cert },
    handler: async (_ctx, conn) => {
      let got = '';
      for await (const chunk of conn) got += chunk.toString();
      await conn.write(`reply to ${got}`);
    },
  });
  const client = tls.connect({
    port,
    host: '127.0.0.1',
    ca: pki.cert,
    servername: 'localhost',
  });
  await once(client, 'secureConnect');
  const received = collect(client);
  client.end('hi');
  assert.equal((await received).toString(), 'reply to hi');
  await waitForStats(srv, (s) => s.open === 0);
  await stopAndCheck(srv);
});
