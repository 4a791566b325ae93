/**
 * PID files, written atomically: the content goes to a temporary file in the same directory,
 * which is then renamed over the target, so a reader (`kill -HUP $(cat app.pid)`, systemd's
 * `PIDFile=`) sees the old pid or the new one, never an empty or half-written file.
 *
 * @module
 */
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { cryptoModule } from './builtins.js';
import { InvalidOptionError } from './errors.js';
import { describeValue } from './timers.js';

/** Writes `pid` (default: this process's) and a newline to `path`, atomically. */
export async function writePidFile(path: string, pid: number = process.pid): Promise<void> {
  if (typeof path !== 'string' || path === '') {
    throw new InvalidOptionError(`pidFile must be a file path, got ${describeValue(path)}`);
  }
  const tmp = join(dirname(path), `.${basename(path)}.${cryptoModule().randomBytes(4).toString('hex')}.tmp`);
  const file = await open(tmp, 'wx', 0o644);
  try {
    await file.writeFile(`${pid}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await rename(tmp, path);
  } catch (error) {
    await unlink(tmp).catch(() => {});
    throw error;
  }
}

/** Removes `path` if it still holds `pid` (a newer process may have written its own since). */
export async function removePidFile(path: string, pid: number = process.pid): Promise<void> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text?.trim() === String(pid)) await unlink(path).catch(() => {});
}
