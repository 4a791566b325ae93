/**
 * `examples/echo.ts` as `npm start` runs it: a real child process, real SIGINTs.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { collect, connect, readBytes } from './helpers.js';

/** Starts the example and returns it with a function that waits for a stdout line matching `re`. */
function startEcho(): { child: ChildProcess; line: (re: RegExp) => Promise<string>; output: string[] } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/echo.ts'], {
    env: { ...process.env, ADDRESS: '127.0.0.1:0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const output: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    output.push(l);
    for (const w of waiters.splice(0)) {
      if (w.re.test(l)) w.resolve(l);
      else waiters.push(w);
    }
  });
  const line = (re: RegExp): Promise<string> => {
    const seen = output.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => waiters.push({ re, resolve }));
  };
  return { child, line, output };
}

test('npm start: echoes, logs one line per connection, drains on Ctrl-C and prints the report', async () => {
  const { child, line, output } = startEcho();
  const listening = await line(/listening on 127\.0\.0\.1:(\d+)/);
  const port = Number(/:(\d+)/.exec(listening)![1]);
  const client = await connect(port);
  await line(/^conn 1 from 127\.0\.0\.1:\d+$/);
  client.write('hello');
  assert.equal((await readBytes(client, 5)).toString(), 'hello');
  const closed = collect(client);
  const exited = once(child, 'exit');
  child.kill('SIGINT');
  await line(/Press Ctrl-C again to force/);
  await closed; // the idle connection got a FIN
  const [code] = await exited;
  assert.equal(code, 0);
  assert.ok(
    output.some((l) => /^echo: shutdown complete: 1 graceful, 0 forced/.test(l)),
    output.join('\n'),
  );
});

test('npm start: a second Ctrl-C forces a connection that is still busy and exits non-zero', async () => {
  const { child, line } = startEcho();
  const listening = await line(/listening on 127\.0\.0\.1:(\d+)/);
  const port = Number(/:(\d+)/.exec(listening)![1]);
  const client = await connect(port);
  client.on('error', () => {});
  client.pause(); // never reads: the echo handler blocks in write() once buffers fill
  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < 32; i++) client.write(block);
  const exited = once(child, 'exit');
  await line(/^conn 1 from/);
  child.kill('SIGINT');
  await line(/Press Ctrl-C again to force/);
  child.kill('SIGINT');
  const [code] = await exited;
  assert.equal(code, 1);
  client.destroy();
});
