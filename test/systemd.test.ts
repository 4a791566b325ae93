/**
 * Systemd socket activation: the LISTEN_* parsing rules, and real child processes started the way
 * systemd starts a service: a listening socket as fd 3, LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES set.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { describe, it } from 'node:test';
import { createServer, TcpServerError } from '../src/index.js';
import { SD_LISTEN_FDS_START, SystemdActivationError, systemdListeners } from '../src/systemd.js';
import { Child } from './fixtures/ops-child.js';
import { collect, connect, readBytes, SYSTEMD_SOCKET_ACTIVATE, skipWithout } from './helpers.js';

const FIXTURE = 'test/fixtures/ops-systemd-server.ts';

function activationError(env: NodeJS.ProcessEnv, pid = 1234, pattern?: RegExp): void {
  assert.throws(
    () => systemdListeners(env, pid),
    (err: unknown) => {
      assert.ok(err instanceof SystemdActivationError);
      assert.ok(err instanceof TcpServerError);
      assert.equal(err.code, 'ERR_SYSTEMD_ACTIVATION');
      assert.equal(err.name, 'SystemdActivationError');
      if (pattern) assert.match(err.message, pattern);
      return true;
    },
    JSON.stringify(env),
  );
}

describe('systemdListeners(env, pid)', () => {
  it('returns the passed descriptors from fd 3 on, with their names', () => {
    assert.equal(SD_LISTEN_FDS_START, 3);
    assert.deepEqual(systemdListeners({ LISTEN_FDS: '1', LISTEN_PID: '1234' }, 1234), [{ fd: 3 }]);
    assert.deepEqual(
      systemdListeners({ LISTEN_FDS: '3', LISTEN_PID: '1234', LISTEN_FDNAMES: 'web:admin:' }, 1234),
      [{ fd: 3, name: 'web' }, { fd: 4, name: 'admin' }, { fd: 5 }],
    );
  });

  it('defaults to the process environment and pid', () => {
    const saved = { ...process.env };
    try {
      process.env.LISTEN_FDS = '2';
      process.env.LISTEN_PID = String(process.pid);
      delete process.env.LISTEN_FDNAMES;
      assert.deepEqual(systemdListeners(), [{ fd: 3 }, { fd: 4 }]);
    } finally {
      for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES']) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  });

  it('throws SystemdActivationError when the variables are absent', () => {
    activationError({}, 1234, /LISTEN_FDS is not set/);
    activationError({ LISTEN_FDS: '' }, 1234, /LISTEN_FDS is not set/);
    activationError({ LISTEN_PID: '1234' }, 1234, /LISTEN_FDS is not set/);
    activationError({ LISTEN_FDS: '1' }, 1234, /LISTEN_PID is not/);
  });

  it('throws when LISTEN_PID names another process', () => {
    activationError(
      { LISTEN_FDS: '1', LISTEN_PID: '999' },
      1234,
      /LISTEN_PID=999 is not this process \(1234\)/,
    );
  });

  it('throws on malformed counts and pids', () => {
    for (const fds of ['0', '-1', 'two', '1.5', ' 1', '0x1', '99999999999999999999']) {
      activationError({ LISTEN_FDS: fds, LISTEN_PID: '1234' }, 1234, /LISTEN_FDS/);
    }
    for (const pid of ['abc', '-1234', '1234 ']) {
      activationError({ LISTEN_FDS: '1', LISTEN_PID: pid }, 1234, /LISTEN_PID/);
    }
  });

  it('throws when LISTEN_FDNAMES does not match the count', () => {
    activationError(
      { LISTEN_FDS: '2', LISTEN_PID: '1234', LISTEN_FDNAMES: 'only-one' },
      1234,
      /names 1 socket/,
    );
    activationError({ LISTEN_FDS: '1', LISTEN_PID: '1234', LISTEN_FDNAMES: 'a:b' }, 1234, /names 2 socket/);
  });

  it("listener: 'systemd' without activation fails listen() with the typed error and stays stopped", async () => {
    const saved = { LISTEN_FDS: process.env.LISTEN_FDS, LISTEN_PID: process.env.LISTEN_PID };
    delete process.env.LISTEN_FDS;
    delete process.env.LISTEN_PID;
    try {
      const srv = createServer({ listener: 'systemd', handler: () => {} });
      await assert.rejects(srv.listen(), SystemdActivationError);
      assert.equal(srv.isStopped, true);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v !== undefined) process.env[k] = v;
    }
  });
});

/** A listening TCP socket on 127.0.0.1:0 and its descriptor, to hand to a child as fd 3. */
async function listeningSocket(): Promise<{ server: net.Server; fd: number; port: number }> {
  const server = net.createServer();
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  // The descriptor of a listening TCP handle, which child_process can place at any stdio position.
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  assert.ok(Number.isInteger(fd) && fd > 2, `a real descriptor (got ${fd})`);
  return { server, fd, port: (server.address() as net.AddressInfo).port };
}

