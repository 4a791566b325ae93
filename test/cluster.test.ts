/**
 * tcpserver/cluster: a supervisor and its workers as real processes. Most tests run
 * test/fixtures/cluster-app.ts (supervise + shutdownOnSignals in the primary, serveWorker in the
 * workers) and send it real signals; the API tests run the supervisor in this process, forking the
 * same fixture as its workers.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import cluster from 'node:cluster';
import { once } from 'node:events';
import { existsSync, lstatSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  NotSupervisedError,
  RestartInProgressError,
  ReusePortUnsupportedError,
  type Supervisor,
  serveWorker,
  supervise,
} from '../src/cluster/index.js';
import { createServer, InvalidOptionError } from '../src/index.js';
import { freePorts, Proc, sleep, within } from './fixtures/haproxy-cluster.js';
import { askLine, failOnUnhandledRejections, isAlive, SS, skipWithout } from './helpers.js';

failOnUnhandledRejections();

const FIXTURE = 'test/fixtures/cluster-app.ts';
const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
const REUSE_PORT_SUPPORTED = process.platform === 'linux' && (major > 22 || (major === 22 && minor >= 12));

const procs: Proc[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.kill()));
});

async function app(env: Record<string, string>): Promise<{ proc: Proc; port: number }> {
  const [port] = await freePorts(1);
  const proc = new Proc('cluster-app', process.execPath, ['--import', 'tsx', FIXTURE], {
    ...process.env,
    ADDRESS: `127.0.0.1:${port}`,
    ...env,
  });
  procs.push(proc);
  return { proc, port: port! };
}

/** The workers that said they serve, in order of appearance. */
function served(proc: Proc): Array<{ slot: number; generation: number; pid: number }> {
  return proc.out.lines.flatMap((l) => {
    const m = /^worker (\d+) gen (\d+) pid (\d+) serving$/.exec(l);
    return m ? [{ slot: Number(m[1]), generation: Number(m[2]), pid: Number(m[3]) }] : [];
  });
}

const servingPids = (proc: Proc): number[] => served(proc).map((w) => w.pid);

