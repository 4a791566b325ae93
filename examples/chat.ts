/**
 * A line-based chat room: the smallest server where connections talk to each other, and so the
 * smallest one where a graceful shutdown has to be fair to everyone.
 *
 * ```sh
 * npx tsx examples/chat.ts          # ADDRESS=127.0.0.1:7000 to choose where; default :9000
 * nc localhost 9000                 # in two or more terminals
 * ```
 *
 * A client first sends its nickname, then lines of text, each broadcast to the others as
 * `<nick> text`. `/nick NAME` renames, `/quit` leaves; joins and leaves are announced as `* ...`.
 *
 * Shutdown (Ctrl-C, or `close()`): every connection first finishes the lines it has already
 * received, broadcasting them, and only then does every client get
 * `* server shutting down, goodbye` followed by the end of its connection. Because bytes held in
 * the line decoder keep a connection active, a client caught mid-line is waited for too (up to
 * the shutdown timeout).
 *
 * A client that stops reading costs only itself (Redis's `client-output-buffer-limit`, NATS's slow
 * consumers): broadcasts never wait for anyone, and a member whose output backs up, more than
 * `maxBacklog` bytes queued or a write waiting over `writeTimeout` ms, is disconnected, counted
 * in `slowConsumers` and logged (`warn`), while the room chats on and shuts down on time.
 *
 * @module
 */

import * as tcpserver from '../src/index.js';
import { consoleLogger } from './console-logger.js';
import { isMainModule } from './main-module.js';

/** Options of {@link createChatServer}: the server's own, plus the chat's limits. */
export interface ChatServerOptions extends Omit<tcpserver.ServerOptions, 'handler'> {
  /** Longest line in bytes; a longer one gets the client disconnected. Default 1024. */
  maxLineLength?: number;
  /** Bytes a member may have queued, unsent, before it is dropped as a slow consumer. Default 256 KiB. */
  maxBacklog?: number;
  /**
   * ms a write to a member (a reply, a broadcast, its last line and FIN) may wait for its socket
   * before it is dropped as a slow consumer. Default 5000: keep it well under `shutdownTimeout`,
   * since a stuck member holds everyone's goodbye for that long.
   */
  writeTimeout?: number;
}

/** The chat server: a tcpserver `Server` that also counts the members it dropped as too slow. */
export interface ChatServer extends tcpserver.Server {
  /** Members disconnected because their output backed up (`maxBacklog`, `writeTimeout`). */
  readonly slowConsumers: number;
}

/** Where the example listens unless told otherwise. */
export const DEFAULT_ADDRESS = ':9000';
/** The last line every client receives when the server shuts down. */
export const GOODBYE = '* server shutting down, goodbye';

const NICK = /^[A-Za-z0-9_-]{1,24}$/;

interface Member {
  readonly conn: tcpserver.Conn;
  /** Undefined until the client has picked a nickname. */
  nick: string | undefined;
  /** Disconnected as a slow consumer: its session stops reading and leaves. */
  dropped: boolean;
}

interface Limits {
  readonly maxBacklog: number;
  readonly writeTimeout: number;
  readonly logger: tcpserver.Logger | undefined;
}

/** Who is in the room, and how many connections are still handling the input they received. */
class Room {
  readonly #members = new Map<string, Member>();
  readonly #limits: Limits;
  #reading = 0;
  #inputHandled: Array<() => void> = [];
  /** Members dropped because their output backed up. */
  slowConsumers = 0;

  constructor(limits: Limits) {
    this.#limits = limits;
  }

