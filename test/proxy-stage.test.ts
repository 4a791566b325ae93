/**
 * The PROXY protocol accept stage (`proxyProtocol: { trusted, versions?, timeout? }`) over real
 * sockets: trust (addresses, CIDRs, IPv6, IPv4-mapped peers of a dual-stack listener, `'unix'`),
 * the required header and every way it can fail (`stats().refused`, the `'refused'` event, the
 * `tcpserver:conn.refused` channel, the logger), payload after the header reaching the handler
 * intact, the addresses a connection reports, slow peers never delaying others, shutdown of
 * connections still waiting for their header, and TLS after PROXY (separate and coalesced).
 *
 * Every wait is event-driven and bounded; every test ends with the server stopped, nothing open,
 * `accepted === closed`, the gauges adding up at every `connState` event, and no unhandled
 * rejection anywhere in the file.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Duplex } from 'node:stream';
import { after, afterEach, describe, test } from 'node:test';
import tls from 'node:tls';
import {
  type Conn,
  type ConnState,
  createServer,
  type Handler,
  type Logger,
  PP2_TYPE,
  ProxyProtocolError,
  parseProxyHeader,
  type RefuseReason,
  type Server,
  type ServerOptions,
  type ShutdownReport,
  seededRandom,
} from '../src/index.js';
import { inet4, inet6, SIG, tlv, unixBlock } from './fixtures/proxy-blocks.js';
import {
  assertNoLeaks,
  failOnUnhandledRejections,
  makeCertificate,
  readBytes,
  startServer,
  waitForStats,
} from './helpers.js';

failOnUnhandledRejections();

// A failing test must not leave a server, a socket or a timer keeping the process alive.
const servers = new Set<Server>();
const sockets = new Set<net.Socket>();
const dirs: string[] = [];
afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  sockets.clear();
  await Promise.all([...servers].map((srv) => srv.close({ timeout: 0 })));
  servers.clear();
});
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const pki = makeCertificate('localhost');
const tlsSkip = typeof pki === 'string' ? pki : false;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** `promise`, or a rejection naming `what` if it has not settled within `ms`. */
async function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Yields one turn of the event loop (a poll phase runs: the server reads what is there). */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Tracks a client socket for the teardown; its errors (a refused peer's reset) are expected. */
function track<T extends net.Socket>(socket: T): T {
  sockets.add(socket);
  socket.on('error', () => {});
  return socket;
}

/** Connects a tracked client to `host:port` (Nagle off, so small writes leave at once). */
async function dial(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  const socket = track(net.connect({ port, host, noDelay: true }));
  await bounded(once(socket, 'connect'), 5_000, `connect to ${host}:${port}`);
  return socket;
}

/** Connects a tracked client to the unix socket at `path`. */
async function dialUnix(path: string): Promise<net.Socket> {
  const socket = track(net.connect({ path }));
  await bounded(once(socket, 'connect'), 5_000, `connect to ${path}`);
  return socket;
}

/** Writes `data` and resolves once it is handed to the kernel. */
function write(socket: net.Socket, data: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) => socket.write(data, (err) => (err ? reject(err) : resolve())));
}

/** What a client saw until its socket closed: the bytes, and the error if any (never rejects). */
function outcome(socket: net.Socket): Promise<{ data: Buffer; error: string | undefined }> {
  const chunks: Buffer[] = [];
  let error: string | undefined;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', (err: NodeJS.ErrnoException) => {
    error = err.code ?? err.message;
  });
  return new Promise((resolve) => {
    if (socket.destroyed) resolve({ data: Buffer.concat(chunks), error });
    else socket.once('close', () => resolve({ data: Buffer.concat(chunks), error }));
  });
}

/** Resolves when `socket` has closed, whatever the reason. */
function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) resolve();
    else socket.once('close', () => resolve());
  });
}

/** Reads one `\n`-terminated line from `socket` (anything after it is put back). */
function readLine(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('latin1');
      const nl = text.indexOf('\n');
      if (nl === -1) return;
      cleanup();
      const rest = text.slice(nl + 1);
      if (rest !== '') socket.unshift(Buffer.from(rest, 'latin1'));
      resolve(text.slice(0, nl));
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error(`socket closed before a full line (got ${JSON.stringify(text)})`));
    };
    const cleanup = (): void => {
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

const LEGAL: Record<string, readonly ConnState[]> = {
  new: ['active', 'closing', 'closed'],
  active: ['idle', 'closing', 'closed'],
  idle: ['active', 'closing', 'closed'],
  closing: ['closed'],
  closed: [],
};

/** One refusal, as the `'refused'` event reported it. */
interface Refusal {
  conn: Conn;
  reason: RefuseReason;
  error: Error | undefined;
  at: number;
}

/** A started server with everything the tests look at recorded. */
interface Harness {
  srv: Server;
  port: number;
  /** Gauge or transition violations seen at `connState` events (must stay empty). */
  violations: string[];
  /** Every `'refused'` event, in order. */
  refusals: Refusal[];
  /** How many times the handler was called. */
  handled: () => number;
  /** Resolves once `n` refusals have been reported. */
  refusedCount: (n: number, ms?: number) => Promise<void>;
}

/**
 * Watches `srv`: gauges add up at every `connState` event, transitions are legal and in order,
 * and every `'refused'` event is recorded.
 */
function instrument(srv: Server): Omit<Harness, 'port' | 'handled'> {
  const violations: string[] = [];
  const last = new Map<number, ConnState | undefined>();
  srv.on('connState', (conn: Conn, state: ConnState, prev: ConnState | undefined) => {
    const s = srv.stats();
    if (s.new + s.active + s.idle + s.closing !== s.open) violations.push(`gauges: ${JSON.stringify(s)}`);
    if (Math.min(s.new, s.active, s.idle, s.closing, s.open) < 0)
      violations.push(`negative: ${JSON.stringify(s)}`);
    if (last.get(conn.id) !== prev) {
      violations.push(`conn ${conn.id}: got ${prev ?? '-'}>${state} after ${last.get(conn.id) ?? '-'}`);
    }
    if (prev !== undefined && !LEGAL[prev]!.includes(state))
      violations.push(`conn ${conn.id}: illegal ${prev}>${state}`);
    last.set(conn.id, state);
  });
  const refusals: Refusal[] = [];
  srv.on('refused', (conn: Conn, reason: RefuseReason, error: Error | undefined) => {
    refusals.push({ conn, reason, error, at: performance.now() });
  });
  const refusedCount = (n: number, ms = 5_000): Promise<void> => {
    if (refusals.length >= n) return Promise.resolve();
    let check: (() => void) | undefined;
    const reached = new Promise<void>((resolve) => {
      check = (): void => {
        // The listener above ran first: `refusals` already holds this one.
        if (refusals.length >= n) resolve();
      };
      srv.on('refused', check);
    });
    return bounded(reached, ms, `${n} refusal(s), got ${refusals.length}`).finally(() => {
      if (check !== undefined) srv.off('refused', check);
    });
  };
  return { srv, violations, refusals, refusedCount };
}

/** Starts a TCP server (127.0.0.1:0 unless told otherwise) with `proxyProtocol`, fully watched. */
async function serve(
  options: Partial<ServerOptions> & Pick<ServerOptions, 'proxyProtocol'>,
): Promise<Harness> {
  let calls = 0;
  const handler = options.handler ?? reportHandler;
  const { srv, port } = await startServer({
    ...options,
    handler: (ctx, conn) => {
      calls++;
      return handler(ctx, conn);
    },
  });
  servers.add(srv);
  return { ...instrument(srv), port, handled: () => calls };
}

/** Starts a unix-socket server with `proxyProtocol`, fully watched. */
async function serveUnix(
  options: Partial<ServerOptions> & Pick<ServerOptions, 'proxyProtocol'>,
): Promise<Harness & { path: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'tcpserver-proxy-'));
  dirs.push(dir);
  const path = join(dir, 's.sock');
  let calls = 0;
  const handler = options.handler ?? reportHandler;
  const srv = createServer({
    ...options,
    network: 'unix',
    address: path,
    handler: (ctx, conn) => {
      calls++;
      return handler(ctx, conn);
    },
  });
  servers.add(srv);
  const [bound] = await srv.listen();
  assert.equal(bound?.network, 'unix');
  return { ...instrument(srv), port: 0, path, handled: () => calls };
}

