/**
 * Shared test helpers: start a server on an ephemeral loopback port, open raw client sockets,
 * and check that nothing leaked. One helper serves every test file.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, test } from 'node:test';
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
 * Something a test needs from the machine: a command on PATH, or a capability (root, a kernel
 * setting...). Tests never probe for one themselves: they declare it with {@link skipWithout}.
 */
export interface Requirement {
  /** Whether the machine has it (probed on first use, then remembered). */
  readonly available: boolean;
  /** What is missing and how to get it, for the skip (or, under `CI=true`, the failure) message. */
  readonly missing: string;
}

/** A {@link Requirement} that `probe` checks, once, the first time a test asks. */
export function requirement(missing: string, probe: () => boolean): Requirement {
  let available: boolean | undefined;
  return {
    missing,
    get available() {
      available ??= probe();
      return available;
    },
  };
}

/** True when `command args` runs and exits 0 (within 10 s). */
export function runs(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** True when `name` is an executable file in a directory of `PATH` (what `command -v` finds). */
export function onPath(name: string, path = process.env.PATH ?? ''): boolean {
  return path.split(delimiter).some((dir) => {
    if (dir === '') return false;
    try {
      const file = join(dir, name);
      accessSync(file, constants.X_OK);
      return statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

/** A command the tests run, found on PATH, and the Debian package (installed by .ci/run) that has it. */
export function command(name: string, debianPackage: string): Requirement {
  return requirement(`${name} not found on PATH (apt-get install ${debianPackage})`, () => onPath(name));
}

export const HAPROXY = command('haproxy', 'haproxy');
export const OPENSSL = command('openssl', 'openssl');
export const REDIS_CLI = command('redis-cli', 'redis-tools');
export const REDIS_BENCHMARK = command('redis-benchmark', 'redis-tools');
export const SCRIPT = command('script', 'bsdutils');
export const SS = command('ss', 'iproute2');
export const SYSTEMD_ANALYZE = command('systemd-analyze', 'systemd');
export const SYSTEMD_SOCKET_ACTIVATE = command('systemd-socket-activate', 'systemd');
export const CALLGRIND_ANNOTATE = command('callgrind_annotate', 'valgrind');
export const VALGRIND = command('valgrind', 'valgrind');
export const PYYAML = requirement('python3 with PyYAML not found (apt-get install python3-yaml)', () =>
  runs('python3', ['-c', 'import yaml']),
);

/**
 * The one way a test depends on a tool or capability: `test(name, { skip: skipWithout(HAPROXY) }, ...)`
 * (or `describe(...)`), called while the tests are declared. When everything is there it returns
 * `false` and the test runs. When something is missing it returns the message, and the test is
 * skipped with it. Under `CI=true` (read at each call) a missing requirement fails the run: CI
 * installs everything the tests need (.ci/run). Next to the test it declares one more, named
 * `required when CI=true: <message>`, that fails with the message (once per missing requirement
 * and test file), prints the message to stderr and sets a failing exit code (so that a name
 * pattern leaving that test out still fails); the tests that need it do not run (they would only
 * fail later, less clearly, or wait out their timeouts), and every other test still does.
 */
export function skipWithout(...needs: Requirement[]): string | false {
  const missing = needs.filter((need) => !need.available).map((need) => need.missing);
  if (missing.length === 0) return false;
  const message = missing.join('; ');
  if (process.env.CI !== 'true') return message;
  if (!failedUnderCi.has(message)) {
    failedUnderCi.add(message);
    const error = `${message}: required when CI=true (.ci/run sets up everything the tests need)`;
    // The exit code fails the file even where --test-name-pattern or --test-only leaves out the test.
    process.exitCode = 1;
    process.stderr.write(`${error}\n`);
    test(`required when CI=true: ${message}`, () => {
      throw new Error(error);
    });
  }
  return `${message} (CI=true: this fails the run)`;
}

const failedUnderCi = new Set<string>();

/**
 * A throwaway self-signed certificate (EC P-256, valid for localhost, 127.0.0.1 and ::1) made with
 * the openssl CLI. Without openssl, `skipWithout(OPENSSL)`'s message instead (a string, for the
 * TLS tests' `skip`; under `CI=true` it also fails the run).
 */
export function makeCertificate(cn = 'localhost'): { key: Buffer; cert: Buffer } | string {
  const skip = skipWithout(OPENSSL);
  if (skip) return skip;
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
