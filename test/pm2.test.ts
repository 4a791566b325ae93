/**
 * pm2 end to end: docs/pm2.md's ecosystem file (two `examples/resp.ts` processes in cluster mode,
 * `wait_ready`, `kill_timeout` longer than the drain, `shutdown_with_message`) under the real pm2
 * (the devDependency, with a daemon of its own in a temporary PM2_HOME, killed afterwards). Fifty
 * client connections of request/response load (test/fixtures/rr-load.ts) run while `pm2 reload`
 * replaces both processes; then `pm2 stop`. Once directly to the port, once through HAProxy.
 *
 * Nothing may be lost: no request read and left unanswered, no client-visible failure or error,
 * no refused connection attempt; each old process drained on SIGINT and exited 0 by itself, before
 * pm2's SIGKILL; each new one drained on pm2's 'shutdown' message at the stop.
 *
 * Without pm2 or haproxy the tests are skipped with a message, except under CI=true where they fail.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  cleanupsAfter,
  freePorts,
  Haproxy,
  haproxySinglePortConfig,
  RespConnection,
  serverStats,
} from './fixtures/haproxy-cluster.js';
import { PM2, Pm2App, reloadUnderLoad } from './fixtures/pm2-cluster.js';
import { startLoad } from './fixtures/rr-load.js';
import { HAPROXY, skipWithout } from './helpers.js';

const BACKEND = 'echo_servers';

describe('under pm2 cluster mode (docs/pm2.md)', () => {
  const cleanup = cleanupsAfter();

  /** A temporary directory and the app in it, both gone after the tests (the daemon first). */
  const setUp = (
    label: string,
    port: number,
    env: Record<string, string> = {},
  ): { dir: string; app: Pm2App } => {
    const dir = mkdtempSync(join(tmpdir(), `tcpserver-pm2-${label}-`));
    cleanup(() => rmSync(dir, { recursive: true, force: true }));
    const app = new Pm2App(dir, port, env);
    cleanup(() => app.kill());
    return { dir, app };
  };

  test('pm2 reload under load, straight to the port: nothing lost, each old process drained and exited 0', {
    skip: skipWithout(PM2),
    timeout: 60_000,
  }, async () => {
    const began = performance.now();
    const [port] = await freePorts(1);
    const { app } = setUp('direct', port!);
    await app.start();
    const load = startLoad({ connect: () => RespConnection.open(port!), target: 'the pm2 cluster port' });
    cleanup(() => load.abort());
    const { report, reloadMs, openAtSigint } = await reloadUnderLoad(app, load);

    console.log(
      `pm2 direct: ${report.summary()}; reload ${Math.round(reloadMs)} ms, open at SIGINT ` +
        `${openAtSigint.join(' and ')}; ${Math.round(performance.now() - began)} ms`,
    );
    report.printProblems('pm2 direct');
    report.assertLossless();
    assert.ok(report.counts.closedIdle > 0, 'the drains closed idle connections, and the clients moved on');
  });

  test('pm2 reload under load behind HAProxy (send-proxy-v2): nothing lost, the clients seen through PROXY', {
    skip: skipWithout(PM2, HAPROXY),
    timeout: 60_000,
  }, async () => {
    const began = performance.now();
    const [front, port] = await freePorts(2);
    const { dir, app } = setUp('haproxy', port!, {
      PROXY_PROTOCOL_TRUSTED: '127.0.0.1',
      PROXY_PROTOCOL_VERSIONS: 'v2',
    });
    await app.start();
    const haproxy = new Haproxy(dir, (socket) => haproxySinglePortConfig(front!, socket, port!));
    cleanup(() => haproxy.stop());
    // One server, not checked: HAProxy says `no check` once it runs.
    await haproxy.status(BACKEND, 'app1', 'no check', 10_000);
    const load = startLoad({ connect: () => RespConnection.open(front!), target: 'haproxy' });
    cleanup(() => load.abort());
    const { report, reloadMs, openAtSigint, seen } = await reloadUnderLoad(app, load);
    const stat = (await serverStats(haproxy.statsSocket, BACKEND)).get('app1');
    assert.ok(stat, 'HAProxy has stats for app1');

    console.log(
      `pm2 haproxy: ${report.summary()}; reload ${Math.round(reloadMs)} ms, open at SIGINT ` +
        `${openAtSigint.join(' and ')}; HAProxy to the port: ${stat.econ} connection errors, ` +
        `${stat.wretr} retries, ${stat.wredis} redispatches; ${Math.round(performance.now() - began)} ms`,
    );
    report.printProblems('pm2 haproxy');
    report.assertLossless();
    assert.ok(report.counts.closedIdle > 0, 'the drains closed idle connections, and the clients moved on');
    assert.deepEqual(
      [stat.econ, stat.wretr, stat.wredis],
      ['0', '0', '0'],
      'HAProxy reached the port every time',
    );
    for (const s of seen) {
      const where = `${s.backend} conn ${s.id} from ${s.from.address}:${s.from.port} via ${s.via.address}:${s.via.port}`;
      assert.ok(load.clientPorts.has(s.from.port), `${where}: the remote port is a client socket's port`);
      assert.deepEqual(
        s.to,
        { address: '127.0.0.1', port: front },
        `${where}: the local address is HAProxy's bind`,
      );
    }
  });
});
