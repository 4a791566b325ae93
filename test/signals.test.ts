/**
 * shutdownOnSignals with real signals: most tests send them to a real child process
 * (test/fixtures/ops-signal-server.ts) and check its exit code, its sockets and its JSON log lines.
 * Its pm2 side (the 'ready' and 'shutdown' messages, the IPC channel let go) runs in a child with an
 * IPC channel (test/fixtures/pm2-ipc-server.ts), started the way pm2 starts an app.
 */
import assert from 'node:assert/strict';
import type { StdioOptions } from 'node:child_process';
import { once } from 'node:events';
import type net from 'node:net';
import { describe, it } from 'node:test';
import { InvalidOptionError } from '../src/index.js';
import { shutdownOnSignals } from '../src/signals.js';
import { Child, type LogLine } from './fixtures/ops-child.js';
import { collect, connect, readBytes, startServer, waitForStats } from './helpers.js';

const FIXTURE = 'ops-signal-server.ts';

async function echo(sock: net.Socket, text: string): Promise<void> {
  sock.write(`${text}\n`);
  assert.equal((await readBytes(sock, text.length + 1)).toString(), `${text}\n`);
}

async function status(port: number, path: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  await res.arrayBuffer();
  return res.status;
}

function finalReport(child: Child): LogLine {
  const [line] = child.all(/^shutdown complete/);
  assert.ok(line, `no final report in:\n${child.lines.map((l) => JSON.stringify(l)).join('\n')}`);
  return line;
}

/** Resolves when the socket closes; 'error' (a reset) is recorded instead of thrown. */
function closeOf(sock: net.Socket): Promise<{ error: NodeJS.ErrnoException | undefined }> {
  let error: NodeJS.ErrnoException | undefined;
  sock.on('error', (e) => {
    error = e;
  });
  return once(sock, 'close').then(() => ({ error }));
}