describe('supervise() and serveWorker() in real processes', () => {
  test('starts every worker, serves, and drains them all on SIGTERM (exit 0)', {
    timeout: 30_000,
  }, async () => {
    const { proc, port } = await app({ WORKERS: '2' });
    await proc.line(/^sup: serving /, 15_000);
    assert.equal(servingPids(proc).length, 2);
    assert.equal(await askLine(port, 'hello'), 'hello');
    // Round-robin: connections reach both workers.
    const holders = new Set<string>();
    const held: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const sock = net.connect({ host: '127.0.0.1', port });
      held.push(sock);
      sock.write('hold\n');
      const [chunk] = (await once(sock, 'data')) as [Buffer];
      holders.add(chunk.toString().trim());
    }
    assert.equal(holders.size, 2, `both workers took connections: ${[...holders]}`);
    for (const s of held) s.destroy();
    proc.proc.kill('SIGTERM');
    const { code } = await within(10_000, 'exit', proc.exited);
    assert.equal(code, 0, proc.out.text());
    assert.match(proc.out.text(), /sup: shutdown complete: \d+ graceful, 0 forced/);
    for (const pid of servingPids(proc)) assert.equal(isAlive(pid), false, `worker ${pid} is gone`);
  });

  test('workers ignore SIGINT sent to the whole process group; the primary drains them', {
    timeout: 30_000,
  }, async () => {
    const { proc, port } = await app({ WORKERS: '2' });
    await proc.line(/^sup: serving /, 15_000);
    for (const pid of servingPids(proc)) process.kill(pid, 'SIGINT');
    await sleep(300);
    assert.equal(await askLine(port, 'still'), 'still');
    assert.ok(servingPids(proc).every(isAlive), 'a worker survives a SIGINT of its own');
    proc.proc.kill('SIGINT');
    const { code } = await within(10_000, 'exit', proc.exited);
    assert.equal(code, 0, proc.out.text());
  });

  test('a crashed worker is replaced, after a backoff that doubles per recent crash', {
    timeout: 30_000,
  }, async () => {
    const { proc, port } = await app({ WORKERS: '2', RESTART_DELAY_MS: '200' });
    await proc.line(/^sup: serving /, 15_000);
    const { pid: first, slot } = served(proc)[0]!;
    process.kill(first, 'SIGKILL');
    const crash = await proc.line(/^sup: crash report (.*)$/, 5_000);
    assert.deepEqual(
      { ...JSON.parse(crash[1]!), reason: undefined },
      { slot, code: null, signal: 'SIGKILL', reason: undefined, restartInMs: 200 },
    );
    await within(
      5_000,
      'a third worker',
      (async () => {
        while (servingPids(proc).length < 3) await sleep(20);
      })(),
    );
    const second = servingPids(proc)[2]!;
    process.kill(second, 'SIGKILL');
    const crashes = async (): Promise<number[]> => {
      for (;;) {
        const found = proc.out.lines.filter((l) => l.startsWith('sup: crash report'));
        if (found.length >= 2)
          return found.map((l) => JSON.parse(l.slice('sup: crash report '.length)).restartInMs);
        await sleep(20);
      }
    };
    assert.deepEqual(await within(5_000, 'second crash', crashes()), [200, 400]);
    await within(
      5_000,
      'a fourth worker',
      (async () => {
        while (servingPids(proc).length < 4) await sleep(20);
      })(),
    );
    assert.equal(await askLine(port, 'again'), 'again');
    proc.proc.kill('SIGTERM');
    assert.equal((await within(10_000, 'exit', proc.exited)).code, 0, proc.out.text());
  });

  test('a crash loop stops the supervisor with a reason and exit code 1; it never spins', {
    timeout: 30_000,
  }, async () => {
    const began = performance.now();
    const { proc } = await app({
      WORKERS: '2',
      FAIL_FROM_GENERATION: '0',
      FAIL_MODE: 'crash',
      MAX_CRASHES: '4',
      RESTART_DELAY_MS: '100',
    });
    const { code } = await within(20_000, 'exit', proc.exited);
    assert.equal(code, 1, proc.out.text());
    const text = proc.out.text();
    assert.match(text, /sup: not serving: ERR_CRASH_LOOP 4 worker crashes within 60000 ms/);
    assert.match(text, /before it was ready \(code 3\)/);
    // Backoff: 2 crashes at once, then 100 and 200 ms (+ fork time): not a spin.
    const delays = proc.out.lines
      .filter((l) => l.startsWith('sup: crash report'))
      .map((l) => JSON.parse(l.slice('sup: crash report '.length)).restartInMs);
    assert.deepEqual(delays, [100, 200, 400]);
    assert.ok(performance.now() - began > 300, 'the replacements waited');
  });

  test('a unix socket: the workers share one, a stale file is replaced, a rolling restart keeps it, the last close removes it', {
    timeout: 60_000,
  }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'tcpserver-cluster-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'app.sock');
    // A socket file left by a dead process: bound, never listening, its owner gone.
    execFileSync('python3', [
      '-c',
      'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
      path,
    ]);
    assert.ok(lstatSync(path).isSocket());
    const { proc } = await app({ WORKERS: '2', NETWORK: 'unix', ADDRESS: path });
    await proc.line(/^sup: serving /, 15_000);
    const holders = async (): Promise<Set<string>> => {
      const seen = new Set<string>();
      const held: net.Socket[] = [];
      for (let i = 0; i < 4; i++) {
        const sock = net.connect(path);
        held.push(sock);
        sock.write('hold\n');
        const [chunk] = (await once(sock, 'data')) as [Buffer];
        seen.add(chunk.toString().trim());
      }
      for (const s of held) s.destroy();
      return seen;
    };
    const before = await holders();
    assert.equal(before.size, 2, `both workers took connections: ${[...before]}\n${proc.out.text()}`);
    proc.proc.kill('SIGHUP');
    await proc.line(/^sup: restart report /, 15_000);
    const next = await holders();
    assert.equal(next.size, 2, `both new workers took connections: ${[...next]}\n${proc.out.text()}`);
    assert.equal(
      [...next].filter((h) => before.has(h)).length,
      0,
      `served by the new workers only\n${proc.out.text()}`,
    );
    proc.proc.kill('SIGTERM');
    assert.equal((await within(10_000, 'exit', proc.exited)).code, 0, proc.out.text());
    assert.equal(existsSync(path), false, 'the socket file is removed with the last worker');
  });

  test('SIGHUP rolls every worker; each new one is ready before its old one stops', {
    timeout: 30_000,
  }, async () => {
    const { proc, port } = await app({ WORKERS: '2' });
    await proc.line(/^sup: serving /, 15_000);
    const old = served(proc)
      .sort((a, b) => a.slot - b.slot)
      .map((w) => w.pid);
    proc.proc.kill('SIGHUP');
    const report = JSON.parse((await proc.line(/^sup: restart report (.*)$/, 15_000))[1]!);
    assert.equal(report.generation, 1);
    assert.equal(report.replaced, 2);
    const lines = proc.out.lines;
    // Order: new worker of slot 1 ready, then the old one of slot 1 stopped, then slot 2.
    const at = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    const ready1 = at(/^sup: worker 1 \(pid \d+, generation 1\) ready/);
    const stop1 = at(new RegExp(`^sup: worker 1 \\(pid ${old[0]}, generation 0\\) stopped`));
    const ready2 = at(/^sup: worker 2 \(pid \d+, generation 1\) ready/);
    const stop2 = at(new RegExp(`^sup: worker 2 \\(pid ${old[1]}, generation 0\\) stopped`));
    assert.ok(ready1 >= 0 && ready1 < stop1 && ready2 >= 0 && ready2 < stop2, lines.join('\n'));
    assert.ok(
      old.every((pid) => !isAlive(pid)),
      'the old workers are gone',
    );
    assert.equal(await askLine(port, 'new'), 'new');
    proc.proc.kill('SIGTERM');
    assert.equal((await within(10_000, 'exit', proc.exited)).code, 0, proc.out.text());
  });

  for (const mode of ['crash', 'hang'] as const) {
    test(`a new worker that ${mode === 'crash' ? 'crashes at start' : 'is never ready'} is killed; the old ones keep serving`, {
      timeout: 30_000,
    }, async () => {
      const { proc, port } = await app({
        WORKERS: '2',
        FAIL_FROM_GENERATION: '1',
        FAIL_MODE: mode,
        READY_TIMEOUT_MS: '4000',
      });
      await proc.line(/^sup: serving /, 15_000);
      const old = servingPids(proc);
      proc.proc.kill('SIGHUP');
      const failed = await proc.line(/^sup: restart failed (\S+) (.*)$/, 10_000);
      assert.equal(failed[1], 'ERR_RESTART_FAILED');
      assert.match(
        failed[2]!,
        mode === 'crash'
          ? /after 0 of 2 worker\(s\): .*exited before it was ready \(code 3\)/
          : /not ready within readyTimeout \(4000 ms\)/,
      );
      assert.ok(old.every(isAlive), 'the old workers still run');
      for (let i = 0; i < 4; i++) assert.equal(await askLine(port, `ok${i}`), `ok${i}`);
      assert.ok(!proc.out.text().includes('generation 0) stopped'), 'no old worker was stopped');
      proc.proc.kill('SIGTERM');
      assert.equal((await within(10_000, 'exit', proc.exited)).code, 0, proc.out.text());
    });
  }

  test('SIGTERM during a rolling restart drains every worker, old and new, and exits 0', {
    timeout: 30_000,
  }, async () => {
    const { proc, port } = await app({ WORKERS: '2' });
    await proc.line(/^sup: serving /, 15_000);
    const client = net.connect({ host: '127.0.0.1', port });
    await once(client, 'connect');
    proc.proc.kill('SIGHUP');
    await proc.line(/^sup: rolling restart to generation 1/, 5_000);
    proc.proc.kill('SIGTERM');
    const { code } = await within(15_000, 'exit', proc.exited);
    assert.equal(code, 0, proc.out.text());
    assert.match(proc.out.text(), /sup: shutdown complete: 1 graceful, 0 forced/);
    for (const pid of servingPids(proc)) assert.equal(isAlive(pid), false, `worker ${pid} is gone`);
    client.destroy();
  });

  test('a second SIGTERM forces the busy connections; exit 1', { timeout: 30_000 }, async () => {
    const { proc, port } = await app({ WORKERS: '2', DRAIN_TIMEOUT_MS: '60000' });
    await proc.line(/^sup: serving /, 15_000);
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.on('error', () => {});
    const closed = once(sock, 'close');
    sock.write('hold\n');
    await once(sock, 'data');
    // Let the worker's stats reach the primary (every second) so the log counts it.
    await sleep(1_200);
    proc.proc.kill('SIGTERM');
    await proc.line(/^sup: shutting down 2 worker\(s\)/, 5_000);
    await sleep(300);
    assert.ok(proc.running, 'a busy connection keeps the drain going');
    proc.proc.kill('SIGTERM');
    const { code } = await within(10_000, 'exit', proc.exited);
    assert.equal(code, 1, proc.out.text());
    assert.match(proc.out.text(), /sup: shutdown complete: 0 graceful, 1 forced/);
    await within(5_000, 'the forced connection to close', closed);
  });

  test('reusePort: every worker binds the port itself, or a typed error where unsupported', {
    skip: REUSE_PORT_SUPPORTED && skipWithout(SS), // ss lists who owns each listening socket
    timeout: 30_000,
  }, async () => {
    const { proc, port } = await app({ WORKERS: '2', REUSE_PORT: '1' });
    if (!REUSE_PORT_SUPPORTED) {
      const line = await proc.line(/^sup: not serving: (\S+) (.*)$/, 15_000);
      assert.equal(line[1], 'ERR_REUSEPORT_UNSUPPORTED');
      assert.match(
        line[2]!,
        new RegExp(`Node.js ${process.version.replace(/\./g, '\\.')}.*needs Node.js >= 22\\.12`),
      );
      assert.equal((await within(10_000, 'exit', proc.exited)).code, 1);
      return;
    }
    await proc.line(/^sup: serving /, 15_000);
    const listeners = execFileSync('ss', ['-ltnpH', `sport = :${port}`], { encoding: 'utf8' });
    const owners = [...listeners.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])).sort();
    assert.deepEqual(owners, servingPids(proc).sort(), `each worker owns a listening socket:\n${listeners}`);
    assert.ok(!owners.includes(proc.proc.pid!), 'the primary has none');
    assert.equal(await askLine(port, 'rp'), 'rp');
    proc.proc.kill('SIGHUP');
    await proc.line(/^sup: restart report /, 15_000);
    assert.equal(await askLine(port, 'rp2'), 'rp2');
    proc.proc.kill('SIGTERM');
    assert.equal((await within(10_000, 'exit', proc.exited)).code, 0, proc.out.text());
  });
});

