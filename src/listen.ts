/**
 * Binding listeners: from a parsed address, an inherited descriptor, or a `net.Server` the user
 * already has, with stale unix socket files detected and replaced.
 *
 * @module
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { lstat, rename, unlink } from 'node:fs/promises';
import {
  connect,
  createServer as createNetServer,
  isIP,
  type ListenOptions,
  type Server as NetServer,
} from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { ListenSpec } from './address.js';
import { clusterModule, dnsModule } from './builtins.js';
import { ListenError, ReusePortUnsupportedError } from './errors.js';

/** A listener to bind: the server object and what to pass to its `listen()`, if anything. */
export interface PendingListener {
  server: NetServer;
  /** How to bind it; absent for a `net.Server` that is already listening. */
  bind: ListenOptions | { fd: number } | undefined;
  /** How to name it in errors. */
  label: string;
  /**
   * A unix socket path (not abstract): a stale file there is replaced when binding, and the file
   * is removed when the listener closes if its server owns it (docs/architecture.md, "Unix socket
   * files"; in a cluster worker, node:cluster's primary removes it).
   */
  unixPath: string | undefined;
  /** The socket file this listener serves, once bound: removed on close only if still this one. */
  socketFile?: { path: string; dev: number; ino: number };
  /**
   * Resolve `bind.host` (a host name) to this address family before binding: `tcp4` / `tcp6`
   * must not bind the other family because the name resolved to it first.
   */
  family?: 4 | 6;
  /** Bind with `SO_REUSEPORT`: checked once per process by {@link checkReusePort} first. */
  reusePort?: boolean;
}

/** Describes a parsed address as `listen()` arguments. */
export function listenerFor(spec: ListenSpec, label: string, reusePort = false): PendingListener {
  const server = createNetServer({ allowHalfOpen: true });
  if (spec.network === 'unix') {
    return { server, bind: { path: spec.path }, label, unixPath: spec.abstract ? undefined : spec.path };
  }
  const bind: ListenOptions = { port: spec.port, ipv6Only: spec.ipv6Only };
  if (spec.host !== undefined) bind.host = spec.host;
  const pending: PendingListener = { server, bind, label, unixPath: undefined };
  if (reusePort) {
    // `exclusive`: in a cluster worker, bind here rather than share the primary's socket.
    Object.assign(bind, { reusePort: true, exclusive: true });
    pending.reusePort = true;
  }
  // Node's listen() resolves a host name with no family: `localhost` may come back as 127.0.0.1
  // for `tcp6` (which then binds IPv4) or as ::1 for `tcp4`. Go resolves within the network.
  if (spec.host !== undefined && isIP(spec.host) === 0 && spec.network !== 'tcp') {
    pending.family = spec.network === 'tcp4' ? 4 : 6;
  }
  return pending;
}

/** Describes an inherited, already listening descriptor (systemd, a parent process). */
export function listenerForFd(fd: number): PendingListener {
  return {
    server: createNetServer({ allowHalfOpen: true }),
    bind: { fd },
    label: `fd ${fd}`,
    unixPath: undefined,
  };
}

/**
 * Binds one listener; rejects with a {@link ListenError} that keeps the OS error code.
 *
 * Every listener serves half-open connections, including a `net.Server` the user made with
 * `net.createServer()` (whose default is not to): otherwise Node ends a socket the moment its
 * peer sends FIN, and a handler answering a request the client ended with `end()` writes into
 * a closed socket. Node reads `server.allowHalfOpen` for each connection it accepts.
 */
export async function bindListener(pending: PendingListener): Promise<void> {
  const { server, bind, label } = pending;
  (server as NetServer & { allowHalfOpen: boolean }).allowHalfOpen = true;
  if (bind === undefined) return;
  if (pending.reusePort) await checkReusePort();
  const path = pending.unixPath;
  if (path !== undefined && !('fd' in bind)) {
    if (clusterModule().isWorker) {
      await bindSharedPath(pending, path);
      return;
    }
    await replaceStaleSocket(path, label);
    await bindSocketFile(pending, path);
    return;
  }
  await listenOn(pending, bind as ListenOptions);
  // An inherited descriptor for a known path (a socket handed over by the previous process).
  if (path !== undefined) pending.socketFile = await socketFileOf(path);
}

/**
 * A cluster worker's unix listener: node:cluster's primary binds the path once and shares it with
 * every worker that asks for it by path, and removes the file when the last one closes it. So no
 * temporary name (each worker would get a socket of its own) and no probe up front (the live
 * socket there may be the primary's, and a probe would be a connection to a sibling): only a
 * bind the path refuses is checked for a stale file, then tried once more.
 */
async function bindSharedPath(pending: PendingListener, path: string): Promise<void> {
  try {
    await listenOn(pending, { path });
  } catch (error) {
    if ((error as ListenError).code !== 'EADDRINUSE') throw error;
    // A live socket there now may be the primary's, bound meanwhile for a sibling: the bind below
    // shares it. Only a foreign one makes it fail again.
    await replaceStaleSocket(path, pending.label, true);
    await listenOn(pending, { path });
  }
}