describe('shutdownOnSignals in a child process', () => {
  it('drains on SIGTERM and exits 0 after a clean drain; the idle client gets a FIN', async (t) => {
    const child = Child.fixture(FIXTURE, { EXIT: '1', TIMEOUT: '30000' });
    t.after(() => child.cleanup());
    const ready = await child.waitFor('fixture ready');
    const sock = await connect(ready.port as number);
    t.after(() => sock.destroy());
    await echo(sock, 'hello');
    const received = collect(sock); // rejects on a reset: the close must be a FIN
    child.kill('SIGTERM');
    assert.equal((await received).length, 0);
    const { code } = await child.exited;
    assert.equal(code, 0, child.output);
    const report = finalReport(child);
    assert.equal(report.graceful, 1);
    assert.equal(report.forced, 0);
    const start = await child.waitFor(/^received SIGTERM/);
    assert.equal(start.open, 1);
    assert.ok(child.all('Send SIGTERM again to force').length === 1);
  });

  it('a second SIGINT forces a busy connection at once and the process exits 1', async (t) => {
    const child = Child.fixture(FIXTURE, { EXIT: '1', TIMEOUT: '60000', PROGRESS: '50' });
    t.after(() => child.cleanup());
    const ready = await child.waitFor('fixture ready');
    const sock = await connect(ready.port as number);
    t.after(() => sock.destroy());
    sock.write('busy\n');
    assert.equal((await readBytes(sock, 8)).toString(), 'working\n');
    const closed = closeOf(sock);

    child.kill('SIGINT');
    await child.waitFor('Press Ctrl-C again to force');
    // The drain reports progress: one connection left, and how long until the 60 s deadline.
    const progress = await child.waitFor(/^shutting down: waiting for 1 connection/);
    assert.equal(progress.open, 1);
    assert.ok((progress.remainingMs as number) > 0 && (progress.remainingMs as number) <= 60_000);

    child.kill('SIGINT');
    const { code } = await child.exited;
    assert.equal(code, 1, child.output);
    await closed;
    const report = finalReport(child);
    assert.equal(report.forced, 1);
    assert.equal(report.graceful, 0);
    assert.ok((report.durationMs as number) < 60_000, 'forced at once, not at the deadline');
    await child.waitFor(/^received SIGINT again, forcing/);
  });

  it('during the close delay it keeps serving (old and new connections) but /readyz is 503', async (t) => {
    const child = Child.fixture(FIXTURE, { EXIT: '1', CLOSE_DELAY: '60000', TIMEOUT: '60000' });
    t.after(() => child.cleanup());
    const ready = await child.waitFor('fixture ready');
    const [port, healthPort] = [ready.port as number, ready.healthPort as number];
    assert.equal(await status(healthPort, '/readyz'), 200);
    const old = await connect(port);
    t.after(() => old.destroy());
    await echo(old, 'before');

    child.kill('SIGTERM');
    await child.waitFor(/^received SIGTERM/);
    assert.equal(await status(healthPort, '/readyz'), 503, 'not ready during the close delay');
    assert.equal(await status(healthPort, '/livez'), 200, 'still alive');
    const late = await connect(port);
    t.after(() => late.destroy());
    await echo(late, 'accepted during the close delay');
    await echo(old, 'still served');
    assert.equal(child.all(/^close delay over/).length, 0);
    assert.equal(child.all('shutting down').length, 0, 'the server has not started closing');

    const closed = [closeOf(old), closeOf(late)];
    child.kill('SIGTERM'); // the second signal skips the rest of the delay and forces
    const { code } = await child.exited;
    assert.equal(code, 1, child.output);
    await Promise.all(closed);
    assert.equal(finalReport(child).forced, 2);
    assert.equal(child.all(/^close delay over/).length, 0);
  });

  it('closes the listener only after the close delay, logging progress meanwhile', async (t) => {
    const closeDelay = 300;
    const child = Child.fixture(FIXTURE, { EXIT: '1', CLOSE_DELAY: String(closeDelay), PROGRESS: '100' });
    t.after(() => child.cleanup());
    const ready = await child.waitFor('fixture ready');
    const sock = await connect(ready.port as number);
    t.after(() => sock.destroy());
    await echo(sock, 'hi');
    const received = collect(sock);
    child.kill('SIGTERM');
    assert.equal((await received).length, 0, 'FIN after the delay');
    const { code } = await child.exited;
    assert.equal(code, 0, child.output);

    const start = await child.waitFor(/^received SIGTERM/);
    const over = await child.waitFor(/^close delay over/);
    const closing = await child.waitFor('shutting down');
    // Timers count from the loop's cached clock, which may lag Date.now() by a few ms.
    assert.ok((over.time as number) - (start.time as number) >= closeDelay - 20);
    assert.ok(
      child.lines.indexOf(closing) > child.lines.indexOf(over),
      `listener closed after the delay:\n${child.lines.map((l) => JSON.stringify(l)).join('\n')}`,
    );
    const progress = child.all(/^draining: not ready/);
    assert.ok(progress.length >= 1, 'a progress line during the delay');
    assert.equal(progress[0]!.ready, false);
    assert.equal(progress[0]!.open, 1);
    assert.equal(finalReport(child).graceful, 1);
  });

  it('exit: true waits for the logger to flush before exiting, so no line is lost or reordered', async (t) => {
    const child = Child.fixture(FIXTURE, { EXIT: '1', SLOW_FLUSH: '200' });
    t.after(() => child.cleanup());
    await child.waitFor('fixture ready');
    child.kill('SIGTERM');
    const { code } = await child.exited;
    assert.equal(code, 0, child.output);
    const complete = child.lines.findIndex((l) => /^shutdown complete/.test(l.msg ?? ''));
    const flushed = child.lines.findIndex((l) => l.msg === 'flushed');
    assert.ok(complete >= 0 && flushed > complete, `flushed after the report:\n${child.output}`);
  });

  it('without exit: true it never exits by itself, and it removes its listeners', async (t) => {
    const child = Child.fixture(FIXTURE, { TIMEOUT: '60000' });
    t.after(() => child.cleanup());
    const ready = await child.waitFor('fixture ready');
    const before = ready.before as Record<string, number>;
    const during = ready.during as Record<string, number>;
    assert.deepEqual(during, { SIGTERM: before.SIGTERM! + 1, SIGINT: before.SIGINT! + 1 });
    const sock = await connect(ready.port as number);
    t.after(() => sock.destroy());
    sock.write('busy\n');
    await readBytes(sock, 8);
    const closed = closeOf(sock);
    child.kill('SIGTERM');
    await child.waitFor('Send SIGTERM again to force');
    child.kill('SIGTERM');
    const { code } = await child.exited;
    await closed;
    // The fixture sets 42 once `done` resolved: the helper itself did not exit (it would use 1).
    assert.equal(code, 42, child.output);
    const done = await child.waitFor('fixture done');
    assert.deepEqual(done.after, before, 'listeners removed once the server stopped');
    assert.equal((done.report as { forced: number }).forced, 1);
  });
});

