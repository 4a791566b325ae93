/**
 * test/helpers.ts's `skipWithout`, the one way a test depends on a tool or capability: a skip
 * with a message outside CI, a failing run under `CI=true`. Checked with real `node --test` runs
 * and real PATH lookups: of test/fixtures/skip-without.ts with a tool on PATH or not, and of a
 * real test file with haproxy taken off PATH. And the guard that keeps it the only way.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { onPath, requirement, skipWithout } from './helpers.js';

const TEST_DIR = fileURLToPath(new URL('.', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HOST_PATH = process.env.PATH ?? '';

interface Run {
  /** The exit code of `node --test`. */
  code: number;
  /** Its TAP output. */
  tap: string;
  /** [pass, fail, skipped], from the TAP summary. */
  counts: [number, number, number];
}

/** Runs `file` (relative to the checkout) under `node --test` (TAP), with `CI` set to `ci` (or unset), and `PATH`. */
function nodeTest(file: string, ci: string | undefined, path: string, ...options: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: path };
  delete env.NODE_TEST_CONTEXT; // set for the files `node --test` runs: the child's run reports on its own
  if (ci === undefined) delete env.CI;
  else env.CI = ci;
  const args = ['--import', 'tsx', '--test', '--test-reporter=tap', ...options, file];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const count = (what: string): number => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(stdout)?.[1]);
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, tap: `${stdout}${stderr}`, counts: [count('pass'), count('fail'), count('skipped')] });
    });
  });
}

