/**
 * Reading callgrind's output for bench/instructions.ts (bench/lib/callgrind.ts): JIT code named
 * by the perf map, each function's own instructions per request, and the request count taken
 * from the calls of one function, checked on a real valgrind run of node.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { COMPILER, countDiff, jitNamer, readCallerTree } from '../bench/lib/callgrind.js';
import { CALLGRIND_ANNOTATE, skipWithout, VALGRIND } from './helpers.js';

const TREE = `--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------

 3,000 ( 30.00%)  < ???:0x0000000000001010 (300x) [???]
   100 (  1.00%)  < ???:0x0000000000002000 (100x) [???]
 2,000 ( 20.00%)  *  ???:void node::Buffer::(anonymous namespace)::StringSlice<(node::encoding)4>(v8::FunctionCallbackInfo<v8::Value> const&) [/usr/bin/node]

 8,000 ( 80.00%)  < ???:Builtins_CallApiCallback (1x) [/usr/bin/node]
 4,000 ( 40.00%)  *  ???:0x0000000000001000 [???]

 1,200 ( 12.00%)  *  ???:v8::internal::compiler::GraphReducer::ReduceTop() [/usr/bin/node]

   800 (  8.00%)  *  ???:0x0000000000009000 [???]
`;
const MAP =
  '1000 100 JS:*hot file:///repo/cache/hot.js:1:1\n2000 10 JS:^cold file:///repo/cache/cold.js:2:2\n';

test('jitNamer: an address inside a map range is that function, stripped of the prefix; others stay', () => {
  const name = jitNamer(MAP, 'file:///repo/cache/');
  assert.equal(name('???:0x0000000000001000'), 'JIT JS:*hot hot.js:1:1');
  assert.equal(name('???:0x00000000000010ff'), 'JIT JS:*hot hot.js:1:1');
  assert.equal(name('???:0x0000000000001100'), '???:0x0000000000001100', 'one past the range');
  assert.equal(name('???:0x0000000000002005'), 'JIT JS:^cold cold.js:2:2');
  assert.equal(name('???:Builtins_LoadIC'), '???:Builtins_LoadIC');
});

test('readCallerTree: own instructions per request, requests from the callers of the mark or given, TurboFan apart', () => {
  const c = readCallerTree(TREE, jitNamer(MAP, 'file:///repo/cache/'), 'StringSlice<(node::encoding)4>');
  assert.equal(c.requests, 400, 'the calls of the mark from both callers');
  assert.equal(c.byFunction.get('JIT JS:*hot hot.js:1:1'), 10);
  assert.equal(c.byFunction.get('???:0x0000000000009000'), 2, 'unnamed code is kept under its address');
  assert.equal(c.compiler, 3);
  assert.equal(c.total, (2000 + 4000 + 800) / 400, 'TurboFan is not in the total');
  assert.throws(() => readCallerTree(TREE, (f) => f, 'NoSuchFunction'), /no calls of NoSuchFunction/);
  const perConn = readCallerTree(TREE, (f) => f, 10);
  assert.equal(perConn.requests, 10, 'a count given is the divisor');
  assert.equal(perConn.total, (2000 + 4000 + 800) / 10);
});

test('countDiff: biggest difference first, TurboFan left out', () => {
  const a = {
    byFunction: new Map([
      ['f', 10],
      ['g', 5],
      ['compiler::X', 100],
    ]),
    total: 15,
    compiler: 100,
    requests: 1,
  };
  const b = {
    byFunction: new Map([
      ['f', 11],
      ['h', 4],
    ]),
    total: 15,
    compiler: 0,
    requests: 1,
  };
  assert.deepEqual(
    countDiff(a, b).map((r) => r.fn),
    ['g', 'h', 'f'],
  );
  assert.ok(COMPILER.test('v8::internal::compiler::GraphReducer::ReduceTop()'));
});

test('a real callgrind run of node: the mark counted exactly, the JIT code named', {
  skip: skipWithout(VALGRIND, CALLGRIND_ANNOTATE),
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tcpserver-callgrind-test-'));
  try {
    const calls = 3000;
    // A named hot function (perf-map names mark the code's tier before the name: ~ ^ +' *) calling Buffer#toString('latin1') (StringSlice<latin1>) `calls` times.
    const script = `const b = Buffer.from('PING'); let n = 0; function hot(i) { n += b.toString('latin1').length + i; } for (let i = 0; i < ${calls}; i++) hot(i); console.log(n);`;
    const out = join(dir, 'cg.out');
    execFileSync(
      'valgrind',
      [
        '--tool=callgrind',
        '--smc-check=all-non-file',
        `--callgrind-out-file=${out}`,
        process.execPath,
        '--perf-basic-prof',
        '-e',
        script,
      ],
      { cwd: dir, stdio: 'ignore', timeout: 240_000 },
    );
    const tree = execFileSync('callgrind_annotate', ['--tree=caller', '--threshold=100', out], {
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
    });
    const maps = readdirSync('/tmp').filter((f) => /^perf-\d+\.map$/.test(f));
    const pid = /\(PID (\d+)/.exec(tree)?.[1];
    assert.ok(pid !== undefined && maps.includes(`perf-${pid}.map`), 'the perf map of the profiled node');
    const perfMap = `/tmp/perf-${pid}.map`;
    const c = readCallerTree(tree, jitNamer(readFileSync(perfMap, 'utf8')), 'StringSlice<(node::encoding)4>');
    rmSync(perfMap, { force: true });
    assert.equal(c.requests, calls);
    // JIT code is named from the real perf map. Which JIT code the loop's instructions land on is
    // callgrind's attribution, not ours: on Node 20 it is `hot`'s own code; on Node 24 callgrind
    // often folds JIT code entered by a jump into the builtin that jumped (see bench/README.md),
    // so only bootstrap functions carry names there. The count above is exact on both.
    const jit = [...c.byFunction.keys()].filter((f) => /^JIT JS:\S+ \S+:\d+:\d+$/.test(f));
    assert.ok(jit.length > 0, `JIT code named by the perf map among ${c.byFunction.size} functions`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
