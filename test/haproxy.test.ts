/**
 * End to end behind a real HAProxy: docs/haproxy.md's configuration (moved to loopback, with tight
 * check timings and a stats socket) in front of three `examples/resp.ts` processes, with PROXY v2
 * to each and health checks on each one's /readyz. Fifty client connections send requests through
 * HAProxy while every backend in turn gets SIGTERM, drains (exit 0), starts again on the same ports
 * and is seen UP again by HAProxy.
 *
 * The clients are test/fixtures/rr-load.ts's (one request in flight per connection, every reply
 * checked, a request whose connection closed under it classified from the backend's log: raced the
 * server's FIN and sent again, or read but unanswered, a failure).
 *
 * Every backend must have seen each client's real address through the PROXY header, and HAProxy's
 * own on the socket (checked against HAProxy's session log).
 *
 * Without haproxy the test is skipped with a message, except under CI=true where it fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  Backend,
  cleanupsAfter,
  freePorts,
  Haproxy,
  haproxyCommand,
  haproxyConfig,
  RespConnection,
  sleep,
  waitStatus,
  within,
} from './fixtures/haproxy-cluster.js';
import { startLoad } from './fixtures/rr-load.js';
import { HAPROXY, skipWithout } from './helpers.js';

// Timings. HAProxy notices a failing /readyz within (FALL + 1) x INTER; the close delay must be
// longer, with a margin, so HAProxy stops sending new connections before the listener closes.
const INTER_MS = 200;
const FALL = 2;
const CLOSE_DELAY_MS = 1_200;
const SHUTDOWN_TIMEOUT_MS = 3_000;
const BACKEND = 'echo_servers';

/** One HAProxy session log line (docs/haproxy.md's log-format: `%ci:%cp [%t] %ft %b/%s %bi:%bp ...`). */
interface SessionLog {
  clientPort: number;
  server: string;
  sourcePort: number;
}

function sessionLogs(lines: readonly string[]): SessionLog[] {
  const out: SessionLog[] = [];
  for (const line of lines) {
    const m = /^127\.0\.0\.1:(\d+) \[[^\]]*\] \S+ [^/\s]+\/(\S+) 127\.0\.0\.1:(\d+) /.exec(line);
    if (m) out.push({ clientPort: Number(m[1]), server: m[2]!, sourcePort: Number(m[3]) });
  }
  return out;
}