/** Stops the server gracefully and checks that it leaked nothing and saw no violation. */
async function finish(h: Pick<Harness, 'srv' | 'violations'>): Promise<ShutdownReport> {
  const report = await bounded(h.srv.close({ timeout: 5_000 }), 10_000, 'close()');
  assert.equal(report.forced, 0, 'nothing was forced');
  assert.deepEqual(h.violations, []);
  assertNoLeaks(h.srv);
  return report;
}

/** `stats().refused` without the zero entries. */
function refusedStats(srv: Server): Partial<Record<RefuseReason, number>> {
  return Object.fromEntries(Object.entries(srv.stats().refused).filter(([, n]) => n > 0));
}

/** What the server's accepted socket of one connection received, chunk by chunk (observed only). */
interface Tap {
  chunks: Buffer[];
  /** Resolves once the server's socket has received `n` bytes. */
  received: (n: number) => Promise<void>;
}

/**
 * Taps the accepted socket of the next connection `srv` adopts, with a second `'data'` listener
 * that only looks: it tells when the server has read the header, and how the bytes were cut.
 */
function tapNext(srv: Server): Tap {
  const chunks: Buffer[] = [];
  let have = 0;
  let waiters: Array<{ n: number; resolve: () => void }> = [];
  const onState = (conn: Conn, state: ConnState): void => {
    if (state !== 'new') return;
    srv.off('connState', onState);
    conn.socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      have += chunk.length;
      const due = waiters.filter((w) => have >= w.n);
      waiters = waiters.filter((w) => have < w.n);
      for (const w of due) w.resolve();
    });
  };
  srv.on('connState', onState);
  const received = (n: number): Promise<void> =>
    have >= n
      ? Promise.resolve()
      : bounded(
          new Promise<void>((resolve) => waiters.push({ n, resolve })),
          5_000,
          `the server to receive ${n} bytes (got ${have})`,
        );
  return { chunks, received };
}

// -- What the server saw, reported back to the client --------------------------------------------

interface Seen {
  remoteAddress: string | null;
  remotePort: number | null;
  localAddress: string | null;
  localPort: number | null;
  socketRemoteAddress: string | null;
  socketRemotePort: number | null;
  proxy: { version: number; command: string; family: string; authority: string | null } | null;
  /** `conn.proxy` as JSON, to compare with what the parser makes of the header. */
  proxyJson: string;
  encrypted: boolean;
  bytes: number;
  sha256: string;
  text: string | null;
}

function describeConn(conn: Conn, payload = Buffer.alloc(0)): Seen {
  const proxy = conn.proxy;
  return {
    remoteAddress: conn.remoteAddress ?? null,
    remotePort: conn.remotePort ?? null,
    localAddress: conn.localAddress ?? null,
    localPort: conn.localPort ?? null,
    socketRemoteAddress: conn.socket.remoteAddress ?? null,
    socketRemotePort: conn.socket.remotePort ?? null,
    proxy:
      proxy === undefined
        ? null
        : {
            version: proxy.version,
            command: proxy.command,
            family: proxy.family,
            authority: proxy.authority ?? null,
          },
    proxyJson: JSON.stringify(proxy ?? null),
    encrypted: conn.socket instanceof tls.TLSSocket,
    bytes: payload.length,
    sha256: createHash('sha256').update(payload).digest('hex'),
    text: payload.length <= 4096 ? payload.toString('latin1') : null,
  };
}

/** Reads everything until EOF, then writes back what it saw (addresses, header, payload) as JSON. */
const reportHandler: Handler = async (_ctx, conn) => {
  const chunks: Buffer[] = [];
  for await (const chunk of conn) chunks.push(chunk);
  await conn.write(JSON.stringify(describeConn(conn, Buffer.concat(chunks))));
};

/** Writes one line of what it saw (addresses, header), then echoes. */
const lineThenEcho: Handler = async (_ctx, conn) => {
  await conn.write(`${JSON.stringify(describeConn(conn))}\n`);
  for await (const chunk of conn) await conn.write(chunk);
};

/**
 * Runs one client against `reportHandler`: `send` writes, then the client half-closes and gets
 * the server's report once the server has closed.
 */
async function exchange(
  socket: net.Socket,
  send: (socket: net.Socket) => Promise<void> | void,
): Promise<Seen> {
  const seen = outcome(socket);
  await send(socket);
  if (!socket.writableEnded) socket.end();
  const { data, error } = await bounded(seen, 5_000, 'the server report');
  assert.equal(error, undefined, `client error: ${error}`);
  assert.ok(data.length > 0, 'the server reported back (it was not refused)');
  return JSON.parse(data.toString()) as Seen;
}

// -- Headers -------------------------------------------------------------------------------------

/** A v2 header: `verCmd` 0x21 PROXY / 0x20 LOCAL, `famProto` 0x11 INET, 0x21 INET6, 0x31 UNIX. */
function v2(verCmd: number, famProto: number, block: Buffer, tlvs: Buffer[] = []): Buffer {
  const rest = Buffer.concat([block, ...tlvs]);
  const fixed = Buffer.alloc(16);
  SIG.copy(fixed);
  fixed[12] = verCmd;
  fixed[13] = famProto;
  fixed.writeUInt16BE(rest.length, 14);
  return Buffer.concat([fixed, rest]);
}

