/**
 * tcpserver/upgrade with real processes (test/fixtures/upgrade-app.ts): a TCP and a unix listener
 * handed to each new copy on SIGHUP, the PID file following the serving process, and every
 * failure path (a copy that exits at once, one never ready, two upgrades at once, the old process
 * dying first, a shutdown during an upgrade).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { InvalidOptionError } from '../src/index.js';
import { openFdCount } from '../src/proc-fds.js';
import { Upgrader } from '../src/upgrade.js';
import { freePorts, Proc, sleep, within } from './fixtures/haproxy-cluster.js';
import {
  askLine,
  failOnUnhandledRejections,
  isAlive,
  SYSTEMD_SOCKET_ACTIVATE,
  skipWithout,
} from './helpers.js';

failOnUnhandledRejections();

const FIXTURE = 'test/fixtures/upgrade-app.ts';
const procs: Proc[] = [];
const dirs: string[] = [];
const strays = new Set<number>();
after(async () => {
  await Promise.all(procs.map((p) => p.kill()));
  for (const pid of strays) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function waitFor(what: string, ms: number, check: () => boolean): Promise<void> {
  let waiting = true;
  try {
    await within(
      ms,
      what,
      (async () => {
        while (waiting && !check()) await sleep(20);
      })(),
    );
  } finally {
    waiting = false;
  }
}

/**
 * Waits for generation `pid` of `a` to be gone. A copy still running after its last line prints
 * what holds it (the fixture's `still alive` line), so the failure shows it with the app's output.
 */
async function waitGone(a: App, pid: number, what: string, ms: number): Promise<void> {
  try {
    await waitFor(what, ms, () => !isAlive(pid));
  } catch (error) {
    let state = 'gone';
    try {
      state = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^State:.*$/m)?.[0] ?? state;
    } catch {}
    throw new Error(`${(error as Error).message} (${state}); the app said:\n${a.proc.out.text()}`);
  }
}

interface App {
  proc: Proc;
  port: number;
  unixPath: string;
  pidFile: string;
  /** The pid in the PID file. */
  pid(): number;
}

async function app(env: Record<string, string> = {}): Promise<App> {
  const [port] = await freePorts(1);
  const dir = mkdtempSync(join(tmpdir(), 'tcpserver-upgrade-'));
  dirs.push(dir);
  const unixPath = join(dir, 'app.sock');
  const pidFile = join(dir, 'app.pid');
  const proc = new Proc(
    'upgrade-app',
    process.execPath,
    ['--import', 'tsx', FIXTURE],
    { ...process.env, ADDRESS: `127.0.0.1:${port}`, UNIX_PATH: unixPath, PID_FILE: pidFile, ...env },
    true, // every generation in one process group, killed together after the tests
  );
  procs.push(proc);
  await proc.line(/^gen 0 pid \d+ ready$/, 15_000);
  const pid = (): number => Number(readFileSync(pidFile, 'utf8').trim());
  return { proc, port: port!, unixPath, pidFile, pid };
}

interface Prober {
  /** Resolves once no probe is in flight; none starts until `resume()`. */
  pause(): Promise<void>;
  resume(): void;
  stop(): Promise<{ attempts: number; failures: string[]; slowest: number }>;
}

/** Connects in a loop to both listeners until stopped; counts attempts and failures by code. */
function prober(port: number, unixPath: string): Prober {
  let stopping = false;
  let paused: Promise<void> | undefined;
  let release = (): void => {};
  let inFlight = 0;
  let attempts = 0;
  let slowest = 0;
  const failures: string[] = [];
  const loop = async (to: number | string): Promise<void> => {
    while (!stopping) {
      if (paused) await paused;
      const n = ++attempts;
      inFlight++;
      let connected = false;
      const began = performance.now();
      try {
        const answer = await within(
          15_000,
          'an echo',
          askLine(to, `probe${n}`, () => {
            connected = true;
          }),
        );
        if (answer !== `probe${n}`) failures.push(`wrong answer ${answer} to probe${n}`);
        slowest = Math.max(slowest, performance.now() - began);
      } catch (err) {
        failures.push(
          `${typeof to === 'number' ? 'tcp' : 'unix'}: ${(err as NodeJS.ErrnoException).code ?? err} ` +
            `(${connected ? 'connected' : 'not connected'}; began ${Math.round(began)} ms)`,
        );
      } finally {
        inFlight--;
      }
      await sleep(2);
    }
  };
  const loops = [loop(port), loop(port), loop(unixPath)];
  const resume = (): void => {
    paused = undefined;
    release();
  };
  return {
    pause: async () => {
      paused = new Promise((r) => {
        release = r;
      });
      while (inFlight > 0) await sleep(5);
    },
    resume,
    stop: async () => {
      stopping = true;
      resume();
      await Promise.all(loops);
      return { attempts, failures, slowest };
    },
  };
}