/** Starts the fixture the way systemd does: fd 3 = the socket, `exec` so LISTEN_PID is node's pid. */
function activate(
  fds: number | number[],
  env: NodeJS.ProcessEnv,
  wrapper = 'LISTEN_PID=$$ exec "$0" "$@"',
): Child {
  const passed = typeof fds === 'number' ? [fds] : fds;
  return new Child('sh', ['-c', wrapper, process.execPath, '--import', 'tsx', FIXTURE], {
    stdio: ['ignore', 'pipe', 'pipe', ...passed],
    env: { ...process.env, LISTEN_FDS: String(passed.length), ...env },
  });
}

describe('socket activation of a real child process', () => {
  it('serves on the socket passed as fd 3, with the name from LISTEN_FDNAMES', async (t) => {
    const { server, fd, port } = await listeningSocket();
    const child = activate(fd, { LISTEN_FDNAMES: 'echo' });
    // The child has its own copy now; the parent must not accept on the shared socket.
    server.close();
    t.after(() => child.cleanup());

    // Connecting before the child is ready is fine: the connection waits in the kernel's backlog.
    const sock = await connect(port);
    t.after(() => sock.destroy());
    sock.write('ping over an inherited socket\n');
    assert.equal((await readBytes(sock, 30)).toString(), 'ping over an inherited socket\n');

    const ready = await child.waitFor('fixture ready');
    assert.deepEqual(ready.passed, [{ fd: 3, name: 'echo' }]);
    assert.equal(ready.pid, child.proc.pid, 'LISTEN_PID named the node process itself');
    const [addr] = ready.addresses as Array<{ host: string; port: number }>;
    assert.deepEqual([addr?.host, addr?.port], ['127.0.0.1', port]);

    const received = collect(sock);
    child.kill('SIGTERM');
    assert.equal((await received).length, 0, 'drained with a FIN');
    assert.equal((await child.exited).code, 0, child.output);
  });

  it('refuses sockets meant for another process (LISTEN_PID of a wrapper that did not exec)', async (t) => {
    const { server, fd } = await listeningSocket();
    // Without exec, node is a child of the shell whose pid LISTEN_PID names.
    const child = activate(fd, {}, 'LISTEN_PID=$$; export LISTEN_PID; "$0" "$@"');
    server.close();
    t.after(() => child.cleanup());
    const failed = await child.waitFor('fixture failed');
    assert.equal(failed.code, 'ERR_SYSTEMD_ACTIVATION');
    assert.match(failed.message as string, /is not this process/);
    assert.equal((await child.exited).code, 3);
  });

  it('a set whose second descriptor cannot listen: listen() fails, the peers queued on the first are closed, the process exits', async (t) => {
    const { server, fd, port } = await listeningSocket();
    // fd 4 is a file, not a socket: node:net refuses to listen on it, after fd 3 already listens.
    const notASocket = openSync('/dev/null', 'r');
    const child = activate([fd, notASocket], {});
    server.close();
    closeSync(notASocket);
    t.after(() => child.cleanup());
    // Queued in the backlog of fd 3 before the child starts (its first listener).
    const peers = await Promise.all(Array.from({ length: 3 }, () => connect(port)));
    t.after(() => {
      for (const peer of peers) peer.destroy();
    });
    const closed = peers.map((peer) => {
      peer.write('anyone there?\n');
      return collect(peer).then(
        (received) => received.length,
        (error: NodeJS.ErrnoException) => error.code,
      );
    });
    const failed = await child.waitFor('fixture failed');
    assert.equal(failed.name, 'ListenError');
    assert.match(failed.message as string, /^cannot listen on fd 4: /);
    assert.equal((await child.exited).code, 3, child.output);
    // None answered, none left waiting: each saw the end of its connection (a reset, with the
    // listener gone, or the server's own close).
    for (const outcome of await Promise.all(closed))
      assert.ok([0, 'ECONNRESET'].includes(outcome!), `${outcome}`);
  });

  it('works under systemd-socket-activate, started by the first connection', {
    skip: skipWithout(SYSTEMD_SOCKET_ACTIVATE),
  }, async (t) => {
    // systemd-socket-activate needs a fixed port: take a free one from the kernel.
    const probe = net.createServer().listen({ host: '127.0.0.1', port: 0 });
    await once(probe, 'listening');
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));

    const child = new Child(
      'systemd-socket-activate',
      ['-l', `127.0.0.1:${port}`, '--fdname=tcp', process.execPath, '--import', 'tsx', FIXTURE],
      { env: { ...process.env } },
    );
    t.after(() => child.cleanup());
    // It reports on stderr once listening; the service itself starts on the first connection.
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (child.output.includes(`Listening on 127.0.0.1:${port}`)) resolve();
      };
      child.proc.stderr!.on('data', check);
      child.exited.then(() => reject(new Error(`systemd-socket-activate exited:\n${child.output}`)));
      check();
    });
    assert.equal(child.all('fixture ready').length, 0, 'nothing started before a connection');
    const sock = await connect(port);
    t.after(() => sock.destroy());
    sock.write('activated\n');
    assert.equal((await readBytes(sock, 10)).toString(), 'activated\n');
    const ready = await child.waitFor('fixture ready');
    assert.deepEqual(ready.passed, [{ fd: 3, name: 'tcp' }]);
    const received = collect(sock);
    child.kill('SIGTERM');
    assert.equal((await received).length, 0);
    assert.equal((await child.exited).code, 0, child.output);
  });
});
