/**
 * `--against <rev>`: the framework as it was at another commit, run as one more server beside
 * the current one, so a change to `src/` or `examples/` is measured side by side in the same
 * runs (A B C D ...) rather than against a run made at another time on a noisy machine.
 *
 * The other commit's `src/` and `examples/` are extracted with `git archive` next to this
 * checkout's `bench/servers/` and `bench/lib/`, and compiled like the current tree: the same
 * server scripts then run the other framework.
 *
 * @module
 */

import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BUILD_DIR, commandLog, compile, ROOT } from './proc.js';

/** Where other commits are extracted and built, one directory per commit. */
const AGAINST_DIR = 'node_modules/.cache/tcpserver-bench-against';

/** Extracts and compiles `rev`; returns its short hash. Throws if git or tsc cannot. */
export function buildAgainst(rev: string): string {
  const git = (args: string[], options: { maxBuffer?: number } = {}) =>
    execFileSync('git', args, { cwd: ROOT, maxBuffer: 256 * 1024 * 1024, ...options });
  const sha = git(['rev-parse', '--short', `${rev}^{commit}`])
    .toString()
    .trim();
  const tree = path.join(ROOT, AGAINST_DIR, sha);
  rmSync(tree, { recursive: true, force: true });
  mkdirSync(tree, { recursive: true });
  execFileSync('tar', ['-x', '-C', tree], {
    input: git(['archive', '--format=tar', sha, 'src', 'examples']),
  });
  for (const part of ['tsconfig.json', 'bench/tsconfig.json', 'bench/servers', 'bench/lib']) {
    // The cluster server needs src/cluster, which older commits lack; --against never runs it.
    const filter = (src: string) => !src.endsWith(`${path.sep}cluster.ts`);
    cpSync(path.join(ROOT, part), path.join(tree, part), { recursive: true, filter });
  }
  commandLog.add(`git archive ${sha} src examples`);
  // Type errors still emit; a missing export shows when the server child starts.
  compile(`${AGAINST_DIR}/${sha}/bench/tsconfig.json`);
  return sha;
}

/** The compiled server script of kind `kind` built from commit `sha` (see {@link buildAgainst}). */
export function againstScript(sha: string, kind: string): string {
  return `${AGAINST_DIR}/${sha}/${BUILD_DIR}/bench/servers/${kind}.js`;
}
