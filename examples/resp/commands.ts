/**
 * The commands of the RESP example, with Redis's replies and error messages: PING, ECHO, SET (EX,
 * PX, NX, XX, KEEPTTL, GET), GET, DEL, EXISTS, INCR, MSET, MGET, DBSIZE, FLUSHALL, QUIT, and enough
 * of CONFIG GET and COMMAND for `redis-cli` and `redis-benchmark`.
 *
 * @module
 */

import { INT64_MAX, parseInt64 } from './integer.js';
import { EMPTY_ARRAY, NIL, OK, PONG, type ReplyWriter } from './reply.js';
import { keyOf, type Store } from './store.js';

/**
 * Runs one command, writing its reply to out. Returns true when the connection should be closed
 * once the reply is sent (QUIT).
 */
export type CommandFn = (args: Buffer[], out: ReplyWriter, store: Store) => boolean | undefined;

/** A command's name, arity (Redis's convention) and implementation. */
export interface CommandSpec {
  /** Lower-case name, as used in error messages. */
  readonly name: string;
  /** Exact argument count including the name if positive, minimum count if negative. */
  readonly arity: number;
  readonly run: CommandFn;
}

const SYNTAX_ERROR = 'ERR syntax error';
const NOT_INTEGER = 'ERR value is not an integer or out of range';

function arityError(name: string): string {
  return `ERR wrong number of arguments for '${name}' command`;
}

/**
 * Case-insensitive ASCII comparison of an argument with a lower-case word of letters: setting bit
 * 0x20 maps only a letter's two cases onto the lower one.
 */