/** Until the app says it holds only the connection asking (the fixture's `open` line), within 10 s. */
async function quiet(port: number, what: string): Promise<void> {
  let answer = '';
  let asking = true;
  try {
    await within(
      10_000,
      what,
      (async () => {
        while (asking && (answer = await askLine(port, 'open')) !== 'open 1') await sleep(20);
      })(),
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}: the app still answers "${answer}"`);
  } finally {
    asking = false;
  }
}

/** What `pid`'s descriptors are, counted by kind (`socket`, `pipe`, `anon_inode:[eventpoll]`, a path). */
function fdKinds(pid: number): string {
  const kinds = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let kind = 'gone';
    try {
      kind = readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/:\[\d+\]$/, '');
    } catch {}
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return [...kinds].map(([kind, n]) => `${n} ${kind}`).join(', ');
}

/** The descriptors of `pid` once the count holds still for 200 ms (closed probes leave the server). */
async function settledFdCount(pid: number): Promise<number> {
  let last = openFdCount(pid);
  for (let stable = 0; stable < 4; ) {
    await sleep(50);
    const now = openFdCount(pid);
    stable = now === last ? stable + 1 : 0;
    last = now;
  }
  return last;
}

describe('upgrade: listeners handed to a new copy of the process', () => {
  test('10 back-to-back upgrades: nothing refused, the PID file follows, descriptors stay flat, the socket file stays', {
    timeout: 90_000,
  }, async (t) => {
    const a = await app();
    const first = a.pid();
    assert.equal(first, a.proc.proc.pid);
    const probe = prober(a.port, a.unixPath);
    // A failure below must stop the probes too: left running they keep this file's process alive.
    t.after(() => probe.stop());
    const counts: number[] = [];
    const kinds: string[] = [];
    const pids = [first];
    for (let g = 1; g <= 10; g++) {
      const old = a.pid();
      process.kill(old, 'SIGHUP');
      const ready = await a.proc.line(new RegExp(`^gen ${g} pid (\\d+) ready$`), 15_000);
      const pid = Number(ready[1]);
      strays.add(pid);
      pids.push(pid);
      // Its own last line, then its exit (the drain ends as its last connection goes).
      await a.proc.line(new RegExp(`^gen ${g - 1} pid ${old} exit 0$`), 15_000);
      await waitGone(a, old, `generation ${g - 1} to exit`, 10_000);
      assert.equal(a.pid(), pid, 'the PID file names the serving process');
      assert.ok(existsSync(a.unixPath), 'the unix socket file is still there');
      await probe.pause();
      // The probes' last connections are gone from the server (it holds only the asking one)
      // before its descriptors are counted.
      await quiet(a.port, `generation ${g} to hold no probe`);
      counts.push(await settledFdCount(pid));
      kinds.push(fdKinds(pid));
      probe.resume();
    }
    const { attempts, failures, slowest } = await probe.stop();
    console.log(
      `upgrade: 10 upgrades, ${attempts} connections during them, ${failures.length} failed, ` +
        `slowest answered in ${Math.round(slowest)} ms; descriptors per generation: ${counts.join(', ')}`,
    );
    assert.deepEqual(
      failures,
      [],
      `at ${Math.round(performance.now())} ms; the app said:\n${a.proc.out.text()}`,
    );
    assert.ok(attempts > 100, `the probes ran (${attempts})`);
    assert.equal(
      new Set(counts).size,
      1,
      `descriptors flat across generations: ${counts.join(', ')}; by kind:\n${kinds.join('\n')}`,
    );
    for (let g = 0; g < 10; g++)
      assert.match(a.proc.out.text(), new RegExp(`^gen ${g} pid ${pids[g]} exit 0$`, 'm'));
    const last = a.pid();
    process.kill(last, 'SIGTERM');
    await a.proc.line(new RegExp(`^gen 10 pid ${last} exit 0$`), 10_000);
    await waitGone(a, last, 'the last generation to exit', 5_000);
    assert.equal(existsSync(a.unixPath), false, 'the last process removes the socket file');
    assert.equal(existsSync(a.pidFile), false, 'and its PID file');
  });

  test('a new copy that exits at once is reported; the old process keeps serving', {
    timeout: 30_000,
  }, async () => {
    const a = await app({ FAIL_FROM_GENERATION: '1', FAIL_MODE: 'crash' });
    a.proc.proc.kill('SIGHUP');
    const failed = await a.proc.line(/^upg: (upgrade to generation 1 failed: .*)$/, 10_000);
    assert.match(
      failed[1]!,
      /the new process \(pid \d+\) exited before it was ready \(code 3\); this process keeps serving/,
    );
    assert.equal(a.pid(), a.proc.proc.pid);
    assert.equal(await askLine(a.port, 'still'), 'still');
    assert.equal(await askLine(a.unixPath, 'unix'), 'unix');
    a.proc.proc.kill('SIGTERM');
    assert.equal((await within(10_000, 'exit', a.proc.exited)).code, 0);
  });

  test('a new copy never ready is killed at readyTimeout; the old process keeps serving', {
    timeout: 30_000,
  }, async () => {
    const a = await app({ FAIL_FROM_GENERATION: '1', FAIL_MODE: 'hang', READY_TIMEOUT_MS: '4000' });
    a.proc.proc.kill('SIGHUP');
    const child = Number((await a.proc.line(/^gen 1 pid (\d+) listening$/, 10_000))[1]);
    strays.add(child);
    const failed = await a.proc.line(/^upg: (upgrade to generation 1 failed: .*)$/, 10_000);
    assert.match(
      failed[1]!,
      /was not ready within readyTimeout \(4000 ms\): killed; this process keeps serving/,
    );
    await waitFor('the new copy to be gone', 5_000, () => !isAlive(child));
    assert.equal(await askLine(a.port, 'still'), 'still');
    // It can try again (and fail the same way): one failure does not wedge the upgrader.
    a.proc.proc.kill('SIGHUP');
    await a.proc.line(/^gen 1 pid (?!${child})\d+ listening$/, 10_000);
    a.proc.proc.kill('SIGTERM');
    assert.equal((await within(15_000, 'exit', a.proc.exited)).code, 0);
  });

  test('two upgrades requested together: the second is refused, the first completes', {
    timeout: 30_000,
  }, async () => {
    const a = await app({ READY_DELAY_MS: '500' });
    a.proc.proc.kill('SIGHUP');
    await a.proc.line(/^upg: upgrading: starting generation 1$/, 5_000);
    a.proc.proc.kill('SIGHUP');
    await a.proc.line(/^upg: upgrade refused: an upgrade is already in progress/, 5_000);
    const child = Number((await a.proc.line(/^gen 1 pid (\d+) ready$/, 10_000))[1]);
    strays.add(child);
    // The new copy shares the old one's stdout, so the old one's exit is seen by its line.
    await a.proc.line(new RegExp(`^gen 0 pid ${a.proc.proc.pid} exit 0$`), 10_000);
    assert.equal(a.pid(), child);
    assert.ok(!a.proc.out.text().includes('generation 2'), 'only one new copy');
    process.kill(child, 'SIGTERM');
    await a.proc.line(new RegExp(`^gen 1 pid ${child} exit 0$`), 10_000);
  });

  test('the old process dies before the new one is ready: the new one serves on alone', {
    timeout: 30_000,
  }, async () => {
    const a = await app({ READY_DELAY_MS: '1500' });
    const parent = a.proc.proc.pid!;
    a.proc.proc.kill('SIGHUP');
    const child = Number((await a.proc.line(/^gen 1 pid (\d+) listening$/, 10_000))[1]);
    strays.add(child);
    process.kill(parent, 'SIGKILL');
    await a.proc.line(/^upg: the process that started this one is gone: serving on alone$/, 10_000);
    await a.proc.line(new RegExp(`^gen 1 pid ${child} ready$`), 5_000);
    assert.equal(a.pid(), child, 'the PID file names the survivor');
    assert.equal(await askLine(a.port, 'alone'), 'alone');
    assert.equal(await askLine(a.unixPath, 'alone'), 'alone');
    process.kill(child, 'SIGTERM');
    await a.proc.line(new RegExp(`^gen 1 pid ${child} exit 0$`), 10_000);
  });

  test('an old generation busy past its deadline never blocks the next upgrade; it is forced at drainTimeout', {
    timeout: 30_000,
  }, async () => {
    const a = await app({ DRAIN_TIMEOUT_MS: '3000' });
    const gen0 = a.proc.proc.pid!;
    const sock = net.connect({ host: '127.0.0.1', port: a.port });
    sock.on('error', () => {});
    sock.write('hold\n');
    const [held] = (await once(sock, 'data')) as [Buffer];
    assert.equal(held.toString(), `held by ${gen0}\n`);
    process.kill(gen0, 'SIGHUP');
    const gen1 = Number((await a.proc.line(/^gen 1 pid (\d+) ready$/, 10_000))[1]);
    strays.add(gen1);
    assert.ok(isAlive(gen0), 'generation 0 still drains its busy connection');
    process.kill(gen1, 'SIGHUP');
    const gen2 = Number((await a.proc.line(/^gen 2 pid (\d+) ready$/, 10_000))[1]);
    strays.add(gen2);
    assert.ok(isAlive(gen0), 'and generation 2 did not wait for it');
    await a.proc.line(new RegExp(`^gen 0 pid ${gen0} exit 1$`), 10_000); // forced at its deadline
    process.kill(gen2, 'SIGTERM');
    await a.proc.line(new RegExp(`^gen 2 pid ${gen2} exit 0$`), 10_000);
  });

  test('a new copy told to stop before it is ready does not take over; the old process keeps serving', {
    timeout: 30_000,
  }, async () => {
    const a = await app({ READY_DELAY_MS: '2000' });
    a.proc.proc.kill('SIGHUP');
    const child = Number((await a.proc.line(/^gen 1 pid (\d+) listening$/, 10_000))[1]);
    strays.add(child);
    process.kill(child, 'SIGTERM'); // while it waits READY_DELAY_MS to say ready
    const failed = await a.proc.line(/^upg: (upgrade to generation 1 failed: .*)$/, 10_000);
    assert.match(
      failed[1]!,
      new RegExp(
        `the new process \\(pid ${child}\\) is closing: it will not serve; this process keeps serving`,
      ),
      a.proc.out.text(),
    );
    // Not killed: it drains what it accepted and exits on its own.
    await a.proc.line(new RegExp(`^gen 1 pid ${child} exit 0$`), 10_000);
    assert.match(a.proc.out.text(), /not ready: a server is closing, so this process does not take over/);
    assert.equal(a.pid(), a.proc.proc.pid);
    // Its shutdown left the socket file, which the old process still serves.
    assert.ok(existsSync(a.unixPath), 'the unix socket file is still there');
    assert.equal(await askLine(a.port, 'still'), 'still');
    assert.equal(await askLine(a.unixPath, 'unix'), 'unix');
    a.proc.proc.kill('SIGTERM');
    assert.equal((await within(10_000, 'exit', a.proc.exited)).code, 0);
    assert.equal(existsSync(a.unixPath), false, 'the old process removes its socket file');
  });

  test('a new copy without the unix server: the old process removes that socket file as it stops accepting', {
    timeout: 30_000,
  }, async () => {
    const a = await app({ NO_UNIX_FROM_GENERATION: '1' });
    const gen0 = a.proc.proc.pid!;
    const sock = net.connect(a.unixPath);
    sock.on('error', () => {});
    sock.write('hold\n');
    const [held] = (await once(sock, 'data')) as [Buffer];
    assert.equal(held.toString(), `held by ${gen0}\n`);
    a.proc.proc.kill('SIGHUP');
    const gen1 = Number((await a.proc.line(/^gen 1 pid (\d+) ready$/, 10_000))[1]);
    strays.add(gen1);
    assert.match(a.proc.out.text(), /no server is named unix: closing the listener handed over/);
    await a.proc.line(/^upg: generation 1 has no server unix: this process removes its socket file/, 10_000);
    // Draining its busy unix connection, generation 0 keeps the file until its shutdown's step 1
    // (stop accepting) has run, then removes it: nobody serves that path any more.
    await waitFor('the socket file to be removed', 10_000, () => !existsSync(a.unixPath));
    sock.destroy();
    await a.proc.line(new RegExp(`^gen 0 pid ${gen0} exit 0$`), 10_000);
    assert.equal(await askLine(a.port, 'tcp'), 'tcp', 'generation 1 serves the TCP listener');
    process.kill(gen1, 'SIGTERM');
    await a.proc.line(new RegExp(`^gen 1 pid ${gen1} exit 0$`), 10_000);
  });

  test('SIGTERM during an upgrade kills the new copy and drains; exit 0', { timeout: 30_000 }, async () => {
    const a = await app({ READY_DELAY_MS: '3000' });
    a.proc.proc.kill('SIGHUP');
    const child = Number((await a.proc.line(/^gen 1 pid (\d+) listening$/, 10_000))[1]);
    strays.add(child);
    a.proc.proc.kill('SIGTERM');
    assert.equal((await within(10_000, 'exit', a.proc.exited)).code, 0);
    await waitFor('the new copy to be gone', 5_000, () => !isAlive(child));
    assert.match(a.proc.out.text(), /shutting down during an upgrade: killing the new process/);
  });

  /**
   * The app under systemd-socket-activate, which holds a unix socket and starts the app at its
   * first connection: the app adopts it by name as an upgraded copy does, and finds peers
   * already waiting on it.
   */
  function socketActivated(extra: Record<string, string> = {}): { proc: Proc; unixPath: string } {
    const dir = mkdtempSync(join(tmpdir(), 'tcpserver-upgrade-'));
    dirs.push(dir);
    const unixPath = join(dir, 'app.sock');
    const env = { ADDRESS: '127.0.0.1:0', UNIX_PATH: unixPath, PID_FILE: join(dir, 'app.pid'), ...extra };
    const proc = new Proc(
      'socket-activated upgrade-app',
      'systemd-socket-activate',
      // It passes the launched process only the variables named with -E.
      [
        '-l',
        unixPath,
        '--fdname=unix',
        ...[...Object.keys(env), 'PATH'].flatMap((name) => ['-E', name]),
        process.execPath,
        '--import',
        'tsx',
        FIXTURE,
      ],
      { ...process.env, ...env },
    );
    procs.push(proc);
    return { proc, unixPath };
  }

  const earlyPeers = { skip: skipWithout(SYSTEMD_SOCKET_ACTIVATE), timeout: 30_000 };

  test(
    'connections queued on a handed-over unix socket before the process listens are all served',
    earlyPeers,
    async () => {
      const { proc, unixPath } = socketActivated();
      await proc.line(/Listening on/, 10_000);
      const answers = await Promise.all(
        Array.from({ length: 5 }, (_, i) =>
          within(15_000, `an answer to early${i}`, askLine(unixPath, `early${i}`)),
        ),
      );
      assert.deepEqual(answers, ['early0', 'early1', 'early2', 'early3', 'early4']);
      await proc.line(/^gen 0 pid \d+ ready$/, 15_000);
      proc.proc.kill('SIGTERM');
      assert.equal((await within(10_000, 'exit', proc.exited)).code, 0, proc.out.text());
      // The socket and its file are systemd's (here systemd-socket-activate's): left in place.
      assert.ok(existsSync(unixPath), 'the socket file made by systemd is left');
    },
  );

  test(
    'close() while binding turns away the connections queued on a handed-over socket',
    earlyPeers,
    async () => {
      const { proc, unixPath } = socketActivated({ CLOSE_WHILE_BINDING: '1', BUSY_THREADPOOL: '1' });
      await proc.line(/Listening on/, 10_000);
      // Each peer is closed without an answer (an end or a reset), none left waiting.
      const answers = await Promise.all(
        Array.from({ length: 5 }, (_, i) =>
          within(
            15_000,
            `early${i} to be closed`,
            askLine(unixPath, `early${i}`).catch((error: NodeJS.ErrnoException) => error.code),
          ),
        ),
      );
      for (const answer of answers)
        assert.ok(['', 'ECONNRESET', 'EPIPE'].includes(answer!), `answered ${answer}`);
      const [, rejected] = await proc.line(
        /^gen 0 pid \d+ closed while binding: rejected (\d+), open 0, exit 0$/,
        15_000,
      );
      // The five were accepted while the adopted listener bound (the lstat of its file), so the
      // server rejected them itself rather than the kernel resetting them with the listener.
      assert.equal(Number(rejected), 5, proc.out.text());
      assert.equal((await within(10_000, 'exit', proc.exited)).code, 0, proc.out.text());
    },
  );

  test('options and misuse: typed errors', () => {
    assert.throws(() => new Upgrader({ readyTimeout: -1 }, {}), InvalidOptionError);
    assert.throws(() => new Upgrader({ pidFile: '' }, {}), /pidFile must be a file path/);
    assert.throws(
      () => new Upgrader({ signal: 'HUP' as NodeJS.Signals }, {}),
      /signal must be a signal name/,
    );
    const upg = new Upgrader({}, {});
    assert.equal(upg.generation, 0);
    assert.equal(upg.inherited, false);
    return assert.rejects(upg.ready(), /needs listen\(\) first/);
  });
});
