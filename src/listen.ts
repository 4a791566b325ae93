/**
 * Binding listeners: from a parsed address, an inherited descriptor, or a `net.Server` the user
 * already has, with stale unix socket files detected and replaced.
 *
 * @module
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect, type ListenOptions, createServer as createNetServer, type Server as NetServer } from 'node:net';
import type { ListenSpec } from './address.js';
import { ListenError } from './errors.js';

/** A listener to bind: the server object and what to pass to its `listen()`, if anything. */
export interface PendingListener {
  server: NetServer;
  /** How to bind it; absent for a `net.Server` that is already listening. */
  bind: ListenOptions | { fd: number } | undefined;
  /** How to name it in errors. */
  label: string;
  /** A unix socket path (not abstract) whose stale file may be replaced before binding. */
  unixPath: string | undefined;
}

/** Describes a parsed address as `listen()` arguments. */
export function listenerFor(spec: ListenSpec, label: string): PendingListener {
  const server = createNetServer({ allowHalfOpen: true });
  if (spec.network === 'unix') {
    return { server, bind: { path: spec.path }, label, unixPath: spec.abstract ? undefined : spec.path };
  }
  const bind: ListenOptions = { port: spec.port, ipv6Only: spec.ipv6Only };
  if (spec.host !== undefined) bind.host = spec.host;
  return { server, bind, label, unixPath: undefined };
}

/** Describes an inherited, already listening descriptor (systemd, a parent process). */
export function listenerForFd(fd: number): PendingListener {
  return { server: createNetServer({ allowHalfOpen: true }), bind: { fd }, label: `fd ${fd}`, unixPath: undefined };
}

/** Binds one listener; rejects with a {@link ListenError} that keeps the OS error code. */
export async function bindListener(pending: PendingListener): Promise<void> {
  const { server, bind, label } = pending;
  if (bind === undefined) return;
  if (pending.unixPath !== undefined) await replaceStaleSocket(pending.unixPath, label);
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
    server.listen(bind as ListenOptions);
  });
}

/**
 * A unix socket file left by a dead process refuses connections: remove it so the bind can
 * succeed. One that accepts belongs to a live server: fail with EADDRINUSE instead of stealing it.
 */
async function replaceStaleSocket(path: string, label: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat === undefined || !stat.isSocket()) return; // absent, or not ours to remove: bind reports it
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error.code !== 'ECONNREFUSED'));
  });
  if (alive) {
    const error: NodeJS.ErrnoException = new Error('address already in use (a live server owns the socket)');
    error.code = 'EADDRINUSE';
    error.syscall = 'listen';
    throw new ListenError(label, error);
  }
  await unlink(path).catch(() => undefined);
}
