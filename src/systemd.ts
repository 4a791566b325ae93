/**
 * Systemd socket activation (`sd_listen_fds(3)`): systemd (or `systemd-socket-activate`) opens the
 * listening sockets, starts the service with them as file descriptors 3, 4, ... and describes them
 * in `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`. Connections that arrive while the service
 * starts or restarts wait in the kernel's backlog instead of being refused.
 *
 * @module
 */

import { TcpServerError } from './errors.js';

/** The first passed descriptor; 0-2 are stdin, stdout and stderr (`SD_LISTEN_FDS_START`). */
export const SD_LISTEN_FDS_START = 3;

/**
 * Socket activation was asked for but the environment does not describe usable sockets:
 * `LISTEN_FDS` absent or malformed, `LISTEN_PID` naming another process, or `LISTEN_FDNAMES`
 * not matching the count. Code `ERR_SYSTEMD_ACTIVATION`.
 */
export class SystemdActivationError extends TcpServerError {
  constructor(message: string) {
    super('ERR_SYSTEMD_ACTIVATION', message);
  }
}

/** One descriptor passed by systemd. */
export interface SystemdListener {
  /** The file descriptor number (3 for the first one). */
  fd: number;
  /** Its name from `LISTEN_FDNAMES` (`FileDescriptorName=` in the .socket unit), when given. */
  name?: string;
}

const DECIMAL = /^[0-9]+$/;

/**
 * Reads the sockets systemd passed to this process. `env` and `pid` default to the process's own
 * and exist for tests. Unlike `sd_listen_fds()`, which quietly returns 0, every problem throws a
 * {@link SystemdActivationError}: a server configured for socket activation that finds no socket
 * should fail loudly at start, not sit there serving nothing.
 *
 * The variables are left in `env`; a service that spawns children should delete them itself.
 *
 * @example
 * ```ts
 * for (const { fd, name } of systemdListeners()) net.createServer(h).listen({ fd });
 * ```
 */
export function systemdListeners(
  env: NodeJS.ProcessEnv = process.env,
  pid: number = process.pid,
): SystemdListener[] {
  const fdsRaw = env.LISTEN_FDS;
  const pidRaw = env.LISTEN_PID;
  if (fdsRaw === undefined || fdsRaw === '') {
    throw new SystemdActivationError(
      'LISTEN_FDS is not set: the process was not started by systemd socket activation ' +
        '(a .socket unit, or systemd-socket-activate)',
    );
  }
  if (!DECIMAL.test(fdsRaw)) {
    throw new SystemdActivationError(`LISTEN_FDS=${JSON.stringify(fdsRaw)} is not a decimal count`);
  }
  const count = Number(fdsRaw);
  if (count < 1 || !Number.isSafeInteger(count)) {
    throw new SystemdActivationError(`LISTEN_FDS=${fdsRaw}: systemd passed no sockets`);
  }
  if (pidRaw === undefined || pidRaw === '') {
    throw new SystemdActivationError('LISTEN_FDS is set but LISTEN_PID is not');
  }
  if (!DECIMAL.test(pidRaw)) {
    throw new SystemdActivationError(`LISTEN_PID=${JSON.stringify(pidRaw)} is not a process id`);
  }
  if (Number(pidRaw) !== pid) {
    // The variables were inherited from a parent that was the real target (a wrapper script
    // without `exec`, or a child of the service): those descriptors are not ours to take.
    throw new SystemdActivationError(
      `LISTEN_PID=${pidRaw} is not this process (${pid}): the sockets were passed to another process ` +
        '(start the server with exec, not as a child of a wrapper)',
    );
  }
  let names: string[] | undefined;
  const namesRaw = env.LISTEN_FDNAMES;
  if (namesRaw !== undefined) {
    names = namesRaw.split(':');
    if (names.length !== count) {
      throw new SystemdActivationError(
        `LISTEN_FDNAMES names ${names.length} socket(s) but LISTEN_FDS=${count}`,
      );
    }
  }
  const listeners: SystemdListener[] = [];
  for (let i = 0; i < count; i++) {
    const name = names?.[i];
    listeners.push(name ? { fd: SD_LISTEN_FDS_START + i, name } : { fd: SD_LISTEN_FDS_START + i });
  }
  return listeners;
}