describe('shutdownOnSignals in process', () => {
  it('rejects bad options with InvalidOptionError', async () => {
    const { srv } = await startServer({ handler: () => {} });
    const before = ['SIGTERM', 'SIGINT'].map((signal) => process.listenerCount(signal));
    try {
      for (const bad of [
        { closeDelay: -1 },
        { timeout: Number.NaN },
        { signals: [] },
        { progressInterval: -5 },
        // This process has no IPC channel: there is nobody to tell 'ready', nobody to send 'shutdown'.
        { readyMessage: true },
        { shutdownMessage: true },
        { unrefChannel: true },
        { readyMessage: 'yes' as unknown as boolean },
      ]) {
        assert.throws(() => shutdownOnSignals(srv, bad), InvalidOptionError, JSON.stringify(bad));
      }
      assert.deepEqual(
        ['SIGTERM', 'SIGINT'].map((signal) => process.listenerCount(signal)),
        before,
        'a refused call leaves no listener behind',
      );
    } finally {
      await srv.close();
    }
  });

  it('dispose() removes the listeners at once; done still follows the server', async () => {
    const { srv } = await startServer({ handler: () => {} });
    const base = process.listenerCount('SIGWINCH');
    const handle = shutdownOnSignals(srv, { signals: ['SIGWINCH'] });
    assert.equal(process.listenerCount('SIGWINCH'), base + 1);
    handle.dispose();
    handle.dispose();
    assert.equal(process.listenerCount('SIGWINCH'), base);
    const report = await srv.close();
    assert.deepEqual(await handle.done, report);
  });

  // SIGWINCH: ignored by default (a stray one is harmless), and, unlike SIGUSR2, it never makes
  // Node write a diagnostic report (report.*.json) where that is enabled.
  it('a real SIGWINCH to this process: not ready first, serving during the delay, a second one closes', async () => {
    const { srv, port } = await startServer({ handler: async (_ctx, conn) => void (await conn.read()) });
    const base = process.listenerCount('SIGWINCH');
    const events: string[] = [];
    srv.on('ready', (r: boolean) => events.push(`ready:${r}`));
    srv.on('shutdown', () => events.push('shutdown'));
    const { done } = shutdownOnSignals(srv, { signals: ['SIGWINCH'], closeDelay: 60_000, timeout: 5000 });
    const notReady = once(srv, 'ready');
    process.kill(process.pid, 'SIGWINCH');
    await notReady;
    assert.equal(srv.ready, false);
    assert.equal(srv.isServing, true, 'still serving during the close delay');
    const sock = await connect(port);
    await waitForStats(srv, (s) => s.accepted === 1);
    sock.end();
    await waitForStats(srv, (s) => s.closed === 1);
    process.kill(process.pid, 'SIGWINCH'); // cuts the 60 s delay short; nothing is left to force
    const report = await done;
    assert.deepEqual(events, ['ready:false', 'shutdown']);
    assert.equal(report.forced, 0);
    assert.equal(process.listenerCount('SIGWINCH'), base);
  });
});

