/**
 * The RESP example's pure parts: the streaming request decoder (property tests with fast-check),
 * inline splitting, reply encoding, the store's expiry and every command's exact reply bytes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { commandsExecuted, execute, lookup, unknownCommandError } from '../examples/resp/commands.js';
import {
  DEFAULT_MAX_ARGS,
  DEFAULT_MAX_BULK_LENGTH,
  DEFAULT_MAX_INLINE_LENGTH,
  MAX_HEADER_LINE,
  type RespCommand,
  RespDecoder,
  type RespDecoderOptions,
} from '../examples/resp/decoder.js';
import { splitInlineArgs } from '../examples/resp/inline.js';
import { parseInt64 } from '../examples/resp/integer.js';
import { ReplyWriter } from '../examples/resp/reply.js';
import { Store } from '../examples/resp/store.js';
import { FrameTooLargeError, InvalidFrameError, TcpServerError } from '../src/errors.js';

// A fixed seed keeps the suite deterministic; FC_SEED / FC_RUNS explore further.
const RUNS = {
  numRuns: Number(process.env.FC_RUNS ?? 200),
  seed: process.env.FC_SEED === undefined ? 6_380 : Number(process.env.FC_SEED),
};
const TYPED = new Set(['ERR_INVALID_FRAME', 'ERR_FRAME_TOO_LARGE']);

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const str = (cmd: RespCommand): string[] => cmd.map((a) => a.toString('latin1'));

/** Encodes a command as a multibulk request. */
function multibulk(args: Uint8Array[]): Buffer {
  const parts: Buffer[] = [b(`*${args.length}\r\n`)];
  for (const a of args) parts.push(b(`$${a.length}\r\n`), Buffer.from(a), b('\r\n'));
  return Buffer.concat(parts);
}

/** True if an inline line can carry these arguments unquoted. */
function inlineSafe(args: Uint8Array[]): boolean {
  if (args[0]?.[0] === 0x2a) return false; // would be read as a multibulk header
  return args.every(
    (a) => a.length > 0 && a.every((c) => c > 0x20 && c !== 0x22 && c !== 0x27 && c !== 0x7f),
  );
}

/** Cuts `stream` at the given positions (any order, duplicates allowed: empty chunks too). */
function split(stream: Buffer, cuts: number[]): Buffer[] {
  const points = cuts.map((c) => c % (stream.length + 1)).sort((x, y) => x - y);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(Buffer.from(stream.subarray(prev, p))); // a fresh buffer per chunk, as a socket gives
    prev = p;
  }
  chunks.push(Buffer.from(stream.subarray(prev)));
  return chunks;
}

/** Pushes every chunk and drains, the way `conn.readFrame` drives a decoder. */
function decodeAll(chunks: Buffer[], options?: RespDecoderOptions): RespCommand[] {
  const decoder = new RespDecoder(options);
  const out: RespCommand[] = [];
  for (const chunk of chunks) {
    decoder.push(chunk);
    for (let c = decoder.next(); c !== undefined; c = decoder.next()) out.push(c);
  }
  for (let c = decoder.end(); c !== undefined; c = decoder.end()) out.push(c);
  return out;
}

/** The error `fn` throws (failing if it does not throw). */
function thrown(fn: () => unknown): TcpServerError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TcpServerError, `untyped error: ${String(err)}`);
    return err;
  }
  assert.fail('expected a throw');
}

const smallArg = fc.uint8Array({ maxLength: 24 });
const arg = fc.oneof(
  { weight: 8, arbitrary: smallArg },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 3000 }) },
);
const command = fc.array(arg, { minLength: 1, maxLength: 6 });
/** A command and how to send it: multibulk, or inline (ended by \r\n or \n) when its bytes allow. */
const request = fc.tuple(command, fc.constantFrom('multibulk', 'inline-crlf', 'inline-lf'));
const cuts = fc.array(fc.nat(), { maxLength: 30 });

