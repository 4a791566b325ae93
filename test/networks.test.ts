/**
 * Every network serves an echo round trip on loopback: tcp (dual-stack), tcp4, tcp6, unix,
 * abstract unix, TLS over tcp and over unix; stale and live unix socket files; existing
 * listeners (`net.Server`, `{ fd }`); listen errors that keep the OS code.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { lstat, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import {
  type BoundAddress,
  createServer,
  type Handler,
  ListenError,
  type Server,
  type ServerOptions,
  TcpServerError,
} from '../src/index.js';
import {
  assertNoLeaks,
  closeNet,
  collect,
  listenNet,
  makeCertificate,
  readBytes,
  requirement,
  runs,
  skipWithout,
  stopAndCheck,
} from './helpers.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

const echo: Handler = async (_ctx, conn) => {
  for await (const chunk of conn) await conn.write(chunk);
};

/** Writes `payload`, expects it back byte for byte, then ends and waits for the server's FIN. */
async function roundTrip(socket: net.Socket, payload: string): Promise<void> {
  socket.write(payload);
  assert.equal((await readBytes(socket, Buffer.byteLength(payload))).toString(), payload);
  socket.resume();
  const ended = once(socket, 'end');
  const closed = once(socket, 'close');
  socket.end();
  await ended; // the server ended its side gracefully (FIN), not a reset
  await closed;
}

async function connectTcp(host: string, port: number): Promise<net.Socket> {
  const socket = net.connect({ host, port });
  await once(socket, 'connect');
  return socket;
}

async function connectPath(path: string): Promise<net.Socket> {
  const socket = net.connect({ path });
  await once(socket, 'connect');
  return socket;
}

/** Starts a server and returns it with its single bound address. */
async function start(options: ServerOptions): Promise<{ srv: Server; bound: BoundAddress }> {
  const srv = createServer({ handler: echo, ...options });
  const addresses = await srv.listen();
  assert.equal(addresses.length, 1);
  return { srv, bound: addresses[0]! };
}

function tcpPort(bound: BoundAddress): number {
  assert.ok(bound.network !== 'unix', `expected a TCP address, got ${JSON.stringify(bound)}`);
  return bound.port;
}

/** A fresh temp dir, removed after the suite. */
const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tcpserver-net-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** Reads JSON lines from a child's stdout, one at a time. */
function jsonLines(child: ChildProcess): () => Promise<Record<string, unknown>> {
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return async () => {
    const next = await lines.next();
    assert.ok(!next.done, 'child exited without output');
    return JSON.parse(next.value) as Record<string, unknown>;
  };
}

describe('tcp networks', () => {
  test('tcp :0 is dual-stack: reachable on 127.0.0.1 and ::1', async () => {
    const { srv, bound } = await start({ network: 'tcp', address: ':0' });
    assert.equal(bound.network, 'tcp');
    const port = tcpPort(bound);
    await roundTrip(await connectTcp('127.0.0.1', port), 'hello over IPv4');
    await roundTrip(await connectTcp('::1', port), 'hello over IPv6');
    await stopAndCheck(srv);
    assert.equal(srv.stats().accepted, 2);
  });

  test('tcp4 127.0.0.1:0', async () => {
    const { srv, bound } = await start({ network: 'tcp4', address: '127.0.0.1:0' });
    assert.deepEqual(bound, { network: 'tcp4', host: '127.0.0.1', port: tcpPort(bound) });
    await roundTrip(await connectTcp('127.0.0.1', tcpPort(bound)), 'hello tcp4');
    await stopAndCheck(srv);
    assert.equal(srv.stats().accepted, 1);
  });

  test('tcp6 [::1]:0', async () => {
    const { srv, bound } = await start({ network: 'tcp6', address: '[::1]:0' });
    assert.deepEqual(bound, { network: 'tcp6', host: '::1', port: tcpPort(bound) });
    await roundTrip(await connectTcp('::1', tcpPort(bound)), 'hello tcp6');
    await stopAndCheck(srv);
    assert.equal(srv.stats().accepted, 1);
  });

  test('tcp6 :0 is IPv6 only: the same IPv4 port stays free', async () => {
    const { srv, bound } = await start({ network: 'tcp6', address: ':0' });
    assert.equal(bound.network === 'tcp6' && bound.host, '::');
    const port = tcpPort(bound);
    await roundTrip(await connectTcp('::1', port), 'hello v6only');
    // A dual-stack socket would hold 127.0.0.1:port too; an IPv6-only one leaves it bindable.
    await closeNet(await listenNet({ host: '127.0.0.1', port }));
    await stopAndCheck(srv);
  });

  test('tcp4 :0 is IPv4 only: the same IPv6 port stays free', async () => {
    const { srv, bound } = await start({ network: 'tcp4', address: ':0' });
    assert.equal(bound.network === 'tcp4' && bound.host, '0.0.0.0');
    const port = tcpPort(bound);
    await roundTrip(await connectTcp('127.0.0.1', port), 'hello v4 any');
    await closeNet(await listenNet({ host: '::1', port }));
    await stopAndCheck(srv);
  });
});