const V1_TCP4 = Buffer.from('PROXY TCP4 192.0.2.10 198.51.100.20 56324 443\r\n');
const V1_TCP6 = Buffer.from('PROXY TCP6 2001:db8::10 2001:db8:0:0:0:0:0:20 40000 8443\r\n');
const V1_UNKNOWN = Buffer.from('PROXY UNKNOWN\r\n');
const V1_UNKNOWN_ADDRS = Buffer.from('PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n');
const V2_INET = v2(0x21, 0x11, inet4('203.0.113.5', '203.0.113.6', 1111, 2222), [
  tlv(PP2_TYPE.AUTHORITY, 'example.com'),
]);
const V2_INET6 = v2(
  0x21,
  0x21,
  inet6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xa], [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xb], 3333, 4444),
);
const V2_UNIX = v2(0x21, 0x31, unixBlock('/run/client.sock', '/run/app.sock'));
const V2_LOCAL = v2(0x20, 0x00, Buffer.alloc(0));

/** A deterministic payload of `n` bytes. */
function payloadOf(n: number, seed = 7): Buffer {
  const random = seededRandom(seed);
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(random() * 256);
  return out;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

describe('addresses from the header', () => {
  const cases: Array<{
    name: string;
    header: Buffer;
    expect: Partial<Seen> & { proxy: Seen['proxy'] };
  }> = [
    {
      name: 'v1 TCP4',
      header: V1_TCP4,
      expect: {
        remoteAddress: '192.0.2.10',
        remotePort: 56324,
        localAddress: '198.51.100.20',
        localPort: 443,
        proxy: { version: 1, command: 'PROXY', family: 'TCP4', authority: null },
      },
    },
    {
      name: 'v1 TCP6',
      header: V1_TCP6,
      expect: {
        remoteAddress: '2001:db8::10',
        remotePort: 40000,
        localAddress: '2001:db8::20',
        localPort: 8443,
        proxy: { version: 1, command: 'PROXY', family: 'TCP6', authority: null },
      },
    },
    {
      name: 'v2 INET (with an AUTHORITY TLV)',
      header: V2_INET,
      expect: {
        remoteAddress: '203.0.113.5',
        remotePort: 1111,
        localAddress: '203.0.113.6',
        localPort: 2222,
        proxy: { version: 2, command: 'PROXY', family: 'TCP4', authority: 'example.com' },
      },
    },
    {
      name: 'v2 INET6',
      header: V2_INET6,
      expect: {
        remoteAddress: '2001:db8::a',
        remotePort: 3333,
        localAddress: '2001:db8::b',
        localPort: 4444,
        proxy: { version: 2, command: 'PROXY', family: 'TCP6', authority: null },
      },
    },
    {
      name: 'v2 UNIX (paths, no ports)',
      header: V2_UNIX,
      expect: {
        remoteAddress: '/run/client.sock',
        remotePort: null,
        localAddress: '/run/app.sock',
        localPort: null,
        proxy: { version: 2, command: 'PROXY', family: 'UNIX', authority: null },
      },
    },
  ];

  for (const { name, header, expect } of cases) {
    test(`${name}: conn reports the header's addresses, conn.socket the real peer's; payload intact`, async () => {
      const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'] } });
      const client = await dial(h.port);
      const clientPort = client.localPort;
      const seen = await exchange(client, (s) => write(s, Buffer.concat([header, Buffer.from('hello\n')])));
      assert.deepEqual(
        {
          remoteAddress: seen.remoteAddress,
          remotePort: seen.remotePort,
          localAddress: seen.localAddress,
          localPort: seen.localPort,
          proxy: seen.proxy,
        },
        expect,
      );
      assert.equal(seen.socketRemoteAddress, '127.0.0.1');
      assert.equal(seen.socketRemotePort, clientPort);
      assert.equal(seen.text, 'hello\n', 'the handler sees the payload and no header byte');
      assert.equal(
        seen.proxyJson,
        JSON.stringify(parseProxyHeader(header)),
        'conn.proxy is the parsed header',
      );
      assert.deepEqual(h.refusals, []);
      await finish(h);
    });
  }

  test("v1 UNKNOWN and v2 LOCAL keep the socket's own addresses", async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'] } });
    for (const [header, version, command] of [
      [V1_UNKNOWN, 1, 'PROXY'],
      [V1_UNKNOWN_ADDRS, 1, 'PROXY'],
      [V2_LOCAL, 2, 'LOCAL'],
    ] as const) {
      const client = await dial(h.port);
      const clientPort = client.localPort;
      const seen = await exchange(client, (s) => write(s, Buffer.concat([header, Buffer.from('x')])));
      assert.equal(seen.remoteAddress, '127.0.0.1', header.toString('latin1'));
      assert.equal(seen.remotePort, clientPort);
      assert.equal(seen.localAddress, '127.0.0.1');
      assert.equal(seen.localPort, h.port);
      assert.equal(seen.proxy?.version, version);
      assert.equal(seen.proxy?.command, command);
      assert.equal(seen.proxy?.family, 'UNSPEC');
      assert.equal(seen.text, 'x');
    }
    await finish(h);
  });
});

// ---------------------------------------------------------------------------------------------
// Payload after the header
// ---------------------------------------------------------------------------------------------

describe('payload behind the header', () => {
  test('header + payload in one write, and in one write with the FIN: intact, in order', async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'] } });
    for (const header of [V1_TCP4, V2_INET]) {
      const payload = Buffer.from(
        'GET / HTTP/1.1\r\nHost: x\r\n\r\nPROXY TCP4 looks like a header but is payload\r\n',
      );
      const a = await exchange(await dial(h.port), (s) => write(s, Buffer.concat([header, payload])));
      assert.equal(a.text, payload.toString('latin1'));
      const b = await exchange(await dial(h.port), (s) => void s.end(Buffer.concat([header, payload])));
      assert.equal(b.text, payload.toString('latin1'));
      // The header alone, then FIN: the handler's first read is the end of the stream.
      const c = await exchange(await dial(h.port), (s) => void s.end(header));
      assert.equal(c.text, '');
      assert.equal(c.proxy?.version, header === V1_TCP4 ? 1 : 2);
    }
    assert.equal(h.handled(), 6);
    await finish(h);
  });

  test('header and payload one byte at a time, and split at seeded random points: intact', async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'] } });
    const payload = Buffer.from('the payload, after a header that trickled in\n');
    for (const header of [V1_TCP6, V2_INET6]) {
      const all = Buffer.concat([header, payload]);
      const one = await exchange(await dial(h.port), async (s) => {
        for (let i = 0; i < all.length; i++) {
          await write(s, all.subarray(i, i + 1));
          await turn(); // the server reads each byte on its own
        }
      });
      assert.equal(one.text, payload.toString('latin1'));
      assert.equal(one.remotePort, header === V1_TCP6 ? 40000 : 3333);
    }
    const random = seededRandom(0x9e3779b9);
    for (let round = 0; round < 10; round++) {
      const header = round % 2 === 0 ? V1_TCP4 : V2_INET;
      const all = Buffer.concat([header, payload]);
      const seen = await exchange(await dial(h.port), async (s) => {
        for (let at = 0; at < all.length; ) {
          const n = 1 + Math.floor(random() * 9);
          await write(s, all.subarray(at, at + n));
          at += n;
          await turn();
        }
      });
      assert.equal(seen.text, payload.toString('latin1'), `round ${round}`);
    }
    assert.deepEqual(h.refusals, []);
    await finish(h);
  });

  test('1 MiB right behind the header (short ones and the largest v2), in one write: every byte reaches the handler', async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'] } });
    const payload = payloadOf(1024 * 1024);
    // The largest v2 header there is (its TLVs fill the 16-bit length): it spans several reads.
    const biggest = v2(0x21, 0x11, inet4('198.51.100.1', '198.51.100.2', 7, 8), [
      tlv(PP2_TYPE.NOOP, Buffer.alloc(0xffff - 12 - 3 - 3 - 11)),
      tlv(PP2_TYPE.AUTHORITY, 'example.org'),
    ]);
    assert.equal(biggest.length, 16 + 0xffff);
    for (const header of [V1_TCP4, V2_INET6, biggest]) {
      const seen = await exchange(await dial(h.port), (s) => write(s, Buffer.concat([header, payload])));
      assert.equal(seen.bytes, payload.length);
      assert.equal(seen.sha256, sha256(payload));
      assert.equal(seen.proxyJson, JSON.stringify(parseProxyHeader(header)));
    }
    assert.deepEqual(h.refusals, []);
    await finish(h);
  });
});

