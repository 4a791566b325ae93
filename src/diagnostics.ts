/**
 * `node:diagnostics_channel` channels, for tracers and APMs. Publishing is skipped when a
 * channel has no subscribers, so they cost nothing unless used.
 *
 * | channel                       | message                                  |
 * | ----------------------------- | ---------------------------------------- |
 * | `tcpserver:server.listening`  | `{ server, addresses }`                  |
 * | `tcpserver:conn.state`        | `{ server, conn, state, prev }`          |
 * | `tcpserver:conn.rejected`     | `{ server, socket, reason }`             |
 * | `tcpserver:conn.refused`      | `{ server, conn, reason, error }`        |
 * | `tcpserver:conn.timeout`      | `{ server, conn, error }`                |
 * | `tcpserver:handler.error`     | `{ server, conn, error }`                |
 * | `tcpserver:server.fd-exhausted` | `{ server, open, limit }`              |
 * | `tcpserver:server.fd-recovered` | `{ server, open, limit, durationMs }`  |
 * | `tcpserver:server.shutdown`   | `{ server, timeout }`                    |
 * | `tcpserver:server.close`      | `{ server, report }`                     |
 *
 * @module
 */
import diagnostics from 'node:diagnostics_channel';

/** The channels this library publishes on, by name. */
export const channels = {
  listening: diagnostics.channel('tcpserver:server.listening'),
  connState: diagnostics.channel('tcpserver:conn.state'),
  rejected: diagnostics.channel('tcpserver:conn.rejected'),
  refused: diagnostics.channel('tcpserver:conn.refused'),
  timeout: diagnostics.channel('tcpserver:conn.timeout'),
  handlerError: diagnostics.channel('tcpserver:handler.error'),
  fdExhausted: diagnostics.channel('tcpserver:server.fd-exhausted'),
  fdRecovered: diagnostics.channel('tcpserver:server.fd-recovered'),
  shutdown: diagnostics.channel('tcpserver:server.shutdown'),
  close: diagnostics.channel('tcpserver:server.close'),
} as const;
