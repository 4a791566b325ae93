/**
 * Node built-ins that only some servers use (TLS, the health endpoint, PID files, host-name
 * lookups), loaded the first time one is needed rather than when `tcpserver` is imported: a plain
 * TCP server then pays for node:net alone (see docs/architecture.md, "Startup cost").
 *
 * `createRequire` is Node's public way for an ES module to load a module synchronously, and
 * `require` caches what it loads, so each built-in is evaluated once.
 *
 * @module
 */
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

/** node:tls, for the TLS stage. */
export const tlsModule = (): typeof import('node:tls') => load('node:tls');

/** node:crypto, for session ticket keys and temporary file names. */
export const cryptoModule = (): typeof import('node:crypto') => load('node:crypto');

/** node:http, for the health endpoint. */
export const httpModule = (): typeof import('node:http') => load('node:http');

/** node:dns/promises, for a host name bound to one address family. */
export const dnsModule = (): typeof import('node:dns/promises') => load('node:dns/promises');

/** node:cluster, to tell a cluster worker's unix listener (which the primary binds) from a process's own. */
export const clusterModule = (): typeof import('node:cluster').default => load('node:cluster');