// ---------------------------------------------------------------------------------------------
// Trust
// ---------------------------------------------------------------------------------------------

describe('trust', () => {
  test('an untrusted peer is closed before its bytes are parsed: refused, event, channel and log', async () => {
    const logs: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
    const logger: Logger = {
      debug: (obj, msg) => void logs.push({ level: 'debug', obj: obj as Record<string, unknown>, msg }),
      info: (obj, msg) => void logs.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
      warn: (obj, msg) => void logs.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
      error: (obj, msg) => void logs.push({ level: 'error', obj: obj as Record<string, unknown>, msg }),
    };
    const published: Array<{ server: Server; conn: Conn; reason: RefuseReason; error: Error | undefined }> =
      [];
    const onMessage = (message: unknown): void => {
      published.push(message as (typeof published)[number]);
    };
    diagnostics.subscribe('tcpserver:conn.refused', onMessage);
    try {
      const h = await serve({
        proxyProtocol: { trusted: ['10.0.0.0/8', '192.0.2.1', '127.0.0.2', '::1', '2001:db8::/32'] },
        logger,
      });
      // A valid header and a request, then garbage: none of it may be looked at.
      const clients = [
        Buffer.concat([V1_TCP4, Buffer.from('request\n')]),
        Buffer.from('GET / HTTP/1.0\r\n\r\n'),
      ];
      for (const [i, bytes] of clients.entries()) {
        const client = await dial(h.port);
        const seen = outcome(client);
        client.write(bytes);
        const { data } = await bounded(seen, 5_000, 'the untrusted client to be closed');
        assert.equal(data.length, 0, 'nothing is ever answered');
        await h.refusedCount(i + 1);
      }
      assert.equal(h.handled(), 0, 'the handler never runs');
      assert.deepEqual(refusedStats(h.srv), { 'proxy-untrusted': 2 });
      for (const { conn, reason, error } of h.refusals) {
        assert.equal(reason, 'proxy-untrusted');
        assert.ok(error instanceof ProxyProtocolError, `${error}`);
        assert.equal((error as ProxyProtocolError).code, 'ERR_PROXY_PROTOCOL');
        assert.match(error.message, /127\.0\.0\.1/);
        assert.equal(conn.proxy, undefined);
        assert.equal(conn.remoteAddress, '127.0.0.1', "an untrusted peer keeps its socket's address");
      }
      const mine = published.filter((m) => m.server === h.srv);
      assert.deepEqual(
        mine.map((m) => [m.conn, m.reason, m.error]),
        h.refusals.map((r) => [r.conn, r.reason, r.error]),
        'the channel reports the same conn, reason and error as the event',
      );
      const warns = logs.filter((l) => l.msg === 'connection refused in the accept pipeline');
      assert.deepEqual(
        warns.map((l) => [l.level, l.obj]),
        h.refusals.map((r) => ['warn', { conn: r.conn.id, reason: r.reason, err: r.error }]),
      );
      await finish(h);
    } finally {
      diagnostics.unsubscribe('tcpserver:conn.refused', onMessage);
    }
  });

  test('CIDR and exact IPv4 entries: 127.0.0.0/8 and 127.0.0.1 trust 127.0.0.1; 127.0.0.2 and 10/8 do not', async () => {
    for (const [trusted, ok] of [
      [['127.0.0.0/8'], true],
      [['127.0.0.1'], true],
      [['0.0.0.0/0'], true],
      [['127.0.0.2'], false],
      [['10.0.0.0/8', '128.0.0.0/1'], false],
    ] as const) {
      const h = await serve({ proxyProtocol: { trusted } });
      const client = await dial(h.port);
      if (ok) {
        const seen = await exchange(client, (s) => write(s, Buffer.concat([V2_INET, Buffer.from('ok')])));
        assert.equal(seen.remoteAddress, '203.0.113.5', JSON.stringify(trusted));
        assert.deepEqual(refusedStats(h.srv), {});
      } else {
        const seen = outcome(client);
        client.write(Buffer.concat([V2_INET, Buffer.from('ok')]));
        await bounded(seen, 5_000, 'the untrusted client to be closed');
        await h.refusedCount(1);
        assert.deepEqual(refusedStats(h.srv), { 'proxy-untrusted': 1 }, JSON.stringify(trusted));
        assert.equal(h.handled(), 0);
      }
      await finish(h);
    }
  });

  test('IPv6: a tcp6 listener trusts ::1 by address and by CIDR; an IPv4-only list does not trust it', async () => {
    for (const [trusted, ok] of [
      [['::1'], true],
      [['::/0'], true],
      [['0:0:0:0:0:0:0:1/128'], true],
      [['127.0.0.1', '2001:db8::/32'], false],
    ] as const) {
      const h = await serve({ network: 'tcp6', address: '[::1]:0', proxyProtocol: { trusted } });
      const client = await dial(h.port, '::1');
      if (ok) {
        const seen = await exchange(client, (s) => write(s, Buffer.concat([V1_TCP4, Buffer.from('v6')])));
        assert.equal(seen.remoteAddress, '192.0.2.10');
        assert.equal(seen.socketRemoteAddress, '::1');
        assert.equal(seen.text, 'v6');
      } else {
        const seen = outcome(client);
        client.write(V1_TCP4);
        await bounded(seen, 5_000, 'the untrusted client to be closed');
        await h.refusedCount(1);
        assert.deepEqual(refusedStats(h.srv), { 'proxy-untrusted': 1 }, JSON.stringify(trusted));
      }
      await finish(h);
    }
  });

  test('dual-stack tcp listener: IPv4 entries match IPv4-mapped peers (::ffff:127.0.0.1); ::1 stays untrusted', async () => {
    const h = await serve({ network: 'tcp', address: ':0', proxyProtocol: { trusted: ['127.0.0.0/8'] } });
    const v4 = await dial(h.port, '127.0.0.1');
    const seen = await exchange(v4, (s) => write(s, Buffer.concat([V1_TCP6, Buffer.from('mapped')])));
    assert.equal(seen.socketRemoteAddress, '::ffff:127.0.0.1', 'the peer really is IPv4-mapped');
    assert.equal(seen.remoteAddress, '2001:db8::10');
    assert.equal(seen.text, 'mapped');
    const v6 = await dial(h.port, '::1');
    const refused = outcome(v6);
    v6.write(V1_TCP6);
    await bounded(refused, 5_000, 'the ::1 client to be closed');
    await h.refusedCount(1);
    assert.deepEqual(refusedStats(h.srv), { 'proxy-untrusted': 1 });
    assert.equal(h.refusals[0]!.conn.remoteAddress, '::1');
    await finish(h);
  });

  test("trusted: ['unix'] does not trust a TCP peer on 127.0.0.1", async () => {
    const h = await serve({ proxyProtocol: { trusted: ['unix'] } });
    const client = await dial(h.port);
    const seen = outcome(client);
    client.write(V1_TCP4);
    await bounded(seen, 5_000, 'the client to be closed');
    await h.refusedCount(1);
    assert.deepEqual(refusedStats(h.srv), { 'proxy-untrusted': 1 });
    await finish(h);
  });
});