/**
 * Binds a unix socket under a temporary name in the same directory, then renames it to `path`.
 * The rename replaces a stale file atomically, and node:net's own unlink-on-close then removes
 * the temporary name (long gone) rather than `path`: whether `path` is removed on close is this
 * module's decision ({@link releaseSocketFile}), so a socket handed to another process keeps its
 * file. A temporary name too long for `sun_path` falls back to binding `path` itself.
 */
async function bindSocketFile(pending: PendingListener, path: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid.toString(36)}~`);
  if (Buffer.byteLength(tmp) > MAX_UNIX_PATH || Buffer.byteLength(path) > MAX_UNIX_PATH) {
    await listenOn(pending, { path });
    pending.socketFile = await socketFileOf(path);
    return;
  }
  await unlink(tmp).catch(() => {});
  await listenOn(pending, { path: tmp });
  try {
    await rename(tmp, path);
  } catch (error) {
    pending.server.close();
    throw new ListenError(pending.label, error as NodeJS.ErrnoException);
  }
  pending.socketFile = await socketFileOf(path);
}

/** Longest unix socket path Linux and macOS accept (`sun_path` less its terminating NUL). */
const MAX_UNIX_PATH = 103;

async function socketFileOf(path: string): Promise<PendingListener['socketFile']> {
  const stat = await lstat(path).catch(() => undefined);
  return stat?.isSocket() ? { path, dev: stat.dev, ino: stat.ino } : undefined;
}

/**
 * Removes the socket file a closed listener served, if the file there is still that one (a newer
 * process may have bound its own). Synchronous: it runs as the listener closes, like node:net's.
 */
export function releaseSocketFile(pending: PendingListener): void {
  const file = pending.socketFile;
  if (file === undefined) return;
  pending.socketFile = undefined;
  try {
    const now = lstatSync(file.path);
    if (now.dev === file.dev && now.ino === file.ino) unlinkSync(file.path);
  } catch {
    // Already gone, or not ours to remove.
  }
}

async function listenOn(pending: PendingListener, bind: ListenOptions): Promise<void> {
  const { server, label } = pending;
  let options = bind;
  if (pending.family !== undefined && options.host !== undefined) {
    try {
      const { address } = await dnsModule().lookup(options.host, { family: pending.family });
      options = { ...options, host: address };
    } catch (error) {
      throw new ListenError(label, error as NodeJS.ErrnoException);
    }
  }
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      reject(new ListenError(label, error));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(options);
  });
}

let reusePortCheck: Promise<void> | undefined;

/**
 * Rejects with a {@link ReusePortUnsupportedError} unless two sockets of this process can bind one
 * port with `reusePort`: Node.js before 22.12 drops the option without a word, and systems without
 * `SO_REUSEPORT` load balancing fail the second bind. Checked once per process, on loopback.
 */
export function checkReusePort(): Promise<void> {
  reusePortCheck ??= trialBind();
  return reusePortCheck;
}

async function trialBind(): Promise<void> {
  const first = createNetServer();
  const second = createNetServer();
  const listen = (server: NetServer, port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port, reusePort: true, exclusive: true } as ListenOptions, () => {
        server.off('error', reject);
        resolve();
      });
    });
  try {
    await listen(first, 0);
    await listen(second, (first.address() as { port: number }).port);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ReusePortUnsupportedError(
      `reusePort does not work here (Node.js ${process.version} on ${process.platform}): two sockets ` +
        `could not share a port (${code}); it needs Node.js >= 22.12 on Linux or FreeBSD`,
    );
  } finally {
    for (const server of [first, second]) if (server.listening) server.close();
  }
}

/**
 * A unix socket file left by a dead process refuses connections: remove it so the bind can
 * succeed. One that accepts belongs to a live server: fail with EADDRINUSE instead of stealing it
 * (unless `mayBeShared`: then the bind decides).
 */
async function replaceStaleSocket(path: string, label: string, mayBeShared = false): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat === undefined || !stat.isSocket()) return; // absent, or not ours to remove: bind reports it
  // Only a refused connection proves the file stale. Any other failure (the file vanished, no
  // permission, a full backlog) leaves the file alone and lets bind() report what the OS says.
  const probe = await new Promise<'alive' | 'stale' | 'unknown'>((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve('alive');
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      resolve(error.code === 'ECONNREFUSED' ? 'stale' : 'unknown'),
    );
  });
  if (probe === 'unknown' || (probe === 'alive' && mayBeShared)) return;
  if (probe === 'alive') {
    const error: NodeJS.ErrnoException = new Error('address already in use (a live server owns the socket)');
    error.code = 'EADDRINUSE';
    error.syscall = 'listen';
    throw new ListenError(label, error);
  }
  // Another process (or, in a cluster, the primary for a sibling worker) may have replaced the
  // stale file with a live socket since the probe, even between a check and an unlink: so the
  // file there is moved aside first, then removed only if it is the one that refused us, and
  // put back otherwise (nothing else binds the path while a live socket holds it).
  const aside = `${path}.${process.pid.toString(36)}.stale`;
  try {
    await rename(path, aside);
  } catch {
    return; // gone already: another process removed it
  }
  const moved = await lstat(aside).catch(() => undefined);
  if (moved !== undefined && moved.ino === stat.ino && moved.dev === stat.dev)
    await unlink(aside).catch(() => {});
  else await rename(aside, path).catch(() => {});
}