function encode([args, form]: [Uint8Array[], string]): Buffer {
  if (form === 'multibulk' || !inlineSafe(args)) return multibulk(args);
  const line = Buffer.concat(args.flatMap((a, i) => (i === 0 ? [Buffer.from(a)] : [b(' '), Buffer.from(a)])));
  return Buffer.concat([line, b(form === 'inline-crlf' ? '\r\n' : '\n')]);
}

describe('RESP decoder: properties', () => {
  test('any split of a pipelined stream decodes to the same commands, with exact buffered accounting', () => {
    fc.assert(
      fc.property(fc.array(request, { minLength: 1, maxLength: 12 }), cuts, (requests, cutAt) => {
        const encoded = requests.map(encode);
        const chunks = split(Buffer.concat(encoded), cutAt);
        const decoder = new RespDecoder();
        const got: RespCommand[] = [];
        let pushed = 0;
        let consumed = 0;
        for (const chunk of chunks) {
          decoder.push(chunk);
          pushed += chunk.length;
          for (let c = decoder.next(); c !== undefined; c = decoder.next()) {
            consumed += encoded[got.length]!.length;
            got.push(c);
          }
          // Everything received and not yet returned is reported: a half command keeps the conn busy.
          assert.equal(decoder.buffered, pushed - consumed);
        }
        assert.equal(decoder.end(), undefined);
        // Compared only now: arguments returned early must survive later pushes untouched.
        assert.deepEqual(
          got.map((c) => c.map((a) => Buffer.from(a).toString('hex'))),
          requests.map(([args]) => args.map((a) => Buffer.from(a).toString('hex'))),
        );
      }),
      RUNS,
    );
  });

  test('empty commands (*0, *-1, blank lines) are skipped wherever the chunks split', () => {
    const empty = fc.constantFrom('*0\r\n', '*-1\r\n', '*-7\r\n', '\r\n', '\n', '  \t \r\n');
    fc.assert(
      fc.property(fc.array(fc.oneof(request, empty), { maxLength: 12 }), cuts, (items, cutAt) => {
        const stream = Buffer.concat(items.map((i) => (typeof i === 'string' ? b(i) : encode(i))));
        const want = items
          .filter((i) => typeof i !== 'string')
          .map(([args]) => args.map((a) => Buffer.from(a)));
        assert.deepEqual(decodeAll(split(stream, cutAt)), want);
      }),
      RUNS,
    );
  });

  test('garbage only ever throws the typed errors, which stick, and buffered stays within the limits', () => {
    const limits = { maxBulkLength: 40, maxInlineLength: 60, maxArgs: 5, maxRequestLength: 120 };
    const bound = Math.max(limits.maxInlineLength, limits.maxRequestLength + MAX_HEADER_LINE);
    const token = fc.oneof(
      fc.constantFrom('*', '$', '\r\n', '\r', '\n', '-', '0', '1', '3', '9', ' ', '"', "'", '\\', 'x'),
      fc.constantFrom('*1\r\n', '*3\r\n', '$3\r\n', '$0\r\n', '$41\r\n', 'abc', 'PING', '\\x4', '*6\r\n'),
      fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)),
    );
    const garbage = fc.array(token, { maxLength: 200 }).map((t) => b(t.join('')));
    fc.assert(
      fc.property(garbage, cuts, (stream, cutAt) => {
        const decoder = new RespDecoder(limits);
        let failure: unknown;
        try {
          for (const chunk of split(stream, cutAt)) {
            decoder.push(chunk);
            for (let c = decoder.next(); c !== undefined; c = decoder.next()) {
              assert.ok(c.length > 0 && c.length <= limits.maxArgs);
              for (const a of c) assert.ok(Buffer.isBuffer(a) && a.length <= limits.maxInlineLength);
            }
            assert.ok(decoder.buffered <= bound, `buffered ${decoder.buffered} > ${bound}`);
          }
          decoder.end();
          assert.equal(decoder.buffered, 0);
        } catch (err) {
          failure = err;
        }
        if (failure === undefined) return;
        const code = (failure as { code?: unknown }).code;
        assert.ok(
          TYPED.has(code as string) || code === 'ERR_INCOMPLETE_FRAME',
          `unexpected ${String(failure)}`,
        );
        // Sticky: the stream cannot be resynchronized, so the same error comes back, nothing is held.
        assert.equal(decoder.buffered, 0);
        assert.throws(
          () => decoder.next(),
          (e) => e === failure,
        );
      }),
      RUNS,
    );
  });

  test('a $ header over maxBulkLength is refused as soon as the header is complete, before any body', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 100_000 }),
        fc.integer({ min: 1, max: 1_000_000_000 }),
        fc.array(smallArg, { maxLength: 3 }),
        cuts,
        (max, over, before, cutAt) => {
          const len = max + over;
          before = before.map((a) => a.subarray(0, max)); // the arguments before it are within the limit
          const head = Buffer.concat([
            b(`*${before.length + 1}\r\n`),
            ...before.map((a) => Buffer.concat([b(`$${a.length}\r\n`), Buffer.from(a), b('\r\n')])),
          ]);
          const header = b(`$${len}\r\n`);
          const decoder = new RespDecoder({ maxBulkLength: max });
          // Everything but the header's final \n: incomplete, so nothing happens yet.
          const upToLast = Buffer.concat([head, header.subarray(0, -1)]);
          for (const chunk of split(upToLast, cutAt)) {
            decoder.push(chunk);
            assert.equal(decoder.next(), undefined);
          }
          decoder.push(b('\n'));
          const err = thrown(() => decoder.next());
          assert.ok(err instanceof FrameTooLargeError);
          assert.equal(err.code, 'ERR_FRAME_TOO_LARGE');
          assert.equal(err.maxLength, max);
        },
      ),
      RUNS,
    );
  });

  test('a command whose headers announce more than maxRequestLength is refused before the body', () => {
    const decoder = new RespDecoder({ maxBulkLength: 100, maxRequestLength: 250 });
    decoder.push(b(`*3\r\n$100\r\n${'a'.repeat(100)}\r\n$100\r\n`));
    assert.equal(decoder.next(), undefined); // 4 + 106 + 106 = 216 bytes: still fits
    decoder.push(b(`${'b'.repeat(100)}\r\n$30\r\n`));
    const err = thrown(() => decoder.next());
    assert.ok(err instanceof FrameTooLargeError);
    assert.equal(err.maxLength, 250);
  });

  test('an inline line is refused once it exceeds maxInlineLength without a newline', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2000 }), cuts, (max, cutAt) => {
        const decoder = new RespDecoder({ maxInlineLength: max });
        // Exactly the limit, even in pieces, is still waited for.
        for (const chunk of split(b('a'.repeat(max)), cutAt)) {
          decoder.push(chunk);
          assert.equal(decoder.next(), undefined);
        }
        assert.equal(decoder.buffered, max);
        decoder.push(b('a'));
        const err = thrown(() => decoder.next());
        assert.equal(err.code, 'ERR_FRAME_TOO_LARGE');
      }),
      RUNS,
    );
    // A too-long line whose newline arrived in the same chunk is refused too.
    assert.equal(
      thrown(() => decodeAll([b(`${'a'.repeat(11)}\n`)], { maxInlineLength: 10 })).code,
      'ERR_FRAME_TOO_LARGE',
    );
    assert.deepEqual(decodeAll([b(`${'a'.repeat(10)}\n`)], { maxInlineLength: 10 }).map(str), [
      ['a'.repeat(10)],
    ]);
  });

  test('a large bulk arriving in small chunks is assembled in linear time', () => {
    const size = 8 * 1024 * 1024;
    const value = Buffer.alloc(size, 0x61);
    const stream = multibulk([b('SET'), b('k'), value]);
    const decoder = new RespDecoder();
    const start = performance.now();
    let got: RespCommand | undefined;
    for (let i = 0; i < stream.length; i += 1460) {
      decoder.push(stream.subarray(i, i + 1460));
      got = decoder.next() ?? got;
    }
    const ms = performance.now() - start;
    assert.ok(got !== undefined && got[2]!.equals(value));
    // Quadratic copying would move ~24 TB here; linear is a few ms.
    assert.ok(ms < 2_000, `took ${ms.toFixed(0)} ms`);
  });
});

