/**
 * The RESP servers of the bench answer the harness's `requests` command with the commands they
 * have run (bench/lib/resp-count.ts): what bench/instructions.ts divides a counted window by.
 * Each runs as the bench runs it, a child speaking the harness protocol on stdin and stdout,
 * driven over a real socket.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { test } from 'node:test';

const SERVERS = [
  'bench/servers/resp.ts',
  'bench/servers/resp-stream.ts',
  'bench/baseline/resp.ts',
  'bench/floor/resp.ts',
];

for (const script of SERVERS) {
  test(`${script}: \`requests\` counts every command run, known or not`, { timeout: 60_000 }, async (t) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    t.after(() => child.kill());
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const next = async (): Promise<Record<string, unknown>> => {
      const { value, done } = await lines.next();
      assert.ok(!done, 'the server child ended early');
      return JSON.parse(value as string) as Record<string, unknown>;
    };
    const ready = await next();
    assert.equal(ready.event, 'ready');
    const ask = async (id: number): Promise<unknown> => {
      child.stdin!.write(`${JSON.stringify({ id, cmd: 'requests' })}\n`);
      const reply = await next();
      assert.equal(reply.id, id);
      return reply.requests;
    };
    assert.equal(await ask(1), 0);

    const socket = net.connect(Number(ready.port), '127.0.0.1');
    await once(socket, 'connect');
    // Two PINGs and an unknown command, pipelined: three replies, three commands counted.
    socket.write('*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nping\r\n*1\r\n$4\r\nNOPE\r\n');
    let got = '';
    for await (const chunk of socket) {
      got += String(chunk);
      if (got.split('\r\n').length > 3) break;
    }
    assert.match(got, /^\+PONG\r\n\+PONG\r\n-ERR unknown command 'NOPE'/);
    socket.destroy();
    assert.equal(await ask(2), 3);
    child.stdin!.end();
    await once(child, 'exit');
  });
}