describe('behind a real HAProxy (PROXY v2, /readyz checks)', () => {
  const cleanup = cleanupsAfter();

  test('a rolling restart of 3 backends loses no request, and each saw the real client addresses', {
    skip: skipWithout(HAPROXY),
    timeout: 60_000,
  }, async () => {
    assert.ok(CLOSE_DELAY_MS > (FALL + 1) * INTER_MS + 300, 'close delay longer than detection, with margin');
    const began = performance.now();

    // ---- three backends, then HAProxy in front of them ----
    const dir = mkdtempSync(join(tmpdir(), 'tcpserver-haproxy-e2e-'));
    cleanup(() => rmSync(dir, { recursive: true, force: true }));
    const [front, ...ports] = await freePorts(7);
    const backends = [0, 1, 2].map(
      (i) =>
        new Backend(`app${i + 1}`, ports[2 * i]!, ports[2 * i + 1]!, {
          PROXY_PROTOCOL_TRUSTED: '127.0.0.1',
          PROXY_PROTOCOL_VERSIONS: 'v2',
          CLOSE_DELAY_MS: String(CLOSE_DELAY_MS),
          SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
        }),
    );
    cleanup(async () => {
      await Promise.all(backends.flatMap((b) => b.runs.map((r) => r.kill())));
    });
    await Promise.all(backends.map((b) => b.start(15_000)));

    const haproxy = new Haproxy(dir, (socket) =>
      haproxyConfig(front!, socket, backends, { interMs: INTER_MS, fall: FALL }),
    );
    const statsSocket = haproxy.statsSocket;
    cleanup(() => haproxy.stop());
    for (const b of backends) await haproxy.up(BACKEND, b.name, 10_000);

    // ---- the clients ----
    const load = startLoad({ connect: () => RespConnection.open(front!), target: 'haproxy' });
    cleanup(() => load.abort()); // after a failure too: the clients stop, and their sockets go

    // ---- the rolling restart ----
    await sleep(500);
    const restarts: string[] = [];
    for (const b of backends) {
      const run = b.current;
      const t0 = performance.now();
      run.proc.kill('SIGTERM');
      const signalled = await run.line(
        /received SIGTERM, shutting down gracefully \((\d+) connection/,
        2_000,
      );
      const openAtSignal = Number(signalled[1]);
      await waitStatus(statsSocket, BACKEND, b.name, 'DOWN', CLOSE_DELAY_MS + 1_000);
      const downMs = performance.now() - t0;
      assert.ok(
        !run.out.lines.some((l) => l.includes('close delay over')),
        `${b.name}: HAProxy saw it DOWN (after ${Math.round(downMs)} ms) only once its listener had closed`,
      );
      const { code, signal } = await within(
        CLOSE_DELAY_MS + SHUTDOWN_TIMEOUT_MS + 3_000,
        `${b.name} to exit after SIGTERM`,
        run.exited,
      );
      const exitMs = performance.now() - t0;
      assert.equal(code, 0, `${b.name} exits 0 after a clean drain (signal ${signal}):\n${run.out.text()}`);
      assert.match(run.out.text(), /shutdown complete: \d+ graceful, 0 forced/);
      assert.ok(openAtSignal > 0, `${b.name} had connections to drain`);
      await b.start(15_000);
      const upMs = await haproxy.up(BACKEND, b.name, 5_000);
      restarts.push(
        `${b.name}: ${openAtSignal} open at SIGTERM, DOWN in HAProxy after ${Math.round(downMs)} ms, ` +
          `exited 0 after ${Math.round(exitMs)} ms, UP again ${Math.round(upMs)} ms after its restart`,
      );
    }
    await sleep(500);
    const report = await load.stop();

    // ---- stop the backends: each run exits 0 and refused nothing ----
    for (const b of backends) b.current.proc.kill('SIGTERM');
    for (const b of backends) {
      const run = b.current;
      const { code } = await within(
        CLOSE_DELAY_MS + SHUTDOWN_TIMEOUT_MS + 3_000,
        `${b.name} to exit`,
        run.exited,
      );
      assert.equal(code, 0, run.out.text());
    }
    for (const run of backends.flatMap((b) => b.runs)) {
      assert.match(run.out.text(), /resp: stopped: \d+ accepted, 0 refused, 0 handler error\(s\)/, run.label);
    }

    // ---- the requests closed under: read by the server, or never reached it ----
    const seen = backends.flatMap((b) => b.seen());
    report.classify(seen);
    const perBackend = backends.map((b) => `${b.name} ${b.seen().length}`).join(', ');
    console.log(
      `haproxy e2e: ${report.summary()}; connections per backend: ${perBackend}; ` +
        `${Math.round(performance.now() - began)} ms`,
    );
    for (const line of restarts) console.log(`haproxy e2e: ${line}`);
    report.printProblems('haproxy e2e');

    // ---- what the backends saw: the clients' addresses, through PROXY v2 ----
    // HAProxy logs a session when it ends; every one has ended by now.
    let sessions = sessionLogs(haproxy.proc.out.lines);
    for (const deadline = performance.now() + 3_000; sessions.length < seen.length; ) {
      if (performance.now() > deadline) break;
      await sleep(25);
      sessions = sessionLogs(haproxy.proc.out.lines);
    }
    const info = await haproxyCommand(statsSocket, 'show info');
    const droppedLogs = Number(/^DroppedLogs: (\d+)$/m.exec(info)?.[1] ?? Number.NaN);
    let samePort = 0;
    const unlogged: string[] = [];
    for (const s of seen) {
      const where = `${s.backend} conn ${s.id} from ${s.from.address}:${s.from.port} via ${s.via.address}:${s.via.port}`;
      assert.equal(s.from.address, '127.0.0.1', where);
      assert.ok(load.clientPorts.has(s.from.port), `${where}: the remote port is a client socket's port`);
      assert.deepEqual(
        s.to,
        { address: '127.0.0.1', port: front },
        `${where}: the local address is HAProxy's bind`,
      );
      assert.equal(s.via.address, '127.0.0.1', where);
      const logged = sessions.some(
        (l) => l.clientPort === s.from.port && l.server === s.backend && l.sourcePort === s.via.port,
      );
      if (!logged) {
        const lines = haproxy.proc.out.lines.filter((l) => l.includes(String(s.from.port)));
        unlogged.push(`${where}; HAProxy's lines naming that port: ${JSON.stringify(lines)}`);
      }
      // The kernel may give HAProxy's side the same port number as the client's: rare, legitimate.
      if (s.from.port === s.via.port) samePort++;
    }
    console.log(
      `haproxy e2e: ${seen.length} connections checked against HAProxy's session log ` +
        `(${unlogged.length} not in it, HAProxy's DroppedLogs ${droppedLogs}); ` +
        `${samePort} with the same port on both sides`,
    );
    // Each one in HAProxy's log with %cp = the PROXY source port and %bp = the socket's port, but
    // for log lines HAProxy says it dropped (it writes them to stdout without blocking).
    assert.ok(
      unlogged.length <= (Number.isNaN(droppedLogs) ? 0 : droppedLogs),
      `sessions missing from HAProxy's log (${sessions.length} logged, DroppedLogs ${droppedLogs}):\n${unlogged.join('\n')}`,
    );
    report.assertServedOnce(seen, 'backend');
    assert.ok(samePort <= 2, `the remote port differs from the socket's (${samePort} equal)`);

    report.assertLossless();
    assert.ok(report.counts.closedIdle > 0, 'the drains closed idle connections, and the clients moved on');
  });
});
