/**
 * Parent-side process plumbing for the bench: spawn pinned children, read their CPU time and
 * memory from /proc, talk to server children over JSON lines, and kill every child on the way out.
 *
 * @module
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** Repository root (bench/lib/../..). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function canPin(): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return os.availableParallelism() >= 2;
  } catch {
    return false;
  }
}

/**
 * True when servers and load generators get a core each (`taskset`, two or more CPUs). Elsewhere
 * (a 1-CPU CI runner, no util-linux) children run unpinned: fine for `--quick`, meaningless for speed.
 */
export const PINNED = canPin();

/** Core the servers run on, and core the load generators run on. */
export const SERVER_CPU = '0';
export const LOAD_CPU = '1';

/** Open-file limit asked for; falls back to the hard limit when the container caps it lower. */
const NOFILE = 65536;

/** Clock ticks per second of utime/stime in /proc/<pid>/stat. */
export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** Every command line the bench ran, deduplicated, printed with the results. */
export const commandLog = new Set<string>();

const live = new Set<ChildProcess>();

/** Kills every child still running. Safe to call more than once. */
export function killAll(): void {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  live.clear();
}

let exitHooksInstalled = false;

/** Makes sure no child outlives the bench, whether it ends normally, throws or is interrupted. */
export function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      killAll();
      process.exit(130);
    });
  }
}

