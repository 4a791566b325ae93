/**
 * Scale-out under load, end to end: `examples/resp.ts` restarted twice, back to back, under fifty
 * connections of request/response (test/fixtures/rr-load.ts), straight to its port and through a
 * real HAProxy (send-proxy-v2, docs/haproxy.md's config in front of the one port):
 *
 * - as a cluster (`WORKERS=2`), rolling restarts (SIGHUP to the primary);
 * - as an upgradable process (`UPGRADE=1`), socket-handoff upgrades (SIGHUP to the pid in the PID
 *   file: a new copy inherits the listener, then the old one stops accepting and drains);
 * - as a cluster of SO_REUSEPORT workers (Node >= 22.12 on Linux), inside a network namespace of
 *   its own with `net.ipv4.tcp_migrate_req=1` (test/fixtures/scale-netns.ts), and, measured but
 *   not asserted, with `tcp_migrate_req=0`.
 *
 * Each asserts and prints: no request read and left unanswered, no client-visible failure for a
 * client that resends only requests that never reached the server, no connection attempt refused,
 * every replaced process drained with nothing forced and exited 0, and the service exits 0 on
 * SIGTERM. The scenario is test/fixtures/scale-scenario.ts.
 *
 * Without haproxy (or unshare and ip, for the namespace) a test is skipped with a message, except
 * under CI=true where it fails (test/helpers.ts's skipWithout).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { supervise } from '../src/cluster/index.js';
import { cleanupsAfter, Proc, within } from './fixtures/haproxy-cluster.js';
import { type Outcome, runScenario, type ScenarioOptions } from './fixtures/scale-scenario.js';
import { HAPROXY, requirement, runs, skipWithout } from './helpers.js';

const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
const REUSE_PORT_SUPPORTED = process.platform === 'linux' && (major > 22 || (major === 22 && minor >= 12));
const NETNS_ARGS = ['--net', '--pid', '--fork', '--kill-child', '--mount-proc'];
/** A network namespace of our own, set up as the test sets it up. */
const NETNS = requirement(
  'no network namespace of our own: needs root, unshare, ip and sysctl (apt-get install util-linux iproute2 procps)',
  () =>
    runs('unshare', [
      ...NETNS_ARGS,
      '--',
      'sh',
      '-c',
      'ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1',
    ]),
);

function assertClean(outcome: Outcome): void {
  assert.deepEqual(outcome.failures, [], `${outcome.label}:\n${outcome.lines.join('\n')}`);
}

describe('scale-out under 50 connections of request/response: nothing lost, nothing refused', () => {
  // runScenario stops what it started; after() is for a test abandoned on its timeout.
  const cleanup = cleanupsAfter();

  const restarts = { cluster: 'cluster rolling restarts', upgrade: 'socket-handoff upgrades' } as const;
  for (const mode of ['cluster', 'upgrade'] as const) {
    for (const haproxy of [false, true]) {
      const via = haproxy ? 'through HAProxy (send-proxy-v2)' : 'straight to the port';
      const o: ScenarioOptions = { label: `${mode}, ${haproxy ? 'haproxy' : 'direct'}`, mode, haproxy };
      test(`${restarts[mode]}, 2 back to back, ${via}`, {
        skip: haproxy && skipWithout(HAPROXY),
        timeout: 60_000,
      }, async () => {
        assertClean(await runScenario(o, cleanup));
      });
    }
  }

  test('cluster rolling restarts of reusePort workers, in a network namespace with tcp_migrate_req=1', {
    skip: REUSE_PORT_SUPPORTED ? skipWithout(NETNS) : false,
    timeout: 60_000,
  }, async () => {
    if (!REUSE_PORT_SUPPORTED) {
      // Node < 22.12 ignores reusePort: the supervisor must refuse it before starting a worker
      // (the scenario itself runs in the Node 24 pass of .ci/run).
      const sup = supervise({ workers: 2, reusePort: true, restartSignal: null });
      await assert.rejects(sup.serving, { code: 'ERR_REUSEPORT_UNSUPPORTED' });
      assert.deepEqual(sup.workers(), []);
      await sup.stopped;
      return;
    }
    // The sysctl is per network namespace: set in ours, it leaves the host's alone. The fixture
    // runs the scenario with 1, then measures it with 0.
    const script =
      'ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && exec "$0" --import tsx test/fixtures/scale-netns.ts 1 0';
    const proc = new Proc('netns', 'unshare', [...NETNS_ARGS, '--', 'sh', '-c', script, process.execPath]);
    // A SIGKILL to unshare kills the namespace's first process, and with it every other one.
    cleanup(() => proc.kill());
    const { code } = await within(55_000, 'the namespace run', proc.exited);
    const outcomes = proc.out.lines.flatMap((l) => {
      const m = /^scale-netns outcome (.*)$/.exec(l);
      return m ? [JSON.parse(m[1]!) as Outcome] : [];
    });
    for (const outcome of outcomes) {
      for (const line of outcome.lines) console.log(`scale e2e (${outcome.label}): ${line}`);
    }
    assert.equal(code, 0, proc.out.text());
    const [migrated, unmigrated] = outcomes;
    assert.ok(migrated && unmigrated, `two outcomes:\n${proc.out.text()}`);
    assertClean(migrated);
    const c = unmigrated.counts;
    console.log(
      `scale e2e (${unmigrated.label}): measured, not asserted: ` +
        (c === undefined
          ? `the run did not finish (${unmigrated.failures.join('; ')})`
          : `${c.errors} client-visible errors (resets), ${c.failed} failed, ${c.refused} refused; ` +
            `${unmigrated.failures.length} failure(s)${unmigrated.failures.length ? `: ${unmigrated.failures.join('; ')}` : ''}`),
    );
  });
});