// ---------------------------------------------------------------------------------------------
// A trusted peer must send a valid header, in time
// ---------------------------------------------------------------------------------------------

describe('header required from a trusted peer', () => {
  test('bytes that are not a valid header: refused at once as proxy-invalid (ERR_PROXY_PROTOCOL)', async () => {
    // The default 5 s timeout: a refusal well before it is the parser's, not the timer's.
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'] } });
    const bad = [
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
      Buffer.from('PROXY TCP4 999.0.0.1 198.51.100.20 1 2\r\n'),
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nhello'), // LF without CR
      Buffer.from('PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n'), // doubled space
      Buffer.concat([SIG, Buffer.from([0x31, 0x11, 0, 12]), Buffer.alloc(12)]), // version 3
      Buffer.concat([SIG, Buffer.from([0x21, 0x12, 0, 12]), Buffer.alloc(12)]), // DGRAM
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0x50, 0x01]), // a TLS ClientHello without a header
      Buffer.from([0x00]),
    ];
    for (const [i, bytes] of bad.entries()) {
      const client = await dial(h.port);
      const seen = outcome(client);
      const start = performance.now();
      client.write(bytes);
      const { data } = await bounded(seen, 2_000, `client ${i} to be closed`);
      assert.equal(data.length, 0);
      await h.refusedCount(i + 1, 2_000);
      assert.ok(performance.now() - start < 2_000, 'refused on the bytes, not after the timeout');
      const { reason, error } = h.refusals[i]!;
      assert.equal(reason, 'proxy-invalid', `bytes ${i}: ${bytes.toString('latin1')}`);
      assert.ok(error instanceof ProxyProtocolError);
      assert.equal((error as ProxyProtocolError).code, 'ERR_PROXY_PROTOCOL');
    }
    assert.equal(h.handled(), 0);
    assert.deepEqual(refusedStats(h.srv), { 'proxy-invalid': bad.length });
    // It keeps serving.
    const ok = await exchange(await dial(h.port), (s) =>
      write(s, Buffer.concat([V1_TCP4, Buffer.from('after')])),
    );
    assert.equal(ok.text, 'after');
    await finish(h);
  });

  test("versions: 'v1' refuses a v2 header and 'v2' a v1 header; each serves its own", async () => {
    for (const [versions, good, wrong] of [
      ['v1', V1_TCP4, V2_INET],
      ['v2', V2_INET, V1_TCP4],
    ] as const) {
      const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'], versions } });
      const client = await dial(h.port);
      const seen = outcome(client);
      client.write(Buffer.concat([wrong, Buffer.from('payload')]));
      await bounded(seen, 2_000, 'the client to be closed');
      await h.refusedCount(1, 2_000);
      assert.equal(h.refusals[0]!.reason, 'proxy-invalid');
      assert.equal((h.refusals[0]!.error as ProxyProtocolError).code, 'ERR_PROXY_PROTOCOL');
      assert.match(h.refusals[0]!.error!.message, versions === 'v1' ? /only v1/ : /only v2/);
      const ok = await exchange(await dial(h.port), (s) =>
        write(s, Buffer.concat([good, Buffer.from('mine')])),
      );
      assert.equal(ok.text, 'mine');
      assert.equal(ok.proxy?.version, versions === 'v1' ? 1 : 2);
      assert.equal(h.handled(), 1);
      assert.deepEqual(refusedStats(h.srv), { 'proxy-invalid': 1 });
      await finish(h);
    }
  });

  test('no complete header within timeout: proxy-timeout, for a silent peer, a partial header, and a trickle', async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'], timeout: 300 } });
    const silent = await dial(h.port);
    const partial = await dial(h.port);
    const trickle = await dial(h.port);
    const start = performance.now();
    const outcomes = [silent, partial, trickle].map(outcome);
    partial.write(V1_TCP4.subarray(0, 20));
    // A Slowloris peer: always sending, never finishing. Activity does not extend the deadline.
    const long = v2(0x21, 0x11, inet4('1.2.3.4', '5.6.7.8', 1, 2), [tlv(PP2_TYPE.NOOP, Buffer.alloc(400))]);
    let at = 0;
    const drip = setInterval(() => {
      if (!trickle.destroyed && at < long.length) trickle.write(long.subarray(at, ++at));
    }, 10);
    try {
      await h.refusedCount(3, 5_000);
    } finally {
      clearInterval(drip);
    }
    const elapsed = performance.now() - start;
    assert.deepEqual(
      h.refusals.map((r) => r.reason),
      ['proxy-timeout', 'proxy-timeout', 'proxy-timeout'],
    );
    for (const r of h.refusals) {
      assert.ok(r.at - start >= 250, `refused after ${r.at - start} ms, before the 300 ms timeout`);
      assert.equal((r.error as ProxyProtocolError).code, 'ERR_PROXY_PROTOCOL');
      assert.match(r.error!.message, /300 ms/);
    }
    assert.ok(elapsed < 3_000, `refused after ${elapsed} ms`);
    await bounded(Promise.all(outcomes), 5_000, 'the timed-out clients to be closed');
    assert.equal(h.handled(), 0);
    assert.deepEqual(refusedStats(h.srv), { 'proxy-timeout': 3 });
    await finish(h);
  });

  test('a header that arrives slowly but within timeout is served', async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'], timeout: 3_000 } });
    const seen = await exchange(await dial(h.port), async (s) => {
      await write(s, V2_INET.subarray(0, 10));
      await new Promise((resolve) => setTimeout(resolve, 100)); // the peer's pace, not a wait for an event
      await write(s, Buffer.concat([V2_INET.subarray(10), Buffer.from('late but fine')]));
    });
    assert.equal(seen.text, 'late but fine');
    assert.deepEqual(h.refusals, []);
    await finish(h);
  });

  test('a peer that resets before its header ends: proxy-incomplete at once', async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'], timeout: 3_000 } });
    const start = performance.now();
    for (const [i, bytes] of [V1_TCP4.subarray(0, 12), V2_INET.subarray(0, 20)].entries()) {
      // Reset only once the server has read the bytes: Linux reports a reset that arrives with
      // unread data (or before the accept) as a plain EOF, and that is the FIN case below.
      const tap = tapNext(h.srv);
      const client = await dial(h.port);
      client.write(bytes);
      await tap.received(bytes.length);
      client.resetAndDestroy();
      await h.refusedCount(i + 1, 2_000);
    }
    assert.ok(performance.now() - start < 2_000);
    assert.deepEqual(
      h.refusals.map((r) => r.reason),
      ['proxy-incomplete', 'proxy-incomplete'],
    );
    assert.equal((h.refusals[0]!.error as ProxyProtocolError).code, 'ERR_PROXY_PROTOCOL');
    assert.equal(h.handled(), 0);
    await finish(h);
  });

  test('a peer that closes (FIN) before its header ends: proxy-incomplete at once, not after the timeout', async () => {
    // The server's sockets are half-open capable (allowHalfOpen): a FIN is 'end', not 'close'.
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'], timeout: 3_000 } });
    const start = performance.now();
    const partial = await dial(h.port);
    partial.end(V1_TCP4.subarray(0, 12)); // part of a header, then FIN
    const silent = await dial(h.port);
    silent.end(); // no byte at all, then FIN
    const outcomes = [partial, silent].map(outcome);
    await h.refusedCount(2, 5_000);
    const after = h.refusals.map((r) => Math.round(r.at - start));
    assert.deepEqual(
      h.refusals.map((r) => r.reason),
      ['proxy-incomplete', 'proxy-incomplete'],
      `refused after ${after.join(', ')} ms`,
    );
    assert.ok(Math.max(...after) < 1_500, `refused after ${after.join(', ')} ms: the FIN was not noticed`);
    await bounded(Promise.all(outcomes), 5_000, 'the clients to be closed');
    assert.equal(h.handled(), 0);
    await finish(h);
  });
});

