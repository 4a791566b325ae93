/**
 * A tiny liveness/readiness HTTP endpoint on its own address, for Kubernetes probes and load
 * balancer health checks: `/livez` answers 200 while the servers have not stopped, `/readyz` 200
 * only while every server is ready (serving, not draining, not marked unready), 503 otherwise.
 *
 * @module
 */

import type { Server as HttpServer, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseAddress } from './address.js';
import { httpModule } from './builtins.js';
import { InvalidOptionError, ListenError } from './errors.js';
import { checkKeys, type KnownKeys } from './option-keys.js';

/** The part of a `Server` that the health endpoint reads. */
export interface HealthTarget {
  /** True while serving, not closing, and not marked unready with `setReady(false)`. */
  readonly ready: boolean;
  /** True once the server has fully stopped. */
  readonly isStopped: boolean;
}

/** Options of {@link healthServer}. */
export interface HealthServerOptions {
  /** Go-style `host:port` to listen on: `:8081` (all interfaces), `127.0.0.1:8081`, `[::1]:0`. Default `:8081`. */
  address?: string;
  /** Liveness path. Default `/livez`. */
  livePath?: string;
  /** Readiness path. Default `/readyz`. */
  readyPath?: string;
}

/** The bound address of the health endpoint. */
export interface HealthAddress {
  host: string;
  port: number;
}

/** What {@link healthServer} returns. */
export interface HealthServer {
  /** Binds the endpoint; resolves the bound address (so `:0` works). */
  listen(): Promise<HealthAddress>;
  /** Stops listening and closes the probes' connections, keep-alive ones included. */
  close(): Promise<void>;
  /** The bound address, or `undefined` before `listen()`. */
  address(): HealthAddress | undefined;
  /** The underlying `node:http` server, as an escape hatch. */
  readonly server: HttpServer;
  [Symbol.asyncDispose](): Promise<void>;
}

const HEALTH_OPTION_KEYS: KnownKeys<HealthServerOptions> = { address: true, livePath: true, readyPath: true };

/**
 * Creates (does not yet bind) a health endpoint reporting on one server or several; with several,
 * `/readyz` is 200 only when every one is ready, and `/livez` 200 while none has stopped.
 * Answers `GET` and `HEAD`; other paths get 404, other methods 405.
 *
 * @example
 * ```ts
 * const health = healthServer(srv, { address: ':8081' });
 * await health.listen();
 * await srv.serve();
 * await health.close();
 * ```
 */
export function healthServer(
  targets: HealthTarget | readonly HealthTarget[],
  options: HealthServerOptions = {},
): HealthServer {
  const list: readonly HealthTarget[] = Array.isArray(targets) ? targets : [targets as HealthTarget];
  if (list.length === 0) throw new InvalidOptionError('healthServer needs at least one server');
  checkKeys(options, HEALTH_OPTION_KEYS, '', 'healthServer: ');
  const { address = ':8081', livePath = '/livez', readyPath = '/readyz' } = options;
  // Same Go-style syntax and errors as the server's own address.
  const spec = parseAddress('tcp', address);
  if (spec.network === 'unix') throw new InvalidOptionError('health address must be host:port');
  const { host, port } = spec;
  for (const [name, p] of [
    ['livePath', livePath],
    ['readyPath', readyPath],
  ] as const) {
    if (typeof p !== 'string' || !p.startsWith('/')) {
      throw new InvalidOptionError(`${name} must start with "/"`);
    }
  }

  const server = httpModule().createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    let ok: boolean;
    if (path === livePath) ok = list.every((s) => !s.isStopped);
    else if (path === readyPath) ok = list.every((s) => s.ready);
    else return reply(res, req.method, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return reply(res, req.method, 405, 'method not allowed\n');
    }
    const body = ok ? 'ok\n' : path === readyPath ? 'not ready\n' : 'stopped\n';
    reply(res, req.method, ok ? 200 : 503, body);
  });
  // Probes come at most every few seconds; don't keep their sockets around for long.
  server.keepAliveTimeout = 2000;

  let bound: HealthAddress | undefined;

  const listen = (): Promise<HealthAddress> =>
    new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new ListenError(`${address} (health endpoint)`, err));
      };
      server.once('error', onError);
      server.listen({ host, port }, () => {
        server.removeListener('error', onError);
        const a = server.address() as AddressInfo;
        bound = { host: a.address, port: a.port };
        resolve(bound);
      });
    });

  const close = (): Promise<void> =>
    new Promise((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      server.closeAllConnections();
    });

  return {
    listen,
    close,
    address: () => bound,
    server,
    [Symbol.asyncDispose]: close,
  };
}

function reply(res: ServerResponse, method: string | undefined, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.setHeader('cache-control', 'no-store');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(method === 'HEAD' ? undefined : body);
}
