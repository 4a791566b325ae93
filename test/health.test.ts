/** healthServer: /livez and /readyz through a server's whole lifecycle, with a real HTTP client. */
import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, it } from 'node:test';
import { healthServer } from '../src/health.js';
import { createServer, InvalidAddressError, InvalidOptionError, ListenError } from '../src/index.js';
import { connect, startServer, waitForStats } from './helpers.js';

interface Reply {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

function request(port: number, path: string, method = 'GET', agent?: http.Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

const probe = async (port: number): Promise<{ live: number; ready: number }> => ({
  live: (await request(port, '/livez')).status,
  ready: (await request(port, '/readyz')).status,
});

describe('healthServer', () => {
  it('follows the lifecycle: created, serving, unready, draining, stopped', async (t) => {
    let release!: () => void;
    const busy = new Promise<void>((r) => {
      release = r;
    });
    const srv = createServer({
      network: 'tcp4',
      address: '127.0.0.1:0',
      handler: async (_ctx, conn) => {
        await conn.read();
        await busy; // active until the test releases it
      },
    });
    const health = healthServer(srv, { address: '127.0.0.1:0' });
    t.after(() => health.close());
    const { port } = await health.listen();
    assert.deepEqual(health.address(), { host: '127.0.0.1', port });

    assert.deepEqual(await probe(port), { live: 200, ready: 503 }, 'created, not listening yet');
    const [bound] = await srv.listen();
    assert.deepEqual(await probe(port), { live: 200, ready: 200 }, 'serving');
    const ok = await request(port, '/readyz');
    assert.equal(ok.body, 'ok\n');
    assert.equal(ok.headers['cache-control'], 'no-store');

    srv.setReady(false);
    const unready = await request(port, '/readyz');
    assert.equal(unready.status, 503);
    assert.equal(unready.body, 'not ready\n');
    assert.equal((await request(port, '/livez')).status, 200);
    srv.setReady(true);
    assert.equal((await request(port, '/readyz')).status, 200);

    const sock = await connect(bound && bound.network !== 'unix' ? bound.port : 0);
    t.after(() => sock.destroy());
    sock.write('x');
    await waitForStats(srv, (s) => s.active === 1);
    const closing = srv.close({ timeout: 60_000 });
    assert.deepEqual(await probe(port), { live: 200, ready: 503 }, 'draining a busy connection');
    release();
    const report = await closing;
    assert.equal(report.graceful, 1);
    const stopped = await request(port, '/livez');
    assert.equal(stopped.status, 503);
    assert.equal(stopped.body, 'stopped\n');
    assert.equal((await request(port, '/readyz')).status, 503);
  });

  it('with several servers, is ready only when every one is', async (t) => {
    const a = await startServer({ handler: () => {} });
    const b = await startServer({ handler: () => {} });
    const health = healthServer([a.srv, b.srv], { address: '127.0.0.1:0' });
    t.after(() => health.close());
    const { port } = await health.listen();
    assert.deepEqual(await probe(port), { live: 200, ready: 200 });
    b.srv.setReady(false);
    assert.deepEqual(await probe(port), { live: 200, ready: 503 });
    await a.srv.close();
    assert.deepEqual(await probe(port), { live: 503, ready: 503 }, 'one stopped: not live');
    await b.srv.close();
  });

  it('answers HEAD without a body, 404 elsewhere, 405 to other methods; custom paths work', async (t) => {
    const { srv } = await startServer({ handler: () => {} });
    t.after(() => srv.close());
    const health = healthServer(srv, { address: '127.0.0.1:0', livePath: '/healthz', readyPath: '/ready' });
    t.after(() => health.close());
    const { port } = await health.listen();
    const head = await request(port, '/ready', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers['content-length'], '3');
    assert.equal((await request(port, '/healthz?verbose')).status, 200, 'query strings are ignored');
    assert.equal((await request(port, '/readyz')).status, 404);
    assert.equal((await request(port, '/')).status, 404);
    const post = await request(port, '/ready', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
  });

  it('close() also ends keep-alive probe connections', async () => {
    const { srv } = await startServer({ handler: () => {} });
    const health = healthServer(srv, { address: '127.0.0.1:0' });
    const { port } = await health.listen();
    const agent = new http.Agent({ keepAlive: true });
    assert.equal((await request(port, '/readyz', 'GET', agent)).status, 200);
    await health.close(); // would wait for the kept-alive socket without closeAllConnections()
    await health.close(); // idempotent
    assert.equal(health.server.listening, false);
    agent.destroy();
    await srv.close();
  });

  it('refuses bad options with typed errors', async () => {
    const { srv } = await startServer({ handler: () => {} });
    try {
      assert.throws(() => healthServer(srv, { address: '8081' }), InvalidAddressError);
      assert.throws(() => healthServer(srv, { address: ':99999' }), InvalidAddressError);
      assert.throws(() => healthServer(srv, { readyPath: 'readyz' }), InvalidOptionError);
      assert.throws(() => healthServer([], {}), InvalidOptionError);
      const first = healthServer(srv, { address: '127.0.0.1:0' });
      const { port } = await first.listen();
      const second = healthServer(srv, { address: `127.0.0.1:${port}` });
      await assert.rejects(second.listen(), (err: unknown) => {
        assert.ok(err instanceof ListenError);
        assert.equal(err.code, 'EADDRINUSE');
        return true;
      });
      await first.close();
    } finally {
      await srv.close();
    }
  });
});
