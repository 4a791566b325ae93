/**
 * Every configuration shown in docs/ is checked here: the Kubernetes manifests are parsed and their
 * timing rules asserted, the systemd units go through `systemd-analyze verify`, the HAProxy
 * config through `haproxy -c` (and a real HAProxy run), and docs/observability.md must name every
 * event and diagnostics channel the source emits.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { healthServer } from '../src/health.js';
import { checkedBlocks, fencedBlocks } from './fixtures/ops-docs.js';
import { parseYamlDocuments } from './fixtures/ops-yaml.js';
import { connect, HAPROXY, PYYAML, readBytes, SYSTEMD_ANALYZE, skipWithout, startServer } from './helpers.js';

const run = promisify(execFile);

/** A port the kernel considers free right now (for tools that cannot bind port 0 themselves). */
async function freePort(): Promise<number> {
  const probe = net.createServer().listen({ host: '127.0.0.1', port: 0 });
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

/** Connects, retrying refusals while a freshly started process binds (bounded by `gaveUp` and 10 s). */
async function connectRetrying(port: number, gaveUp: () => boolean, why: () => string): Promise<net.Socket> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await connect(port);
    } catch (err) {
      if (gaveUp() || Date.now() > deadline) throw new Error(`cannot connect to ${port}: ${err}\n${why()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Runs `haproxy -c` on a configuration: valid, with no warning or alert. */
async function haproxyCheck(config: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tcpserver-haproxy-'));
  try {
    const file = join(dir, 'haproxy.cfg');
    writeFileSync(file, config);
    const { stdout, stderr } = await run('haproxy', ['-c', '-f', file]);
    const out = stdout + stderr;
    assert.match(out, /Configuration file is valid/);
    assert.doesNotMatch(out, /\[(WARNING|ALERT)\]/, out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type Obj = { [key: string]: unknown };
const obj = (v: unknown, what: string): Obj => {
  assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), `${what} must be a mapping`);
  return v as Obj;
};
const arr = (v: unknown, what: string): unknown[] => {
  assert.ok(Array.isArray(v), `${what} must be a sequence`);
  return v;
};

describe('docs/kubernetes.md', () => {
  const blocks = checkedBlocks('kubernetes.md').filter((b) => b.kind === 'kubernetes');

  it('has manifests to check', () => {
    assert.ok(blocks.length >= 2, 'expected the Deployment and the preStop example');
  });

  it('parses as YAML', () => {
    for (const b of blocks) {
      const docs = parseYamlDocuments(b.body);
      assert.ok(docs.length >= 1, `block at line ${b.line} is empty`);
    }
  });

  it('parses as PyYAML parses it', { skip: skipWithout(PYYAML) }, () => {
    for (const b of blocks) {
      const r = spawnSync(
        'python3',
        ['-c', 'import sys,yaml,json; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))'],
        { input: b.body, encoding: 'utf8' },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(
        parseYamlDocuments(b.body),
        JSON.parse(r.stdout),
        `block at line ${b.line}: parsers disagree`,
      );
    }
  });

  it('gives every pod a grace period longer than preStop + close delay + shutdown timeout', () => {
    let pods = 0;
    for (const b of blocks) {
      for (const doc of parseYamlDocuments(b.body)) {
        const d = obj(doc, 'manifest');
        let podSpec: Obj;
        if (d.kind === 'Deployment') {
          podSpec = obj(obj(obj(d.spec, 'spec').template, 'template').spec, 'pod spec');
        } else if (d.kind === 'Pod') {
          podSpec = obj(d.spec, 'pod spec');
        } else continue;
        pods++;
        const grace = podSpec.terminationGracePeriodSeconds;
        assert.equal(typeof grace, 'number', 'terminationGracePeriodSeconds must be set explicitly');
        for (const c of arr(podSpec.containers, 'containers')) {
          const container = obj(c, 'container');
          const env = new Map(
            arr(container.env, 'env').map((e) => [obj(e, 'env var').name, Number(obj(e, 'env var').value)]),
          );
          const drainMs = env.get('CLOSE_DELAY_MS');
          const shutdownMs = env.get('SHUTDOWN_TIMEOUT_MS');
          assert.ok(Number.isFinite(drainMs) && Number.isFinite(shutdownMs), 'both env vars are set');
          const preStop = (obj(container.lifecycle ?? {}, 'lifecycle').preStop ?? {}) as Obj;
          const sleep = (preStop.sleep ?? {}) as Obj;
          const preStopS = typeof sleep.seconds === 'number' ? sleep.seconds : 0;
          const needed = preStopS + (drainMs! + shutdownMs!) / 1000;
          assert.ok(
            (grace as number) > needed,
            `${d.kind}: terminationGracePeriodSeconds ${grace} must exceed ${needed} s ` +
              `(preStop ${preStopS} + drain ${drainMs} ms + shutdown ${shutdownMs} ms)`,
          );
          if (preStopS > 0) assert.equal(drainMs, 0, 'a preStop sleep and a close delay add up: use one');
        }
      }
    }
    assert.ok(pods >= 2);
  });

  it('probes /readyz for readiness and /livez for liveness on the health port', () => {
    const docs = blocks.flatMap((b) => parseYamlDocuments(b.body)).map((d) => obj(d, 'manifest'));
    const deployment = docs.find((d) => d.kind === 'Deployment');
    assert.ok(deployment, 'a Deployment is shown');
    const template = obj(obj(deployment.spec, 'spec').template, 'template');
    const container = obj(arr(obj(template.spec, 'pod spec').containers, 'containers')[0], 'container');
    const ports = new Map(
      arr(container.ports, 'ports').map((p) => [obj(p, 'port').name, obj(p, 'port').containerPort]),
    );
    const ready = obj(obj(container.readinessProbe, 'readinessProbe').httpGet, 'httpGet');
    const live = obj(obj(container.livenessProbe, 'livenessProbe').httpGet, 'httpGet');
    assert.equal(ready.path, '/readyz');
    assert.equal(live.path, '/livez');
    assert.equal(ports.get(ready.port), 8081);
    assert.equal(ports.get(live.port), 8081);
    assert.deepEqual(container.command, ['node', 'dist/server.js'], 'node runs directly, as PID 1');
    // The Service must select the Deployment's pods.
    const service = docs.find((d) => d.kind === 'Service');
    assert.ok(service);
    const labels = obj(obj(template.metadata, 'metadata').labels, 'labels');
    for (const [k, v] of Object.entries(obj(obj(service.spec, 'spec').selector, 'selector'))) {
      assert.equal(labels[k], v, `Service selector ${k}=${v} matches the pod labels`);
    }
  });
});

describe('docs/systemd.md', () => {
  const units = checkedBlocks('systemd.md').filter((b) => b.kind === 'systemd');

  it('shows a .socket and a .service unit, and a unit that upgrades in place on reload', () => {
    assert.deepEqual(units.map((u) => u.file).sort(), ['app.service', 'echo.service', 'echo.socket']);
    const app = units.find((u) => u.file === 'app.service')!.body;
    const pidFile = /^PIDFile=(\S+)$/m.exec(app)?.[1];
    assert.ok(pidFile, 'app.service has PIDFile=');
    assert.match(
      app,
      new RegExp(`^Environment=UPGRADE=1 PID_FILE=${pidFile}$`, 'm'),
      'the app writes that file',
    );
    assert.match(app, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  });

  it('stops the service later than the server gives up draining', () => {
    const service = units.find((u) => u.file === 'echo.service')!.body;
    const stopS = Number(/^TimeoutStopSec=(\d+)$/m.exec(service)?.[1]);
    const ts = fencedBlocks('systemd.md', 'ts').join('\n');
    const shutdownMs = Number(/shutdownTimeout: ([\d_]+)/.exec(ts)?.[1]?.replaceAll('_', ''));
    assert.ok(
      stopS > shutdownMs / 1000,
      `TimeoutStopSec=${stopS} must exceed shutdownTimeout ${shutdownMs} ms`,
    );
  });

  it('passes systemd-analyze verify with no warnings', { skip: skipWithout(SYSTEMD_ANALYZE) }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tcpserver-units-'));
    try {
      for (const u of units) writeFileSync(join(dir, u.file!), u.body);
      const files = readdirSync(dir).map((f) => join(dir, f));
      const r = spawnSync('systemd-analyze', ['verify', ...files], { encoding: 'utf8' });
      assert.equal(r.status, 0, `systemd-analyze verify failed:\n${r.stderr}`);
      assert.equal(r.stderr.trim(), '', `systemd-analyze verify warned:\n${r.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('docs/haproxy.md', () => {
  const blocks = checkedBlocks('haproxy.md');
  const cfg = blocks.find((b) => b.kind === 'haproxy')!;
  const envLine = blocks.find((b) => b.kind === 'haproxy-env')!;

  it('shows the config and how the servers run', () => {
    assert.ok(cfg, 'a haproxy block');
    assert.ok(envLine, 'a haproxy-env block');
  });

  it('marks a server down well within its close delay', () => {
    const drainMs = Number(/CLOSE_DELAY_MS=(\d+)/.exec(envLine.body)?.[1]);
    const check = /default-server check port (\d+) inter (\d+)s fall (\d+)/.exec(cfg.body);
    assert.ok(check, 'the backend health-checks every server');
    assert.equal(Number(check[1]), 8081, 'on the health port');
    const [inter, fall] = [Number(check[2]) * 1000, Number(check[3])];
    // Detection takes up to (fall + 1) intervals: `fall` failures plus the check in flight.
    assert.ok(drainMs > (fall + 1) * inter, `close delay ${drainMs} ms vs ${fall + 1} x ${inter} ms`);
    assert.match(cfg.body, /uri \/readyz/);
    assert.doesNotMatch(cfg.body, /^\s*[^#\n]*shutdown-sessions/m, 'must not cut sessions on mark-down');
  });

  it('passes haproxy -c with no warnings', { skip: skipWithout(HAPROXY) }, async () => {
    await haproxyCheck(cfg.body);
  });
  it('routes through a real HAProxy, which takes a not-ready server out of rotation', {
    skip: skipWithout(HAPROXY),
  }, async (t) => {
    const { srv, port } = await startServer({
      handler: async (_ctx, conn) => {
        for await (const chunk of conn) await conn.write(chunk);
      },
    });
    const health = healthServer(srv, { address: '127.0.0.1:0' });
    const { port: healthPort } = await health.listen();
    t.after(async () => {
      await srv.close({ timeout: 0 });
      await health.close();
    });
    const frontPort = await freePort();
    // The doc's config, moved to loopback: one server (ours), checks every 100 ms, fewer fds.
    let config = cfg.body
      .replace('bind :7000', `bind 127.0.0.1:${frontPort}`)
      .replace(/check port 8081 inter 1s/, `check port ${healthPort} inter 100ms`)
      .replace(/maxconn \d+/, 'maxconn 100')
      .replace(/^ {4}server app1 .*$/m, `    server app1 127.0.0.1:${port}`)
      .replace(/^ {4}server app[2-9] .*\n/gm, '');
    assert.notEqual(config, cfg.body);
    config += '\n';
    const dir = mkdtempSync(join(tmpdir(), 'tcpserver-haproxy-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'haproxy.cfg'), config);
    const haproxy = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    haproxy.stdout.setEncoding('utf8').on('data', (c: string) => {
      log += c;
    });
    haproxy.stderr.setEncoding('utf8').on('data', (c: string) => {
      log += c;
    });
    const exited = once(haproxy, 'exit');
    t.after(async () => {
      if (haproxy.exitCode === null && haproxy.signalCode === null) {
        haproxy.kill('SIGTERM');
        await exited;
      }
    });
    /** Resolves once HAProxy has logged `text` (it logs state changes on stdout and stderr). */
    const logged = (text: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (log.includes(text)) {
            haproxy.stdout.off('data', check);
            haproxy.stderr.off('data', check);
            resolve();
          }
        };
        haproxy.stdout.on('data', check);
        haproxy.stderr.on('data', check);
        void exited.then(() => reject(new Error(`haproxy exited:\n${log}`)));
        check();
      });

    // HAProxy starts with the server UP; wait until its frontend accepts.
    const first = await connectRetrying(
      frontPort,
      () => haproxy.exitCode !== null,
      () => log,
    );
    t.after(() => first.destroy());
    first.write('through haproxy');
    assert.equal((await readBytes(first, 15)).toString(), 'through haproxy');
    assert.equal(srv.stats().accepted, 1);

    srv.setReady(false); // what the close delay does
    await logged('echo_servers/app1 is DOWN');
    first.write('still served');
    assert.equal((await readBytes(first, 12)).toString(), 'still served', 'no session cut on mark-down');
    const refused = await connect(frontPort);
    await once(refused, 'close'); // no server left: HAProxy closes it without forwarding
    assert.equal(srv.stats().accepted, 1, 'HAProxy sent nothing new to the not-ready server');

    srv.setReady(true);
    await logged('echo_servers/app1 is UP');
    const again = await connect(frontPort);
    t.after(() => again.destroy());
    again.write('back');
    assert.equal((await readBytes(again, 4)).toString(), 'back');
    assert.equal(srv.stats().accepted, 2);
  });
});

describe('docs/proxy-protocol.md', () => {
  const cfg = checkedBlocks('proxy-protocol.md').find((b) => b.kind === 'haproxy');

  it('shows a complete HAProxy configuration with send-proxy-v2', () => {
    assert.ok(cfg, 'a checked haproxy block');
    assert.match(cfg.body, /send-proxy-v2/);
  });

  it('its HAProxy configuration passes haproxy -c with no warnings', {
    skip: skipWithout(HAPROXY),
  }, async () => {
    assert.ok(cfg, 'a checked haproxy block');
    await haproxyCheck(cfg.body);
  });
});

describe('docs/observability.md', () => {
  const doc = readFileSync(new URL('../docs/observability.md', import.meta.url), 'utf8');
  const srcDir = new URL('../src/', import.meta.url);
  // The core, and tcpserver/cluster's supervisor and workers.
  const sources = ['', 'cluster/'].flatMap((dir) =>
    readdirSync(new URL(dir, srcDir))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => ({ file: dir + f, text: readFileSync(new URL(dir + f, srcDir), 'utf8') })),
  );

  it('links every deployment guide', () => {
    for (const guide of ['kubernetes.md', 'systemd.md', 'haproxy.md']) {
      assert.ok(doc.includes(`(${guide})`), `docs/observability.md links ${guide}`);
    }
  });

  it('documents every event the server emits', () => {
    const events = new Set<string>();
    for (const { text } of sources) {
      for (const m of text.matchAll(/\bthis\.emit\('([A-Za-z]+)'/g)) events.add(m[1]!); // our own, not node:tls's
    }
    assert.ok(events.size >= 8, `found ${[...events].join(', ')}`);
    for (const e of events) assert.ok(doc.includes(`| \`'${e}'\` |`), `event '${e}' is in the events table`);
  });

  it('documents every diagnostics channel', () => {
    const channels = new Set<string>();
    for (const { text } of sources) {
      for (const m of text.matchAll(/\.channel\('([^']+)'\)/g)) channels.add(m[1]!);
    }
    assert.ok(channels.size >= 6, `found ${[...channels].join(', ')}`);
    for (const c of channels)
      assert.ok(doc.includes(`| \`${c}\` |`), `channel ${c} is in the channels table`);
  });

  it('documents every log line of the core, at its level', () => {
    let count = 0;
    for (const { file, text } of sources) {
      if (file === 'signals.ts') continue; // its lines are templates; documented by example
      for (const m of text.matchAll(/logger\??\.(debug|info|warn|error)\(\s*\{[^}]*\},\s*'([^']+)'/g)) {
        count++;
        const [, level, msg] = m;
        assert.ok(
          doc.includes(`| ${level} | \`${msg}\` |`),
          `${file}: "${msg}" at ${level} is in the log table`,
        );
      }
    }
    assert.ok(count >= 8, `found ${count} log calls`);
  });

  it('names every key of the channels export', async () => {
    const { channels } = await import('../src/diagnostics.js');
    for (const [key, channel] of Object.entries(channels))
      assert.ok(
        doc.includes(`| \`${String(channel.name)}\` | \`${key}\` |`),
        `channels.${key} is in the channels table`,
      );
  });

  it('lists every metric tcpserver/metrics registers', async () => {
    const { Registry } = await import('prom-client');
    const { instrument } = await import('../src/metrics.js');
    const { srv } = await startServer({ handler: () => {} });
    try {
      const registry = new Registry();
      instrument(srv, { registry });
      const names = (await registry.getMetricsAsJSON()).map((m) => m.name);
      assert.ok(names.length >= 10, `found ${names.join(', ')}`);
      for (const name of names) assert.ok(doc.includes(`| \`${name}`), `${name} is in the metrics table`);
    } finally {
      await srv.close();
    }
  });

  it('lists every stats() field', async () => {
    const { srv } = await startServer({ handler: () => {} });
    try {
      for (const key of Object.keys(srv.stats()))
        assert.match(doc, new RegExp(`\`${key}\``), `stats().${key}`);
    } finally {
      await srv.close();
    }
  });
});

describe('README.md', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const errorsSection = readme.slice(
    readme.indexOf('### Errors'),
    readme.indexOf('## Behind a load balancer'),
  );
  const sources = ['errors.ts', 'systemd.ts'].map((f) =>
    readFileSync(new URL(`../src/${f}`, import.meta.url), 'utf8'),
  );

  it('lists every error code and error class in its errors table', () => {
    const codes = new Set<string>();
    const classes = new Set<string>();
    for (const text of sources) {
      for (const m of text.matchAll(/'(ERR_[A-Z_]+)'/g)) codes.add(m[1]!);
      for (const m of text.matchAll(/class (\w+) extends TcpServerError/g)) classes.add(m[1]!);
    }
    assert.ok(codes.size >= 20 && classes.size >= 20, `found ${codes.size} codes, ${classes.size} classes`);
    for (const c of [...codes, ...classes])
      assert.ok(errorsSection.includes(`\`${c}\``), `${c} is in the README's errors table`);
  });
});