/** How a child is started. */
export interface SpawnSpec {
  /** Executable and arguments, e.g. ['node', '--import', 'tsx', 'bench/servers/echo.ts']. */
  argv: string[];
  /** CPU list for taskset. */
  cpu: string;
  /** Raise `ulimit -n` first (10,000-connection runs). */
  raiseNofile?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Where `bench/tsconfig.json` compiles src/, examples/ and the bench's children. */
export const BUILD_DIR = 'node_modules/.cache/tcpserver-bench';

/**
 * Compiles the servers and load generators with tsc, as users get the library (`dist/` is tsc
 * output too). Children never run through tsx: its esbuild transform adds a `__name()` call per
 * arrow-function class field per instance, a cost that exists only under tsx. Type errors in
 * files being edited elsewhere do not stop the bench (tsc still emits); they are printed.
 */
export function buildChildren(): void {
  compile('bench/tsconfig.json');
}

/** Runs `tsc -p project` (relative to the checkout); errors are printed, not thrown (tsc still emits). */
export function compile(project: string): void {
  const argv = [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', project];
  commandLog.add(`tsc -p ${project}`);
  try {
    execFileSync(process.execPath, argv, { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    const out = String((e as { stdout?: string }).stdout ?? e);
    console.warn(
      `warning: tsc -p ${project} reported errors (emitted anyway):\n${out.split('\n').slice(0, 10).join('\n')}`,
    );
  }
}

/**
 * The young generation's size every Node server of the bench runs with, in MiB per semi-space:
 * V8 grows it with the survivors a process has accumulated since its start, so two fresh
 * processes doing the same work run with different sizes, and a different count of cache misses
 * at the allocation frontier (see bench/README.md, "Fairness").
 */
export const SEMI_SPACE_MIB = 2;

/** V8's flags that hold the young generation at `mib` MiB per semi-space; none for 0 (V8's own growth). */
export function youngGenFlags(mib: number): string[] {
  return mib > 0 ? [`--min-semi-space-size=${mib}`, `--max-semi-space-size=${mib}`] : [];
}

/** The node binary, flags, and the compiled form of a bench script (`bench/x.ts` → `BUILD_DIR/bench/x.js`). */
export function nodeArgv(script: string, extraFlags: string[] = []): string[] {
  // A `.js` path is compiled already (a server built from another commit: see against.ts).
  const compiled = script.endsWith('.js') ? script : `${BUILD_DIR}/${script.replace(/\.ts$/, '.js')}`;
  return [process.execPath, ...extraFlags, compiled];
}

/** Spec for a TypeScript load generator pinned to the load core, with `--name value` arguments. */
export function loadSpec(script: string, args: Record<string, number>, raiseNofile = false): SpawnSpec {
  const argv = nodeArgv(script);
  for (const [k, v] of Object.entries(args)) argv.push(`--${k}`, String(v));
  return { argv, cpu: LOAD_CPU, raiseNofile };
}

/** Renders a spawn spec as the shell command a reader can paste. */
export function describe(spec: SpawnSpec): string {
  const argv = spec.argv.map((a) => (a === process.execPath ? 'node' : a));
  const quoted = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`));
  const cmd = PINNED ? `taskset -c ${spec.cpu} ${quoted.join(' ')}` : quoted.join(' ');
  return spec.raiseNofile ? `bash -c 'ulimit -n ${NOFILE}; exec ${cmd}'` : cmd;
}

/** Spawns a child pinned to `spec.cpu`; `exec` keeps the pid, so /proc/<pid> is the real process. */
export function spawnPinned(spec: SpawnSpec): ChildProcess {
  // Ports differ per run; log the command once, with the port as a placeholder.
  commandLog.add(describe(spec).replace(/(--port|-p) \d+/g, '$1 <port>'));
  const script = spec.raiseNofile
    ? `ulimit -n ${NOFILE} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`
    : 'exec "$@"';
  const pin = PINNED ? ['taskset', '-c', spec.cpu] : [];
  const child = spawn('bash', ['-c', script, 'bash', ...pin, ...spec.argv], {
    cwd: ROOT,
    env: { ...process.env, ...spec.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** utime + stime of a process, in microseconds (all its threads, including exited ones). */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Field 2 (comm) may contain spaces; everything after the last ')' is space-separated.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so utime (14) is rest[11] and stime (15) is rest[12].
  const ticks = Number(rest[11]) + Number(rest[12]);
  return (ticks * 1e6) / CLK_TCK;
}

/** Resident set size of a process, in bytes, from /proc/<pid>/status. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

/** Rejects after `ms` with `what` in the message; the timer never keeps the process alive. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Runs a child to completion and returns its stdout; rejects on non-zero exit or timeout. */
export async function runToEnd(spec: SpawnSpec, timeoutMs: number): Promise<string> {
  const child = spawnPinned(spec);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  child.stdin!.end();
  const done = new Promise<string>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${describe(spec)} exited with ${code ?? signal}\n${err.slice(-2000)}`));
    });
  });
  try {
    return await withTimeout(done, timeoutMs, describe(spec));
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

/** Parses the last JSON line a load generator printed. */
export function lastJson<T>(stdout: string): T {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}

/** The first line a server child prints. */
export interface Ready {
  event: 'ready';
  port: number;
  pid: number;
}

/**
 * A server child speaking the JSON-lines protocol of `bench/lib/server-child.ts`: it prints
 * `{"event":"ready","port":N}` once listening, answers `{"id":n,"cmd":...}` lines with
 * `{"id":n,...}`, and exits when its stdin closes.
 */
export class ServerChild {
  readonly child: ChildProcess;
  readonly pid: number;
  port = 0;
  private nextId = 1;
  private readonly pending = new Map<number, (msg: Record<string, unknown>) => void>();
  private stderr = '';
  private readonly exited: Promise<void>;

  private constructor(child: ChildProcess) {
    this.child = child;
    this.pid = child.pid!;
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Spawns `spec` and waits (bounded) for its ready line. */
  static async start(spec: SpawnSpec, timeoutMs = 15_000): Promise<ServerChild> {
    const sc = new ServerChild(spawnPinned(spec));
    const ready = new Promise<Ready>((resolve, reject) => {
      const rl = createInterface({ input: sc.child.stdout! });
      rl.on('line', (line) => {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return; // a stray log line
        }
        if (msg.event === 'ready') resolve(msg as unknown as Ready);
        else if (typeof msg.id === 'number') {
          const cb = sc.pending.get(msg.id);
          sc.pending.delete(msg.id);
          cb?.(msg);
        }
      });
      sc.child.once('exit', (code, signal) =>
        reject(new Error(`${describe(spec)} exited early (${code ?? signal}): ${sc.stderr}`)),
      );
    });
    try {
      const r = await withTimeout(ready, timeoutMs, `${describe(spec)} ready`);
      sc.port = r.port;
      return sc;
    } catch (e) {
      sc.kill();
      throw e;
    }
  }

  /** Sends a command and waits (bounded) for its reply. */
  async call(
    cmd: string,
    timeoutMs = 30_000,
    args: Record<string, unknown> = {},
  ): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => {
      this.pending.set(id, resolve);
      this.exited.then(() => reject(new Error(`server exited during ${cmd}: ${this.stderr}`)));
    });
    this.child.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    const msg = await withTimeout(reply, timeoutMs, `server ${cmd}`);
    if (typeof msg.error === 'string') throw new Error(`server ${cmd}: ${msg.error}`);
    return msg;
  }

  cpuMicros(): number {
    return cpuMicros(this.pid);
  }

  /** Asks the child to exit (so a --cpu-prof profile gets written), then kills it if it lingers. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin!.end();
    try {
      await withTimeout(this.exited, 5_000, 'server exit');
    } catch {
      this.kill();
      await this.exited;
    }
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  /**
   * Sends SIGTERM (a supervisor drains its workers, then exits) and waits for the exit; SIGKILL
   * if it is still there after `timeoutMs`. Resolves with how it ended.
   */
  async terminate(timeoutMs = 15_000): Promise<string> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      try {
        await withTimeout(this.exited, timeoutMs, 'server exit after SIGTERM');
      } catch {
        this.kill();
        await this.exited;
        return `killed: still running ${timeoutMs} ms after SIGTERM`;
      }
    }
    return this.child.signalCode !== null ? `signal ${this.child.signalCode}` : `code ${this.child.exitCode}`;
  }
}

