/** tcpserver/metrics: scrape a real prom-client registry's text output after real connections. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry, register } from 'prom-client';
import { InvalidOptionError, lineDecoder, type Server } from '../src/index.js';
import { instrument } from '../src/metrics.js';
import { connect, readBytes, startServer, waitForStats } from './helpers.js';

/** The value of one sample in Prometheus text format, or undefined if absent. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const escaped = `${name}${labels ? `{${labels}}` : ''}`.replace(/[{}()[\].+*?^$|\\]/g, '\\$&');
  const m = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** A handler: `busy` waits (active) until released; `boom` throws; anything else is echoed. */
function testHandler(): { handler: Parameters<typeof startServer>[0]['handler']; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  return {
    release,
    handler: async (_ctx, conn) => {
      for (;;) {
        const chunk = await conn.read();
        if (chunk === null) return;
        const text = chunk.toString();
        if (text === 'busy') {
          await conn.write('ok');
          await gate;
          return;
        }
        if (text === 'boom') throw new Error('boom');
        await conn.write(chunk);
      }
    },
  };
}

describe('instrument()', () => {
  it('exposes connections by state and counters that agree with stats()', async (t) => {
    const { handler, release } = testHandler();
    const { srv, port } = await startServer({ handler, maxConnections: 3 });
    const registry = new Registry();
    const metrics = instrument(srv, { registry });
    t.after(() => metrics.dispose());

    const idle = await connect(port);
    idle.write('hi');
    await readBytes(idle, 2);
    const busy = await connect(port);
    busy.write('busy');
    await readBytes(busy, 2);
    const failing = await connect(port);
    failing.write('boom');
    await waitForStats(srv, (s) => s.errors === 1 && s.closed === 1 && s.idle === 1);
    failing.destroy();

    let text = await registry.metrics();
    assert.equal(sample(text, 'tcpserver_connections', 'state="idle"'), 1);
    assert.equal(sample(text, 'tcpserver_connections', 'state="active"'), 1);
    assert.equal(sample(text, 'tcpserver_connections', 'state="new"'), 0);
    assert.equal(sample(text, 'tcpserver_connections', 'state="closing"'), 0);
    assert.equal(sample(text, 'tcpserver_ready'), 1);
    assert.equal(sample(text, 'tcpserver_connections_accepted_total'), 3);
    assert.equal(sample(text, 'tcpserver_handler_errors_total'), 1);
    assert.equal(sample(text, 'tcpserver_connections_closed_total'), 1);
    assert.equal(sample(text, 'tcpserver_connection_duration_seconds_count'), 1);
    assert.equal(sample(text, 'tcpserver_shutdown_duration_seconds_count'), 0);
    assert.match(text, /# TYPE tcpserver_connections gauge/);
    assert.match(text, /# TYPE tcpserver_connections_accepted_total counter/);
    assert.match(text, /# TYPE tcpserver_connection_duration_seconds histogram/);

    // Over maxConnections (3 open: idle, busy, and a third): the fourth is rejected.
    const third = await connect(port);
    await waitForStats(srv, (s) => s.open === 3);
    const fourth = await connect(port);
    fourth.on('error', () => {});
    await new Promise((r) => fourth.once('close', r));
    text = await registry.metrics();
    assert.equal(sample(text, 'tcpserver_connections_rejected_total'), 1);

    // Shutdown: the busy one is forced at a short deadline, the idle ones end gracefully.
    busy.on('error', () => {});
    const report = await srv.close({ timeout: 100 });
    release();
    for (const s of [idle, third, busy]) s.destroy();
    assert.equal(report.forced, 1);
    text = await registry.metrics();
    const stats = srv.stats();
    assert.equal(sample(text, 'tcpserver_ready'), 0);
    assert.equal(sample(text, 'tcpserver_connections_forced_total'), 1);
    assert.equal(sample(text, 'tcpserver_connections_closed_total'), stats.closed);
    assert.equal(sample(text, 'tcpserver_connections_accepted_total'), stats.accepted);
    assert.equal(sample(text, 'tcpserver_connection_duration_seconds_count'), stats.closed);
    assert.equal(sample(text, 'tcpserver_shutdown_duration_seconds_count'), 1);
    const shutdownSum = sample(text, 'tcpserver_shutdown_duration_seconds_sum')!;
    assert.ok(Math.abs(shutdownSum - report.durationMs / 1000) < 1e-9, 'the report duration, in seconds');
    for (const state of ['new', 'active', 'idle', 'closing']) {
      assert.equal(sample(text, 'tcpserver_connections', `state="${state}"`), 0);
    }
  });

  it('counts idle timeouts', async (t) => {
    const { srv, port } = await startServer({
      idleTimeout: 50,
      handler: async (_ctx, conn) => void (await conn.read()),
    });
    const registry = new Registry();
    t.after(instrument(srv, { registry }).dispose);
    const sock = await connect(port);
    await new Promise((r) => sock.once('close', r)); // ended by the server after 50 ms of silence
    await waitForStats(srv, (s) => s.idleTimeouts === 1 && s.open === 0);
    assert.equal(sample(await registry.metrics(), 'tcpserver_idle_timeouts_total'), 1);
    await srv.close();
  });

  it('exports every stats() counter, the read limits and descriptor exhaustion among them', async (t) => {
    const { srv, port } = await startServer({
      frameTimeout: 100,
      minDataRate: { bytesPerSecond: 1_000_000, grace: 50 },
      handler: async (_ctx, conn) =>
        void (await conn.readFrame(lineDecoder({ maxLength: 64 })).catch(() => {})),
    });
    const registry = new Registry();
    t.after(instrument(srv, { registry }).dispose);
    const sock = await connect(port);
    sock.write('half a line'); // under the rate after its 50 ms grace
    await new Promise((r) => sock.once('close', r));
    await waitForStats(srv, (s) => s.open === 0);
    const text = await registry.metrics();
    const stats = srv.stats();
    assert.equal(stats.minDataRateTimeouts, 1);
    const metricOf: Record<string, string> = {
      accepted: 'connections_accepted_total',
      rejected: 'connections_rejected_total',
      closed: 'connections_closed_total',
      forced: 'connections_forced_total',
      errors: 'handler_errors_total',
      idleTimeouts: 'idle_timeouts_total',
      frameTimeouts: 'frame_timeouts_total',
      minDataRateTimeouts: 'min_data_rate_timeouts_total',
      lingerTimeouts: 'linger_timeouts_total',
      fdExhaustions: 'fd_exhaustions_total',
    };
    const gauges = ['open', 'new', 'active', 'idle', 'closing', 'refused'];
    for (const [key, value] of Object.entries(stats)) {
      if (gauges.includes(key)) continue;
      assert.ok(metricOf[key], `stats().${key} has no metric`);
      assert.equal(sample(text, `tcpserver_${metricOf[key]}`), value, key);
    }
    await srv.close();
  });

  it('counts connections accepted before it was installed (counters mirror stats())', async (t) => {
    const { srv, port } = await startServer({ handler: () => {} });
    const sock = await connect(port);
    await new Promise((r) => sock.once('close', r));
    await waitForStats(srv, (s) => s.closed === 1);
    const registry = new Registry();
    t.after(instrument(srv, { registry, prefix: 'echo_' }).dispose);
    const text = await registry.metrics();
    assert.equal(sample(text, 'echo_connections_accepted_total'), 1);
    assert.equal(sample(text, 'echo_connections_closed_total'), 1);
    assert.equal(sample(text, 'tcpserver_connections_accepted_total'), undefined, 'prefix applies');
    await srv.close();
  });

  it('uses the global registry by default; dispose() unregisters and stops listening', async () => {
    const { srv } = await startServer({ handler: () => {} });
    const baseListeners = srv.listenerCount('connState');
    const metrics = instrument(srv);
    assert.equal(srv.listenerCount('connState'), baseListeners + 1);
    assert.ok(metrics.metricNames.includes('tcpserver_connections'));
    assert.match(await register.metrics(), /^tcpserver_ready 1$/m);
    metrics.dispose();
    metrics.dispose();
    assert.equal(srv.listenerCount('connState'), baseListeners);
    assert.doesNotMatch(await register.metrics(), /tcpserver_/);
    await srv.close();
  });

  it('refuses a second server under the same names, leaving the registry untouched', async () => {
    const a = await startServer({ handler: () => {} });
    const b = await startServer({ handler: () => {} });
    const registry = new Registry();
    const first = instrument(a.srv, { registry });
    const before = registry.getMetricsAsArray().length;
    assert.throws(() => instrument(b.srv, { registry }), InvalidOptionError);
    assert.equal(registry.getMetricsAsArray().length, before);
    assert.throws(() => instrument(b.srv, { registry, prefix: 'bad prefix' }), InvalidOptionError);
    // A value JSON cannot print is still named, never a TypeError (found by fuzzing).
    for (const prefix of [1n, Object.create(null)]) {
      assert.throws(
        () => instrument(b.srv, { registry, prefix }),
        (error: unknown) =>
          error instanceof InvalidOptionError &&
          /prefix (bigint|object) is not a valid/.test((error as Error).message),
      );
    }
    const second = instrument(b.srv, { registry, prefix: 'other_' });
    assert.match(await registry.metrics(), /^other_ready 1$/m);
    first.dispose();
    second.dispose();
    await Promise.all([a.srv.close(), b.srv.close()]);
  });

  it('accepts a real Server where its structural type is expected', () => {
    // Compile-time check (tsc runs over tests): a Server is a MetricsTarget.
    const check = (srv: Server): Parameters<typeof instrument>[0] => srv;
    assert.equal(typeof check, 'function');
  });
});
