/**
 * PID files (src/pid-file.ts): written atomically (a reader sees the old pid or the new one, never
 * a partial file), no temporary file left behind on success or failure, and removed only by the
 * process they name.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { InvalidOptionError, removePidFile, writePidFile } from '../src/index.js';

const root = mkdtempSync(join(tmpdir(), 'tcpserver-pidfile-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const freshDir = (): string => {
  const dir = join(root, String(++dirs));
  mkdirSync(dir);
  return dir;
};

test('writePidFile writes this process pid and a newline, mode 0644 (less the umask), and nothing else', async () => {
  const dir = freshDir();
  const path = join(dir, 'app.pid');
  await writePidFile(path);
  assert.equal(readFileSync(path, 'utf8'), `${process.pid}\n`);
  const mode = statSync(path).mode & 0o777;
  assert.ok(
    (mode & 0o600) === 0o600 && (mode & ~0o644) === 0,
    `mode ${mode.toString(8)}: 0644 less the umask`,
  );
  assert.deepEqual(readdirSync(dir), ['app.pid'], 'no temporary file is left');
  await writePidFile(path, 4242);
  assert.equal(readFileSync(path, 'utf8'), '4242\n', 'an existing file is replaced');
  assert.deepEqual(readdirSync(dir), ['app.pid']);
});

test('a reader during 300 rewrites sees one whole pid or the other, never an empty or partial file', async () => {
  const path = join(freshDir(), 'app.pid');
  await writePidFile(path, 1);
  let writing = true;
  const seen = new Set<string>();
  const reader = (async () => {
    while (writing) seen.add(await readFile(path, 'utf8'));
  })();
  for (let i = 0; i < 300; i++) await writePidFile(path, i % 2 === 0 ? 123456789 : 7);
  writing = false;
  await reader;
  for (const text of seen)
    assert.ok(['1\n', '7\n', '123456789\n'].includes(text), `read ${JSON.stringify(text)}`);
  assert.ok(seen.size >= 2, `the reader ran during the rewrites (${[...seen].join(', ')})`);
});

test('a write that fails rejects with the OS error and leaves no temporary file', async () => {
  const dir = freshDir();
  await assert.rejects(writePidFile(join(dir, 'missing', 'app.pid')), { code: 'ENOENT' });
  // The rename fails: the target is a directory.
  mkdirSync(join(dir, 'app.pid'));
  await assert.rejects(writePidFile(join(dir, 'app.pid')), (err: NodeJS.ErrnoException) =>
    ['EISDIR', 'EEXIST', 'ENOTEMPTY'].includes(err.code ?? ''),
  );
  assert.deepEqual(readdirSync(dir), ['app.pid'], 'the temporary file was removed');
});

test('writePidFile refuses a path that is not a non-empty string, naming it', async () => {
  for (const bad of ['', 42, undefined]) {
    await assert.rejects(
      writePidFile(bad as string),
      (err: Error) =>
        err instanceof InvalidOptionError && /pidFile must be a file path, got /.test(err.message),
    );
  }
});

test('removePidFile removes the file only while it names the pid; a missing file is no error', async () => {
  const dir = freshDir();
  const path = join(dir, 'app.pid');
  await writePidFile(path);
  await removePidFile(path, process.pid + 1);
  assert.equal(readFileSync(path, 'utf8'), `${process.pid}\n`, 'a file naming another process stays');
  await removePidFile(path);
  assert.deepEqual(readdirSync(dir), []);
  await removePidFile(path); // already gone
  writeFileSync(path, `  ${process.pid}  \n`);
  await removePidFile(path);
  assert.deepEqual(readdirSync(dir), [], 'surrounding whitespace is not part of the pid');
});