// ---------------------------------------------------------------------------------------------
// Slow peers never hold up others; shutdown of connections still in the stage
// ---------------------------------------------------------------------------------------------

describe('slow peers and shutdown', () => {
  test('50 silent and 50 byte-at-a-time peers never delay a normal client; close() ends them at once', async () => {
    const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'], timeout: 20_000 } });
    const silent = await Promise.all(Array.from({ length: 50 }, () => dial(h.port)));
    const trickling = await Promise.all(Array.from({ length: 50 }, () => dial(h.port)));
    const slow = [...silent, ...trickling];
    const slowClosed = slow.map(closed);
    const long = v2(0x21, 0x11, inet4('1.2.3.4', '5.6.7.8', 1, 2), [tlv(PP2_TYPE.NOOP, Buffer.alloc(4000))]);
    let at = 0;
    const drip = setInterval(() => {
      for (const s of trickling) if (!s.destroyed) s.write(long.subarray(at, at + 1));
      at = Math.min(at + 1, long.length - 1);
    }, 5);
    try {
      await bounded(
        waitForStats(h.srv, (s) => s.new === 100),
        5_000,
        'the 100 slow peers to be accepted',
      );
      const timings: number[] = [];
      // One at a time, then ten at once.
      for (let i = 0; i < 5; i++) {
        const start = performance.now();
        const seen = await exchange(await dial(h.port), (s) =>
          write(s, Buffer.concat([V1_TCP4, Buffer.from(`request ${i}`)])),
        );
        timings.push(performance.now() - start);
        assert.equal(seen.text, `request ${i}`);
      }
      const start = performance.now();
      const parallel = await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const seen = await exchange(await dial(h.port), (s) =>
            write(s, Buffer.concat([V2_INET, Buffer.from(`parallel ${i}`)])),
          );
          return seen.text;
        }),
      );
      timings.push(performance.now() - start);
      assert.deepEqual(
        parallel,
        Array.from({ length: 10 }, (_, i) => `parallel ${i}`),
      );
      for (const t of timings) assert.ok(t < 500, `a normal client took ${Math.round(t)} ms: ${timings}`);
      assert.equal(h.srv.stats().new, 100, 'the slow peers are still waiting');
    } finally {
      clearInterval(drip);
    }
    // The served connections are gone before the shutdown starts, so the report counts only the slow ones.
    await bounded(
      waitForStats(h.srv, (s) => s.closed === 15),
      5_000,
      'the served connections to close',
    );
    const start = performance.now();
    const report = await finish(h);
    assert.ok(performance.now() - start < 1_000, `close() took ${performance.now() - start} ms`);
    assert.equal(report.graceful, 100);
    assert.deepEqual(refusedStats(h.srv), {}, 'a shutdown is not the peer refusing');
    assert.deepEqual(h.refusals, []);
    await bounded(Promise.all(slowClosed), 5_000, 'the slow peers to see their close');
  });

  test('close() while connections wait for their header: closed at once, graceful, not forced, not refused', async () => {
    const h = await serve({
      proxyProtocol: { trusted: ['127.0.0.1'], timeout: 10_000 },
      handler: async (_ctx, conn) => {
        for await (const chunk of conn) await conn.write(chunk);
      },
    });
    const silent = await dial(h.port);
    const partialV1 = await dial(h.port);
    await write(partialV1, V1_TCP4.subarray(0, 30));
    const partialV2 = await dial(h.port);
    await write(partialV2, V2_INET.subarray(0, 10)); // inside the signature
    const waitingBlock = await dial(h.port);
    await write(waitingBlock, V2_INET.subarray(0, 20)); // the 16 fixed bytes done, address block pending
    const served = await dial(h.port);
    served.write(Buffer.concat([V1_TCP4, Buffer.from('echo')]));
    assert.equal((await bounded(readBytes(served, 4), 5_000, 'the echo')).toString(), 'echo');
    await bounded(
      waitForStats(h.srv, (s) => s.new === 4 && s.idle === 1),
      5_000,
      '4 connections in the stage and one idle',
    );
    const clients = [silent, partialV1, partialV2, waitingBlock, served];
    const all = clients.map(closed);
    const start = performance.now();
    const report = await bounded(h.srv.close({ timeout: 10_000 }), 2_000, 'close() to resolve promptly');
    assert.ok(report.durationMs < 1_000, `close() took ${report.durationMs} ms`);
    assert.ok(performance.now() - start < 1_000);
    assert.deepEqual([report.graceful, report.forced], [5, 0]);
    assert.deepEqual(refusedStats(h.srv), {});
    assert.deepEqual(h.refusals, []);
    await bounded(Promise.all(all), 5_000, 'every client to see its close');
    assert.deepEqual(h.violations, []);
    assertNoLeaks(h.srv);
  });
});

