/**
 * `tcpserver/upgrade`: replace a running process with a new copy of itself without closing its
 * listening sockets (cloudflare/tableflip's model), so no connection attempt is refused and none
 * waiting in the accept queue is lost. docs/scaling.md compares it with the other ways.
 *
 * An upgrade, step by step:
 *
 * 1. The serving process (SIGHUP, or `upgrade()`) finds the descriptor of each listener and
 *    starts a new copy of itself with them as descriptors 3, 4, ... described the way systemd's
 *    socket activation does (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`: each server's `name`),
 *    plus one pipe to say "ready" on.
 * 2. The new process takes each descriptor for the server of that name (through the same path as
 *    systemd activation), listens, writes the PID file, and says ready.
 * 3. Only then does the old process stop accepting: its servers' own graceful shutdown, with
 *    their deadline, leaving unix socket files in place for the new owner.
 *
 * A new process that exits, or is not ready within `readyTimeout`, is killed; the old one keeps
 * serving and the upgrade rejects with the reason. One upgrade at a time. An old process still
 * draining never delays the next upgrade: its connections have their shutdown deadline.
 *
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { closeSync, writeSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import type { BoundAddress } from './address.js';
import {
  InvalidOptionError,
  RestartFailedError,
  RestartInProgressError,
  ServerClosedError,
} from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';
import type { Logger } from './options.js';
import { removePidFile, writePidFile } from './pid-file.js';
import { listeningInodes, socketFds } from './proc-fds.js';
import type { Server } from './server.js';
import { kAdoptFd, kListeners, kOwnsSocketFiles } from './symbols.js';
import { SD_LISTEN_FDS_START, systemdListeners } from './systemd.js';
import { describeValue, duration } from './timers.js';

/** The descriptor the new process says "ready" on. */
export const ENV_READY_FD = 'TCPSERVER_UPGRADE_READY_FD';
/** The generation of the new process: 0 for the first one, +1 per upgrade. */
export const ENV_GENERATION = 'TCPSERVER_UPGRADE_GENERATION';
/**
 * The servers (by name, `:`-separated) whose unix socket files the old process removes when it
 * closes: the new process takes that over once it is ready. A socket systemd made is not listed.
 */
export const ENV_SOCKET_FILES = 'TCPSERVER_UPGRADE_SOCKET_FILES';

/** Options of {@link upgrader}. */
export interface UpgraderOptions {
  /** Keep the serving process's pid in this file (written atomically by whichever process serves). */
  pidFile?: string;
  /** Ms the new process gets to be ready before it is killed. Default 30 000. */
  readyTimeout?: number;
  /** Grace period of the old process's connections; default: each server's own `shutdownTimeout`. */
  drainTimeout?: number;
  /** The signal that starts an upgrade, or `null` for none. Default `'SIGHUP'`. */
  signal?: NodeJS.Signals | null;
  /** What to start. Default: this process again (`process.execPath`, `process.execArgv`, `process.argv`). */
  command?: string;
  args?: string[];
  /** Structured logging, pino-compatible. */
  logger?: Logger;
}

/** What an upgrade did. */
export interface UpgradeReport {
  /** The new process. */
  pid: number;
  generation: number;
  /** Listeners handed over. */
  listeners: number;
  /** From the request to the new process being ready, in ms. */
  readyMs: number;
}

/**
 * One process's part in upgrades: take the listeners an older process handed over (or bind new
 * ones), say ready, and hand them on at the next upgrade.
 *
 * Events: `'upgrade'` (UpgradeReport), `'upgradeFailed'` (error).
 */
