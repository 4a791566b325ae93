/**
 * A real HAProxy sending PROXY v1 (`send-proxy`) and v2 (`send-proxy-v2`) to one tcpserver:
 * the handler sees each client's own address and port, and the socket HAProxy's.
 * Without haproxy the test is skipped with a message, except under CI=true where it fails.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { collect, freePort, HAPROXY, skipWithout, startServer, stopAndCheck } from './helpers.js';

/** Connects to HAProxy's `port` until it accepts (it is starting), within 10 s. */
async function ask(port: number): Promise<{ reply: string; localPort: number }> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const socket = net.connect(port, '127.0.0.1');
    const connected = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true));
      socket.once('error', () => resolve(false));
    });
    if (connected) {
      const localPort = socket.localPort!;
      const reply = (await collect(socket)).toString();
      if (reply !== '' || Date.now() > deadline) return { reply, localPort };
    } else if (Date.now() > deadline) throw new Error(`haproxy never listened on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('HAProxy send-proxy (v1) and send-proxy-v2: the backend sees the client, not HAProxy', {
  skip: skipWithout(HAPROXY),
}, async () => {
  const { srv, port } = await startServer({
    proxyProtocol: { trusted: ['127.0.0.1'] },
    handler: async (_ctx, conn) => {
      await conn.end(
        `v${conn.proxy?.version} ${conn.remoteAddress}:${conn.remotePort} via ${conn.socket.remotePort}`,
      );
    },
  });
  const [v1, v2] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'tcpserver-haproxy-pp-'));
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'defaults',
      '    mode tcp',
      '    timeout connect 2s',
      '    timeout client 10s',
      '    timeout server 10s',
      `frontend v1_in`,
      `    bind 127.0.0.1:${v1}`,
      '    default_backend v1_out',
      `frontend v2_in`,
      `    bind 127.0.0.1:${v2}`,
      '    default_backend v2_out',
      'backend v1_out',
      `    server app 127.0.0.1:${port} send-proxy`,
      'backend v2_out',
      `    server app 127.0.0.1:${port} send-proxy-v2`,
      '',
    ].join('\n'),
  );
  const haproxy = spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  haproxy.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  try {
    for (const [version, frontend] of [
      [1, v1],
      [2, v2],
    ] as const) {
      const { reply, localPort } = await ask(frontend);
      const match = /^v(\d) 127\.0\.0\.1:(\d+) via (\d+)$/.exec(reply);
      assert.ok(match, `reply ${JSON.stringify(reply)} (haproxy: ${stderr})`);
      assert.equal(Number(match[1]), version);
      assert.equal(Number(match[2]), localPort, "the header carries the client's own port");
      assert.notEqual(Number(match[3]), localPort, "the socket is HAProxy's connection, not the client's");
    }
    assert.deepEqual(Object.values(srv.stats().refused), [0, 0, 0, 0, 0, 0]);
  } finally {
    haproxy.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  await stopAndCheck(srv);
});