// ---------------------------------------------------------------------------------------------
// Unix sockets
// ---------------------------------------------------------------------------------------------

describe('unix sockets', () => {
  test("trusted: ['unix'] serves a unix peer's header (v1 TCP4 and v2 UNIX)", async () => {
    const h = await serveUnix({ proxyProtocol: { trusted: ['unix'] } });
    const a = await exchange(await dialUnix(h.path), (s) =>
      write(s, Buffer.concat([V1_TCP4, Buffer.from('u1')])),
    );
    assert.deepEqual(
      [a.remoteAddress, a.remotePort, a.localAddress, a.localPort],
      ['192.0.2.10', 56324, '198.51.100.20', 443],
    );
    assert.equal(a.socketRemoteAddress, null, 'the real peer is a unix socket');
    assert.equal(a.text, 'u1');
    const b = await exchange(await dialUnix(h.path), (s) =>
      write(s, Buffer.concat([V2_UNIX, Buffer.from('u2')])),
    );
    assert.deepEqual(
      [b.remoteAddress, b.remotePort, b.localAddress, b.localPort],
      ['/run/client.sock', null, '/run/app.sock', null],
    );
    assert.equal(b.text, 'u2');
    const c = await exchange(await dialUnix(h.path), (s) =>
      write(s, Buffer.concat([V2_LOCAL, Buffer.from('u3')])),
    );
    assert.equal(c.proxy?.command, 'LOCAL');
    assert.equal(c.text, 'u3');
    assert.deepEqual(h.refusals, []);
    await finish(h);
  });

  test("without 'unix' in trusted, a unix peer is refused as untrusted", async () => {
    const h = await serveUnix({ proxyProtocol: { trusted: ['127.0.0.1', '::1', '0.0.0.0/0', '::/0'] } });
    const client = await dialUnix(h.path);
    const seen = outcome(client);
    client.write(Buffer.concat([V1_TCP4, Buffer.from('x')]));
    await bounded(seen, 5_000, 'the unix client to be closed');
    await h.refusedCount(1);
    assert.equal(h.refusals[0]!.reason, 'proxy-untrusted');
    assert.equal((h.refusals[0]!.error as ProxyProtocolError).code, 'ERR_PROXY_PROTOCOL');
    assert.deepEqual(refusedStats(h.srv), { 'proxy-untrusted': 1 });
    assert.equal(h.handled(), 0);
    await finish(h);
  });

  test('unix: a silent trusted peer times out (proxy-timeout)', async () => {
    const h = await serveUnix({ proxyProtocol: { trusted: ['unix'], timeout: 300 } });
    const silent = await dialUnix(h.path);
    const seen = outcome(silent);
    await h.refusedCount(1, 5_000);
    assert.equal(h.refusals[0]!.reason, 'proxy-timeout');
    await bounded(seen, 5_000, 'the client to be closed');
    assert.equal(h.handled(), 0);
    await finish(h);
  });
});

// ---------------------------------------------------------------------------------------------
// TLS after PROXY
// ---------------------------------------------------------------------------------------------

/**
 * A duplex over `raw` that prepends `prefix` to the first write: the header and the TLS
 * ClientHello leave in one `write()` call, hence one segment on loopback.
 */
function prefixedStream(raw: net.Socket, prefix: Buffer): Duplex {
  let first = true;
  const stream = new Duplex({
    read() {
      raw.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      const data = first ? Buffer.concat([prefix, chunk]) : chunk;
      first = false;
      raw.write(data, callback);
    },
    final(callback) {
      raw.end();
      callback();
    },
    destroy(error, callback) {
      raw.destroy();
      callback(error);
    },
  });
  raw.on('data', (chunk: Buffer) => {
    if (!stream.push(chunk)) raw.pause();
  });
  raw.on('end', () => stream.push(null));
  raw.on('close', () => stream.destroy());
  return stream;
}

type TlsMode = 'header, then TLS' | 'header and TLS at once' | 'header and ClientHello in one write';

/**
 * Writes `header` on `raw` and does a TLS handshake over the same connection, in `mode`; `tap`
 * watches the server's side. Checks that the bytes were cut as `mode` means to.
 */
async function tlsAfterHeader(
  raw: net.Socket,
  header: Buffer,
  mode: TlsMode,
  tap: Tap,
): Promise<tls.TLSSocket> {
  assert.ok(typeof pki !== 'string');
  const options = { ca: pki.cert, servername: 'localhost' };
  let secure: tls.TLSSocket;
  if (mode === 'header, then TLS') {
    raw.write(header);
    await tap.received(header.length); // the server has the header (and only it) before the hello
    secure = tls.connect({ ...options, socket: raw });
  } else if (mode === 'header and TLS at once') {
    raw.write(header);
    secure = tls.connect({ ...options, socket: raw });
  } else {
    secure = tls.connect({ ...options, socket: prefixedStream(raw, header) as unknown as net.Socket });
  }
  track(secure);
  await bounded(once(secure, 'secureConnect'), 5_000, `the TLS handshake (${mode})`);
  const first = tap.chunks[0];
  assert.ok(first !== undefined, 'the server received the header');
  if (mode === 'header, then TLS') assert.equal(first.length, header.length, 'the header came alone');
  if (mode === 'header and ClientHello in one write') {
    assert.ok(first.length > header.length, `the ClientHello came with the header (${first.length} bytes)`);
    assert.equal(first[header.length], 0x16, 'a TLS handshake record follows the header');
  }
  return secure;
}

