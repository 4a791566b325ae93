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
 * @module
 */

import * as tcpserver from '../src/index.js';
import { consoleLogger } from './console-logger.js';
import { isMainModule } from './main-module.js';

/** Options of {@link createChatServer}: the server's own, plus the longest accepted line. */
export interface ChatServerOptions extends Omit<tcpserver.ServerOptions, 'handler'> {
  /** Longest line in bytes; a longer one gets the client disconnected. Default 1024. */
  maxLineLength?: number;
}

/** Where the example listens unless told otherwise. */
export const DEFAULT_ADDRESS = ':9000';
/** The last line every client receives when the server shuts down. */
export const GOODBYE = '* server shutting down, goodbye';

/** A client falling this far behind on broadcasts is disconnected rather than buffered for. */
const MAX_BACKLOG = 256 * 1024;
const NICK = /^[A-Za-z0-9_-]{1,24}$/;

interface Member {
  readonly conn: tcpserver.Conn;
  /** Undefined until the client has picked a nickname. */
  nick: string | undefined;
}

/** Who is in the room, and how many connections are still handling the input they received. */
class Room {
  readonly #members = new Map<string, Member>();
  #reading = 0;
  #inputHandled: Array<() => void> = [];

  /** Joins `member` as `nick`, or tells it why not. */
  async join(member: Member, nick: string): Promise<void> {
    const problem = this.#checkNick(nick);
    if (problem !== undefined) return tell(member.conn, problem);
    member.nick = nick;
    this.#members.set(nick.toLowerCase(), member);
    const online = [...this.#members.values()].map((m) => m.nick).join(', ');
    this.broadcast(member, `* ${nick} joined`);
    await tell(member.conn, `* welcome ${nick}, online: ${online}`);
  }

  async rename(member: Member, nick: string): Promise<void> {
    const old = member.nick!;
    if (nick.toLowerCase() !== old.toLowerCase()) {
      const problem = this.#checkNick(nick);
      if (problem !== undefined) return tell(member.conn, problem);
    }
    this.#members.delete(old.toLowerCase());
    this.#members.set(nick.toLowerCase(), member);
    member.nick = nick;
    this.broadcast(member, `* ${old} is now ${nick}`);
    await tell(member.conn, `* you are now ${nick}`);
  }

  /** Removes `member` (no-op if it never joined or already left), announcing it if asked. */
  leave(member: Member, announce: boolean): void {
    if (member.nick === undefined || this.#members.get(member.nick.toLowerCase()) !== member) return;
    this.#members.delete(member.nick.toLowerCase());
    if (announce) this.broadcast(member, `* ${member.nick} left`);
  }

  /** Sends `text` to every member but `from`, without waiting: one slow client must not stall the room. */
  broadcast(from: Member, text: string): void {
    const line = tcpserver.encodeLine(text);
    for (const member of this.#members.values()) {
      if (member === from) continue;
      if (member.conn.socket.writableLength > MAX_BACKLOG) member.conn.destroy();
      else member.conn.write(line).catch(() => {}); // a closed peer leaves through its own handler
    }
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

function tell(conn: tcpserver.Conn, text: string): Promise<void> {
  return conn.write(tcpserver.encodeLine(text));
}

/** Reads the client's lines until it quits or its input ends (its FIN, or the server draining). */
async function converse(
  member: Member,
  room: Room,
  lines: tcpserver.Decoder<string>,
): Promise<'quit' | 'end'> {
  const conn = member.conn;
  for await (const line of tcpserver.frames(conn, lines)) {
    const text = line.trim();
    const [command, arg = ''] = text.startsWith('/') ? text.split(/\s+/, 2) : [];
    if (command === '/quit') return 'quit';
    if (member.nick === undefined) await room.join(member, command === '/nick' ? arg : text);
    else if (command === '/nick') await room.rename(member, arg);
    else if (command !== undefined) await tell(conn, `* unknown command ${command}; try /nick NAME or /quit`);
    else if (text !== '') room.broadcast(member, `<${member.nick}> ${text}`);
  }
  return 'end';
}

async function session(ctx: tcpserver.Context, conn: tcpserver.Conn, room: Room, maxLength: number) {
  const member: Member = { conn, nick: undefined };
  room.startReading();
  let reading = true;
  try {
    let outcome: 'quit' | 'end' | 'too long';
    try {
      await tell(conn, '* welcome! what is your nickname?');
      outcome = await converse(member, room, tcpserver.lineDecoder({ maxLength }));
    } catch (err) {
      if (!(err instanceof tcpserver.FrameTooLargeError)) throw err;
      outcome = 'too long';
    } finally {
      reading = false;
      room.stopReading();
    }
    if (outcome === 'end' && ctx.server.isClosing) {
      // Everyone's received lines are broadcast before anyone is told goodbye.
      await room.inputHandled();
      room.leave(member, false);
      await tell(conn, GOODBYE);
      return;
    }
    room.leave(member, true);
    if (outcome === 'quit') await tell(conn, '* bye');
    if (outcome === 'too long') await tell(conn, `* line too long (max ${maxLength} bytes), goodbye`);
    // Returning ends the connection: FIN once these lines are flushed.
  } finally {
    if (reading) room.stopReading();
    room.leave(member, true); // the connection failed under us: still announce the departure
  }
}

/** Builds (without starting) the chat server. Throws a typed error for a bad option. */
export function createChatServer(options: ChatServerOptions = {}): tcpserver.Server {
  const { maxLineLength = 1024, ...serverOptions } = options;
  tcpserver.lineDecoder({ maxLength: maxLineLength }); // validates it now, not at the first client
  const room = new Room();
  return tcpserver.createServer({
    name: 'chat',
    address: DEFAULT_ADDRESS,
    ...serverOptions,
    handler: (ctx, conn) => session(ctx, conn, room, maxLineLength),
  });
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