  /** Joins `member` as `nick`, or tells it why not. */
  async join(member: Member, nick: string): Promise<void> {
    const problem = this.#checkNick(nick);
    if (problem !== undefined) return this.tell(member, problem);
    member.nick = nick;
    this.#members.set(nick.toLowerCase(), member);
    const online = [...this.#members.values()].map((m) => m.nick).join(', ');
    this.broadcast(member, `* ${nick} joined`);
    await this.tell(member, `* welcome ${nick}, online: ${online}`);
  }

  async rename(member: Member, nick: string): Promise<void> {
    const old = member.nick!;
    if (nick.toLowerCase() !== old.toLowerCase()) {
      const problem = this.#checkNick(nick);
      if (problem !== undefined) return this.tell(member, problem);
    }
    this.#members.delete(old.toLowerCase());
    this.#members.set(nick.toLowerCase(), member);
    member.nick = nick;
    this.broadcast(member, `* ${old} is now ${nick}`);
    await this.tell(member, `* you are now ${nick}`);
  }

  /** Removes `member` (no-op if it never joined or already left), announcing it if asked. */
  leave(member: Member, announce: boolean): void {
    if (member.nick === undefined || this.#members.get(member.nick.toLowerCase()) !== member) return;
    this.#members.delete(member.nick.toLowerCase());
    if (announce) this.broadcast(member, `* ${member.nick} left`);
  }

  /** Sends `text` to every member but `from`, never waiting: one slow client must not stall the room. */
  broadcast(from: Member, text: string): void {
    const line = tcpserver.encodeLine(text);
    for (const member of this.#members.values()) if (member !== from) void this.#send(member, line);
  }

  /** Sends `member` a line of its own: awaiting it waits for its socket, at most `writeTimeout`. */
  tell(member: Member, text: string): Promise<void> {
    return this.#send(member, tcpserver.encodeLine(text));
  }

  /** Ends `member`'s connection after its last line: that too is flushed within `writeTimeout`. */
  async farewell(member: Member, text?: string): Promise<void> {
    const tooSlow = setTimeout(() => this.#drop(member, 'write timeout'), this.#limits.writeTimeout);
    await member.conn.end(text === undefined ? undefined : tcpserver.encodeLine(text));
    clearTimeout(tooSlow);
  }

  /**
   * Every write to a member goes through here. Its output is bounded in bytes (checked before
   * each write) and in time (each write that has to wait for the socket times out), so a member
   * that stops reading is dropped instead of holding memory, its session, or the shutdown. The
   * promise never rejects: a connection that failed is found out by its own reading loop.
   */
  #send(member: Member, line: Uint8Array): Promise<void> {
    const { conn } = member;
    if (conn.socket.writableLength > this.#limits.maxBacklog) {
      this.#drop(member, 'backlog');
      return Promise.resolve();
    }
    return conn.write(line, { timeout: this.#limits.writeTimeout }).catch((err: unknown) => {
      if (err instanceof tcpserver.WriteTimeoutError) this.#drop(member, 'write timeout');
    });
  }

  /** Disconnects a slow consumer (once) and counts it; its session announces that it left. */
  #drop(member: Member, reason: 'backlog' | 'write timeout'): void {
    if (member.dropped) return;
    member.dropped = true;
    this.slowConsumers++;
    const { conn } = member;
    const queued = conn.socket.writableLength;
    const why =
      reason === 'backlog' ? `${queued} bytes queued` : `a write waited ${this.#limits.writeTimeout} ms`;
    this.#limits.logger?.warn(
      { conn: conn.id, nick: member.nick, reason, queued },
      `slow consumer dropped: conn ${conn.id} (${member.nick ?? 'no nickname'}), ${why}`,
    );
    conn.destroy();
  }

  startReading(): void {
    this.#reading++;
  }

  stopReading(): void {
    if (--this.#reading > 0) return;
    const waiters = this.#inputHandled;
    this.#inputHandled = [];
    for (const resolve of waiters) resolve();
  }

  /** Resolves once no connection is still handling received input: every broadcast is queued. */
  inputHandled(): Promise<void> {
    if (this.#reading === 0) return Promise.resolve();
    return new Promise((resolve) => this.#inputHandled.push(resolve));
  }

  #checkNick(nick: string): string | undefined {
    if (!NICK.test(nick)) return '* a nickname is 1 to 24 letters, digits, _ or -; try again';
    if (this.#members.has(nick.toLowerCase())) return `* nickname ${nick} is taken; try another`;
    return undefined;
  }
}

/** Reads the client's lines until it quits or its input ends (its FIN, or the server draining). */
async function converse(
  member: Member,
  room: Room,
  lines: tcpserver.Decoder<string>,
): Promise<'quit' | 'end' | 'dropped'> {
  for await (const line of tcpserver.frames(member.conn, lines)) {
    if (member.dropped) return 'dropped'; // its unread input goes with it
    const text = line.trim();
    const [command, arg = ''] = text.startsWith('/') ? text.split(/\s+/, 2) : [];
    if (command === '/quit') return 'quit';
    if (member.nick === undefined) await room.join(member, command === '/nick' ? arg : text);
    else if (command === '/nick') await room.rename(member, arg);
    else if (command !== undefined)
      await room.tell(member, `* unknown command ${command}; try /nick NAME or /quit`);
    else if (text !== '') room.broadcast(member, `<${member.nick}> ${text}`);
  }
  return member.dropped ? 'dropped' : 'end';
}

async function session(ctx: tcpserver.Context, conn: tcpserver.Conn, room: Room, maxLength: number) {
  const member: Member = { conn, nick: undefined, dropped: false };
  room.startReading();
  let reading = true;
  try {
    let outcome: 'quit' | 'end' | 'dropped' | 'too long';
    try {
      await room.tell(member, '* welcome! what is your nickname?');
      outcome = await converse(member, room, tcpserver.lineDecoder({ maxLength }));
    } catch (err) {
      if (!(err instanceof tcpserver.FrameTooLargeError)) throw err;
      outcome = 'too long';
    } finally {
      reading = false;
      room.stopReading();
    }
    if (outcome === 'dropped') return; // the finally below announces it
    if (outcome === 'end' && ctx.server.isClosing) {
      // Everyone's received lines are broadcast before anyone is told goodbye.
      await room.inputHandled();
      room.leave(member, false);
      await room.farewell(member, GOODBYE);
      return;
    }
    room.leave(member, true);
    if (outcome === 'quit') await room.farewell(member, '* bye');
    else if (outcome === 'too long')
      await room.farewell(member, `* line too long (max ${maxLength} bytes), goodbye`);
    else await room.farewell(member);
  } finally {
    if (reading) room.stopReading();
    room.leave(member, true); // the connection failed under us: still announce the departure
  }
}

/** Builds (without starting) the chat server. Throws a typed error for a bad option. */
export function createChatServer(options: ChatServerOptions = {}): ChatServer {
  const { maxLineLength = 1024, maxBacklog = 256 * 1024, writeTimeout = 5000, ...serverOptions } = options;
  tcpserver.lineDecoder({ maxLength: maxLineLength }); // validates it now, not at the first client
  if (!Number.isSafeInteger(maxBacklog) || maxBacklog < 1)
    throw new tcpserver.InvalidOptionError(
      `maxBacklog must be a positive integer (bytes), got ${show(maxBacklog)}`,
    );
  if (typeof writeTimeout !== 'number' || !(writeTimeout >= 1 && writeTimeout <= tcpserver.MAX_DELAY_MS))
    throw new tcpserver.InvalidOptionError(
      `writeTimeout must be a number of ms from 1 to ${tcpserver.MAX_DELAY_MS}, got ${show(writeTimeout)}`,
    );
  const room = new Room({ maxBacklog, writeTimeout, logger: serverOptions.logger });
  const srv = tcpserver.createServer({
    name: 'chat',
    address: DEFAULT_ADDRESS,
    ...serverOptions,
    handler: (ctx, conn) => session(ctx, conn, room, maxLineLength),
  });
  return Object.defineProperty(srv, 'slowConsumers', { get: () => room.slowConsumers }) as ChatServer;
}

/** How a bad option value is named in its error. */
function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** Runs the example: listen on `ADDRESS`, drain on the first SIGINT/SIGTERM, force on the second. */
async function main(): Promise<void> {
  const srv = createChatServer({ address: process.env.ADDRESS ?? DEFAULT_ADDRESS });
  const bound = await srv.listen();
  console.log(`chat: listening on ${bound.map(tcpserver.formatAddress).join(', ')}`);
  // First SIGINT/SIGTERM drains (with progress lines), a second one forces; the report ends it.
  const shutdown = tcpserver.shutdownOnSignals(srv, { logger: consoleLogger('chat') });
  const report = await shutdown.done;
  process.exitCode = report.forced === 0 ? 0 : 1;
}

if (isMainModule(import.meta.url)) {
  await main();
}