describe('unix networks', () => {
  test('unix path: serves, and the socket file is removed after close()', async () => {
    const path = join(await tempDir(), 'echo.sock');
    const { srv, bound } = await start({ network: 'unix', address: path });
    assert.deepEqual(bound, { network: 'unix', path });
    assert.ok((await lstat(path)).isSocket());
    await roundTrip(await connectPath(path), 'hello unix');
    await stopAndCheck(srv);
    assert.equal(existsSync(path), false, 'socket file removed');
    assert.equal(srv.stats().accepted, 1);
  });

  test('abstract unix @name', {
    skip: process.platform !== 'linux' && 'abstract sockets are Linux only',
  }, async () => {
    const name = `tcpserver-test-${process.pid}-${randomUUID()}`;
    const { srv, bound } = await start({ network: 'unix', address: `@${name}` });
    assert.deepEqual(bound, { network: 'unix', path: `@${name}` });
    await roundTrip(await connectPath(`\0${name}`), 'hello abstract');
    await stopAndCheck(srv);
    assert.equal(srv.stats().accepted, 1);
    // Gone with the server: nothing listens on the name any more.
    const probe = net.connect({ path: `\0${name}` });
    const [err] = (await once(probe, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
  });

  test('a stale socket file left by a dead process is detected and replaced', async () => {
    const path = join(await tempDir(), 'stale.sock');
    const child = spawn(
      process.execPath,
      ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('ready'))", path],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const [line] = await once(createInterface({ input: child.stdout! }), 'line');
    assert.equal(line, 'ready');
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    assert.deepEqual(await exited, [null, 'SIGKILL']);
    assert.ok((await lstat(path)).isSocket(), 'the dead process left its socket file');
    const refused = net.connect({ path });
    assert.equal(((await once(refused, 'error')) as [NodeJS.ErrnoException])[0].code, 'ECONNREFUSED');

    const { srv } = await start({ network: 'unix', address: path });
    await roundTrip(await connectPath(path), 'hello after stale');
    await stopAndCheck(srv);
    assert.equal(existsSync(path), false);
  });

  test('a live socket file (another server listening) is an EADDRINUSE error and is left alone', async () => {
    const path = join(await tempDir(), 'live.sock');
    const { srv: live } = await start({ network: 'unix', address: path });
    for (const run of [(s: Server) => s.listen(), (s: Server) => s.serve()]) {
      const srv = createServer({ network: 'unix', address: path, handler: echo });
      await assert.rejects(run(srv), (err: unknown) => {
        assert.ok(err instanceof ListenError, String(err));
        assert.equal(err.code, 'EADDRINUSE');
        assert.equal(err.address, path);
        return true;
      });
      assert.equal(srv.isStopped, true);
      assertNoLeaks(srv);
    }
    // The live server still owns its file and serves.
    await roundTrip(await connectPath(path), 'still alive');
    await stopAndCheck(live);
    assert.equal(existsSync(path), false);
  });

  test('a unix path whose directory is missing keeps the OS code', async () => {
    const path = join(await tempDir(), 'missing', 'x.sock');
    const srv = createServer({ network: 'unix', address: path, handler: echo });
    await assert.rejects(srv.listen(), (err: unknown) => {
      assert.ok(err instanceof ListenError, String(err));
      // ENOENT on Linux; gVisor says EACCES. Either way it is the OS's code, not ours.
      assert.equal(err.code, (err.cause as NodeJS.ErrnoException).code);
      assert.match(err.code, /^E[A-Z]+$/);
      return true;
    });
    assertNoLeaks(srv);
  });
});

describe('TLS', () => {
  const pki = makeCertificate();
  const skip = typeof pki === 'string' ? pki : false;

  /** Echo that also reports whether the handler saw an encrypted socket. */
  const secureEcho: Handler = async (_ctx, conn) => {
    assert.ok(conn.socket instanceof tls.TLSSocket && conn.socket.encrypted);
    for await (const chunk of conn) await conn.write(chunk);
  };

  async function connectTls(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    assert.ok(typeof pki !== 'string');
    const socket = tls.connect({ ca: pki.cert, servername: 'localhost', ...options });
    await once(socket, 'secureConnect');
    assert.equal(socket.authorized, true, String(socket.authorizationError));
    return socket;
  }

  test('TLS over tcp', { skip }, async () => {
    assert.ok(typeof pki !== 'string');
    const { srv, bound } = await start({
      network: 'tcp4',
      address: '127.0.0.1:0',
      tls: { key: pki.key, cert: pki.cert },
      handler: secureEcho,
    });
    await roundTrip(await connectTls({ host: '127.0.0.1', port: tcpPort(bound) }), 'hello tls');
    await stopAndCheck(srv);
    assert.deepEqual([srv.stats().accepted, srv.stats().errors], [1, 0]);
  });

  test('TLS over tcp6', { skip }, async () => {
    assert.ok(typeof pki !== 'string');
    const { srv, bound } = await start({
      network: 'tcp6',
      address: '[::1]:0',
      tls: { key: pki.key, cert: pki.cert },
      handler: secureEcho,
    });
    await roundTrip(await connectTls({ host: '::1', port: tcpPort(bound) }), 'hello tls6');
    await stopAndCheck(srv);
    assert.deepEqual([srv.stats().accepted, srv.stats().errors], [1, 0]);
  });

  test('TLS over unix', { skip }, async () => {
    assert.ok(typeof pki !== 'string');
    const path = join(await tempDir(), 'tls.sock');
    const { srv } = await start({
      network: 'unix',
      address: path,
      tls: { key: pki.key, cert: pki.cert },
      handler: secureEcho,
    });
    await roundTrip(await connectTls({ path }), 'hello tls unix');
    await stopAndCheck(srv);
    assert.deepEqual([srv.stats().accepted, srv.stats().errors], [1, 0]);
    assert.equal(existsSync(path), false);
  });

  test('a client that does not trust the certificate never reaches the handler', { skip }, async () => {
    assert.ok(typeof pki !== 'string');
    let calls = 0;
    const { srv, bound } = await start({
      network: 'tcp4',
      address: '127.0.0.1:0',
      tls: { key: pki.key, cert: pki.cert },
      handler: () => void calls++,
    });
    const socket = tls.connect({ host: '127.0.0.1', port: tcpPort(bound), servername: 'localhost' });
    const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
    await stopAndCheck(srv);
    assert.equal(calls, 0);
  });
});

describe('existing listeners', () => {
  test('a net.Server that is already listening', async () => {
    const existing = await listenNet({ host: '127.0.0.1', port: 0 });
    const port = (existing.address() as net.AddressInfo).port;
    const srv = createServer({ listener: existing, handler: echo });
    const bound = await srv.listen();
    assert.deepEqual(bound, [{ network: 'tcp', host: '127.0.0.1', port }]);
    await roundTrip(await connectTcp('127.0.0.1', port), 'hello existing');
    await stopAndCheck(srv);
    assert.equal(existing.listening, false, 'close() closed the listener it was given');
    assert.equal(srv.stats().accepted, 1);
  });

  test('a net.Server that is already listening on a unix path', async () => {
    const path = join(await tempDir(), 'existing.sock');
    const existing = await listenNet({ path });
    const srv = createServer({ network: 'unix', listener: existing, handler: echo });
    assert.deepEqual(await srv.listen(), [{ network: 'unix', path }]);
    await roundTrip(await connectPath(path), 'hello existing unix');
    await stopAndCheck(srv);
    assert.equal(existsSync(path), false);
  });

  test('a net.Server not yet listening, bound to the address given', async () => {
    const existing = net.createServer();
    const srv = createServer({ listener: existing, network: 'tcp4', address: '127.0.0.1:0', handler: echo });
    const [bound] = await srv.listen();
    assert.ok(bound !== undefined);
    assert.equal(existing.listening, true);
    assert.equal((existing.address() as net.AddressInfo).port, tcpPort(bound));
    await roundTrip(await connectTcp('127.0.0.1', tcpPort(bound)), 'hello late bind');
    await stopAndCheck(srv);
    assert.equal(existing.listening, false);
  });

  test('a net.Server made with default options still serves half-closed requests', async () => {
    // net.createServer() defaults to allowHalfOpen: false, where Node ends a socket as soon as its
    // peer sends FIN: a reply to a request the client ended with end() would be lost.
    const answerAfterEof: Handler = async (_ctx, conn) => {
      const chunks: Buffer[] = [];
      for await (const chunk of conn) chunks.push(chunk);
      await new Promise<void>((resolve) => setImmediate(resolve)); // answer after the FIN was seen
      await conn.write(`got ${Buffer.concat(chunks)}`);
    };
    const listening = await listenNet({ host: '127.0.0.1', port: 0 });
    const notYet = net.createServer();
    for (const options of [
      { listener: listening },
      { listener: notYet, network: 'tcp4', address: '127.0.0.1:0' },
    ] satisfies ServerOptions[]) {
      const { srv, bound } = await start({ ...options, handler: answerAfterEof });
      const client = net.connect({ host: '127.0.0.1', port: tcpPort(bound), allowHalfOpen: true });
      const received = collect(client);
      client.end('request');
      assert.equal((await received).toString(), 'got request');
      await stopAndCheck(srv);
      assert.deepEqual([srv.stats().accepted, srv.stats().errors], [1, 0]);
    }
  });

  test('a net.Server not listening and no address: listen() rejects with a typed error', async () => {
    const srv = createServer({ listener: net.createServer(), handler: echo });
    await assert.rejects(
      srv.listen(),
      (err: unknown) => err instanceof TcpServerError && /not listening/.test(err.message),
    );
    assert.equal(srv.isStopped, true);
    assertNoLeaks(srv);
  });

  test('{ fd }: a listening socket inherited by a child process serves there', async () => {
    // The parent binds, hands the descriptor to the child as its fd 3 (as systemd would), and
    // closes its own copy: from then on only the child's server accepts on the port.
    const parent = await listenNet({ host: '127.0.0.1', port: 0 });
    const port = (parent.address() as net.AddressInfo).port;
    const fd = (parent as unknown as { _handle: { fd: number } })._handle.fd;
    assert.ok(Number.isInteger(fd) && fd > 2, `a real descriptor, got ${fd}`);
    const child = spawn(process.execPath, ['--import', 'tsx', join(FIXTURES, 'net-fd-child.ts')], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'inherit', fd],
    });
    await closeNet(parent);
    const exited = once(child, 'exit');
    const next = jsonLines(child);
    try {
      const { addresses } = await next();
      assert.deepEqual(addresses, [{ network: 'tcp', host: '127.0.0.1', port }]);
      await roundTrip(await connectTcp('127.0.0.1', port), 'hello fd one');
      await roundTrip(await connectTcp('127.0.0.1', port), 'hello fd two');
      child.stdin!.end();
      const { report, stats } = (await next()) as {
        report: { graceful: number; forced: number };
        stats: { open: number; accepted: number; closed: number };
      };
      assert.deepEqual([report.graceful, report.forced], [0, 0]);
      assert.deepEqual([stats.open, stats.accepted, stats.closed], [0, 2, 2]);
      assert.deepEqual(await exited, [0, null]);
    } finally {
      child.kill();
    }
    // The child's close() closed the last copy of the descriptor: the port is free again.
    await closeNet(await listenNet({ host: '127.0.0.1', port }));
  });
});

