/**
 * Shared test helpers: start a server on an ephemeral loopback port, open raw client sockets,
 * and check that nothing leaked. One helper serves every test file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { createServer, type Server, type ServerOptions } from '../src/index.js';

/** Starts a server on 127.0.0.1:0 (unless `address`/`network` say otherwise) and returns it with its port. */
export async function startServer(options: ServerOptions): Promise<{ srv: Server; port: number }> {
  const srv = createServer({ network: 'tcp4', address: '127.0.0.1:0', ...options });
  const [bound] = await srv.listen();
  assert.ok(bound && bound.network !== 'unix');
  return { srv, port: bound.port };
}

/** Connects a raw client socket and waits until it is connected. */
export async function connect(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  const socket = net.connect({ port, host });
  await once(socket, 'connect');
  return socket;
}

/** Collects everything a socket receives until the peer closes, as one Buffer. */
export function collect(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.once('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** Reads exactly `want` bytes from `socket` (or rejects on close first); later bytes stay unread. */
export function readBytes(socket: net.Socket, want: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      have += chunk.length;
      if (have >= want) {
        cleanup();
        const all = Buffer.concat(chunks);
        if (all.length > want) socket.unshift(all.subarray(want)); // the rest stays for the next reader
        resolve(all.subarray(0, want));
      }
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error(`socket closed after ${have} of ${want} bytes`));
    };
    const cleanup = (): void => {
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/** Resolves when the server's stats satisfy `predicate` (event-driven, via `connState`). */
export function waitForStats(
  srv: Server,
  predicate: (s: ReturnType<Server['stats']>) => boolean,
): Promise<void> {
  if (predicate(srv.stats())) return Promise.resolve();
  return new Promise((resolve) => {
    const check = (): void => {
      if (predicate(srv.stats())) {
        srv.off('connState', check);
        resolve();
      }
    };
    srv.on('connState', check);
  });
}

/** Asserts the server has stopped with no connection left open and gauges that add up. */
export function assertNoLeaks(srv: Server): void {
  const s = srv.stats();
  assert.equal(s.open, 0, `open connections left: ${JSON.stringify(s)}`);
  assert.equal(s.new + s.active + s.idle + s.closing, s.open, 'gauges add up');
  assert.equal(s.accepted, s.closed, 'every accepted connection closed');
}

/** Closes the server (forcing after `timeout`) and checks it leaked nothing. */
export async function stopAndCheck(srv: Server, timeout = 5_000): Promise<void> {
  await srv.close({ timeout });
  assertNoLeaks(srv);
}

/** Listens on `options` with a plain `net.Server`, resolving it once bound (rejecting on error). */
export function listenNet(options: net.ListenOptions, server = net.createServer()): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** Closes a plain `net.Server` and waits until it has closed. */
export function closeNet(server: net.Server): Promise<void> {
  return new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

/** A TCP port nothing listens on right now, on either loopback family (it is released before returning). */
export async function freePort(): Promise<number> {
  const server = await listenNet({ port: 0 }); // `::` dual-stack: the port is free on both families
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  await closeNet(server);
  return address.port;
}

/**
 * Asserts nothing listens on `port`: binds it on the dual-stack wildcard, which fails with
 * EADDRINUSE if any IPv4 or IPv6 address holds it, then releases it.
 */
export async function assertPortFree(port: number): Promise<void> {
  const server = await listenNet({ port }).catch((err: NodeJS.ErrnoException) => {
    assert.fail(`port ${port} is taken (${err.code}): something was bound`);
  });
  await closeNet(server);
}

/**
 * A throwaway self-signed certificate (EC P-256, valid for localhost, 127.0.0.1 and ::1) made with
 * the openssl CLI. A string means "skip: no openssl" (outside CI; under `CI=true` it throws).
 */
export function makeCertificate(cn = 'localhost'): { key: Buffer; cert: Buffer } | string {
  if (spawnSync('openssl', ['version']).status !== 0) {
    if (process.env.CI === 'true') throw new Error('openssl is required for the TLS tests in CI');
    return 'openssl CLI not found (apt-get install openssl): TLS tests skipped';
  }
  const dir = mkdtempSync(join(tmpdir(), 'tcpserver-pki-'));
  try {
    const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
    const r = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-subj',
        `/CN=${cn}`,
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
        '-days',
        '1',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, `openssl failed: ${r.stderr}`);
    return { key: readFileSync(key), cert: readFileSync(cert) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Fails the test file if any promise rejection went unhandled while it ran: call once at the top
 * of a file (it registers a node:test `after` hook).
 */
export function failOnUnhandledRejections(): void {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  after(() => {
    process.off('unhandledRejection', onUnhandled);
    assert.deepEqual(unhandled, [], 'no unhandled rejections');
  });
}

/** Connects (a 127.0.0.1 port, or a unix path), sends `line`, and resolves the first line back. */
export async function askLine(to: number | string, line: string, onConnect?: () => void): Promise<string> {
  const sock = typeof to === 'number' ? net.connect({ host: '127.0.0.1', port: to }) : net.connect(to);
  try {
    await once(sock, 'connect');
    onConnect?.();
    sock.write(`${line}\n`);
    let text = '';
    for await (const chunk of sock) {
      text += chunk;
      if (text.includes('\n')) break;
    }
    return text.slice(0, text.indexOf('\n'));
  } finally {
    sock.destroy();
  }
}

/** True while process `pid` runs (a zombie waiting for a reaper counts as gone). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ...": Z is a zombie.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
