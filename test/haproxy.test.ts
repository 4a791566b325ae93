/**
 * End to end behind a real HAProxy: docs/haproxy.md's configuration (moved to loopback, with tight
 * check timings and a stats socket) in front of three `examples/resp.ts` processes, with PROXY v2
 * to each and health checks on each one's /readyz. Fifty client connections send requests through
 * HAProxy while every backend in turn gets SIGTERM, drains (exit 0), starts again on the same ports
 * and is seen UP again by HAProxy.
 *
 * Client rules (one request in flight per connection, every reply checked):
 * - the server closed the connection while the client had nothing in flight: the next request
 *   goes on a new connection, counted as retried;
 * - the connection closed with a request in flight: the backend's own count of the bytes it had
 *   read when it began closing (`RESP_LOG_CONNECTIONS`) tells what happened. Equal to what the
 *   client sent before that request: the server had ended the connection before the request
 *   reached it (it never read it: the request raced the server's FIN, inside HAProxy), so it is
 *   sent again on a new connection, counted as retried. More: the server read the request and
 *   did not answer: a failure ("read but unanswered"), and there must be none.
 *
 * Every backend must have seen each client's real address through the PROXY header, and HAProxy's
 * own on the socket (checked against HAProxy's session log).
 *
 * Without haproxy the test is skipped with a message, except under CI=true where it fails.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setImmediate as nextCheck } from 'node:timers/promises';
import {
  Backend,
  encodeCommand,
  freePorts,
  haproxyCommand,
  Proc,
  type Reply,
  RespConnection,
  sleep,
  UnansweredError,
  waitStatus,
  within,
} from './fixtures/haproxy-cluster.js';
import { checkedBlocks } from './fixtures/ops-docs.js';

const CI = process.env.CI === 'true';

function installed(tool: string): boolean {
  try {
    execFileSync(tool, ['-v'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

const HAPROXY_MISSING = 'haproxy not found: install it (apt-get install haproxy) to run this test';
const haveHaproxy = installed('haproxy');

// Timings. HAProxy notices a failing /readyz within (FALL + 1) x INTER; the close delay must be
// longer, with a margin, so HAProxy stops sending new connections before the listener closes.
const INTER_MS = 200;
const FALL = 2;
const CLOSE_DELAY_MS = 1_200;
const SHUTDOWN_TIMEOUT_MS = 3_000;
const CLIENTS = 50;
/** Think time between two requests of one connection (uniform in this range), in ms. */
const THINK_MS: readonly [number, number] = [5, 25];
/** How long one request may wait for its reply before it counts as failed. */
const REQUEST_TIMEOUT_MS = 5_000;
/** Sends of one request (the first and its retries) before it counts as failed. */
const MAX_SENDS = 4;
const BACKEND = 'echo_servers';

