/**
 * A key-value server speaking Redis's RESP2, enough for the real `redis-cli` and
 * `redis-benchmark`: PING, ECHO, SET (EX/PX/NX/XX/KEEPTTL/GET), GET, DEL, EXISTS, INCR, MSET, MGET,
 * DBSIZE, FLUSHALL, QUIT, CONFIG GET and COMMAND.
 *
 * ```sh
 * npx tsx examples/resp.ts          # ADDRESS=127.0.0.1:7000 to choose where
 * redis-cli -p 6380 SET greeting hello
 * redis-benchmark -p 6380 -q -t ping,set,get -P 16
 * ```
 *
 * It runs on the service mode (`service: { decoder, call }`): the server decodes commands in its
 * data path and calls `call` for each, which runs the command and returns its reply; the replies
 * to the commands of one received chunk (pipelining) go out in one write, in order. A graceful
 * shutdown answers every command a client already sent, then ends the connection. (The same
 * server written as a stream-mode handler, one `readFrame` loop per connection, is
 * `bench/servers/resp-stream.ts`.)
 *
 * Run as a program, it is configured by environment variables (an empty value counts as unset;
 * a bad value is reported in one line naming it, and the process exits with code 2):
 *
 * | Variable | Meaning | Default |
 * | --- | --- | --- |
 * | `ADDRESS` | where to listen (`:6380`, `127.0.0.1:7000`, `[::1]:7000`) | `:6380` |
 * | `PROXY_PROTOCOL_TRUSTED` | comma-separated addresses and CIDR subnets (`10.0.0.2,10.1.0.0/16`) that may, and must, send a PROXY header; anyone else is refused | unset: PROXY protocol off |
 * | `PROXY_PROTOCOL_VERSIONS` | `v1`, `v2` or `any` (needs `PROXY_PROTOCOL_TRUSTED`) | `any` |
 * | `PROXY_PROTOCOL_TIMEOUT_MS` | ms a trusted peer gets to send its header (needs `PROXY_PROTOCOL_TRUSTED`) | `5000` |
 * | `HEALTH_ADDRESS` | where `healthServer` answers `/readyz` and `/livez` | unset: none |
 * | `CLOSE_DELAY_MS` | after the first SIGTERM/SIGINT: ms not ready but still serving, before the listener closes | `0` |
 * | `SHUTDOWN_TIMEOUT_MS` | ms the drain may take before what is left is forced | `10000` |
 * | `WORKERS` | run on this many cores: a `tcpserver/cluster` supervisor (SIGHUP rolls the workers; `HEALTH_ADDRESS` answers in the primary) | unset: one process |
 * | `UPGRADE` | `1`: one process that replaces itself on SIGHUP (`tcpserver/upgrade`), its listeners handed to the new copy | `0` |
 * | `PID_FILE` | keep the serving process's pid in this file (`kill -HUP $(cat app.pid)`, systemd's `PIDFile=`) | unset |
 * | `RESP_LOG_CONNECTIONS` | `1`: per connection, `conn <id> from <remote>:<port> to <local>:<port> via <socket peer>:<port>` once it is served, and `conn <id> closing: read <n> bytes` when it starts to close | `0` |
 *
 * It exits 0 after a clean drain, 1 after a forced one (a second signal, or the timeout) or when
 * it cannot listen. Refused connections (PROXY protocol) are printed on stderr, and a summary line
 * (`resp: stopped: ...`) ends the output. Behind HAProxy: docs/haproxy.md.
 *
 * @module
 */

import * as tcpserver from '../src/index.js';
import { isMainModule } from './main-module.js';
import { execute } from './resp/commands.js';
import { type RespCommand, RespDecoder, type RespDecoderOptions } from './resp/decoder.js';
import { ReplyWriter } from './resp/reply.js';
import { Store } from './resp/store.js';
import { ModeError, readMode, runService, type ServiceMode } from './service.js';

/** Options of {@link createRespServer}: the server's, the protocol limits, and the key space. */
export interface RespServerOptions
  extends Omit<tcpserver.ServerOptions, 'handler' | 'service'>,
    RespDecoderOptions {
  /** The key space; pass one to share it between servers or inspect it in tests. Default: a new one. */
  store?: Store;
  /** Ms between two passes of the expired-key sweeper (one unref'd timer); 0 disables it. Default 100. */
  sweepInterval?: number;
}

/** The default address of the example: Redis's port plus one, to not collide with a real Redis. */
export const DEFAULT_ADDRESS = ':6380';

/**
 * Builds (without starting) a tcpserver `Server` that speaks RESP2. Throws `InvalidOptionError`
 * for a bad limit or server option, before anything binds.
 */