describe('RESP decoder: examples', () => {
  test('multibulk, pipelined, binary-safe', () => {
    const cmds = decodeAll([
      b('*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n'),
    ]);
    assert.deepEqual(cmds.map(str), [['PING'], ['SET', 'k', 'a\r\nb'], ['GET', '']]);
  });

  test('inline commands, with and without quotes', () => {
    const cmds = decodeAll([b('PING\r\nSET a "b c"\nECHO \'it\\\'s\' "\\x41\\n" x"y z"\r\n\r\n$1\r\n')]);
    assert.deepEqual(cmds.map(str), [['PING'], ['SET', 'a', 'b c'], ['ECHO', "it's", 'A\n', 'xy z'], ['$1']]);
  });

  test('defaults are Redis-like', () => {
    const d = new RespDecoder();
    assert.equal(d.maxBulkLength, DEFAULT_MAX_BULK_LENGTH);
    assert.equal(d.maxBulkLength, 512 * 1024 * 1024);
    assert.equal(d.maxInlineLength, DEFAULT_MAX_INLINE_LENGTH);
    assert.equal(d.maxArgs, DEFAULT_MAX_ARGS);
    assert.equal(d.buffered, 0);
    assert.equal(d.next(), undefined);
    assert.equal(d.end(), undefined);
  });

  test('bad limits are refused with ERR_INVALID_OPTION', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => new RespDecoder({ maxBulkLength: bad }), { code: 'ERR_INVALID_OPTION' });
    }
  });

  // Messages as a real Redis 7 words them for the same bytes.
  const malformed: [string, string][] = [
    ['*1\r\nx\r\n', "Protocol error: expected '$', got 'x'"],
    ['*1\r\n\x01', "Protocol error: expected '$', got '\\x01'"],
    ['*x\r\n', 'Protocol error: invalid multibulk length'],
    ['*1\n$4\r\nPING\r\n', 'Protocol error: invalid multibulk length'],
    ['*01\r\n', 'Protocol error: invalid multibulk length'],
    ['*+1\r\n', 'Protocol error: invalid multibulk length'],
    ['*-0\r\n', 'Protocol error: invalid multibulk length'],
    ['*99999999999\r\n', 'Protocol error: invalid multibulk length'],
    ['*12345678901234567890\r\n', 'Protocol error: invalid multibulk length'],
    ['*1\r\n$-1\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$1x\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$04\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$4\r\nPINGxx', 'Protocol error: expected CRLF after bulk data'],
    ['SET a "b\r\n', 'Protocol error: unbalanced quotes in request'],
    ['ECHO "a"b\r\n', 'Protocol error: unbalanced quotes in request'],
    ["ECHO 'a\r\n", 'Protocol error: unbalanced quotes in request'],
    ["ECHO 'a'b\r\n", 'Protocol error: unbalanced quotes in request'],
  ];
  for (const [input, message] of malformed) {
    test(`refuses ${JSON.stringify(input)}: ${message}`, () => {
      const err = thrown(() => decodeAll([b(input)]));
      assert.ok(err instanceof InvalidFrameError);
      assert.equal(err.code, 'ERR_INVALID_FRAME');
      assert.equal(err.message, message);
    });
  }

  test('end of stream inside a command is ERR_INCOMPLETE_FRAME with the bytes held', () => {
    const d = new RespDecoder();
    d.push(b('*2\r\n$3\r\nGET\r\n$1'));
    assert.equal(d.next(), undefined);
    assert.equal(d.buffered, 15);
    assert.throws(() => d.end(), { code: 'ERR_INCOMPLETE_FRAME', buffered: 15 });
    const inline = new RespDecoder();
    inline.push(b('PING'));
    assert.throws(() => inline.end(), { code: 'ERR_INCOMPLETE_FRAME' });
  });
});