/** docs/haproxy.md's config, moved to loopback ports with tight checks and a stats socket. */
function haproxyConfig(
  front: number,
  statsSocket: string,
  backends: readonly { name: string; port: number; healthPort: number }[],
): string {
  const block = checkedBlocks('haproxy.md').find((b) => b.kind === 'haproxy');
  assert.ok(block, 'docs/haproxy.md shows a haproxy.cfg');
  let config = block.body;
  const edit = (from: RegExp | string, to: string): void => {
    const next = config.replace(from, to);
    assert.notEqual(next, config, `docs/haproxy.md's config has ${from}`);
    config = next;
  };
  edit(/^global\n/m, `global\n    stats socket ${statsSocket} level admin\n`);
  edit(/maxconn \d+/, 'maxconn 1000');
  edit('bind :7000', `bind 127.0.0.1:${front}`);
  // One health port per backend (all on 127.0.0.1): `port` goes on each server line instead.
  assert.match(config, new RegExp(`default-server check port 8081 inter 1s fall ${FALL} rise \\d+`));
  edit(
    /default-server check port 8081 inter 1s fall (\d+) rise \d+/,
    `default-server check inter ${INTER_MS}ms fall $1 rise 1`,
  );
  // The servers: the doc's names and options (send-proxy-v2), loopback addresses, health ports.
  const server = /^ {4}server (\S+) \S+(.*)$/gm;
  assert.deepEqual(
    [...config.matchAll(server)].map((m) => m[1]),
    backends.map((b) => b.name),
  );
  config = config.replace(server, (_m, name: string, rest: string) => {
    const b = backends.find((x) => x.name === name)!;
    return `    server ${name} 127.0.0.1:${b.port}${rest} port ${b.healthPort}`;
  });
  const active = config.replace(/#.*$/gm, '');
  assert.equal(active.match(/send-proxy-v2 port/g)?.length, backends.length, 'PROXY v2 to every server');
  assert.doesNotMatch(active, /check-send-proxy/, 'the checks go to the plain-HTTP health port');
  assert.doesNotMatch(active, /shutdown-sessions/, 'no session is cut when a server is marked down');
  return config;
}

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

/** The request number `n` of client `c`: its bytes and the replies it must get. */
function request(c: number, n: number): { payload: string; want: Reply[] } {
  // Replies determined by the request alone (each backend has its own store): an ECHO of a unique
  // value, or a SET and a GET of a unique key pipelined in one write.
  const value = `c${c}-r${n}`;
  if (n % 2 === 1) return { payload: encodeCommand('ECHO', value), want: [{ type: 'bulk', value }] };
  return {
    payload: encodeCommand('SET', `k:${value}`, `v:${value}`) + encodeCommand('GET', `k:${value}`),
    want: [
      { type: 'simple', value: 'OK' },
      { type: 'bulk', value: `v:${value}` },
    ],
  };
}

/** A request whose connection closed under it: classified after the run, from the backend's log. */
interface Unanswered {
  what: string;
  clientPort: number;
  /** Bytes the client had sent on that connection before this request. */
  before: number;
  /** Ms from sending it to seeing the connection close. */
  closedAfterMs: number;
}

/**
 * A request that raced the server's FIN sees the close within the time a FIN and a request take
 * to cross HAProxy, a few ms. Much longer would mean the server sat on input it had received.
 */
const RACE_MAX_MS = 500;

describe('behind a real HAProxy (PROXY v2, /readyz checks)', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        console.error('cleanup failed:', err);
      }
    }
  });

  test('a rolling restart of 3 backends loses no request, and each saw the real client addresses', {
    skip: haveHaproxy || CI ? false : HAPROXY_MISSING,
    timeout: 60_000,
  }, async () => {
    assert.ok(haveHaproxy, `${HAPROXY_MISSING} (required when CI=true)`);
    assert.ok(CLOSE_DELAY_MS > (FALL + 1) * INTER_MS + 300, 'close delay longer than detection, with margin');
    const began = performance.now();

    // ---- three backends, then HAProxy in front of them ----
    const dir = mkdtempSync(join(tmpdir(), 'tcpserver-haproxy-e2e-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
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
    cleanups.push(async () => {
      await Promise.all(backends.flatMap((b) => b.runs.map((r) => r.kill())));
    });
    await Promise.all(backends.map((b) => b.start(15_000)));

    const statsSocket = join(dir, 'admin.sock');
    const cfgFile = join(dir, 'haproxy.cfg');
    writeFileSync(cfgFile, haproxyConfig(front!, statsSocket, backends));
    const haproxy = new Proc('haproxy', 'haproxy', ['-db', '-f', cfgFile]);
    cleanups.push(async () => {
      if (haproxy.running) haproxy.proc.kill('SIGTERM');
      await within(3_000, 'haproxy to exit', haproxy.exited).catch(() => haproxy.kill());
    });
    /** Waits until HAProxy reports `name` UP; resolves the ms it took. */
    const up = async (name: string, ms: number): Promise<number> => {
      const start = performance.now();
      for (;;) {
        try {
          // The stats socket exists once HAProxy has started: until then, retry (bounded).
          const left = Math.max(0, start + ms - performance.now());
          await waitStatus(statsSocket, BACKEND, name, 'UP', left);
          return performance.now() - start;
        } catch (err) {
          if (!haproxy.running) throw new Error(`haproxy exited:\n${haproxy.out.text()}`);
          if (performance.now() - start > ms) throw new Error(`${err}\n${haproxy.out.text()}`);
          await sleep(25);
        }
      }
    };
    for (const b of backends) await up(b.name, 10_000);

    // ---- the clients ----
    const counts = { sent: 0, answered: 0, closedIdle: 0, resent: 0, failed: 0, wrong: 0, errors: 0 };
    let connections = 0;
    let requests = 0;
    const problems: string[] = [];
    const unanswered: Unanswered[] = [];
    const clientPorts = new Set<number>();
    const open = new Set<RespConnection>();
    let stopping = false;
    let clients: Promise<void>[] = [];
    cleanups.push(async () => {
      // After a failure too: the clients stop, and their sockets go.
      stopping = true;
      for (const conn of open) conn.destroy();
      await within(5_000, 'the clients to stop', Promise.allSettled(clients));
    });

    const client = async (c: number): Promise<void> => {
      let conn: RespConnection | undefined;
      const drop = (): void => {
        if (conn === undefined) return;
        if (conn.error) {
          counts.errors++;
          problems.push(`client ${c}: ${conn.error.code ?? conn.error.message} on port ${conn.localPort}`);
        }
        if (conn.unexpected.length > 0) {
          counts.wrong += conn.unexpected.length;
          problems.push(`client ${c}: replies to nothing: ${JSON.stringify(conn.unexpected)}`);
        }
        conn.destroy();
        open.delete(conn);
        conn = undefined;
      };
      for (let n = 1; !stopping; n++) {
        await sleep(THINK_MS[0] + Math.random() * (THINK_MS[1] - THINK_MS[0]));
        // A FIN that reached us during the think time is handled in the poll phase: look after it.
        await nextCheck();
        if (stopping) break;
        requests++;
        const { payload, want } = request(c, n);
        const what = `client ${c} request ${n}`;
        for (let sends = 1; ; sends++) {
          if (sends > MAX_SENDS) {
            counts.failed++;
            problems.push(`${what}: unanswered after ${MAX_SENDS} sends`);
            break;
          }
          if (conn !== undefined && !conn.usable) {
            drop(); // the server closed it while idle: this request goes on a new connection
            counts.closedIdle++;
          }
          if (conn === undefined) {
            try {
              conn = await within(5_000, 'connect to haproxy', RespConnection.open(front!));
            } catch (err) {
              counts.errors++;
              problems.push(`${what}: cannot connect: ${err}`);
              await sleep(50);
              continue;
            }
            open.add(conn);
            clientPorts.add(conn.localPort);
            connections++;
          }
          counts.sent++;
          const before = conn.bytesSent;
          const sentAt = performance.now();
          try {
            const replies = await within(REQUEST_TIMEOUT_MS, 'a reply', conn.request(payload, want.length));
            if (JSON.stringify(replies) === JSON.stringify(want)) counts.answered++;
            else {
              counts.wrong++;
              problems.push(`${what}: got ${JSON.stringify(replies)}, want ${JSON.stringify(want)}`);
            }
            break;
          } catch (err) {
            if (!(err instanceof UnansweredError)) {
              counts.failed++;
              problems.push(`${what}: ${(err as Error).message}`);
              drop();
              break;
            }
            // Closed under the request: whether the server had read it is told by its log,
            // after the run. It never executed what it did not read: send it again.
            unanswered.push({
              what,
              clientPort: conn.localPort,
              before,
              closedAfterMs: performance.now() - sentAt,
            });
            counts.resent++;
            drop();
          }
        }
      }
      if (conn !== undefined) {
        await conn.end();
        drop();
      }
    };
    clients = Array.from({ length: CLIENTS }, (_, c) => client(c + 1));

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
      const upMs = await up(b.name, 5_000);
      restarts.push(
        `${b.name}: ${openAtSignal} open at SIGTERM, DOWN in HAProxy after ${Math.round(downMs)} ms, ` +
          `exited 0 after ${Math.round(exitMs)} ms, UP again ${Math.round(upMs)} ms after its restart`,
      );
    }
    await sleep(500);
    stopping = true;
    await within(MAX_SENDS * REQUEST_TIMEOUT_MS + 5_000, 'the clients to finish', Promise.all(clients));

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
    let raced = 0;
    let raceMs = 0;
    for (const u of unanswered) {
      const conns = seen.filter((s) => s.from.port === u.clientPort);
      const read = conns.length === 1 ? conns[0]!.read : undefined;
      if (read === u.before && u.closedAfterMs < RACE_MAX_MS) {
        raced++;
        raceMs = Math.max(raceMs, u.closedAfterMs);
      } else {
        counts.failed++;
        problems.push(
          `${u.what}: read but unanswered (port ${u.clientPort}: sent ${u.before} bytes before it, ` +
            `the server read ${read ?? `? (${conns.length} connections from that port)`}; ` +
            `closed ${Math.round(u.closedAfterMs)} ms after it was sent)`,
        );
      }
    }
    const perBackend = backends.map((b) => `${b.name} ${b.seen().length}`).join(', ');
    console.log(
      `haproxy e2e: ${requests} requests, sent ${counts.sent}, answered ${counts.answered}, ` +
        `retried ${counts.closedIdle + raced} (${counts.closedIdle} closed while idle, ${raced} raced ` +
        `the server's FIN, closed within ${raceMs.toFixed(1)} ms of sending), failed ${counts.failed}, ` +
        `wrong ${counts.wrong}, errors ${counts.errors}; ${connections} client connections; ` +
        `connections per backend: ${perBackend}; ${Math.round(performance.now() - began)} ms`,
    );
    for (const line of restarts) console.log(`haproxy e2e: ${line}`);
    for (const p of problems.slice(0, 20)) console.log(`haproxy e2e problem: ${p}`);

    // ---- what the backends saw: the clients' addresses, through PROXY v2 ----
    // HAProxy logs a session when it ends; every one has ended by now.
    let sessions = sessionLogs(haproxy.out.lines);
    for (const deadline = performance.now() + 3_000; sessions.length < seen.length; ) {
      if (performance.now() > deadline) break;
      await sleep(25);
      sessions = sessionLogs(haproxy.out.lines);
    }
    const info = await haproxyCommand(statsSocket, 'show info');
    const droppedLogs = Number(/^DroppedLogs: (\d+)$/m.exec(info)?.[1] ?? Number.NaN);
    let samePort = 0;
    const unlogged: string[] = [];
    for (const s of seen) {
      const where = `${s.backend} conn ${s.id} from ${s.from.address}:${s.from.port} via ${s.via.address}:${s.via.port}`;
      assert.equal(s.from.address, '127.0.0.1', where);
      assert.ok(clientPorts.has(s.from.port), `${where}: the remote port is a client socket's port`);
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
        const lines = haproxy.out.lines.filter((l) => l.includes(String(s.from.port)));
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
    assert.equal(seen.length, connections, 'each client connection reached exactly one backend');
    assert.ok(samePort <= 2, `the remote port differs from the socket's (${samePort} equal)`);

    assert.equal(counts.failed, 0, 'no request read but unanswered, none unanswered in the end');
    assert.equal(counts.wrong, 0, 'every reply right');
    assert.equal(counts.errors, 0, 'no client-visible error');
    assert.equal(counts.answered, requests, 'every request answered once');
    assert.equal(counts.sent, requests + counts.resent);
    assert.ok(counts.closedIdle > 0, 'the drains closed idle connections, and the clients moved on');
  });
});