describe('the supervisor API, in this process', () => {
  const sups: Supervisor[] = [];
  after(async () => {
    await Promise.all(sups.map((s) => s.close({ timeout: 0 })));
  });

  const start = async (
    env: Record<string, string> = {},
    workers = 2,
  ): Promise<{ sup: Supervisor; port: number }> => {
    const [port] = await freePorts(1);
    const sup = supervise({
      workers,
      exec: FIXTURE,
      execArgv: ['--import', 'tsx'],
      env: { ADDRESS: `127.0.0.1:${port}`, ...env },
      restartSignal: null,
      exitOnCrashLoop: false,
      readyTimeout: 10_000,
    });
    sups.push(sup);
    return { sup, port: port! };
  };

  test('ready, stats() summed over the workers, workers(), close() report', { timeout: 30_000 }, async () => {
    const { sup, port } = await start();
    assert.equal(sup.ready, false);
    await sup.serving;
    assert.equal(sup.ready, true);
    assert.deepEqual(
      sup.workers().map((w) => [w.slot, w.generation, w.state]),
      [
        [1, 0, 'ready'],
        [2, 0, 'ready'],
      ],
    );
    for (let i = 0; i < 6; i++) assert.equal(await askLine(port, `n${i}`), `n${i}`);
    await within(
      5_000,
      'stats to arrive',
      (async () => {
        while (sup.stats().closed < 6) await sleep(50);
      })(),
    );
    const stats = sup.stats();
    assert.equal(stats.accepted, 6);
    assert.equal(stats.open, 0);
    const readyEvents: boolean[] = [];
    sup.on('ready', (r: boolean) => readyEvents.push(r));
    sup.setReady(false);
    assert.equal(sup.ready, false);
    sup.setReady(true);
    const restart = sup.restart();
    await assert.rejects(sup.restart(), RestartInProgressError);
    const report = await restart;
    assert.equal(report.replaced, 2);
    assert.equal(sup.generation, 1);
    assert.deepEqual(
      sup.workers().map((w) => w.generation),
      [1, 1],
    );
    assert.equal(sup.stats().accepted, 6, 'counters of gone workers are kept');
    const final = await sup.close();
    assert.deepEqual({ ...final, durationMs: 0 }, { graceful: 0, forced: 0, durationMs: 0 });
    assert.equal(sup.isStopped, true);
    assert.deepEqual(readyEvents, [false, true, false]);
    await assert.rejects(sup.restart(), { code: 'ERR_SERVER_CLOSED' });
  });

  test('options are checked: typed errors naming the bad value', () => {
    for (const [options, re] of [
      [{ workers: 0 }, /workers must be a positive integer, got 0/],
      [{ surge: 0 }, /surge must be a positive integer/],
      [{ readyTimeout: -1 }, /readyTimeout/],
      [{ drainTimeout: 'x' }, /drainTimeout/],
      [{ reusePort: 'yes' }, /reusePort must be a boolean/],
      [{ restartSignal: 'HUP' }, /restartSignal must be a signal name/],
    ] as const) {
      assert.throws(
        () => supervise(options as never),
        (err: Error) => err instanceof InvalidOptionError && re.test(err.message),
      );
    }
  });

  test('serveWorker() outside a supervised worker throws ERR_NOT_SUPERVISED', async () => {
    assert.equal(cluster.isPrimary, true);
    const srv = createServer({ address: '127.0.0.1:0', handler: () => {} });
    await assert.rejects(serveWorker(srv), NotSupervisedError);
    assert.equal(srv.isServing, false);
  });

  test('reusePort on a server: ERR_REUSEPORT_UNSUPPORTED where it cannot work, shared port where it can', async () => {
    assert.throws(
      () => createServer({ network: 'unix', address: '/tmp/x.sock', reusePort: true, handler: () => {} }),
      /reusePort needs a TCP network/,
    );
    const a = createServer({ address: '127.0.0.1:0', reusePort: true, handler: () => {} });
    if (!REUSE_PORT_SUPPORTED) {
      await assert.rejects(a.listen(), ReusePortUnsupportedError);
      return;
    }
    const [bound] = await a.listen();
    assert.ok(bound !== undefined && 'port' in bound);
    const b = createServer({ address: `127.0.0.1:${bound.port}`, reusePort: true, handler: () => {} });
    await b.listen();
    await Promise.all([a.close(), b.close()]);
  });
});