describe('RESP inline splitting', () => {
  const split1 = (s: string): string[] | null => {
    const buf = b(s);
    return splitInlineArgs(buf, 0, buf.length)?.map((a) => a.toString('latin1')) ?? null;
  };
  test('follows sdssplitargs', () => {
    assert.deepEqual(split1(''), []);
    assert.deepEqual(split1(' \t '), []);
    assert.deepEqual(split1('a  b\tc'), ['a', 'b', 'c']);
    assert.deepEqual(split1('"a\\tb\\x4a\\xZZ\\\\\\"" c'), ['a\tbJxZZ\\"', 'c']);
    assert.deepEqual(split1('"\\r\\b\\a\\q"'), ['\r\b\x07q']);
    assert.deepEqual(split1("'a\\'b\\n'"), ["a'b\\n"]);
    assert.deepEqual(split1('""'), ['']);
    assert.deepEqual(split1('a"b"c'), null);
    assert.deepEqual(split1('a"b" c'), ['ab', 'c']);
    assert.deepEqual(split1('"abc'), null);
  });
});

describe('RESP replies', () => {
  test('encodings', () => {
    const w = new ReplyWriter();
    w.simple('OK');
    w.error('ERR bad\r\nthing');
    w.integer(0);
    w.integer(-42);
    w.integer(2n ** 63n - 1n);
    w.bulk(b('hi'));
    w.bulk(b(''));
    w.bulk(null);
    w.arrayHeader(2);
    assert.equal(
      Buffer.concat(w.takePieces()).toString('latin1'),
      '+OK\r\n-ERR bad  thing\r\n:0\r\n:-42\r\n:9223372036854775807\r\n$2\r\nhi\r\n$0\r\n\r\n$-1\r\n*2\r\n',
    );
    assert.deepEqual(w.takePieces(), []);
    assert.equal(w.length, 0);
  });

  test('taken bytes are never overwritten, and big values are queued without a copy', () => {
    const w = new ReplyWriter();
    w.simple('first');
    const [first] = w.takePieces();
    for (let i = 0; i < 5000; i++) w.bulk(b('0123456789')); // forces growth into a new buffer
    const big = Buffer.alloc(100_000, 0x62);
    w.bulk(big);
    w.simple('after');
    assert.equal(w.length, 5000 * 17 + 9 + 100_000 + 2 + 8);
    const pieces = w.takePieces();
    assert.equal(first!.toString(), '+first\r\n');
    assert.equal(pieces.length, 3);
    assert.equal(pieces[1], big); // the very same buffer
    const all = Buffer.concat(pieces).toString('latin1');
    assert.ok(all.startsWith('$10\r\n0123456789\r\n'));
    assert.ok(all.endsWith(`$100000\r\n${'b'.repeat(100_000)}\r\n+after\r\n`));
  });
});