export class Upgrader extends EventEmitter {
  /** 0 for a process that bound its own listeners, +1 for each upgrade since. */
  readonly generation: number;
  /** True when this process took over listeners (from an upgrade, or systemd). */
  readonly inherited: boolean;
  readonly #o: Required<Pick<UpgraderOptions, 'readyTimeout'>> & UpgraderOptions;
  readonly #inheritedFds: Map<string, number>;
  readonly #readyFd: number | undefined;
  /** Servers whose socket files this process takes over from the old one once ready (ENV_SOCKET_FILES). */
  readonly #socketFiles: ReadonlySet<string>;
  #servers: readonly Server[] = [];
  #state: 'created' | 'listening' | 'ready' | 'replaced' | 'stopped' = 'created';
  #readyAsked = false;
  #upgrading: Promise<UpgradeReport> | undefined;
  #child: ChildProcess | undefined;
  readonly #onSignal = (): void => {
    this.upgrade().catch(() => {}); // reported by upgrade() itself
  };

  /** @internal Use {@link upgrader}. */
  constructor(options: UpgraderOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    super();
    checkKeys(options, UPGRADER_OPTION_KEYS, '', 'upgrader: ');
    if (options.pidFile !== undefined && (typeof options.pidFile !== 'string' || options.pidFile === '')) {
      throw new InvalidOptionError(`pidFile must be a file path, got ${describeValue(options.pidFile)}`);
    }
    const signal = options.signal === undefined ? 'SIGHUP' : options.signal;
    if (signal !== null && (typeof signal !== 'string' || !signal.startsWith('SIG'))) {
      throw new InvalidOptionError(`signal must be a signal name or null, got ${describeValue(signal)}`);
    }
    this.#o = {
      ...options,
      signal,
      readyTimeout: duration('readyTimeout', options.readyTimeout ?? 30_000, false),
    };
    if (options.drainTimeout !== undefined) duration('drainTimeout', options.drainTimeout, true);
    if (process.platform !== 'linux') {
      throw new InvalidOptionError(`tcpserver/upgrade needs Linux (/proc), not ${process.platform}`);
    }
    // Listeners handed over (or passed by systemd): read them the systemd way, then forget the
    // variables so that nothing this process starts mistakes them for its own.
    this.#inheritedFds = new Map();
    if (env.LISTEN_FDS !== undefined) {
      for (const { fd, name } of systemdListeners(env)) this.#inheritedFds.set(name ?? `fd${fd}`, fd);
    }
    const readyFd = env[ENV_READY_FD];
    this.#readyFd = readyFd === undefined ? undefined : Number(readyFd);
    this.generation = Number(env[ENV_GENERATION] ?? 0);
    this.#socketFiles = new Set(env[ENV_SOCKET_FILES]?.split(':').filter((name) => name !== ''));
    this.inherited = this.#inheritedFds.size > 0;
    for (const name of [
      'LISTEN_FDS',
      'LISTEN_PID',
      'LISTEN_FDNAMES',
      ENV_READY_FD,
      ENV_GENERATION,
      ENV_SOCKET_FILES,
    ]) {
      delete env[name];
    }
  }

  /**
   * Listens on every server: one whose `name` matches a descriptor handed over takes it, the
   * others bind their address. Descriptors no server takes are closed. Server names must be
   * unique, without `:`, and each server has one listener (an address, or one descriptor).
   */
  async listen(servers: Server | readonly Server[]): Promise<BoundAddress[][]> {
    if (this.#state !== 'created') throw new InvalidOptionError('upgrader.listen() was already called');
    const list: readonly Server[] = Array.isArray(servers) ? servers : [servers as Server];
    const names = new Set<string>();
    for (const srv of list) {
      if (srv.name.includes(':') || names.has(srv.name)) {
        throw new InvalidOptionError(
          `server name ${JSON.stringify(srv.name)} must be unique and without ":" (it names the listener in LISTEN_FDNAMES)`,
        );
      }
      names.add(srv.name);
    }
    this.#servers = list;
    for (const srv of list) {
      const fd = this.#inheritedFds.get(srv.name);
      if (fd !== undefined) {
        srv[kAdoptFd](fd);
        this.#inheritedFds.delete(srv.name);
      }
    }
    for (const [name, fd] of this.#inheritedFds) {
      this.#o.logger?.warn(
        { name, fd },
        `no server is named ${name}: closing the listener handed over as fd ${fd}`,
      );
      closeSync(fd);
    }
    this.#inheritedFds.clear();
    const bound = await Promise.all(list.map((srv) => srv.listen()));
    for (const srv of list) {
      if (srv[kListeners].length !== 1) {
        throw new InvalidOptionError(
          `server ${srv.name} has ${srv[kListeners].length} listeners: an upgrade hands over one per server`,
        );
      }
    }
    this.#state = 'listening';
    // A shutdown of this process (SIGTERM) while a new one starts: the new one is not wanted.
    for (const srv of list) srv.once('shutdown', () => this.#abandon());
    void Promise.all(list.map((srv) => srv.stopped)).then(() => this.#stopped());
    return bound;
  }

  /**
   * Says this process serves: writes the PID file, tells the process that started it (which then
   * stops accepting and drains), and from now on upgrades on `signal`. If that process is gone
   * already, this one goes on serving alone. If a server is closing already (a signal, or
   * `close()` while `listen()` bound), it does none of that: it tells that process it is closing
   * (whose upgrade then fails, and which keeps serving), and resolves.
   */
  async ready(): Promise<void> {
    // Once, after listen(): by then the servers may have stopped already ('stopped').
    if (this.#state === 'created' || this.#readyAsked)
      throw new InvalidOptionError('upgrader.ready() needs listen() first, once');
    this.#readyAsked = true;
    if (this.#servers.some((srv) => !srv.isServing)) {
      // A copy that will not serve must not make its predecessor drain and leave nobody serving.
      this.#tell('closing');
      this.#o.logger?.warn(
        { generation: this.generation, pid: process.pid },
        'not ready: a server is closing, so this process does not take over',
      );
      return;
    }
    this.#state = 'ready';
    if (this.#o.pidFile !== undefined) await writePidFile(this.#o.pidFile);
    // The old process leaves the socket files of the servers named here: removing them is this
    // one's job from now on. A socket file of a server this copy no longer has stays the old one's.
    const takes = this.#servers.filter((srv) => this.#socketFiles.has(srv.name));
    this.#tell('ready', takes);
    for (const srv of takes) srv[kOwnsSocketFiles] = true;
    if (this.#o.signal) process.on(this.#o.signal, this.#onSignal);
    this.#o.logger?.info(
      { generation: this.generation, pid: process.pid },
      `serving as generation ${this.generation}`,
    );
  }

  /**
   * Tells the process that started this one (if any) `ready` or `closing`, once, on the ready pipe:
   * `closing <pid>`, or `ready <pid>` and a line `takes <names>`, the JSON list of the servers whose
   * socket files this one takes over. One write, so both lines arrive together, and a parent that
   * reads only the first line still understands it.
   */
  #tell(word: 'ready' | 'closing', takes: readonly Server[] = []): void {
    const fd = this.#readyFd;
    if (fd === undefined) return;
    const names = word === 'ready' ? `takes ${JSON.stringify(takes.map((srv) => srv.name))}\n` : '';
    try {
      writeSync(fd, `${word} ${process.pid}\n${names}`);
    } catch (error) {
      if (word === 'ready')
        this.#o.logger?.warn({ err: error }, 'the process that started this one is gone: serving on alone');
    }
    closeSync(fd);
  }

  /**
   * Starts the new process, hands it the listeners, and resolves once it is ready and this process
   * has begun its graceful shutdown. Rejects with {@link RestartInProgressError} while another
   * upgrade runs, {@link RestartFailedError} when the new process exits or is not ready in time
   * (it is killed) or says it is closing (it drains on its own), and this process keeps serving;
   * `ServerClosedError` once this process is closing.
   */
  upgrade(): Promise<UpgradeReport> {
    let refusal: Error | undefined;
    if (this.#upgrading !== undefined) refusal = new RestartInProgressError('an upgrade');
    else if (this.#state !== 'ready' || this.#servers.some((srv) => !srv.isServing)) {
      refusal = new ServerClosedError(
        `cannot upgrade: this process is ${this.#state === 'ready' ? 'closing' : this.#state}`,
      );
    }
    if (refusal !== undefined) {
      this.#o.logger?.warn({ err: refusal }, `upgrade refused: ${refusal.message}`);
      return Promise.reject(refusal);
    }
    const run = this.#upgrade();
    this.#upgrading = run;
    run.then(
      (report) => this.emit('upgrade', report),
      (error: Error) => {
        this.#upgrading = undefined;
        this.#o.logger?.error({ err: error }, error.message);
        this.emit('upgradeFailed', error);
      },
    );
    return run;
  }

  async #upgrade(): Promise<UpgradeReport> {
    const began = performance.now();
    const fds = this.#servers.map((srv) => listenerFd(srv));
    const generation = this.generation + 1;
    const readyFd = SD_LISTEN_FDS_START + fds.length;
    const command = this.#o.command ?? process.execPath;
    const args = this.#o.args ?? [...process.execArgv, ...process.argv.slice(1)];
    this.#o.logger?.info({ generation, fds }, `upgrading: starting generation ${generation}`);
    // `LISTEN_PID` must name the new process, whose pid is known only once it runs: a shell sets
    // it to its own pid, then execs the program in its place (same pid, same descriptors).
    const child = spawn(
      '/bin/sh',
      ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', 'sh', command, ...args],
      {
        stdio: ['inherit', 'inherit', 'inherit', ...fds, 'pipe'],
        env: {
          ...process.env,
          LISTEN_FDS: String(fds.length),
          LISTEN_FDNAMES: this.#servers.map((srv) => srv.name).join(':'),
          [ENV_READY_FD]: String(readyFd),
          [ENV_GENERATION]: String(generation),
          [ENV_SOCKET_FILES]: this.#servers
            .filter((srv) => srv[kOwnsSocketFiles])
            .map((srv) => srv.name)
            .join(':'),
        },
      },
    );
    this.#child = child;
    const pipe = child.stdio[readyFd] as Readable;
    let failure: string | undefined;
    let takes: ReadonlySet<string> | undefined;
    try {
      const said = await this.#awaitReady(child, pipe);
      // A new process that is closing already drains what it accepted on its own: not killed.
      if (said === 'closing') failure = 'is closing: it will not serve';
      else takes = said;
    } catch (error) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      failure = (error as Error).message;
    }
    pipe.destroy();
    child.unref();
    this.#child = undefined;
    if (failure !== undefined) {
      throw new RestartFailedError(
        `upgrade to generation ${generation} failed: the new process (pid ${child.pid}) ${failure}; this process keeps serving`,
      );
    }
    const report: UpgradeReport = {
      pid: child.pid!,
      generation,
      listeners: fds.length,
      readyMs: performance.now() - began,
    };
    this.#o.logger?.info(
      { ...report },
      `upgraded: generation ${generation} (pid ${child.pid}) is ready; this process stops accepting and drains`,
    );
    this.#state = 'replaced';
    if (this.#o.signal) process.off(this.#o.signal, this.#onSignal);
    for (const srv of this.#servers) {
      if (takes === undefined || takes.has(srv.name))
        srv[kOwnsSocketFiles] = false; // the new process's now
      else if (srv[kOwnsSocketFiles]) {
        this.#o.logger?.info(
          { name: srv.name },
          `generation ${generation} has no server ${srv.name}: this process removes its socket file when it closes`,
        );
      }
      const { drainTimeout } = this.#o;
      srv.close(drainTimeout === undefined ? {} : { timeout: drainTimeout }).catch(() => {});
    }
    return report;
  }

  /**
   * What the new process says on its ready pipe: `closing`, or (ready) the names of the servers
   * whose socket files it takes over, `undefined` for all when it does not list them. Rejects if it
   * says neither in time.
   */
  #awaitReady(child: ChildProcess, pipe: Readable): Promise<'closing' | ReadonlySet<string> | undefined> {
    return new Promise((resolve, reject) => {
      let text = '';
      pipe.setEncoding('utf8');
      const timer = setTimeout(
        () => done(new Error(`was not ready within readyTimeout (${this.#o.readyTimeout} ms): killed`)),
        this.#o.readyTimeout,
      );
      const onData = (chunk: string): void => {
        text += chunk;
        const said = /^(ready|closing) \d+\n(?:takes (.*)\n)?/.exec(text);
        if (said === null) return;
        if (said[1] === 'closing') {
          done('closing');
          return;
        }
        // Unreadable or absent (a copy that does not list them), the list counts as all: a socket
        // file left behind is a lesser harm than one removed under the new process.
        let names: unknown;
        try {
          names = JSON.parse(said[2] ?? 'null');
        } catch {}
        done(Array.isArray(names) ? new Set(names.map(String)) : undefined);
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
        done(new Error(`exited before it was ready (${signal ? `signal ${signal}` : `code ${code}`})`));
      const onError = (error: Error): void => done(new Error(`could not start: ${error.message}`));
      const done = (outcome: Error | 'closing' | ReadonlySet<string> | undefined): void => {
        clearTimeout(timer);
        pipe.off('data', onData);
        child.off('exit', onExit);
        child.off('error', onError);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      pipe.on('data', onData);
      pipe.on('error', () => {}); // the child's exit says what happened
      child.once('exit', onExit);
      child.once('error', onError);
    });
  }

  /** This process is shutting down: a new process still starting is not wanted. */
  #abandon(): void {
    if (this.#child !== undefined && this.#state !== 'replaced') {
      this.#o.logger?.warn(
        { pid: this.#child.pid },
        'shutting down during an upgrade: killing the new process',
      );
      this.#child.kill('SIGKILL');
    }
  }

  #stopped(): void {
    if (this.#o.signal) process.off(this.#o.signal, this.#onSignal);
    if (this.#state !== 'replaced' && this.#o.pidFile !== undefined) void removePidFile(this.#o.pidFile);
    this.#state = 'stopped';
  }
}

const UPGRADER_OPTION_KEYS: KnownKeys<UpgraderOptions> = {
  pidFile: true,
  readyTimeout: true,
  drainTimeout: true,
  signal: true,
  command: true,
  args: true,
  logger: true,
};

/** Creates the upgrader of this process; see {@link Upgrader}. */
export function upgrader(options: UpgraderOptions = {}): Upgrader {
  return new Upgrader(options);
}

/** The descriptor number of a server's one listener: inherited (known), or found in `/proc`. */
function listenerFd(srv: Server): number {
  const [listener] = srv[kListeners];
  if (listener === undefined) throw new ServerClosedError(`server ${srv.name} has no listener to hand over`);
  if (listener.fd !== undefined) return listener.fd;
  const address = listener.server.address() as AddressInfo | string | null;
  if (address === null) throw new ServerClosedError(`server ${srv.name} is not listening`);
  const ours = socketFds();
  const fds = [...new Set(listeningInodes(address).flatMap((inode) => ours.get(inode) ?? []))];
  if (fds.length !== 1) {
    throw new RestartFailedError(
      `cannot find the descriptor of server ${srv.name}'s listener (${fds.length} candidates in /proc/self/fd)`,
    );
  }
  return fds[0]!;
}