export function createRespServer(options: RespServerOptions = {}): tcpserver.Server {
  const {
    maxBulkLength,
    maxInlineLength,
    maxArgs,
    maxRequestLength,
    store = new Store(),
    sweepInterval = 100,
    ...serverOptions
  } = options;
  const limits: RespDecoderOptions = { maxBulkLength, maxInlineLength, maxArgs, maxRequestLength };
  new RespDecoder(limits); // validates the limits now rather than on the first connection
  const srv = tcpserver.createServer({
    name: 'resp',
    address: DEFAULT_ADDRESS,
    ...serverOptions,
    service: respService(limits, store),
  });
  if (sweepInterval > 0) {
    srv.once('listening', () => {
      const stop = store.startSweeper(sweepInterval);
      srv.once('close', stop);
    });
  }
  return srv;
}

/**
 * RESP2 as a service: each command runs synchronously against the store and writes its reply to
 * one writer shared by every connection, the service's `output`: the connection takes the replies
 * to a pipelined batch from it at once (so connections never see each other's bytes, and an idle
 * connection holds no buffer), and no command costs an object of its own.
 */
export function respService(limits: RespDecoderOptions, store: Store): tcpserver.Service<RespCommand> {
  const out = new ReplyWriter(64 * 1024);
  return {
    decoder: () => new RespDecoder(limits),
    output: out,
    call: (cmd, _ctx, conn) => {
      // QUIT: this reply is the last; later pipelined commands are dropped, as Redis does.
      if (execute(cmd, out, store)) void conn.end();
      return undefined;
    },
    // A protocol error is answered as Redis words it, then the connection ends; anything else is a bug.
    errorReply: (err) => {
      const reply = protocolErrorReply(err);
      if (reply === undefined) throw err;
      out.error(reply);
      return undefined;
    },
  };
}

/** The reply line of a decoder error, as Redis words it, or undefined if err is not one. */
export function protocolErrorReply(err: unknown): string | undefined {
  if (err instanceof tcpserver.InvalidFrameError) return `ERR ${err.message}`;
  if (err instanceof tcpserver.FrameTooLargeError) return `ERR Protocol error: ${err.message}`;
  return undefined;
}

/** A bad environment variable: reported as one line, exit code 2, no stack trace. */
class ConfigError extends Error {}

/** Exit code of a bad environment variable (a usage error). */
const CONFIG_EXIT_CODE = 2;

/** The example's settings, from the environment (documented in the header comment). */
interface MainConfig {
  address: string;
  proxyProtocol: tcpserver.ProxyProtocolOptions | undefined;
  healthAddress: string | undefined;
  closeDelay: number;
  shutdownTimeout: number | undefined;
  logConnections: boolean;
}

/** `env[name]`, with an empty value meaning unset. */
function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/** A whole number of milliseconds (`0` allowed only when `zero`), or `undefined` when unset. */
function envMs(env: NodeJS.ProcessEnv, name: string, zero: boolean): number | undefined {
  const text = envValue(env, name);
  if (text === undefined) return undefined;
  const ms = /^\d{1,10}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(ms) || ms > tcpserver.MAX_DELAY_MS || (!zero && ms === 0)) {
    throw new ConfigError(
      `${name}=${JSON.stringify(env[name])}: expected a whole number of milliseconds ` +
        `(${zero ? '0' : '1'} to ${tcpserver.MAX_DELAY_MS})`,
    );
  }
  return ms;
}

/** Reads and checks every variable; throws a {@link ConfigError} naming the first bad one. */
function readConfig(env: NodeJS.ProcessEnv): MainConfig {
  const trusted = envValue(env, 'PROXY_PROTOCOL_TRUSTED');
  const versions = envValue(env, 'PROXY_PROTOCOL_VERSIONS');
  const proxyTimeout = envMs(env, 'PROXY_PROTOCOL_TIMEOUT_MS', false);
  if (trusted === undefined && (versions !== undefined || proxyTimeout !== undefined)) {
    throw new ConfigError(
      'PROXY_PROTOCOL_VERSIONS and PROXY_PROTOCOL_TIMEOUT_MS need PROXY_PROTOCOL_TRUSTED (who may send the header)',
    );
  }
  if (versions !== undefined && versions !== 'v1' && versions !== 'v2' && versions !== 'any') {
    throw new ConfigError(`PROXY_PROTOCOL_VERSIONS=${JSON.stringify(versions)}: expected v1, v2 or any`);
  }
  let proxyProtocol: tcpserver.ProxyProtocolOptions | undefined;
  if (trusted !== undefined) {
    const list = trusted.split(',').map((entry) => entry.trim());
    if (list.some((entry) => entry === '')) {
      throw new ConfigError(`PROXY_PROTOCOL_TRUSTED=${JSON.stringify(trusted)}: an empty entry`);
    }
    proxyProtocol = {
      trusted: list,
      ...(versions === undefined ? {} : { versions }),
      ...(proxyTimeout === undefined ? {} : { timeout: proxyTimeout }),
    };
  }
  const log = envValue(env, 'RESP_LOG_CONNECTIONS');
  if (log !== undefined && log !== '0' && log !== '1') {
    throw new ConfigError(`RESP_LOG_CONNECTIONS=${JSON.stringify(log)}: expected 0 or 1`);
  }
  return {
    address: envValue(env, 'ADDRESS') ?? DEFAULT_ADDRESS,
    proxyProtocol,
    healthAddress: envValue(env, 'HEALTH_ADDRESS'),
    closeDelay: envMs(env, 'CLOSE_DELAY_MS', true) ?? 0,
    shutdownTimeout: envMs(env, 'SHUTDOWN_TIMEOUT_MS', true),
    logConnections: log === '1',
  };
}