const IPC_FIXTURE = 'pm2-ipc-server.ts';
/** What pm2 puts in an app's environment that tells it apart (with the IPC channel). */
const UNDER_PM2 = { pm_id: '0' };
const WITH_IPC: { stdio: StdioOptions } = { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] };

type FixtureMessage = { fixture: string; [key: string]: unknown };

/** Every message the child sent over its IPC channel, in order; `next` waits for a fixture one. */
function inbox(child: Child): { messages: unknown[]; next(name: string): Promise<FixtureMessage> } {
  const messages: unknown[] = [];
  const waiters: Array<{ name: string; resolve: (m: FixtureMessage) => void }> = [];
  child.proc.on('message', (m: unknown) => {
    messages.push(m);
    for (const w of waiters.filter((w) => w.name === (m as FixtureMessage).fixture)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(m as FixtureMessage);
    }
  });
  const next = (name: string): Promise<FixtureMessage> => {
    const seen = messages.find((m) => (m as FixtureMessage).fixture === name);
    if (seen) return Promise.resolve(seen as FixtureMessage);
    return new Promise((resolve, reject) => {
      waiters.push({ name, resolve });
      void child.exited.then(({ code, signal }) =>
        reject(new Error(`child exited (code ${code}, signal ${signal}) before '${name}':\n${child.output}`)),
      );
    });
  };
  return { messages, next };
}

/** The 'message' listener counts the fixture reports once shutdownOnSignals is installed. */
async function installed(box: ReturnType<typeof inbox>): Promise<{ before: number; now: number }> {
  return (await box.next('installed')).listeners as { before: number; now: number };
}

/** The messages, with the fixture's own shown by name: `['installed', 'listening', 'ready', ...]`. */
function names(messages: readonly unknown[]): string[] {
  return messages.map((m) => (typeof m === 'string' ? m : String((m as FixtureMessage).fixture)));
}

function ipcChild(
  t: { after(fn: () => void): void },
  env: NodeJS.ProcessEnv,
): { child: Child; box: ReturnType<typeof inbox> } {
  const child = Child.fixture(IPC_FIXTURE, env, WITH_IPC);
  t.after(() => child.cleanup());
  return { child, box: inbox(child) };
}