/** True while `/proc/<pid>` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Waits until a TCP port accepts connections (for redis-server, which prints no JSON). */
export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const net = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
}

/** A child whose stdout is JSON lines read as they come (the scale workload's idle client). */
export class LineChild {
  readonly child: ChildProcess;
  private readonly lines: Record<string, unknown>[] = [];
  private wake: (() => void) | undefined;
  private stderr = '';

  constructor(spec: SpawnSpec) {
    this.child = spawnPinned(spec);
    this.child.stdin!.end();
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        return;
      }
      this.wake?.();
    });
    this.child.once('exit', () => this.wake?.());
  }

  /** Waits (bounded) for a line with `event === name`; fails if the child exits first. */
  async waitFor(name: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find((l) => l.event === name);
      if (hit) return hit;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`load child exited before '${name}': ${JSON.stringify(this.lines)} ${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`load child: no '${name}' within ${timeoutMs} ms`);
      await withTimeout(
        new Promise<void>((r) => {
          this.wake = r;
        }),
        left,
        `load child '${name}'`,
      ).catch(() => {});
    }
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** user + nice + system time of one CPU, in microseconds, from /proc/stat (irq/softirq excluded). */
export function coreBusyMicros(cpu: string): number {
  const line = readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`cpu${cpu} `));
  if (!line) return Number.NaN;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  return (((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0)) * 1e6) / CLK_TCK;
}

/** What one measured run cost the server, and how much of the server's core others used meanwhile. */
export interface Metered {
  /** Server utime + stime during the run, µs. */
  cpu: number;
  /** Wall time of the run, µs. */
  wall: number;
  /** Share of the server core's wall time used by other processes (0..1): interference. */
  foreign: number;
}

/** Runs `fn` while metering the server process `pid` and its core. */
export async function metered<T>(pid: number, fn: () => Promise<T>): Promise<{ value: T; m: Metered }> {
  const cpu0 = cpuMicros(pid);
  const core0 = coreBusyMicros(SERVER_CPU);
  const t0 = performance.now();
  const value = await fn();
  const wall = (performance.now() - t0) * 1000;
  const cpu = cpuMicros(pid) - cpu0;
  const core = coreBusyMicros(SERVER_CPU) - core0;
  return { value, m: { cpu, wall, foreign: Math.max(0, (core - cpu) / wall) } };
}

/** What one measured run cost a group of server processes (a supervisor and its workers). */
export interface MeteredGroup {
  /** utime + stime of each pid during the run, µs, in the order given. */
  cpu: number[];
  /** Wall time of the run, µs. */
  wall: number;
  /**
   * Share of the wall time that other processes used on `cores` (0..1), or null when not measured
   * (the load generator shares those cores).
   */
  foreign: number | null;
}

/**
 * Runs `fn` while metering every process in `pids`; with `cores` (the CPUs only these processes
 * use), also how busy those cores were apart from them.
 */
export async function meteredGroup<T>(
  pids: readonly number[],
  cores: readonly string[] | null,
  fn: () => Promise<T>,
): Promise<{ value: T; m: MeteredGroup }> {
  const busy = () => (cores ?? []).reduce((sum, c) => sum + coreBusyMicros(c), 0);
  const cpu0 = pids.map(cpuMicros);
  const core0 = busy();
  const t0 = performance.now();
  const value = await fn();
  const wall = (performance.now() - t0) * 1000;
  const cpu = pids.map((pid, i) => cpuMicros(pid) - cpu0[i]!);
  const core = busy() - core0;
  const own = cpu.reduce((a, b) => a + b, 0);
  return { value, m: { cpu, wall, foreign: cores ? Math.max(0, (core - own) / wall) : null } };
}