describe('RESP integers', () => {
  test('parse with Redis rules', () => {
    const p = (s: string): number | bigint | null => parseInt64(b(s));
    assert.equal(p('0'), 0);
    assert.equal(p('-12'), -12);
    assert.equal(p('999999999999999'), 999_999_999_999_999);
    assert.equal(p('9223372036854775807'), 2n ** 63n - 1n);
    assert.equal(p('-9223372036854775808'), -(2n ** 63n));
    for (const bad of [
      '',
      '-',
      '-0',
      '01',
      '+1',
      ' 1',
      '1 ',
      '1.5',
      'abc',
      '9223372036854775808',
      '12345678901234567890',
    ]) {
      assert.equal(p(bad), null, bad);
    }
  });
});

/** A store on a fake clock and a runner returning the reply bytes of one command. */
function harness(): { store: Store; clock: { now: number }; run: (...args: string[]) => string } {
  const clock = { now: 1_000_000 };
  const store = new Store({ now: () => clock.now });
  const out = new ReplyWriter();
  const run = (...args: string[]): string => {
    execute(args.map(b), out, store);
    return Buffer.concat(out.takePieces()).toString('latin1');
  };
  return { store, clock, run };
}

describe('RESP commands', () => {
  test('PING, ECHO, unknown commands and arity errors', () => {
    const { run } = harness();
    assert.equal(run('PING'), '+PONG\r\n');
    assert.equal(run('ping', 'hi'), '$2\r\nhi\r\n');
    assert.equal(run('PiNg', 'a', 'b'), "-ERR wrong number of arguments for 'ping' command\r\n");
    assert.equal(run('ECHO', 'x y'), '$3\r\nx y\r\n');
    assert.equal(run('ECHO'), "-ERR wrong number of arguments for 'echo' command\r\n");
    assert.equal(run('GET'), "-ERR wrong number of arguments for 'get' command\r\n");
    assert.equal(run('SET', 'k'), "-ERR wrong number of arguments for 'set' command\r\n");
    assert.equal(
      run('FOO', 'bar', 'baz'),
      "-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n",
    );
    assert.equal(run('FOO'), "-ERR unknown command 'FOO', with args beginning with: \r\n");
    assert.equal(run('fo\no'), "-ERR unknown command 'fo o', with args beginning with: \r\n");
    // Redis quotes at most ~128 bytes of arguments.
    const long = unknownCommandError([b('x'), b('a'.repeat(100)), b('b'.repeat(100)), b('c')]);
    assert.equal(
      long,
      `ERR unknown command 'x', with args beginning with: '${'a'.repeat(100)}' '${'b'.repeat(25)}' `,
    );
  });

  test('commands are found by their bytes in any case; near misses and other lengths are unknown', () => {
    const names = ['ping', 'echo', 'get', 'set', 'del', 'exists', 'incr', 'mset', 'mget', 'dbsize'];
    for (const name of [...names, 'flushall', 'quit', 'config', 'command']) {
      const mixed = [...name].map((c, i) => (i % 2 === 0 ? c.toUpperCase() : c)).join('');
      for (const spelled of [name, name.toUpperCase(), mixed]) {
        assert.equal(lookup(b(spelled))?.name, name, spelled);
      }
    }
    // Same length and one byte off (`@` and `i` differ in more than bit 0x20, the case bit), a
    // prefix, an extension, empty, and longer than every command.
    for (const miss of [
      'pinh',
      'pin\u0007',
      'p@ng',
      'pings',
      'pin',
      '',
      'gett',
      'flushalls',
      'x'.repeat(40),
    ]) {
      assert.equal(lookup(b(miss)), undefined, JSON.stringify(miss));
    }
    assert.equal(lookup(Buffer.from([0x50, 0x49, 0x4e, 0xc7])), undefined, 'a byte above 0x7f');
    const { run } = harness();
    const before = commandsExecuted();
    run('PING');
    run('NOPE');
    assert.equal(commandsExecuted() - before, 2, 'every command run counts, known or not');
  });

  test('SET / GET / DEL / EXISTS / MSET / MGET / DBSIZE / FLUSHALL', () => {
    const { run } = harness();
    assert.equal(run('GET', 'k'), '$-1\r\n');
    assert.equal(run('SET', 'k', 'v'), '+OK\r\n');
    assert.equal(run('GET', 'k'), '$1\r\nv\r\n');
    assert.equal(run('SET', 'k', 'w', 'NX'), '$-1\r\n');
    assert.equal(run('SET', 'x', 'w', 'xx'), '$-1\r\n');
    assert.equal(run('SET', 'k', 'w', 'XX', 'GET'), '$1\r\nv\r\n');
    assert.equal(run('SET', 'k', 'z', 'NX', 'GET'), '$1\r\nw\r\n');
    assert.equal(run('SET', 'new', 'z', 'GET'), '$-1\r\n');
    assert.equal(run('SET', 'k', 'v', 'NX', 'XX'), '-ERR syntax error\r\n');
    assert.equal(run('SET', 'k', 'v', 'EX', '10', 'PX', '100'), '-ERR syntax error\r\n');
    assert.equal(run('SET', 'k', 'v', 'EX'), '-ERR syntax error\r\n');
    assert.equal(run('SET', 'k', 'v', 'FOO'), '-ERR syntax error\r\n');
    assert.equal(run('SET', 'k', 'v', 'EX', 'abc'), '-ERR value is not an integer or out of range\r\n');
    assert.equal(run('SET', 'k', 'v', 'EX', '0'), "-ERR invalid expire time in 'set' command\r\n");
    assert.equal(run('SET', 'k', 'v', 'PX', '-5'), "-ERR invalid expire time in 'set' command\r\n");
    assert.equal(
      run('SET', 'k', 'v', 'EX', '9223372036854775'),
      "-ERR invalid expire time in 'set' command\r\n",
    );
    assert.equal(run('DEL', 'k', 'k', 'nokey', 'new'), ':2\r\n');
    assert.equal(run('MSET', 'a', '1', 'b', '2'), '+OK\r\n');
    assert.equal(run('MSET', 'a', '1', 'b'), "-ERR wrong number of arguments for 'mset' command\r\n");
    assert.equal(run('MGET', 'a', 'b', 'c'), '*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n');
    assert.equal(run('EXISTS', 'a', 'a', 'c'), ':2\r\n');
    assert.equal(run('DBSIZE'), ':2\r\n');
    assert.equal(run('FLUSHALL'), '+OK\r\n');
    assert.equal(run('DBSIZE'), ':0\r\n');
  });

  test('binary-safe keys and values; stored values are copies of the request bytes', () => {
    const { store } = harness();
    const out = new ReplyWriter();
    const key = Buffer.from([0, 0xff, 0x80]);
    const value = Buffer.from([1, 2, 0xfe]);
    execute([b('SET'), key, value], out, store);
    value.fill(0); // the request buffer is reused by the socket layer: the store must not see it
    execute([b('GET'), Buffer.from([0, 0xff, 0x80])], out, store);
    assert.deepEqual(
      Buffer.concat(out.takePieces()),
      Buffer.concat([b('+OK\r\n$3\r\n'), Buffer.from([1, 2, 0xfe]), b('\r\n')]),
    );
  });

  test('INCR', () => {
    const { run } = harness();
    assert.equal(run('INCR', 'n'), ':1\r\n');
    assert.equal(run('INCR', 'n'), ':2\r\n');
    assert.equal(run('SET', 'n', '-1'), '+OK\r\n');
    assert.equal(run('INCR', 'n'), ':0\r\n');
    assert.equal(run('SET', 'n', '999999999999999'), '+OK\r\n');
    assert.equal(run('INCR', 'n'), ':1000000000000000\r\n');
    assert.equal(run('INCR', 'n'), ':1000000000000001\r\n');
    assert.equal(run('SET', 'n', '9223372036854775806'), '+OK\r\n');
    assert.equal(run('INCR', 'n'), ':9223372036854775807\r\n');
    assert.equal(run('INCR', 'n'), '-ERR increment or decrement would overflow\r\n');
    for (const bad of ['abc', ' 1', '-0', '01', '1.0', '']) {
      run('SET', 'n', bad);
      assert.equal(run('INCR', 'n'), '-ERR value is not an integer or out of range\r\n', bad);
    }
  });

  test('expiry: EX/PX are lazy on access, INCR and KEEPTTL keep the TTL, SET and MSET clear it', () => {
    const { run, clock, store } = harness();
    run('SET', 'a', 'v', 'EX', '10');
    run('SET', 'b', 'v', 'px', '1500');
    clock.now += 1_499;
    assert.equal(run('EXISTS', 'a', 'b'), ':2\r\n');
    clock.now += 1;
    assert.equal(run('GET', 'b'), '$-1\r\n');
    assert.equal(run('DEL', 'b'), ':0\r\n');
    run('SET', 'n', '1', 'EX', '10');
    assert.equal(run('INCR', 'n'), ':2\r\n');
    run('SET', 'a', 'w', 'KEEPTTL');
    run('SET', 'c', 'v', 'EX', '10');
    run('SET', 'c', 'v'); // no TTL any more
    run('SET', 'd', 'v', 'EX', '10');
    run('MSET', 'd', 'v');
    clock.now += 10_000; // 10 s after the SETs of a (first) and n (1.5 s later)
    assert.equal(run('MGET', 'a', 'n', 'c', 'd'), '*4\r\n$-1\r\n$-1\r\n$1\r\nv\r\n$1\r\nv\r\n');
    assert.equal(run('SET', 'k', 'v', 'EX', '1', 'KEEPTTL'), '-ERR syntax error\r\n');
    assert.equal(store.size, 2);
  });

  test('the sweeper deletes expired keys nobody reads, a budget at a time, and stops when asked', async () => {
    const { run, clock, store } = harness();
    for (let i = 0; i < 10; i++) run('SET', `t${i}`, 'v', 'PX', String(100 + i));
    run('SET', 'forever', 'v');
    clock.now += 105;
    assert.equal(store.sweep(3), 3); // t0..t2
    assert.equal(store.sweep(100), 3); // t3..t5; t6..t9 not yet due
    assert.equal(store.size, 5);
    clock.now += 100;
    const stop = store.startSweeper(1);
    while (store.size > 1) await new Promise((resolve) => setTimeout(resolve, 2));
    stop();
    assert.equal(run('GET', 'forever'), '$1\r\nv\r\n');
  });

  test('CONFIG GET answers what redis-benchmark asks, COMMAND enough for redis-cli', () => {
    const { run } = harness();
    assert.equal(run('CONFIG', 'GET', 'save'), '*2\r\n$4\r\nsave\r\n$0\r\n\r\n');
    assert.equal(run('config', 'get', 'APPENDONLY'), '*2\r\n$10\r\nAPPENDONLY\r\n$2\r\nno\r\n');
    assert.equal(
      run('CONFIG', 'GET', 'save', 'appendonly'),
      '*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n',
    );
    assert.equal(run('CONFIG', 'GET', 'maxmemory'), '*0\r\n');
    assert.equal(run('CONFIG', 'GET'), "-ERR wrong number of arguments for 'config|get' command\r\n");
    assert.equal(run('CONFIG', 'FOO'), "-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n");
    assert.equal(run('CONFIG'), "-ERR wrong number of arguments for 'config' command\r\n");
    assert.equal(run('COMMAND'), '*0\r\n');
    assert.equal(run('COMMAND', 'DOCS'), '*0\r\n');
    assert.equal(run('COMMAND', 'docs', 'get'), '*0\r\n');
    assert.equal(run('COMMAND', 'COUNT'), ':0\r\n');
    assert.equal(
      run('COMMAND', 'COUNT', 'x'),
      "-ERR wrong number of arguments for 'command|count' command\r\n",
    );
    assert.equal(run('COMMAND', 'INFO', 'get', 'set'), '*2\r\n$-1\r\n$-1\r\n');
    assert.equal(run('COMMAND', 'FOO'), "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n");
  });

  test('QUIT replies +OK and asks for the connection to close', () => {
    const { store } = harness();
    const out = new ReplyWriter();
    assert.equal(execute([b('QUIT')], out, store), true);
    assert.equal(execute([b('PING')], out, store), false);
    assert.equal(execute([], out, store), false);
    assert.equal(Buffer.concat(out.takePieces()).toString(), '+OK\r\n+PONG\r\n');
  });
});