describe('TLS after PROXY', { skip: tlsSkip }, () => {
  const modes: TlsMode[] = [
    'header, then TLS',
    'header and TLS at once',
    'header and ClientHello in one write',
  ];
  for (const mode of modes) {
    test(`${mode}: the handler sees the header's addresses and TLS echoes`, async () => {
      assert.ok(typeof pki !== 'string');
      const h = await serve({
        tls: { key: pki.key, cert: pki.cert },
        proxyProtocol: { trusted: ['127.0.0.1'] },
        handler: lineThenEcho,
      });
      for (const header of [V1_TCP4, V2_INET6]) {
        const tap = tapNext(h.srv);
        const raw = await dial(h.port);
        const secure = await tlsAfterHeader(raw, header, mode, tap);
        assert.equal(secure.authorized, true, `${secure.authorizationError}`);
        const seen = JSON.parse(await bounded(readLine(secure), 5_000, 'the report line')) as Seen;
        assert.equal(seen.encrypted, true);
        assert.equal(seen.remoteAddress, header === V1_TCP4 ? '192.0.2.10' : '2001:db8::a');
        assert.equal(seen.remotePort, header === V1_TCP4 ? 56324 : 3333);
        assert.equal(seen.socketRemoteAddress, '127.0.0.1');
        assert.equal(seen.socketRemotePort, raw.localPort);
        const message = payloadOf(100_000, 3);
        secure.write(message);
        const echoed = await bounded(readBytes(secure, message.length), 5_000, 'the echo');
        assert.ok(echoed.equals(message), 'the echo is intact');
        const done = closed(secure);
        secure.end();
        await bounded(done, 5_000, 'the TLS client to close');
      }
      assert.deepEqual(refusedStats(h.srv), {});
      await finish(h);
    });
  }

  test('TLS + PROXY: a ClientHello without a header is proxy-invalid; a bad handshake after a header is tls-handshake', async () => {
    assert.ok(typeof pki !== 'string');
    const h = await serve({
      tls: { key: pki.key, cert: pki.cert },
      proxyProtocol: { trusted: ['127.0.0.1'] },
      handler: lineThenEcho,
    });
    const raw = await dial(h.port);
    const secure = track(tls.connect({ socket: raw, ca: pki.cert, servername: 'localhost' }));
    await bounded(closed(secure), 5_000, 'the headerless TLS client to be closed');
    await h.refusedCount(1, 2_000);
    assert.equal(h.refusals[0]!.reason, 'proxy-invalid');
    const garbage = await dial(h.port);
    const seen = outcome(garbage);
    garbage.write(Buffer.concat([V1_TCP4, Buffer.from('this is not a ClientHello\r\n')]));
    await bounded(seen, 5_000, 'the client to be closed');
    await h.refusedCount(2, 5_000);
    assert.equal(h.refusals[1]!.reason, 'tls-handshake');
    assert.equal(h.handled(), 0);
    assert.deepEqual(refusedStats(h.srv), { 'proxy-invalid': 1, 'tls-handshake': 1 });
    await finish(h);
  });

  test('TLS + PROXY: a peer that sends its header and then closes (FIN) is refused at once, not after handshakeTimeout', async () => {
    assert.ok(typeof pki !== 'string');
    // The peer leaving is a `tls-handshake` failure (docs/observability.md), not a timeout.
    const h = await serve({
      tls: { key: pki.key, cert: pki.cert },
      handshakeTimeout: 3_000,
      proxyProtocol: { trusted: ['127.0.0.1'] },
      handler: lineThenEcho,
    });
    const start = performance.now();
    const client = await dial(h.port);
    const seen = outcome(client);
    client.end(V1_TCP4); // a complete header, then FIN before any ClientHello
    await h.refusedCount(1, 5_000);
    const after = Math.round(h.refusals[0]!.at - start);
    assert.equal(h.refusals[0]!.reason, 'tls-handshake', `refused after ${after} ms`);
    assert.ok(after < 1_500, `refused after ${after} ms: the FIN was not noticed`);
    await bounded(seen, 5_000, 'the client to be closed');
    assert.equal(h.handled(), 0);
    await finish(h);
  });

  test('unix socket + TLS + PROXY: header then handshake, coalesced or not', async () => {
    assert.ok(typeof pki !== 'string');
    const h = await serveUnix({
      tls: { key: pki.key, cert: pki.cert },
      proxyProtocol: { trusted: ['unix'] },
      handler: lineThenEcho,
    });
    for (const mode of modes) {
      const tap = tapNext(h.srv);
      const raw = await dialUnix(h.path);
      const secure = await tlsAfterHeader(raw, V2_INET, mode, tap);
      const seen = JSON.parse(await bounded(readLine(secure), 5_000, 'the report line')) as Seen;
      assert.equal(seen.encrypted, true, mode);
      assert.equal(seen.remoteAddress, '203.0.113.5', mode);
      assert.equal(seen.proxy?.authority, 'example.com');
      secure.write('ping');
      assert.equal((await bounded(readBytes(secure, 4), 5_000, 'the echo')).toString(), 'ping');
      const done = closed(secure);
      secure.end();
      await bounded(done, 5_000, 'the TLS client to close');
    }
    assert.deepEqual(refusedStats(h.srv), {});
    await finish(h);
  });
});

// ---------------------------------------------------------------------------------------------
// A server-level property: random bytes from trusted peers
// ---------------------------------------------------------------------------------------------

test('random bytes from 20 trusted peers (seeded): each refused, the server keeps serving', async () => {
  const h = await serve({ proxyProtocol: { trusted: ['127.0.0.1'], timeout: 300 } });
  const seed = Number(process.env.PROXY_SEED ?? 0x5eed);
  const random = seededRandom(seed);
  const bytes = (n: number): Buffer => {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(random() * 256);
    return out;
  };
  // Plain noise, and noise behind the start of each signature, to get past the first byte.
  const prefixes = [
    Buffer.alloc(0),
    Buffer.from('PROXY '),
    Buffer.from('PROXY TCP4 '),
    SIG,
    Buffer.from('P'),
    SIG.subarray(0, 5),
    Buffer.concat([SIG, Buffer.from([0x21, 0x11])]), // a valid start whose length field is noise
  ];
  const outcomes: Array<Promise<unknown>> = [];
  const sent: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    const data = Buffer.concat([prefixes[i % prefixes.length]!, bytes(1 + Math.floor(random() * 300))]);
    sent.push(data);
    const client = await dial(h.port);
    outcomes.push(outcome(client));
    const cut = Math.floor(random() * data.length);
    client.write(data.subarray(0, cut));
    await turn();
    if (random() < 0.5) client.end(data.subarray(cut));
    else client.write(data.subarray(cut));
  }
  await h.refusedCount(20, 10_000);
  await bounded(Promise.all(outcomes), 5_000, 'every random peer to be closed');
  for (const [i, r] of h.refusals.entries()) {
    assert.ok(
      ['proxy-invalid', 'proxy-timeout', 'proxy-incomplete'].includes(r.reason),
      `peer ${i} (seed ${seed}): ${r.reason} for ${sent[i]!.toString('hex')}`,
    );
    assert.equal((r.error as ProxyProtocolError).code, 'ERR_PROXY_PROTOCOL');
  }
  assert.equal(h.handled(), 0, 'no random bytes ever reached a handler');
  const reasons = h.refusals.map((r) => r.reason);
  assert.ok(reasons.includes('proxy-invalid'), `both kinds of failure are exercised: ${reasons}`);
  assert.ok(
    reasons.some((r) => r !== 'proxy-invalid'),
    `both kinds of failure are exercised: ${reasons}`,
  );
  const s = h.srv.stats();
  assert.equal(s.refused['proxy-invalid'] + s.refused['proxy-timeout'] + s.refused['proxy-incomplete'], 20);
  const ok = await exchange(await dial(h.port), (c) =>
    write(c, Buffer.concat([V2_INET, Buffer.from('still here')])),
  );
  assert.equal(ok.text, 'still here');
  assert.equal(h.handled(), 1);
  await finish(h);
});