/**
 * Runs `build`; the invalid address or option it throws becomes a {@link ConfigError} naming the
 * variable it came from (`address` for `ERR_INVALID_ADDRESS`, `option` for `ERR_INVALID_OPTION`).
 */
function configured<T>(names: { address: string; option: string }, build: () => T): T {
  try {
    return build();
  } catch (err) {
    if (err instanceof tcpserver.InvalidAddressError)
      throw new ConfigError(`${names.address}: ${err.message}`);
    if (err instanceof tcpserver.InvalidOptionError) throw new ConfigError(`${names.option}: ${err.message}`);
    throw err;
  }
}

/**
 * Runs the example (examples/service.ts: as one process, with `WORKERS`, or with `UPGRADE=1`):
 * listen on `ADDRESS` (and the health endpoint on `HEALTH_ADDRESS`); on the first SIGINT/SIGTERM
 * report not-ready for `CLOSE_DELAY_MS`, then drain; a second signal forces. Exits 0 after a clean
 * drain, 1 after a forced one or a failed listen, 2 for a bad environment variable.
 */
async function main(): Promise<void> {
  let config: MainConfig;
  let mode: ServiceMode;
  let build: () => tcpserver.Server;
  try {
    config = readConfig(process.env);
    mode = readMode(process.env);
    const { address, proxyProtocol, shutdownTimeout } = config;
    // Every other option was checked above: an invalid one here is PROXY_PROTOCOL_TRUSTED's.
    const names = { address: 'ADDRESS', option: 'PROXY_PROTOCOL_TRUSTED' };
    build = () =>
      configured(names, () =>
        createRespServer({
          address,
          ...(proxyProtocol === undefined ? {} : { proxyProtocol }),
          ...(shutdownTimeout === undefined ? {} : { shutdownTimeout }),
        }),
      );
    build(); // a bad address or option is reported now, before anything starts
    const healthAddress = config.healthAddress;
    if (healthAddress !== undefined) {
      configured({ address: 'HEALTH_ADDRESS', option: 'HEALTH_ADDRESS' }, () =>
        tcpserver.healthServer({ ready: false, isStopped: false }, { address: healthAddress }),
      );
    }
  } catch (err) {
    if (!(err instanceof ConfigError) && !(err instanceof ModeError)) throw err;
    console.error(`resp: ${err.message}`);
    process.exitCode = CONFIG_EXIT_CODE;
    return;
  }
  const logConnections = config.logConnections;
  process.exitCode = await runService(
    {
      name: 'resp',
      servers: () => [observe(build(), logConnections)],
      healthAddress: config.healthAddress,
      closeDelay: config.closeDelay,
      shutdownTimeout: config.shutdownTimeout,
      summary: ([srv]) => {
        const { accepted, refused, errors } = srv!.stats();
        const refusals = Object.entries(refused).filter(([, n]) => n > 0);
        const why =
          refusals.length === 0 ? '' : ` (${refusals.map(([reason, n]) => `${n} ${reason}`).join(', ')})`;
        const total = refusals.reduce((sum, [, n]) => sum + n, 0);
        return `stopped: ${accepted} accepted, ${total} refused${why}, ${errors} handler error(s)`;
      },
    },
    mode,
  );
}

/** The example's own lines about connections: refused ones always, the others with `RESP_LOG_CONNECTIONS=1`. */
function observe(srv: tcpserver.Server, logConnections: boolean): tcpserver.Server {
  if (logConnections) {
    srv.on('connState', (conn: tcpserver.Conn, state: tcpserver.ConnState, prev: tcpserver.ConnState) => {
      const s = conn.socket;
      if (state === 'active' && prev === 'new') {
        // Every accept stage (the PROXY header included) is done: the addresses are final.
        console.log(
          `conn ${conn.id} from ${conn.remoteAddress}:${conn.remotePort} to ${conn.localAddress}:${conn.localPort}` +
            ` via ${s.remoteAddress}:${s.remotePort}`,
        );
      } else if (state === 'closing') {
        // What the server had read from the peer (the PROXY header aside) when it began to close:
        // bytes arriving after this are discarded unread.
        console.log(`conn ${conn.id} closing: read ${s.bytesRead - (conn.proxy?.length ?? 0)} bytes`);
      }
    });
  }
  srv.on('refused', (conn: tcpserver.Conn, reason: tcpserver.RefuseReason, err: Error | undefined) => {
    console.error(
      `resp: conn ${conn.id} from ${conn.socket.remoteAddress} refused (${reason}): ${err?.message}`,
    );
  });
  return srv;
}

if (isMainModule(import.meta.url)) {
  await main();
}