describe('listen errors keep the OS code', () => {
  test('EADDRINUSE rejects listen() and serve() with a ListenError', async () => {
    const blocker = await listenNet({ host: '127.0.0.1', port: 0 });
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      for (const network of ['tcp4', 'tcp'] as const) {
        for (const run of [(s: Server) => s.listen(), (s: Server) => s.serve()]) {
          const srv = createServer({ network, address: `127.0.0.1:${port}`, handler: echo });
          await assert.rejects(run(srv), (err: unknown) => {
            assert.ok(err instanceof ListenError, String(err));
            assert.ok(err instanceof TcpServerError);
            assert.equal(err.code, 'EADDRINUSE');
            assert.equal(err.address, `127.0.0.1:${port}`);
            assert.equal(err.errno, (err.cause as NodeJS.ErrnoException).errno);
            assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
            return true;
          });
          await assert.rejects(srv.serving, ListenError);
          assert.equal(srv.isStopped, true);
          assert.deepEqual(await srv.stopped, { graceful: 0, forced: 0, durationMs: 0 });
          await assert.rejects(srv.listen(), ListenError, 'listen() again reports the same failure');
          assertNoLeaks(srv);
        }
      }
    } finally {
      await closeNet(blocker);
    }
  });

  test('EADDRINUSE on a dual-stack :port held on IPv6', async () => {
    const blocker = await listenNet({ host: '::1', port: 0 });
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const srv = createServer({ network: 'tcp', address: `:${port}`, handler: echo });
      await assert.rejects(
        srv.serve(),
        (err: unknown) => err instanceof ListenError && err.code === 'EADDRINUSE',
      );
      assertNoLeaks(srv);
    } finally {
      await closeNet(blocker);
    }
  });

  /** Root, to start the fixture, which drops to user 65534 itself (see test/fixtures/net-eacces.ts). */
  const ROOT_USER = requirement(
    'not root: cannot drop to an unprivileged user (run the tests as root)',
    () => process.getuid?.() === 0,
  );

  /** True when this process's network namespace keeps port 1 for privileged users. */
  const portOnePrivileged = (): boolean => {
    try {
      return Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')) > 1;
    } catch {
      return true; // no such setting: ports below 1024 are privileged
    }
  };
  /**
   * What the fixture runs under: nothing where port 1 is privileged; otherwise (containers often
   * set net.ipv4.ip_unprivileged_port_start to 0) a network namespace of its own, where the
   * setting is back at its default, 1024. Undefined when neither is possible.
   */
  let wrapper: string[] | undefined;
  const PRIVILEGED_PORT_1 = requirement(
    'port 1 is open to every user here (net.ipv4.ip_unprivileged_port_start <= 1), and no network ' +
      'namespace of our own where it is not (needs root and unshare, apt-get install util-linux)',
    () => {
      const check = 'test "$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)" -gt 1';
      if (portOnePrivileged()) wrapper = [];
      else if (runs('unshare', ['--net', '--', 'sh', '-c', check])) wrapper = ['unshare', '--net', '--'];
      return wrapper !== undefined;
    },
  );

  test('EACCES: an unprivileged process binding port 1', {
    skip: skipWithout(ROOT_USER, PRIVILEGED_PORT_1),
  }, async (t) => {
    assert.ok(wrapper !== undefined);
    if (wrapper.length > 0)
      t.diagnostic('port 1 is open to every user here: in a network namespace of its own');
    // Started as root from the checkout, so tsx and the modules load wherever the checkout is
    // and whoever may read it; the fixture drops to user 65534 before it binds.
    const [file, ...args] = [
      ...wrapper,
      process.execPath,
      '--import',
      'tsx',
      join(FIXTURES, 'net-eacces.ts'),
    ];
    const child = spawn(file!, args, {
      cwd: ROOT,
      env: { ...process.env, ADDRESS: '127.0.0.1:1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(child, 'exit');
    const result = await jsonLines(child)();
    assert.deepEqual(await exited, [0, null]);
    assert.deepEqual(
      [result.uid, result.euid, result.gid, result.egid, result.groups],
      [65534, 65534, 65534, 65534, [65534]],
      'unprivileged, with no supplementary group (getgroups lists the effective gid)',
    );
    for (const how of ['listen', 'serve']) {
      assert.deepEqual(result[how], {
        name: 'ListenError',
        code: 'EACCES',
        isListenError: true,
        address: '127.0.0.1:1',
        syscall: 'listen',
        stopped: true,
        open: 0,
      });
    }
  });
});