function is(arg: Buffer, word: string): boolean {
  if (arg.length !== word.length) return false;
  for (let i = 0; i < word.length; i++) {
    if ((arg[i]! | 0x20) !== word.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * A value to store from a request argument. Arguments are views into received chunks (which are
 * never written again): a small one is copied so the key does not pin a whole chunk for its
 * lifetime; a big one that fills most of its chunk is kept as is, sparing a copy of megabytes.
 */
function retain(arg: Buffer): Buffer {
  return arg.length >= 64 * 1024 && arg.length * 2 >= arg.buffer.byteLength ? arg : Buffer.from(arg);
}

const ping: CommandFn = (args, out) => {
  if (args.length === 1) out.raw(PONG);
  else if (args.length === 2) out.bulk(args[1]!);
  else out.error(arityError('ping'));
  return false;
};

const echo: CommandFn = (args, out) => {
  out.bulk(args[1]!);
  return false;
};

const get: CommandFn = (args, out, store) => {
  const entry = store.get(keyOf(args[1]!));
  out.bulk(entry === undefined ? null : entry.value);
  return false;
};

const NX = 1;
const XX = 2;
const GET = 4;
const KEEPTTL = 8;
const EX = 16;
const PX = 32;

const set: CommandFn = (args, out, store) => {
  let flags = 0;
  let ttlArg: Buffer | undefined;
  for (let j = 3; j < args.length; j++) {
    const opt = args[j]!;
    const hasNext = j + 1 < args.length;
    if (is(opt, 'nx') && !(flags & XX)) flags |= NX;
    else if (is(opt, 'xx') && !(flags & NX)) flags |= XX;
    else if (is(opt, 'get')) flags |= GET;
    else if (is(opt, 'keepttl') && !(flags & (EX | PX))) flags |= KEEPTTL;
    else if (is(opt, 'ex') && !(flags & (KEEPTTL | PX)) && hasNext) {
      flags |= EX;
      ttlArg = args[++j];
    } else if (is(opt, 'px') && !(flags & (KEEPTTL | EX)) && hasNext) {
      flags |= PX;
      ttlArg = args[++j];
    } else {
      out.error(SYNTAX_ERROR);
      return false;
    }
  }
  let expiresAt = 0;
  if (ttlArg !== undefined) {
    const ttl = parseInt64(ttlArg);
    if (ttl === null) {
      out.error(NOT_INTEGER);
      return false;
    }
    // Expiry times must stay exact doubles; Redis's own bound is int64 ms, far beyond any real TTL.
    const ms = Number(ttl) * (flags & EX ? 1000 : 1);
    expiresAt = store.now() + ms;
    if (ms <= 0 || !Number.isSafeInteger(expiresAt)) {
      out.error("ERR invalid expire time in 'set' command");
      return false;
    }
  }
  const key = keyOf(args[1]!);
  const old = store.get(key);
  if ((flags & NX && old !== undefined) || (flags & XX && old === undefined)) {
    // With GET the old value is the reply even when the condition fails.
    if (flags & GET) out.bulk(old === undefined ? null : old.value);
    else out.raw(NIL);
    return false;
  }
  if (flags & KEEPTTL && old !== undefined) expiresAt = old.expiresAt;
  store.set(key, retain(args[2]!), expiresAt);
  if (flags & GET) out.bulk(old === undefined ? null : old.value);
  else out.raw(OK);
  return false;
};

const del: CommandFn = (args, out, store) => {
  let n = 0;
  for (let i = 1; i < args.length; i++) if (store.delete(keyOf(args[i]!))) n++;
  out.integer(n);
  return false;
};

const exists: CommandFn = (args, out, store) => {
  let n = 0;
  for (let i = 1; i < args.length; i++) if (store.get(keyOf(args[i]!)) !== undefined) n++;
  out.integer(n);
  return false;
};

const incr: CommandFn = (args, out, store) => {
  const key = keyOf(args[1]!);
  const entry = store.get(key);
  const current = entry === undefined ? 0 : parseInt64(entry.value);
  if (current === null) {
    out.error(NOT_INTEGER);
    return false;
  }
  if (current === INT64_MAX) {
    out.error('ERR increment or decrement would overflow');
    return false;
  }
  const next = typeof current === 'number' ? current + 1 : current + 1n;
  // INCR keeps the key's TTL, as in Redis.
  store.set(key, Buffer.from(String(next), 'latin1'), entry === undefined ? 0 : entry.expiresAt);
  out.integer(next);
  return false;
};

const mset: CommandFn = (args, out, store) => {
  if (args.length % 2 === 0) {
    out.error(arityError('mset'));
    return false;
  }
  for (let i = 1; i < args.length; i += 2) store.set(keyOf(args[i]!), retain(args[i + 1]!));
  out.raw(OK);
  return false;
};

const mget: CommandFn = (args, out, store) => {
  out.arrayHeader(args.length - 1);
  for (let i = 1; i < args.length; i++) {
    const entry = store.get(keyOf(args[i]!));
    out.bulk(entry === undefined ? null : entry.value);
  }
  return false;
};

const dbsize: CommandFn = (_args, out, store) => {
  out.integer(store.size);
  return false;
};

const flushall: CommandFn = (_args, out, store) => {
  store.clear();
  out.raw(OK);
  return false;
};

const quit: CommandFn = (_args, out) => {
  out.raw(OK);
  return true;
};

/** What `CONFIG GET` knows: what redis-benchmark asks for at startup, as a server without persistence. */
const CONFIG: ReadonlyMap<string, string> = new Map([
  ['save', ''],
  ['appendonly', 'no'],
]);

const config: CommandFn = (args, out) => {
  const sub = args[1]!;
  if (!is(sub, 'get')) {
    out.error(`ERR unknown subcommand '${trim(sub)}'. Try CONFIG HELP.`);
    return false;
  }
  if (args.length < 3) {
    out.error(arityError('config|get'));
    return false;
  }
  const found: [Buffer, string][] = [];
  for (let i = 2; i < args.length; i++) {
    const value = CONFIG.get(args[i]!.toString('latin1').toLowerCase());
    if (value !== undefined) found.push([args[i]!, value]);
  }
  out.arrayHeader(found.length * 2);
  for (const [name, value] of found) {
    out.bulk(name);
    out.bulk(Buffer.from(value));
  }
  return false;
};

/** `COMMAND`, `COMMAND DOCS`, `COMMAND INFO`, `COMMAND COUNT`: we publish no command table. */
const command: CommandFn = (args, out) => {
  if (args.length === 1) {
    out.raw(EMPTY_ARRAY);
    return false;
  }
  const sub = args[1]!;
  if (is(sub, 'count')) {
    if (args.length !== 2) out.error(arityError('command|count'));
    else out.integer(0);
  } else if (is(sub, 'docs')) {
    out.raw(EMPTY_ARRAY);
  } else if (is(sub, 'info')) {
    // One nil per unknown command name, as Redis answers.
    out.arrayHeader(args.length - 2);
    for (let i = 2; i < args.length; i++) out.raw(NIL);
  } else {
    out.error(`ERR unknown subcommand '${trim(sub)}'. Try COMMAND HELP.`);
  }
  return false;
};

function trim(arg: Buffer): string {
  return arg.subarray(0, 128).toString('latin1');
}

const SPECS: CommandSpec[] = [
  { name: 'ping', arity: -1, run: ping },
  { name: 'echo', arity: 2, run: echo },
  { name: 'get', arity: 2, run: get },
  { name: 'set', arity: -3, run: set },
  { name: 'del', arity: -2, run: del },
  { name: 'exists', arity: -2, run: exists },
  { name: 'incr', arity: 2, run: incr },
  { name: 'mset', arity: -3, run: mset },
  { name: 'mget', arity: -2, run: mget },
  { name: 'dbsize', arity: 1, run: dbsize },
  { name: 'flushall', arity: -1, run: flushall },
  { name: 'quit', arity: -1, run: quit },
  { name: 'config', arity: -2, run: config },
  { name: 'command', arity: -1, run: command },
];

/** Every command, by the length of its name (a sparse array: no command has most lengths). */
const BY_LENGTH: CommandSpec[][] = [];
for (const spec of SPECS) (BY_LENGTH[spec.name.length] ??= []).push(spec);

/**
 * The command `name` names, in any case, or undefined. Compared on the bytes: no string is made
 * and no hash computed per request (a string per command, then a `Map` lookup, cost a RESP
 * request some 500 instructions; see bench/README.md, "The command lookup").
 */
export function lookup(name: Buffer): CommandSpec | undefined {
  const specs = BY_LENGTH[name.length];
  if (specs === undefined) return undefined;
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i]!;
    if (is(name, spec.name)) return spec;
  }
  return undefined;
}

/** Redis's reply to an unknown command: its name and the start of its arguments, 128 bytes at most. */
export function unknownCommandError(args: Buffer[]): string {
  let list = '';
  for (let i = 1; i < args.length && list.length < 128; i++) {
    list += `'${args[i]!.subarray(0, 128 - list.length).toString('latin1')}' `;
  }
  return `ERR unknown command '${trim(args[0]!)}', with args beginning with: ${list}`;
}

let executed = 0;

/**
 * Commands run since the process started, known or not (Redis's `total_commands_processed`):
 * what the bench divides a counted window's instructions by (bench/instructions.ts).
 */
export function commandsExecuted(): number {
  return executed;
}

/**
 * Runs a decoded command, writing exactly one reply to out. Returns true when the connection
 * should be closed after the reply is sent (QUIT).
 */
export function execute(args: Buffer[], out: ReplyWriter, store: Store): boolean {
  const name = args[0];
  if (name === undefined) return false;
  executed++;
  const spec = lookup(name);
  if (spec === undefined) {
    out.error(unknownCommandError(args));
    return false;
  }
  const argc = args.length;
  if (spec.arity > 0 ? argc !== spec.arity : argc < -spec.arity) {
    out.error(arityError(spec.name));
    return false;
  }
  return spec.run(args, out, store) === true;
}