describe('shutdownOnSignals under pm2 (a child with an IPC channel)', { timeout: 60_000 }, () => {
  it("sends 'ready' to the parent once the server serves, not before", { timeout: 20_000 }, async (t) => {
    const { child, box } = ipcChild(t, { ...UNDER_PM2, EXIT: '1' });
    const settled = await box.next('settled');
    // The server's 'listening' event fires once every listener is bound, and before `serving` resolves.
    assert.deepEqual(names(box.messages), ['installed', 'listening', 'ready', 'settled']);
    await child.waitFor("serving: sent 'ready' to the parent process");
    const { port } = await box.next('listening');
    const sock = await connect(port as number);
    t.after(() => sock.destroy());
    await echo(sock, 'served');
    sock.end();
    child.kill('SIGINT');
    assert.equal((await child.exited).code, 0, child.output);
    assert.equal(settled.listeners, (await installed(box)).before + 1, "the 'shutdown' listener");
  });

  it("sends no 'ready' outside pm2 unless asked, nor under pm2 when told not to", {
    timeout: 20_000,
  }, async (t) => {
    const runs = [
      { env: {}, ready: false },
      { env: { READY_MESSAGE: '1' }, ready: true },
      { env: { ...UNDER_PM2, READY_MESSAGE: '0' }, ready: false },
    ];
    for (const run of runs) {
      const { child, box } = ipcChild(t, { ...run.env, EXIT: '1' });
      await box.next('settled');
      const want = run.ready
        ? ['installed', 'listening', 'ready', 'settled']
        : ['installed', 'listening', 'settled'];
      // 'settled' follows every callback of `serving`: a 'ready' would have come before it.
      assert.deepEqual(names(box.messages), want, JSON.stringify(run.env));
      child.kill('SIGTERM');
      assert.equal((await child.exited).code, 0, child.output);
    }
  });

  it("drains on pm2's 'shutdown' message, then lets the IPC channel go: the process exits by itself", {
    timeout: 20_000,
  }, async (t) => {
    // APP_LISTENER: a 'message' listener of the app's own, as pm2's container has, keeps the
    // channel referenced: only the unref lets the process exit without exit: true.
    const { child, box } = ipcChild(t, { ...UNDER_PM2, APP_LISTENER: '1' });
    const { port } = await box.next('listening');
    const listeners = await installed(box);
    assert.equal(listeners.now, listeners.before, 'no listener before the server serves');
    assert.equal((await box.next('settled')).listeners, listeners.before + 1);
    const sock = await connect(port as number);
    t.after(() => sock.destroy());
    await echo(sock, 'hello');
    const received = collect(sock); // rejects on a reset: the close must be a FIN
    child.proc.send('shutdown');
    assert.equal((await received).length, 0);
    const start = await child.waitFor(/^received the 'shutdown' message, shutting down gracefully/);
    assert.equal(start.open, 1);
    assert.equal(start.ipcMessage, 'shutdown');
    await child.waitFor("Send 'shutdown' again to force");
    const done = await box.next('done');
    assert.equal(done.listeners, listeners.before, "the 'shutdown' listener is gone once the server stopped");
    assert.deepEqual(
      [(done.report as { graceful: number }).graceful, (done.report as { forced: number }).forced],
      [1, 0],
    );
    // 42: the fixture's own code once `done` resolved; the channel no longer held the process.
    assert.equal((await child.exited).code, 42, child.output);
  });

  it("a second 'shutdown' message forces a busy connection at once", { timeout: 20_000 }, async (t) => {
    const { child, box } = ipcChild(t, { ...UNDER_PM2, EXIT: '1' });
    const { port } = await box.next('listening');
    await box.next('settled');
    const sock = await connect(port as number);
    t.after(() => sock.destroy());
    sock.write('busy\n');
    assert.equal((await readBytes(sock, 8)).toString(), 'working\n');
    const closed = closeOf(sock);
    child.proc.send('shutdown');
    await child.waitFor("Send 'shutdown' again to force");
    child.proc.send('shutdown');
    assert.equal((await child.exited).code, 1, child.output);
    await closed;
    await child.waitFor(/^received the 'shutdown' message again, forcing/);
    const report = finalReport(child);
    assert.deepEqual([report.graceful, report.forced], [0, 1]);
  });

  it("dispose() removes the 'shutdown' listener", { timeout: 20_000 }, async (t) => {
    const { child, box } = ipcChild(t, { ...UNDER_PM2, DISPOSE: '1' });
    const { before } = await installed(box);
    assert.equal((await box.next('settled')).listeners, before + 1);
    assert.equal((await box.next('disposed')).listeners, before);
    child.kill('SIGKILL'); // disposed: no signal listener is left to drain it
    await child.exited;
  });

  it('never keeps alive a process that would otherwise exit', { timeout: 20_000 }, async (t) => {
    // The server stops by itself (no signal): the listener goes with it, and the process exits.
    const closing = ipcChild(t, { SHUTDOWN_MESSAGE: '1', CLOSE: '1' });
    assert.equal((await closing.box.next('done')).listeners, (await installed(closing.box)).before);
    assert.equal((await closing.child.exited).code, 42, closing.child.output);
    // A server that never serves: no listener is ever added, and nothing else holds the process.
    const idle = ipcChild(t, { SHUTDOWN_MESSAGE: '1', READY_MESSAGE: '1', LISTEN: '0' });
    const { before, now } = await installed(idle.box);
    assert.equal(now, before);
    assert.equal((await idle.child.exited).code, 0, idle.child.output);
    assert.deepEqual(names(idle.box.messages), ['installed']);
  });
});
