import { pathToFileURL } from 'node:url';

/**
 * True when the module at `url` is the program being run (not imported by a test or a bench).
 * Under pm2, `process.argv[1]` is pm2's own ProcessContainer.js, which imports the script:
 * `pm_exec_path` names the script then.
 */
export function isMainModule(url: string): boolean {
  const entry = process.env.pm_exec_path ?? process.argv[1];
  return entry !== undefined && url === pathToFileURL(entry).href;
}