const FIXTURE = 'test/fixtures/skip-without.ts';
const TOOL_MISSING = 'tcpserver-test-tool not found on PATH (apt-get install tcpserver-test-package)';
/** How skipWithout's failure under CI=true ends. */
const CI_FAILURE = 'required when CI=true (.ci/run sets up everything the tests need)';
const re = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Temp directories: one with the fixture's tool, one with every command on PATH but haproxy. */
let toolDir = '';
let withoutHaproxy = '';
before(() => {
  toolDir = mkdtempSync(join(tmpdir(), 'tcpserver-tool-'));
  writeFileSync(join(toolDir, 'tcpserver-test-tool'), '#!/bin/sh\necho tool ran\n');
  chmodSync(join(toolDir, 'tcpserver-test-tool'), 0o755);
  withoutHaproxy = mkdtempSync(join(tmpdir(), 'tcpserver-path-'));
  const seen = new Set(['haproxy']);
  for (const dir of HOST_PATH.split(delimiter)) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (seen.has(name)) continue;
      seen.add(name);
      symlinkSync(join(dir, name), join(withoutHaproxy, name));
    }
  }
});
after(() => {
  for (const dir of [toolDir, withoutHaproxy]) if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('skipWithout', () => {
  test('nothing missing: false, and the test runs', () => {
    assert.equal(skipWithout(), false);
    assert.equal(skipWithout(requirement('never missing', () => true)), false);
  });

  test('the tool on PATH: every test runs (and runs it), with CI=true or not', async () => {
    const path = `${toolDir}${delimiter}${HOST_PATH}`;
    for (const { code, tap, counts } of await Promise.all([
      nodeTest(FIXTURE, undefined, path),
      nodeTest(FIXTURE, 'true', path),
    ])) {
      assert.equal(code, 0, tap);
      assert.deepEqual(counts, [4, 0, 0], tap);
      assert.doesNotMatch(tap, /# SKIP|required when CI=true/);
    }
  });

  test('the tool missing, outside CI: the tests that need it are skipped with its message', async () => {
    const runs = await Promise.all(
      ['unset', '', 'false', '1'].map((ci) => nodeTest(FIXTURE, ci === 'unset' ? undefined : ci, HOST_PATH)),
    );
    for (const { code, tap, counts } of runs) {
      assert.equal(code, 0, tap);
      assert.deepEqual(counts, [2, 0, 2], tap);
      assert.match(tap, new RegExp(`^ok \\d+ - needs the tool # SKIP ${re(TOOL_MISSING)}$`, 'm'));
      assert.match(
        tap,
        new RegExp(`^ok \\d+ - needs the tool, and what is there # SKIP ${re(TOOL_MISSING)}$`, 'm'),
      );
      assert.doesNotMatch(tap, /required when CI=true|CI=true: this fails the run/);
    }
  });

  test('the tool missing, under CI=true: the run fails, once, with its message; no test needing it runs', async () => {
    const { code, tap, counts } = await nodeTest(FIXTURE, 'true', HOST_PATH);
    assert.equal(code, 1, tap);
    assert.deepEqual(counts, [2, 1, 2], tap);
    assert.match(tap, new RegExp(`^not ok \\d+ - required when CI=true: ${re(TOOL_MISSING)}$`, 'm'));
    assert.match(tap, new RegExp(re(`${TOOL_MISSING}: ${CI_FAILURE}`)));
    assert.match(
      tap,
      new RegExp(
        `^ok \\d+ - needs the tool # SKIP ${re(TOOL_MISSING)} \\(CI=true: this fails the run\\)$`,
        'm',
      ),
    );
  });

  test('the tool missing, under CI=true, with a name pattern that leaves out the failing test: the run still fails', async () => {
    const { code, tap, counts } = await nodeTest(
      FIXTURE,
      'true',
      HOST_PATH,
      '--test-name-pattern=^needs nothing$',
    );
    assert.equal(code, 1, tap);
    assert.equal(counts[0], 1, tap);
    assert.ok(counts[1] >= 1, tap); // the file, failed by its exit code
    assert.doesNotMatch(tap, /^\s*not ok \d+ - required when CI=true/m, 'the pattern left the test out');
    assert.match(tap, new RegExp(re(`${TOOL_MISSING}: ${CI_FAILURE}`)));
  });

  test('a real test file with haproxy off PATH: skipped with the message, or under CI=true a failed run', async () => {
    const file = 'test/haproxy-versions.test.ts';
    const [outside, ci] = await Promise.all([
      nodeTest(file, undefined, withoutHaproxy),
      nodeTest(file, 'true', withoutHaproxy),
    ]);
    const missing = re('haproxy not found on PATH (apt-get install haproxy)');
    assert.equal(outside.code, 0, outside.tap);
    assert.deepEqual(outside.counts, [0, 0, 1], outside.tap);
    assert.match(outside.tap, new RegExp(`# SKIP ${missing}$`, 'm'));
    assert.equal(ci.code, 1, ci.tap);
    assert.deepEqual(ci.counts, [0, 1, 1], ci.tap);
    assert.match(ci.tap, new RegExp(`^not ok \\d+ - required when CI=true: ${missing}$`, 'm'));
  });

  test('a requirement is probed once, on first use', () => {
    let probes = 0;
    const need = requirement('counted', () => ++probes > 0);
    assert.equal(probes, 0, 'not while declared');
    assert.equal(skipWithout(need), false);
    assert.equal(skipWithout(need), false);
    assert.equal(need.available, true);
    assert.equal(probes, 1);
  });

  test('onPath finds executables the way `command -v` does', () => {
    assert.equal(onPath('sh'), true);
    assert.equal(onPath('sh', '/nonexistent-dir'), false);
    assert.equal(onPath('no-such-tool-tcpserver-test'), false);
    assert.equal(onPath('passwd', '/etc'), false, 'a file that is not executable');
    assert.equal(onPath('bin', '/usr'), false, 'a directory');
    assert.equal(onPath('sh', `/nonexistent-dir${delimiter}${delimiter}/bin`), true, 'any directory of PATH');
  });
});

test('no test file decides about CI or skips on its own: every tool check goes through skipWithout', () => {
  // Allowed in a `skip`: skipWithout, the TLS tests' certificate from makeCertificate (which calls
  // it), and the platform (a Linux-only feature: CI runs on Linux, where nothing skips).
  const allowed = /skipWithout\(|\btlsSkip\b|typeof pki === 'string'|process\.platform/;
  const offenders: string[] = [];
  const files = [
    ...readdirSync(TEST_DIR).filter(
      (f) => f.endsWith('.ts') && f !== 'helpers.ts' && f !== 'helpers.test.ts',
    ),
    ...readdirSync(join(TEST_DIR, 'fixtures')).map((f) => join('fixtures', f)),
  ];
  for (const file of files) {
    const text = readFileSync(join(TEST_DIR, file), 'utf8');
    text.split('\n').forEach((line, i) => {
      const decides = /process\.env\.CI\b|command -v|\b(?:t|test|it|describe|suite)\.skip\b/.test(line);
      const skips = /\bskip\s*:|\b(?:const|let)\s+\w*[sS]kip\w*\s*=/.test(line) && !allowed.test(line);
      if (decides || skips) offenders.push(`test/${file}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(offenders, [], 'use skipWithout from test/helpers.ts');
});

test('.ci/run installs every Debian package a requirement names', () => {
  const ci = /^apt_packages=\(([^)]*)\)$/m.exec(readFileSync(join(ROOT, '.ci', 'run'), 'utf8'));
  assert.ok(ci, 'apt_packages=(...) in .ci/run');
  const installed = new Set(ci[1]!.trim().split(/\s+/));
  const named = new Map<string, string>();
  const files = [
    ...readdirSync(TEST_DIR).filter((f) => f.endsWith('.ts') && f !== 'helpers.test.ts'),
    ...readdirSync(join(TEST_DIR, 'fixtures'))
      .filter((f) => f !== 'skip-without.ts') // its package is made up
      .map((f) => join('fixtures', f)),
  ];
  for (const file of files) {
    const text = readFileSync(join(TEST_DIR, file), 'utf8');
    for (const m of text.matchAll(/apt-get install ([a-z0-9][a-z0-9.+-]*(?: [a-z0-9][a-z0-9.+-]*)*)/g))
      for (const pkg of m[1]!.split(' ')) named.set(pkg, `test/${file}`);
    for (const m of text.matchAll(/\bcommand\('[^']+', '([^']+)'\)/g)) named.set(m[1]!, `test/${file}`);
  }
  assert.ok(named.has('haproxy') && named.has('python3-yaml'), `found: ${[...named.keys()]}`);
  const notInstalled = [...named]
    .filter(([pkg]) => !installed.has(pkg))
    .map(([pkg, file]) => `${pkg} (${file})`);
  assert.deepEqual(notInstalled, [], 'add them to apt_packages in .ci/run');
});
