/**
 * Startup cost: importing tcpserver and serving plain TCP loads node:net's own modules, not
 * node:tls, node:http or node:dns; each is loaded the first time a server needs it (see
 * docs/architecture.md, "Startup cost"). Checked in a fresh process, from the list of built-in
 * modules Node has loaded (`process.moduleLoadList`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { makeCertificate } from './helpers.js';

const run = promisify(execFile);

// tsx loads node:crypto for its own cache, and compiles the first TypeScript file it meets with
// more of Node: a module with no imports is loaded first, so that what is counted is ours.
const script = `
await import('./src/symbols.ts');
const before = new Set(process.moduleLoadList);
const loaded = () => ['tls', 'http', 'dns/promises'].filter(
  (m) => !before.has('NativeModule ' + m) && process.moduleLoadList.includes('NativeModule ' + m),
);
const seen = {};
const { createServer, healthServer } = await import('./src/index.ts');
seen.imported = loaded();
const net = await import('node:net');
const srv = createServer({ network: 'tcp', address: '127.0.0.1:0', handler: async (_ctx, conn) => {
  await conn.write(await conn.read());
} });
const [bound] = await srv.listen();
const socket = net.connect(bound.port, '127.0.0.1');
socket.end('ping');
for await (const chunk of socket) seen.echo = String(chunk);
await srv.close();
seen.served = loaded();
const byName = createServer({ network: 'tcp4', address: 'localhost:0', handler: async () => {} });
await byName.listen();
await byName.close();
seen.byName = loaded();
const health = healthServer(srv, { address: '127.0.0.1:0' });
await health.listen();
await health.close();
seen.health = loaded();
const tlsServer = createServer({ network: 'tcp', address: '127.0.0.1:0', handler: async () => {},
  tls: { key: process.env.TLS_KEY, cert: process.env.TLS_CERT } });
await tlsServer.listen();
await tlsServer.close();
seen.tls = loaded();
process.stdout.write(JSON.stringify(seen));
`;

const pki = makeCertificate();

test('importing and serving plain TCP loads neither node:tls nor node:http nor node:dns; each loads when used', {
  skip: typeof pki === 'string' ? pki : false,
}, async () => {
  assert.ok(typeof pki !== 'string');
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    timeout: 60_000,
    env: { ...process.env, TLS_KEY: pki.key.toString(), TLS_CERT: pki.cert.toString() },
  });
  const seen = JSON.parse(stdout) as Record<string, unknown>;
  assert.deepEqual(seen.imported, [], 'import alone');
  assert.equal(seen.echo, 'ping', 'the plain server served');
  assert.deepEqual(seen.served, [], 'after serving plain TCP');
  assert.deepEqual(seen.byName, ['dns/promises'], 'a host name bound to one family is looked up');
  assert.deepEqual(seen.health, ['http', 'dns/promises'], 'the health endpoint loads node:http');
  assert.deepEqual(seen.tls, ['tls', 'http', 'dns/promises'], 'a TLS server loads node:tls');
});
